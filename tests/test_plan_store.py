import json

import numpy as np
import pytest
import torch

from kdaudit.config.loader import resolve_spec
from kdaudit.errors import KdauditError
from kdaudit.plan import build_plan
from kdaudit.store import JobStore


def test_plan_is_a_dag_with_the_protocol_counts():
    spec = resolve_spec("digits-mlp", ["protocol.seeds=3"])
    plan = build_plan(spec)
    assert len(plan.trained) == spec.n_models() == 1 + 3 * (1 + 3 + 3 + 3 + 3)
    keys = [j.key for j in plan.jobs]
    assert len(set(keys)) == len(keys)
    position = {k: i for i, k in enumerate(keys)}
    for job in plan.jobs:
        assert all(position[d] < position[job.key] for d in job.deps)
    # KD reads the teacher's outputs; so does LS, whose virtual teacher's confidence matches the teacher's
    reads = [j for j in plan.students if j.condition in ("kd", "ls")]
    assert all(plan.teacher.key in j.deps for j in reads)
    assert all(plan.teacher.key not in j.deps for j in plan.students if j.condition not in ("kd", "ls"))
    assert {(j.condition, j.alpha) for j in plan.students if j.condition == "siddo"} == {("siddo", 0.0)}


def test_job_keys_change_only_with_what_determines_them():
    base = build_plan(resolve_spec("digits-mlp"))
    same = build_plan(resolve_spec("digits-mlp", ["train.threads=1", "analysis.level=0.01"]))
    assert [j.key for j in base.jobs] == [j.key for j in same.jobs]
    t = build_plan(resolve_spec("digits-mlp", ["protocol.temperature=4"]))
    by = {j.run_id: j.key for j in base.jobs}
    by_t = {j.run_id: j.key for j in t.jobs}
    # temperature changes the distilled students only; M0, teacher and SIDDO are shared
    for run_id in by:
        changed = by[run_id] != by_t[run_id]
        assert changed == (run_id.startswith(("kd-", "ls-", "rcd-")))
    lr = build_plan(resolve_spec("digits-mlp", ["train.lr=0.01"]))
    assert lr.init.key == base.init.key and lr.teacher.key != base.teacher.key


def test_store_save_is_atomic_and_detects_corruption(tmp_path):
    store = JobStore(tmp_path / "jobs")
    w = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    out = {"test_logits": np.ones((4, 3), np.float32), "test_labels": np.arange(4)}
    assert store.status("k1") == "missing"
    store.save("k1", {"run_id": "x", "metrics": {}}, w, out)
    assert store.status("k1") == "done"
    rec = store.load_record("k1")
    assert set(rec["checksums"]) == {"weights.safetensors", "outputs.npz"}
    assert torch.equal(store.load_weights("k1")["a"], w["a"])
    assert np.array_equal(store.load_outputs("k1")["test_labels"], np.arange(4))
    assert not list((tmp_path / "jobs").glob(".tmp-*"))

    wpath = tmp_path / "jobs" / "k1" / "weights.safetensors"
    wpath.write_bytes(wpath.read_bytes()[:-3])  # truncated
    assert store.status("k1") == "corrupt"
    store.save("k1", {"run_id": "x", "metrics": {}}, w, out)  # a rerun replaces it
    assert store.status("k1") == "done"

    opath = tmp_path / "jobs" / "k1" / "outputs.npz"
    data = bytearray(opath.read_bytes())
    data[len(data) // 2] ^= 0xFF  # altered
    opath.write_bytes(bytes(data))
    assert store.status("k1") == "corrupt"

    (tmp_path / "jobs" / "k2").mkdir()  # a directory without a record is not done
    assert store.status("k2") == "corrupt"
    (tmp_path / "jobs" / "k3").mkdir()
    (tmp_path / "jobs" / "k3" / "record.json").write_text(json.dumps({"key": "other"}))
    assert store.status("k3") == "corrupt"


def test_store_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    store = JobStore(tmp_path / "jobs")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("kdaudit.store.jobstore.np.savez", boom)
    with pytest.raises(KdauditError, match="No space left on device"):
        store.save("k1", {"run_id": "x"}, {"a": torch.zeros(2)}, {"test_logits": np.zeros((2, 2))})
    assert store.status("k1") == "missing"
    assert not any((tmp_path / "jobs").iterdir())


def test_no_pickle_loading_anywhere_in_the_package():
    """Weights go through safetensors and arrays through np.load(allow_pickle=False) only."""
    from pathlib import Path

    import kdaudit

    root = Path(kdaudit.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        for needle in ("torch.load(", "pickle.load", "allow_pickle=True", "joblib.load"):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
        if "np.load(" in text and "allow_pickle=False" not in text:
            offenders.append(f"{path.relative_to(root)}: np.load without allow_pickle=False")
    assert offenders == []


def test_a_record_from_other_result_versions_is_never_reused(tmp_path):
    from kdaudit.plan.jobs import result_versions

    store = JobStore(tmp_path / "jobs")
    store.save("k1", {"run_id": "x"}, {"a": torch.zeros(2)}, {"test_logits": np.zeros((2, 2))})
    assert store.status("k1") == "done"
    assert store.load_record("k1")["versions"]["code"] == result_versions()["code"]
    for field, value in (("code", "0"), ("torch", "1.0.0")):
        rec = store.load_record("k1")
        rec["versions"][field] = value
        store.record_path("k1").write_text(json.dumps(rec))
        assert store.status("k1") == "corrupt", field
        store.save("k1", {"run_id": "x"}, {"a": torch.zeros(2)}, {"test_logits": np.zeros((2, 2))})
