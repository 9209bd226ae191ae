"""Training throughput of a whole audit grid, several ways, measured in one run.

0. ``plain``: the loop a competent user writes for a KD experiment: tensors in memory, a
   ``DataLoader`` over a ``TensorDataset``, the teacher's forward pass in every KD step, no
   per-epoch evaluation, torch's default threads, one model after another.
1. ``authors``: the style common in distillation research code — a ``Dataset`` returning one
   sample at a time, a ``DataLoader``, the teacher's forward pass at every student step, fp32,
   and an evaluation on the test set after every epoch.
2. ``fp32``: kdaudit as ``kdaudit run`` trains (the default executor: one single-threaded worker
   process per core, each job on the fast path: preloaded tensors batched by index, teacher logits
   computed once per teacher, RCD tables drawn once, one evaluation at the end), fp32.
3. ``fp32-1p``: the same in one process (``execution.workers=1``, all cores as torch threads):
   what the fast path gives without the worker processes.
4. ``bf16``: as ``fp32``, with bf16 autocast and channels_last.

Each way runs in its own process (so peak memory is its own) on the same grid: with ``--grid four``
(the default) the teacher plus ``seeds`` × {siddo, kd, rcd-uniform, rcd-gaussian × α} students of
the chosen setup, with ``--grid default`` the setup's whole grid (every condition). Printed: wall
time, training samples/s, the ratios to ``plain`` (else ``authors``), the achieved training FLOP/s (FLOPs of one
training step counted with ``torch.utils.flop_counter``) as a fraction of a 2048² matmul peak this
script measures, and the peak memory of the whole run (worker processes included).

    python benchmarks/bench_training.py [--setup fashion-mnist-mlp] [--seeds 10] [--epochs 8]
        [--ways plain,authors,fp32-1p,fp32,bf16] [--grid four|default]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


class PeakMemory:
    """Peak memory of this process and all its descendants (worker processes included), sampled
    every 0.1 s: the sum of their proportional set sizes (PSS: pages shared between processes,
    such as a dataset in shared memory, are split among them, not counted twice). Without
    /proc, the peak RSS of this process."""

    def __init__(self) -> None:
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree(root: int) -> list[int]:
        import os

        parent = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as fh:
                        parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        found, frontier = {root}, {root}
        while frontier:
            frontier = {p for p, pp in parent.items() if pp in frontier} - found
            found |= frontier
        return sorted(found)

    @staticmethod
    def _pss_mb(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def _run(self) -> None:
        import os

        while not self._stop.wait(0.1):
            self.peak = max(self.peak, sum(self._pss_mb(p) for p in self._tree(os.getpid())))

    def __enter__(self) -> PeakMemory:
        import os

        if os.path.exists("/proc/self/smaps_rollup"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self.peak:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak(dtype_name: str, threads: int, n: int = 2048, repeat: int = 5) -> float:
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AMX-bf16 or AVX512-bf16)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def step_flops(spec) -> float:
    """FLOPs of one training step (forward + backward) on one batch, counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from kdaudit.execute.runner import load_data
    from kdaudit.execute.train import make_model
    from kdaudit.plan import build_plan

    plan = build_plan(spec)
    data = load_data(spec)
    model = make_model(plan.teacher.params, data)
    x = data.x_train[: spec.train.batch_size]
    y = data.y_train[: spec.train.batch_size]
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / len(x)


def authors_style(spec) -> dict:
    """The grid trained the way typical research code does it."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from kdaudit.execute.runner import load_data
    from kdaudit.execute.train import init_weights, make_model, noise_table
    from kdaudit.objectives import distillation_loss
    from kdaudit.plan import build_plan

    class PerSample(Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], self.y[i], i

    plan = build_plan(spec)
    data = load_data(spec)
    m0 = init_weights(plan.init.params, data)
    ds = PerSample(data.x_train, data.y_train)
    teacher = None
    samples = 0
    for job in plan.trained:
        p = job.params
        torch.manual_seed(job.seed)
        model = make_model(p, data)
        model.load_state_dict(m0)
        opt = torch.optim.SGD(model.parameters(), lr=p["train"]["lr"], momentum=p["train"]["momentum"])
        loader = DataLoader(
            ds, batch_size=p["train"]["batch_size"], shuffle=True, generator=torch.Generator().manual_seed(job.seed)
        )
        noise = None
        if job.condition.startswith("rcd-"):
            noise = noise_table(job.condition, job.seed, len(ds), data.num_classes)
        for _ in range(p["train"]["epochs"]):
            model.train()
            for x, y, idx in loader:
                out = model(x)
                target = None
                if job.condition == "kd":
                    with torch.no_grad():
                        target = teacher(x)
                elif noise is not None:
                    target = noise[idx]
                loss = distillation_loss(out, y, target, alpha=job.alpha, temperature=p.get("temperature", 1.0))
                opt.zero_grad()
                loss.backward()
                opt.step()
                samples += len(y)
            model.eval()
            with torch.no_grad():
                correct = 0
                for i in range(0, len(data.x_test), 256):
                    correct += (model(data.x_test[i : i + 256]).argmax(1) == data.y_test[i : i + 256]).sum().item()
        if job.kind == "teacher":
            teacher = model.eval()
    return {"samples": samples}


def plain_loop(spec) -> dict:
    """The grid trained by the loop a competent user writes for a KD experiment: tensors in
    memory, a ``DataLoader`` over a ``TensorDataset``, the teacher's forward pass in every KD step,
    no per-epoch evaluation, torch's default threads, one model after another in one process."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from kdaudit.execute.runner import load_data
    from kdaudit.execute.train import (
        init_weights,
        label_smoothing_table,
        make_model,
        noise_table,
        teacher_top_probability,
    )
    from kdaudit.objectives import distillation_loss
    from kdaudit.plan import build_plan

    plan = build_plan(spec)
    data = load_data(spec)
    m0 = init_weights(plan.init.params, data)
    ds = TensorDataset(data.x_train, data.y_train, torch.arange(len(data.y_train)))
    teacher, ls_table = None, None
    samples = 0
    for job in plan.trained:
        p = job.params
        temperature = float(p.get("temperature", 1.0))
        torch.manual_seed(job.seed)
        model = make_model(p, data)
        model.load_state_dict(m0)
        opt = torch.optim.SGD(
            model.parameters(),
            lr=p["train"]["lr"],
            momentum=p["train"]["momentum"],
            weight_decay=p["train"]["weight_decay"],
        )
        loader = DataLoader(
            ds, batch_size=p["train"]["batch_size"], shuffle=True, generator=torch.Generator().manual_seed(job.seed)
        )
        table = None
        if job.condition.startswith("rcd-"):
            table = noise_table(job.condition, job.seed, len(ds), data.num_classes)
        elif job.condition == "ls":
            if ls_table is None:
                with torch.no_grad():
                    a = teacher_top_probability(teacher(data.x_train).numpy(), temperature)
                ls_table = label_smoothing_table(data.y_train, data.num_classes, a, temperature)
            table = ls_table
        model.train()
        for _ in range(p["train"]["epochs"]):
            for x, y, idx in loader:
                out = model(x)
                target = None
                if job.condition == "kd":
                    with torch.no_grad():
                        target = teacher(x)
                elif table is not None:
                    target = table[idx]
                loss = distillation_loss(out, y, target, alpha=job.alpha, temperature=temperature)
                opt.zero_grad()
                loss.backward()
                opt.step()
                samples += len(y)
        model.eval()
        with torch.no_grad():
            model(data.x_test)  # the one evaluation at the end
        if job.kind == "teacher":
            teacher = model
    return {"samples": samples}


def kdaudit_way(spec) -> dict:
    from kdaudit.audit import execute
    from kdaudit.execute.runner import load_data
    from kdaudit.plan import build_plan
    from kdaudit.store import JobStore

    plan = build_plan(spec)
    data = load_data(spec)
    with tempfile.TemporaryDirectory() as tmp:
        stats = execute(spec, plan, JobStore(tmp), data)  # the executor `kdaudit run` would use
    n = len(data.x_train) * spec.train.epochs * len(plan.trained)
    return {"samples": n, "where": stats.where}


def run_way(way: str, args) -> dict:
    import torch

    from kdaudit.config.loader import resolve_spec

    # the grid of the measured rows: the four conditions the baseline loop implements
    overrides = [f"protocol.seeds={args.seeds}", f"train.epochs={args.epochs}"]
    if args.grid == "four":  # the four conditions the authors-style loop implements
        overrides += ["protocol.conditions=[siddo,kd,rcd-uniform,rcd-gaussian]", "protocol.rcd_noise=per_seed"]
    if args.workers:
        overrides.append(f"execution.workers={args.workers}")
    if way == "bf16":
        overrides += ["train.precision=bf16", "train.channels_last=true"]
    if way == "fp32-1p":
        overrides.append("execution.workers=1")
    spec = resolve_spec(args.setup, overrides)
    torch.set_num_threads(args.threads)
    from kdaudit.execute.runner import load_data

    load_data(spec)  # data loading is not part of the timing
    with PeakMemory() as memory:
        start = time.perf_counter()
        out = {"authors": authors_style, "plain": plain_loop}.get(way, kdaudit_way)(spec)
        out["seconds"] = time.perf_counter() - start
    out["models"] = spec.n_models()
    out["flops_per_sample"] = step_flops(spec)  # forward + backward of one sample
    out["peak_mb"] = memory.peak
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", default="fashion-mnist-mlp")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the authors-style loop and of the peak")
    ap.add_argument("--workers", type=int, default=None, help="kdaudit's worker processes (default: as kdaudit run)")
    ap.add_argument("--ways", default="authors,fp32-1p,fp32,bf16")
    ap.add_argument(
        "--grid",
        choices=["default", "four"],
        default="four",
        help="the setup's whole grid, or the four conditions the authors-style loop implements",
    )
    ap.add_argument("--force-bf16", action="store_true", help="run the bf16 way even without native bf16")
    ap.add_argument("--way", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.way == "peak":
        # bf16 without native support falls back to a slow kernel: measure it on a smaller matrix
        print(
            json.dumps(
                {
                    "fp32": matmul_peak("fp32", args.threads),
                    "bf16": matmul_peak("bf16", args.threads, n=2048 if native_bf16() else 512, repeat=2),
                }
            )
        )
        return
    if args.way:
        print(json.dumps(run_way(args.way, args)))
        return

    def child(way: str) -> dict:
        # every measurement in its own process: own peak memory, and no idle torch threads of
        # this process competing with it
        cmd = [
            sys.executable,
            __file__,
            "--way",
            way,
            "--setup",
            args.setup,
            "--seeds",
            str(args.seeds),
            "--epochs",
            str(args.epochs),
            "--threads",
            str(args.threads),
            "--grid",
            args.grid,
        ]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    peaks = child("peak")
    results = {}
    ways = args.ways.split(",")
    if "bf16" in ways and not native_bf16() and not args.force_bf16:
        ways.remove("bf16")
        print(
            f"bf16: skipped — this CPU has no AMX-bf16 / AVX512-bf16 (a bf16 matmul runs at "
            f"{peaks['bf16'] / 1e9:.1f} GFLOP/s here vs {peaks['fp32'] / 1e9:.0f} fp32); --force-bf16 runs it anyway"
        )
    for way in ways:
        results[way] = child(way)
    # the ratios are to the first baseline measured: the plain loop, else the authors-style loop
    base_way = next((w for w in ("plain", "authors") if w in results), None)
    base = results.get(base_way) if base_way else None
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}")
    print(
        f"setup {args.setup}: {next(iter(results.values()))['models']} models, {args.epochs} epochs, "
        f"{args.threads} threads"
    )
    print(
        f"matmul peak (2048², {args.threads} threads): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s"
    )
    print(f"{'way':8} {'wall s':>8} {'samples/s':>10} {'× ' + (base_way or 'base'):>10} {'GFLOP/s':>8} {'% peak':>7} {'peak MB':>8}")
    for way, r in results.items():
        if "where" in r:
            print(f"{way}: trained {r['where']}")
    for way, r in results.items():
        sps = r["samples"] / r["seconds"]
        flops = sps * r["flops_per_sample"]
        peak = peaks["bf16" if way == "bf16" else "fp32"]
        ratio = (base["seconds"] / r["seconds"]) if base else float("nan")
        print(
            f"{way:8} {r['seconds']:8.1f} {sps:10.0f} {ratio:10.2f} {flops / 1e9:8.1f} "
            f"{100 * flops / peak:6.1f}% {r['peak_mb']:8.0f}"
        )


if __name__ == "__main__":
    main()
