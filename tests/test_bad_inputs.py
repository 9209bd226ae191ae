"""The bad-input catalogue: every malformed input the CLI can meet, in one table.

Each case runs the ``kdaudit`` command line in a process of its own and must end with exit code
2, exactly one line on stderr that starts with ``kdaudit: error:`` and names the problem, and no
traceback. Cases that point at an audit directory get their own copy of one finished tiny audit,
whose file tree (names, sizes, mtimes) must be unchanged afterwards. The disk-full cases make one
write fail with ENOSPC (a monkeypatch run in the process before the CLI starts).

A fresh ``python -m kdaudit.cli`` spends seconds importing torch and scipy, so one case of each
kind (``real=True``) runs exactly so, in a subprocess; the others run in processes forked from a
server that has done the imports once (:class:`helpers.ForkServer`), which then call the same
entry point with the case's arguments, environment and working directory. All of them run in a
module fixture, concurrently with the build of the finished audit; each test checks one case.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from helpers import ONE_THREAD, ForkServer, as_sets, cli_env, kdaudit, tiny_grid, tmp_leftovers, tree_snapshot
from kdaudit.data.fashion_mnist import FILES
from kdaudit.data.idx import write_idx

# The finished audit that cases point at: 5 models, 1 epoch.
AUDIT_SETS = as_sets(tiny_grid(1, ONE_THREAD, "protocol.conditions=[siddo, kd]", "protocol.alphas=[0.5]"))
RUN = ["run", "digits-mlp", *AUDIT_SETS, "--quiet"]
FMNIST = ["--set", "data.name=fashion-mnist"]


def enospc_prelude(where: str) -> str:
    """Python that makes one kind of write fail as on a full disk."""
    return f"""
import errno, os
import numpy as np

def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

where = {where!r}
if where == "savez":  # a job's outputs.npz
    np.savez = full
elif where == "rename":  # a job directory moved into place
    os.rename = full
elif where == "tables":  # runs.csv written to its temporary, then moved into place
    real = os.replace
    os.replace = lambda src, dst: full() if str(dst).endswith(".csv") else real(src, dst)
"""


CLI_AFTER_PRELUDE = "\nimport sys\nfrom kdaudit.cli.main import main\nmain(sys.argv[1:])\n"


@dataclass
class Case:
    id: str
    args: Callable[[dict], list[str]]  # paths → argv after `kdaudit`
    needle: str  # must appear in the error line
    audit: bool = False  # points at a copy of the finished audit, which must stay unchanged
    enospc: str | None = None  # which write fails as on a full disk (see enospc_prelude)
    prepare: Callable[[Path], None] | None = None  # changes the audit copy before the snapshot
    extra: list[Callable[[dict], None]] = field(default_factory=list)  # further checks afterwards
    real: bool = False  # run as `python -m kdaudit.cli` in a fresh subprocess


def _spec(*sets: str, needle: str, id: str, real: bool = False) -> Case:
    return Case(
        id,
        lambda p: [*RUN, *as_sets(list(sets)), "--out", p["audit"]],
        needle,
        audit=True,
        real=real,
    )


def _data(name: str, needle: str, real: bool = False) -> Case:
    return Case(
        f"data-{name}",
        lambda p: [*RUN, *FMNIST, "--set", f"data.data_dir={p['fm'] / name}", "--out", p["audit"]],
        needle,
        audit=True,
        real=real,
    )


def _logits(id: str, which: str, file: str, needle: str, real: bool = False) -> Case:
    def args(p: dict) -> list[str]:
        files = {
            "teacher": p["logits"] / "teacher.npy",
            "student": p["logits"] / "student.npy",
            "labels": p["logits"] / "labels.npy",
        }
        files[which] = p["logits"] / file
        return ["metrics", *[x for k, f in files.items() for x in (f"--{k}", str(f))]]

    return Case(id, args, needle, real=real)


def _no_partial_job(p: dict) -> None:
    jobs = Path(p["fresh"]) / "jobs"
    assert not list(jobs.glob(".tmp-*"))
    assert all((d / "record.json").exists() for d in jobs.iterdir())  # M0 at most


def _no_tmp_left(p: dict) -> None:
    assert tmp_leftovers(Path(p["fresh"])) == []


def _delete_job(audit: Path) -> None:
    shutil.rmtree(sorted(p for p in (audit / "jobs").iterdir() if (p / "outputs.npz").exists())[0])


def _flip_outputs(audit: Path) -> None:
    path = sorted((audit / "jobs").glob("*/outputs.npz"))[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


CASES = [
    # --- the spec -----------------------------------------------------------------------------
    _spec("train.epoch=3", needle="train.epoch: unknown key; allowed: optimizer", id="spec-unknown-key"),
    _spec("train.epochs=three", needle="train.epochs: Input should be a valid integer", id="spec-wrong-type"),
    _spec("train=5", needle="train: Input should be", id="spec-section-not-a-mapping"),
    _spec("protocol.alphas=[0.5, 1.5]", needle="every α must lie in (0, 1]", id="spec-alpha-above-1"),
    _spec("protocol.alphas=[0]", needle="α = 0 is the siddo condition", id="spec-alpha-zero"),
    _spec(
        "train.epochs=-1", needle="train.epochs: Input should be greater than or equal to 1", id="spec-negative-epochs"
    ),
    _spec("protocol.conditions=[]", needle="protocol.conditions: must name at least one", id="spec-empty-conditions"),
    _spec("protocol.conditions=[kd, distill]", needle="protocol.conditions", id="spec-unknown-condition"),
    _spec("data.name=fashion_mnist", needle="did you mean 'fashion-mnist'", id="spec-unknown-dataset"),
    _spec("model.name=mpl", needle="did you mean 'mlp'", id="spec-unknown-model"),
    _spec(
        "model.kwargs.widths=[16]",
        needle="model.kwargs: unknown option(s) widths",
        id="spec-unknown-model-option",
        real=True,
    ),
    _spec(
        "model.kwargs.hidden=[a]",
        needle="model.kwargs: bad option value for model 'mlp'",
        id="spec-model-option-wrong-type",
    ),
    _spec("data.options.bogus=1", needle="dataset 'digits' has no option bogus", id="spec-unknown-dataset-option"),
    _spec("data.options.test_fraction=2", needle="test_fraction must lie in (0, 1)", id="spec-bad-dataset-option"),
    Case(
        "spec-unknown-setup",
        lambda p: ["run", "digits-mpl", "--out", p["audit"]],
        "unknown setup 'digits-mpl' (did you mean 'digits-mlp'?)",
        audit=True,
    ),
    Case(
        "spec-invalid-yaml",
        lambda p: ["run", str(p["specs"] / "invalid.yaml"), "--out", p["audit"]],
        "invalid.yaml: invalid YAML at line",
        audit=True,
        real=True,
    ),
    Case(
        "spec-top-level-list",
        lambda p: ["run", str(p["specs"] / "list.yaml")],
        "the top level must be a mapping, got list",
    ),
    Case("spec-file-missing", lambda p: ["run", str(p["specs"] / "missing.yaml")], "spec file not found"),
    Case("spec-file-is-a-directory", lambda p: ["run", str(p["specs"] / "dir.yaml")], "cannot read spec"),
    Case(
        "spec-file-unknown-key",
        lambda p: ["run", str(p["specs"] / "typo.yaml"), "--out", p["audit"]],
        "trian: unknown key",
        audit=True,
    ),
    Case(
        "set-without-equals",
        lambda p: ["run", "digits-mlp", "--set", "train", "--out", p["audit"]],
        "--set 'train': expected key=value",
        audit=True,
    ),
    Case("set-into-a-value", lambda p: ["run", "digits-mlp", "--set", "train.epochs.max=3"], "epochs is not a section"),
    # --- datasets (Fashion-MNIST IDX files) --------------------------------------------------
    _data("empty", "lacks train-images-idx3-ubyte.gz"),
    _data("bad-magic", "bad magic number"),
    _data("truncated-gzip", "cannot read IDX file", real=True),
    _data("labels-out-of-range", "labels must lie in [0, 10)"),
    _data("empty-split", "the test split is empty"),
    _data("length-mismatch", "test split has 20 inputs but 19 labels"),
    _data("wrong-image-shape", "images must be N×28×28"),
    _data("no-such-dir", "does not exist"),
    # --- logits files for `kdaudit metrics` / `compare` ----------------------------------------
    _logits("logits-nan", "student", "nan.npy", "non-finite"),
    _logits("logits-wrong-shape", "student", "wrong_shape.npy", "shape"),
    _logits("logits-integer-dtype", "teacher", "ints.npy", "floating point"),
    _logits("logits-pickled-object-array", "student", "object.npy", "pickled object array", real=True),
    _logits("logits-not-npy", "student", "text.npy", "is not a .npy array"),
    _logits("logits-truncated-npy", "student", "truncated.npy", "truncated.npy"),
    Case(
        "compare-nan-in-control",
        lambda p: [
            "compare",
            "--teacher",
            str(p["logits"] / "teacher.npy"),
            "--labels",
            str(p["logits"] / "labels.npy"),
            "--control",
            str(p["logits"] / "control" / "*.npy"),
            "--group",
            f"kd={p['logits'] / 's*.npy'}",
        ],
        "non-finite",
    ),
    # --- the environment ----------------------------------------------------------------------
    Case(
        "out-under-a-file",
        lambda p: [*RUN, "--out", str(p["file"] / "sub")],
        "cannot create output directory",
        real=True,
    ),
    Case(
        "store-under-a-file",
        lambda p: [*RUN, "--set", f"output.store={p['file'] / 'store'}", "--out", p["fresh"]],
        "cannot write to the store",
    ),
    Case(
        "disk-full-job-outputs",
        lambda p: [*RUN, "--out", p["fresh"]],
        "No space left on device",
        enospc="savez",
        extra=[_no_partial_job],
    ),
    Case(
        "disk-full-job-rename",
        lambda p: [*RUN, "--out", p["fresh"]],
        "No space left on device",
        enospc="rename",
        extra=[_no_partial_job],
    ),
    Case(
        "disk-full-tables",
        lambda p: [*RUN, "--out", p["fresh"]],
        "runs.csv: No space left on device",
        enospc="tables",
        extra=[_no_tmp_left],
        real=True,
    ),
    # --- `kdaudit report` -------------------------------------------------------------------
    Case("report-no-spec", lambda p: ["report", str(p["specs"])], "is not an audit directory (no spec.yaml)"),
    Case(
        "report-missing-job",
        lambda p: ["report", p["audit"]],
        "1 of 5 models are not finished or are corrupt",
        audit=True,
        prepare=_delete_job,
    ),
    Case(
        "report-corrupt-job",
        lambda p: ["report", p["audit"]],
        "1 of 5 models are not finished or are corrupt",
        audit=True,
        prepare=_flip_outputs,
    ),
    Case(
        "report-invalid-spec-yaml",
        lambda p: ["report", p["audit"]],
        "invalid YAML",
        audit=True,
        real=True,
        prepare=lambda a: (a / "spec.yaml").write_text("name: [unclosed\n"),
    ),
    Case(
        "report-spec-unknown-key",
        lambda p: ["report", p["audit"]],
        "trian: unknown key",
        audit=True,
        prepare=lambda a: (a / "spec.yaml").write_text((a / "spec.yaml").read_text() + "trian: {}\n"),
    ),
]


def _write_inputs(root: Path) -> dict:
    """Every malformed file the cases read."""
    specs = root / "specs"
    specs.mkdir()
    (specs / "invalid.yaml").write_text("name: x\ntrain: [unclosed\n")
    (specs / "list.yaml").write_text("- digits-mlp\n- train.epochs=3\n")
    (specs / "dir.yaml").mkdir()
    (specs / "typo.yaml").write_text("setup: digits-mlp\ntrian:\n  epochs: 1\n")

    rng = np.random.default_rng(0)
    good = {
        "x_train": rng.integers(0, 256, size=(60, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(60) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(20) % 10).astype(np.uint8),
    }
    variants = {
        "empty": None,
        "bad-magic": {},
        "truncated-gzip": {},
        "labels-out-of-range": {"y_test": np.full(20, 12, np.uint8)},
        "empty-split": {"x_test": np.zeros((0, 28, 28), np.uint8), "y_test": np.zeros(0, np.uint8)},
        "length-mismatch": {"y_test": good["y_test"][:19]},
        "wrong-image-shape": {"x_test": good["x_test"].reshape(20, 784)},
    }
    fm = root / "fm"
    for name, changes in variants.items():
        d = fm / name
        d.mkdir(parents=True)
        if changes is None:
            continue
        for k, f in FILES.items():
            write_idx(d / f, {**good, **changes}[k])
    bad_magic = fm / "bad-magic" / FILES["x_train"]
    raw = bytearray(gzip.decompress(bad_magic.read_bytes()))
    raw[:4] = b"\x01\x02\x08\x03"
    bad_magic.write_bytes(gzip.compress(bytes(raw)))
    truncated = fm / "truncated-gzip" / FILES["x_test"]
    truncated.write_bytes(truncated.read_bytes()[:60])

    logits = root / "logits"
    (logits / "control").mkdir(parents=True)
    n, c = 50, 10
    labels = rng.integers(0, c, size=n)
    z = rng.normal(size=(n, c)).astype(np.float32)
    np.save(logits / "teacher.npy", z)
    np.save(logits / "labels.npy", labels)
    for i in range(3):
        np.save(logits / f"s{i}.npy", z + rng.normal(size=z.shape).astype(np.float32))
        np.save(logits / "control" / f"c{i}.npy", z + rng.normal(size=z.shape).astype(np.float32))
    nan = z.copy()
    nan[4, 2] = np.nan
    np.save(logits / "control" / "c1.npy", nan)
    np.save(logits / "student.npy", z)
    np.save(logits / "nan.npy", nan)
    np.save(logits / "wrong_shape.npy", z[:, :-1])
    np.save(logits / "ints.npy", (z * 10).astype(np.int64))
    np.save(logits / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (logits / "text.npy").write_text("teacher logits\n")
    np.save(logits / "truncated.npy", z)
    (logits / "truncated.npy").write_bytes((logits / "truncated.npy").read_bytes()[:300])

    regular = root / "a-file"
    regular.write_text("not a directory\n")
    return {"specs": specs, "fm": fm, "logits": logits, "file": regular}


@dataclass
class Result:
    case: Case
    paths: dict
    proc: subprocess.CompletedProcess
    before: dict | None
    after: dict | None


def _run_case(case: Case, root: Path, finished: Callable[[], Path], common: dict, server: ForkServer | None) -> Result:
    work = root / "cases" / case.id
    work.mkdir(parents=True)
    paths = {**common, "fresh": str(work / "fresh-audit")}
    before = None
    if case.audit:
        copy = work / "audit"
        shutil.copytree(finished(), copy)
        if case.prepare:
            case.prepare(copy)
        paths["audit"] = str(copy)
        before = tree_snapshot(copy)
    else:
        paths["audit"] = str(work / "no-audit-here")
    args = case.args(paths)
    env = cli_env(HOME=str(work), KDAUDIT_DATA=str(work / "no-data"))  # no Fashion-MNIST found elsewhere
    prelude = enospc_prelude(case.enospc) if case.enospc else ""
    if server is not None:
        run = server.start(*args, env=env, cwd=work, prelude=prelude)
        proc = subprocess.CompletedProcess(args, run.wait(), run.stdout, run.stderr)
    elif prelude:
        proc = subprocess.run(
            [sys.executable, "-c", prelude + CLI_AFTER_PRELUDE, *args],
            capture_output=True,
            text=True,
            cwd=work,
            timeout=600,
            env=env,
        )
    else:
        proc = kdaudit(*args, cwd=work, env=env)
    after = tree_snapshot(Path(paths["audit"])) if case.audit else None
    return Result(case, paths, proc, before, after)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    """Every case's outcome; the finished audit is built while the cases without it run."""
    root = tmp_path_factory.mktemp("bad-inputs")
    common = _write_inputs(root)
    audit = root / "finished"
    server = ForkServer(root / "forked")
    pools = [ThreadPoolExecutor(max_workers=n) for n in (1, 2, 1)]  # the build, real CLI runs, forked runs
    try:
        build = pools[0].submit(kdaudit, *RUN, "--out", str(audit))

        def finished() -> Path:
            built = build.result()
            assert built.returncode == 0, built.stderr
            return audit

        futures = {}
        for case in sorted(CASES, key=lambda c: c.audit):  # those that need no audit first
            pool, srv = (pools[1], None) if case.real else (pools[2], server)
            futures[case.id] = pool.submit(_run_case, case, root, finished, common, srv)
        return {k: f.result() for k, f in futures.items()}
    finally:
        for pool in pools:
            pool.shutdown()
        server.close()


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 30
    assert sum(c.real for c in CASES) >= 5  # every kind of case also through a fresh `python -m kdaudit.cli`
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.slow  # the module fixture runs every case, and a finished audit, in about 1.5 minutes
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_and_exit_2(results, case):
    r = results[case.id]
    proc = r.proc
    where = (
        f"{case.id}: kdaudit {' '.join(case.args(r.paths))}\n"
        f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    )
    assert "Traceback" not in proc.stderr, where
    assert proc.returncode == 2, where
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, where
    assert lines[0].startswith("kdaudit: error: "), where
    assert case.needle in lines[0], where
    if case.audit:
        assert r.after == r.before, f"{case.id}: the audit directory changed: " + ", ".join(
            sorted(k for k in set(r.before) | set(r.after) if r.before.get(k) != r.after.get(k))
        )
    for check in case.extra:
        check(r.paths)
