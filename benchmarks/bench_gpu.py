"""Training throughput of whole audit grids on one CUDA GPU, several ways, measured in one run.

Two grids, each trained several ways, every way in its own process (so its peak GPU memory and
its CUDA state are its own):

* ``default``: the setup's own grid (``--setup``, default ``fashion-mnist-mlp``: the teacher and
  130 students), ``train.device=cuda``.
* ``cifar``: a CIFAR-shaped grid: seeded synthetic images 3×32×32 (50,000 training and 10,000
  test samples, 10 classes, class-dependent means so that it is learnable) written to a
  temporary ``npz`` dataset, full-width ResNet-18 (the registered ``resnet18``), batch 512,
  ``--cifar-epochs`` epochs and ``--cifar-seeds`` seeds (teacher + seeds × conditions × α).

The ways:

* ``sequential``: one model after another (``execution.ensemble=off``, ``execution.jobs_per_gpu=1``);
* ``ensemble``: students sharing an architecture trained as one vectorised model
  (``execution.ensemble=auto``);
* ``jobs2`` / ``jobs4`` (any ``jobsN``): N worker processes on the GPU, one model each
  (``execution.ensemble=off``, ``execution.jobs_per_gpu=N``).

Printed per way: wall time of the training (data loading excluded), models trained, models per
hour, the ratio to ``sequential``, the mean and max GPU utilisation and the peak GPU memory
(``nvidia-smi`` sampled every 0.2 s on the GPU the run uses; the peak is above the idle memory
measured before the way started), ``torch.cuda.max_memory_allocated`` of the way's own process
(n/a where the training ran in worker processes), and where the executor says the jobs ran. Then
the GPU, torch and CUDA versions, and per grid the ensemble speed-up over sequential (and, for the
CIFAR grid, the models per hour of the best way). ``--json PATH`` also writes the results as JSON.

Without a CUDA device it prints one line saying so and exits 0 (``--force-cpu`` runs the ways on
the CPU, for testing this script; ``--tiny`` shrinks both grids to a smoke test of a minute or two).

    python benchmarks/bench_gpu.py [--grids default,cifar] [--ways sequential,ensemble,jobs2,jobs4]
        [--setup fashion-mnist-mlp] [--cifar-epochs 2] [--cifar-seeds 2] [--timeout 600]
        [--gpu 0] [--set KEY=VALUE ...] [--json results.json] [--tiny] [--force-cpu]

``--set`` adds spec overrides to both grids, e.g. ``--set data.data_dir=PATH`` where Fashion-MNIST
is in neither of the places kdaudit looks for it and cannot be downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GRID_WAYS = {
    "default": ["sequential", "ensemble", "jobs2", "jobs4"],
    "cifar": ["sequential", "ensemble", "jobs2"],
}
CIFAR = {"train": 50_000, "test": 10_000, "classes": 10, "shape": (3, 32, 32)}
CIFAR_TINY = {"train": 2_000, "test": 1_000, "classes": 10, "shape": (3, 32, 32)}
SMI_QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


# -- the grids and ways, as spec overrides ------------------------------------------------------


def way_overrides(way: str, args: argparse.Namespace) -> list[str]:
    """The spec overrides of one way."""
    if way == "sequential":
        out, procs = ["execution.ensemble=off", "execution.jobs_per_gpu=1"], 1
    elif way == "ensemble":
        out, procs = [f"execution.ensemble={args.ensemble}", "execution.jobs_per_gpu=1"], 1
    elif m := re.fullmatch(r"jobs(\d+)", way):
        procs = int(m.group(1))
        out = ["execution.ensemble=off", f"execution.jobs_per_gpu={procs}"]
    else:
        raise ValueError(f"unknown way {way!r}: sequential, ensemble or jobsN")
    if args.force_cpu:  # the CPU analogue: as many worker processes as the way has jobs at once
        out.append(f"execution.workers={procs}")
    return out


def grid_source(grid: str, args: argparse.Namespace, workdir: Path) -> tuple[str, list[str]]:
    """The spec source (setup name or YAML path) and the overrides of one grid."""
    device = "cpu" if args.force_cpu else "cuda"
    if grid == "default":
        over = [f"train.device={device}"]
        if args.tiny:
            over += ["protocol.seeds=2", "train.epochs=1", "data.train_subset=1000"]
        return args.setup, over + args.set
    if grid == "cifar":
        seeds, epochs = (2, 1) if args.tiny else (args.cifar_seeds, args.cifar_epochs)
        over = [f"train.device={device}", f"protocol.seeds={seeds}", f"train.epochs={epochs}"]
        if args.tiny:  # one α: teacher + 2 seeds × 5 conditions, 11 models
            over.append("protocol.alphas=[0.5]")
        return str(workdir / "cifar-synthetic.yaml"), over + args.set
    raise ValueError(f"unknown grid {grid!r}: default or cifar")


def write_cifar(workdir: Path, tiny: bool) -> None:
    """A seeded CIFAR-shaped npz dataset (uint8 pixels: a class's mean pattern plus noise) and a
    spec of the CIFAR grid reading it (JSON, which is YAML)."""
    import numpy as np

    size = CIFAR_TINY if tiny else CIFAR
    rng = np.random.default_rng(0)
    c, h, w = size["shape"]
    coarse = rng.normal(0.0, 1.0, (size["classes"], c, h // 4, w // 4))
    means = (127.5 + 45.0 * np.kron(coarse, np.ones((1, 1, 4, 4)))).astype(np.float32)  # 4×4 blocks
    data_dir = workdir / "cifar-synthetic"
    data_dir.mkdir()
    for split in ("train", "test"):
        n = size[split]
        y = rng.integers(0, size["classes"], n).astype(np.int64)
        x = np.empty((n, c, h, w), np.uint8)
        for i in range(0, n, 5000):  # in chunks: 50,000 float32 images would take 600 MB at once
            j = min(n, i + 5000)
            noise = rng.standard_normal((j - i, c, h, w), dtype=np.float32)
            x[i:j] = np.clip(means[y[i:j]] + 60.0 * noise, 0, 255).astype(np.uint8)
        np.savez(data_dir / f"{split}.npz", x=x, y=y)
    # full ResNet-18; --tiny: a width-1/8 ResNet-10, so that the grid trains in seconds on a CPU
    model = {"name": "resnet18", "kwargs": {"width": 0.125, "blocks": [1, 1, 1, 1]} if tiny else {"width": 1.0}}
    spec = {
        "name": "cifar-synthetic",
        "modality": "image",
        "description": "CIFAR-shaped synthetic images (bench_gpu.py)",
        "data": {"name": "npz", "data_dir": str(data_dir)},
        "model": model,
        "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4, "batch_size": 512},
    }
    (workdir / "cifar-synthetic.yaml").write_text(json.dumps(spec, indent=1))


# -- one way, in its own process ----------------------------------------------------------------


def child(payload: dict) -> dict:
    """Train one grid one way, in this process (and the executor's workers); the timed region is
    the executor's call, data loading excluded."""
    import torch

    from kdaudit.audit import execute
    from kdaudit.config.loader import resolve_spec
    from kdaudit.execute.runner import load_data
    from kdaudit.plan import build_plan
    from kdaudit.store import JobStore

    spec = resolve_spec(payload["source"], payload["overrides"])
    plan = build_plan(spec)
    data = load_data(spec)  # not part of the timing
    t0 = time.time()
    Path(payload["t0_path"]).write_text(repr(t0))  # a way past its time is measured up to there
    stats = execute(spec, plan, JobStore(payload["store"]), data)
    t1 = time.time()
    out = {
        "t0": t0,
        "t1": t1,
        "seconds": t1 - t0,
        "executor_seconds": float(getattr(stats, "seconds", 0.0) or 0.0),
        # models trained: the teacher and the students (stats.trained also lists M0, the shared
        # initial weights, which are drawn, not trained)
        "trained": len(set(stats.trained) & {j.run_id for j in plan.trained}),
        "jobs_run": len(stats.trained),
        "models": spec.n_models(),
        "where": str(getattr(stats, "where", "")),
        "torch_max_allocated_mb": None,
        "device_name": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # CUDA used in this process
        peak = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
        out["torch_max_allocated_mb"] = peak / 2**20 if peak else None
        out["device_name"] = torch.cuda.get_device_name(0)
    return out


def child_main(payload_json: str, result_path: str) -> int:
    try:
        result = child(json.loads(payload_json))
    except BaseException as exc:  # the parent prints the error's last line and goes on
        import traceback

        traceback.print_exc()
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        result = {"error": f"{type(exc).__name__}: {lines[0] if len(lines) == 1 else ' | '.join(lines[:4])}"}
    Path(result_path).write_text(json.dumps(result))
    return 1 if "error" in result else 0


# -- GPU sampling -------------------------------------------------------------------------------


def smi(gpu: str) -> tuple[float, float] | None:
    """(utilisation %, memory used MiB) of one GPU from nvidia-smi; None where it cannot tell."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-i", gpu, *SMI_QUERY], capture_output=True, text=True, timeout=5)
        util, mem = out.stdout.strip().splitlines()[0].split(",")[:2]
        return float(util), float(mem)
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return None


class GpuSampler:
    """nvidia-smi's utilisation and memory of one GPU, every 0.2 s in a thread, time-stamped."""

    def __init__(self, gpu: str | None) -> None:
        self.gpu = gpu
        self.samples: list[tuple[float, float, float]] = []  # (time, util %, memory MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = smi(self.gpu)
            if s is not None:
                self.samples.append((time.time(), *s))
            self._stop.wait(0.2)

    def __enter__(self) -> GpuSampler:
        if self.gpu is not None and shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self, t0: float | None, t1: float | None, baseline: float | None) -> dict:
        """Mean and max utilisation within [t0, t1] (all samples when none fall there), and the
        peak memory above ``baseline``."""
        inside = [s for s in self.samples if t0 is not None and t1 is not None and t0 <= s[0] <= t1]
        samples = inside or self.samples
        if not samples:
            return {"util_mean": None, "util_max": None, "smi_peak_mb": None, "smi_samples": 0}
        utils = [s[1] for s in samples]
        peak = max(s[2] for s in self.samples) - (baseline or 0.0)
        return {
            "util_mean": sum(utils) / len(utils),
            "util_max": max(utils),
            "smi_peak_mb": max(peak, 0.0),
            "smi_samples": len(samples),
        }


# -- the parent: every way in its own process ---------------------------------------------------


def kill_group(proc: subprocess.Popen) -> None:
    """End the way's process and the worker processes it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def finished_models(store: Path) -> int:
    """Models (teacher and students) whose record is in ``store``; M0, drawn not trained, left out."""
    n = 0
    for path in store.glob("*/record.json"):
        if path.parent.name.startswith("."):  # a write in progress
            continue
        try:
            n += json.loads(path.read_text()).get("run_id") != "m0"
        except (OSError, ValueError):
            continue
    return n


def partial(store: Path, t0_path: Path) -> dict:
    """What a way that ran past its time finished: models, seconds since training began, models/h."""
    try:
        t0 = float(t0_path.read_text())
    except (OSError, ValueError):
        return {}
    seconds = time.time() - t0
    n = finished_models(store)
    return {"trained": n, "seconds": seconds, "models_per_hour": n / seconds * 3600 if seconds > 0 else 0.0}


def run_way(grid: str, way: str, source: str, overrides: list[str], args, gpu: str | None, env: dict) -> dict:
    """One way in its own process, sampled by nvidia-smi from here. A way past ``--timeout`` is
    stopped and reported with the models it finished by then (``partial``)."""
    scratch = Path(tempfile.mkdtemp(prefix="kdaudit-bench-"))
    store, t0_path = scratch / "jobs", scratch / "t0"
    payload = json.dumps(
        {
            "source": source,
            "overrides": overrides + way_overrides(way, args),
            "store": str(store),
            "t0_path": str(t0_path),
        }
    )
    fd, result_path = tempfile.mkstemp(prefix="kdaudit-bench-", suffix=".json")
    os.close(fd)
    idle = [s for s in (smi(gpu) for _ in range(3)) if s is not None] if gpu is not None else []
    baseline = min(s[1] for s in idle) if idle else None
    cmd = [sys.executable, __file__, "--child", payload, "--child-result", result_path]
    start = time.time()
    with GpuSampler(gpu) as sampler:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        try:
            _, err = proc.communicate(timeout=args.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            kill_group(proc)
            _, err = proc.communicate()
            timed_out = True
        kill_group(proc)  # worker processes left behind by a failed way
    try:
        r = json.loads(Path(result_path).read_text() or "{}")
    except (OSError, ValueError):
        r = {}
    finally:
        Path(result_path).unlink(missing_ok=True)
    if timed_out:
        r = {"error": f"timed out after {args.timeout:.0f} s", "partial": partial(store, t0_path)}
    elif not r:
        r = {"error": f"exit code {proc.returncode}: {last_line(err)}"}
    shutil.rmtree(scratch, ignore_errors=True)
    r["process_seconds"] = time.time() - start
    r["timed_out"] = timed_out
    r["idle_mb"] = baseline
    r.update(sampler.summary(r.get("t0"), r.get("t1"), baseline))
    return r


def fmt(value, spec: str, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}{spec}}"


def grid_table(grid: str, results: dict[str, dict]) -> dict:
    """Print one grid's table; the grid's summary (speed-up, best way)."""
    seq = results.get("sequential", {})
    seq_mph = seq.get("models_per_hour")
    print(
        f"{'way':12} {'wall s':>8} {'models':>7} {'models/h':>9} {'× seq':>6} {'util %':>7} {'max %':>6} "
        f"{'GPU MB':>8} {'torch MB':>9}"
    )
    for way, r in results.items():
        if "error" in r:
            got = r.get("partial") or {}
            done = (
                f"; by then {got['trained']} models in {got['seconds']:.1f} s, {got['models_per_hour']:.0f} models/h"
                if got.get("trained")
                else ""
            )
            print(f"{way:12} failed: {r['error']}{done}")
            continue
        r["x_sequential"] = r["models_per_hour"] / seq_mph if seq_mph else None
        print(
            f"{way:12} {r['seconds']:8.1f} {r['trained']:7d} {r['models_per_hour']:9.0f} "
            f"{fmt(r['x_sequential'], '.2f', 6)} {fmt(r['util_mean'], '.0f', 7)} {fmt(r['util_max'], '.0f', 6)} "
            f"{fmt(r['smi_peak_mb'], '.0f', 8)} {fmt(r['torch_max_allocated_mb'], '.0f', 9)}"
        )
    for way, r in results.items():
        if "error" not in r:
            print(f"  {way}: {r['where'] or '(where: not stated)'}")
    ens = results.get("ensemble", {})
    speedup = ens["models_per_hour"] / seq_mph if seq_mph and "error" not in ens and ens else None
    ok = {w: r for w, r in results.items() if "error" not in r and r["trained"]}
    best = max(ok, key=lambda w: ok[w]["models_per_hour"]) if ok else None
    cut = {w: r["partial"] for w, r in results.items() if (r.get("partial") or {}).get("trained")}
    best_cut = max(cut, key=lambda w: cut[w]["models_per_hour"]) if cut else None
    return {
        "ensemble_speedup": speedup,
        "best_way": best,
        "best_models_per_hour": ok[best]["models_per_hour"] if best else None,
        # ways stopped at --timeout: the models they finished by then, per hour
        "best_partial_way": best_cut,
        "best_partial_models_per_hour": cut[best_cut]["models_per_hour"] if best_cut else None,
    }


def environment(gpu: str | None, results: dict) -> dict:
    import torch

    name = None
    if gpu is not None and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "-i", gpu, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if out.stdout.strip():
                gpu_name, _, driver = out.stdout.strip().splitlines()[0].partition(",")
                name = f"{gpu_name.strip()} (driver {driver.strip()})" if driver.strip() else gpu_name.strip()
        except (subprocess.SubprocessError, OSError):
            pass
    if name is None:  # from a way that used CUDA in its own process
        name = next((r["device_name"] for g in results.values() for r in g.values() if r.get("device_name")), None)
    return {
        "gpu": name or ("none (--force-cpu)" if gpu is None else "unknown"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def child_env(args) -> tuple[str | None, dict]:
    """The GPU the ways use (as nvidia-smi's ``-i`` names it) and the environment of the ways:
    only that GPU visible, numbered as nvidia-smi numbers it."""
    env = dict(os.environ)
    if args.force_cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
        return None, env
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    gpu = args.gpu or (visible.split(",")[0].strip() if visible else "0")
    env["CUDA_VISIBLE_DEVICES"] = gpu
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return gpu, env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default="default,cifar", help="comma-separated: default, cifar")
    ap.add_argument("--ways", default=None, help="comma-separated (default: sequential,ensemble,jobs2,jobs4 / …,jobs2)")
    ap.add_argument("--setup", default="fashion-mnist-mlp", help="the default grid's setup (name or YAML)")
    ap.add_argument("--cifar-epochs", type=int, default=2)
    ap.add_argument("--cifar-seeds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per way; a way past it is reported")
    ap.add_argument(
        "--gpu", default=None, help="the GPU to use, as nvidia-smi -i names it (default: the first visible)"
    )
    ap.add_argument("--ensemble", default=None, help="execution.ensemble of the ensemble way (default auto; 8 on CPU)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra spec override of both grids (a way's own execution settings win)",
    )
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--tiny", action="store_true", help="smoke test: 2 seeds, 1 epoch, 1k/2k samples, cifar 1 α")
    ap.add_argument("--force-cpu", action="store_true", help="run on the CPU (to test this script)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bad_grids = [g for g in args.grids.split(",") if g.strip() and g.strip() not in GRID_WAYS]
    if bad_grids:
        ap.error(f"--grids: unknown {', '.join(bad_grids)} (default, cifar)")
    bad_ways = [w for w in (args.ways or "").split(",") if w and not re.fullmatch(r"sequential|ensemble|jobs\d+", w)]
    if bad_ways:
        ap.error(f"--ways: unknown {', '.join(bad_ways)} (sequential, ensemble, jobsN)")
    if args.ensemble is None:  # auto is off on the CPU: a number runs the vectorised path there too
        args.ensemble = "8" if args.force_cpu else "auto"
    return args


def run_grids(args, gpu: str | None, env: dict, workdir: Path) -> dict[str, dict[str, dict]]:
    results: dict[str, dict[str, dict]] = {}
    for grid in [g.strip() for g in args.grids.split(",") if g.strip()]:
        if grid == "cifar":
            t = time.time()
            write_cifar(workdir, args.tiny)
            print(f"cifar: wrote the synthetic dataset in {time.time() - t:.1f} s", flush=True)
        source, overrides = grid_source(grid, args, workdir)
        ways = args.ways.split(",") if args.ways else GRID_WAYS[grid]
        results[grid] = {}
        for way in ways:
            print(f"{grid} / {way}: running …", flush=True)
            r = run_way(grid, way, source, overrides, args, gpu, env)
            if "error" not in r:
                r["models_per_hour"] = r["trained"] / r["seconds"] * 3600 if r["seconds"] > 0 else 0.0
                print(f"{grid} / {way}: {r['trained']} models in {r['seconds']:.1f} s", flush=True)
            else:
                print(f"{grid} / {way}: failed: {r['error']}", flush=True)
            results[grid][way] = r
    return results


def report(args, results: dict[str, dict[str, dict]], gpu: str | None) -> dict:
    env_info = environment(gpu, results)
    summaries = {}
    for grid, ways in results.items():
        models = next((r["models"] for r in ways.values() if "models" in r), None)
        print(f"\n{grid} grid: {models if models is not None else '?'} models" + (" (--tiny)" if args.tiny else ""))
        summaries[grid] = grid_table(grid, ways)
    print(f"\nGPU: {env_info['gpu']}; torch {env_info['torch']}, CUDA {env_info['cuda'] or 'none'}")
    for grid, s in summaries.items():
        x = s["ensemble_speedup"]
        print(f"{grid}: ensemble speed-up over sequential: " + (f"{x:.1f}×" if x is not None else "n/a"))
        if grid == "cifar":
            best = s["best_models_per_hour"]
            print(f"{grid}: models per hour (best way): " + (f"{best:.0f} ({s['best_way']})" if best else "n/a"))
            if s["best_partial_models_per_hour"]:
                print(
                    f"{grid}: models per hour of the ways stopped at --timeout, from the models they finished: "
                    f"{s['best_partial_models_per_hour']:.0f} ({s['best_partial_way']})"
                )
    return {
        "env": env_info,
        "args": {k: v for k, v in vars(args).items() if not k.startswith("child")},
        "grids": {g: {"ways": results[g], **summaries[g]} for g in results},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.child_result)
    import torch

    if not args.force_cpu and not torch.cuda.is_available():
        print(
            f"bench_gpu: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}), "
            "so nothing was measured; run `python benchmarks/bench_gpu.py` on a machine with an NVIDIA GPU "
            "(or --force-cpu --tiny to test this script on the CPU)"
        )
        return 0
    gpu, env = child_env(args)
    with tempfile.TemporaryDirectory(prefix="kdaudit-bench-gpu-") as tmp:
        results = run_grids(args, gpu, env, Path(tmp))
    out = report(args, results, gpu)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    every = [r for ways in results.values() for r in ways.values()]
    return 1 if every and all("error" in r for r in every) else 0


if __name__ == "__main__":
    sys.exit(main())
