import copy, time, sys
import numpy as np, torch
from torch import nn
from torch.func import functional_call, vmap
sys.path.insert(0, "tests")
from kdaudit.data.base import load_dataset
from kdaudit.execute.train import init_weights, train_model, noise_table
from kdaudit.execute.ensemble import Member, train_ensemble
dev = torch.device("cuda")
print(torch.__version__, torch.cuda.get_device_name())
torch.manual_seed(0)
for m in [nn.Linear(64, 16), nn.Conv2d(3, 8, 3)]:
    m = m.to(dev); base = copy.deepcopy(m).to("meta")
    P = {n: p.detach().unsqueeze(0).repeat(2, *[1]*p.dim()) for n, p in m.named_parameters()}
    x = (torch.randn(2, 5, 64) if isinstance(m, nn.Linear) else torch.randn(2, 5, 3, 8, 8)).to(dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = vmap(lambda p, x: functional_call(base, p, (x,)))(P, x); seq = m(x[0])
    print("autocast", type(m).__name__, out.dtype, seq.dtype, (out[0].float()-seq.float()).abs().max().item())
def job(model, seed, alpha=0.0, **tr):
    t = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="constant", step_epochs=[], step_gamma=0.1, warmup_epochs=0, grad_clip=None, epochs=3, batch_size=64, precision="fp32")
    t.update(tr)
    return {"model": model, "train": t, "seed": seed, "alpha": alpha, "temperature": 2.0, "kd_loss": "ce", "t2_scaling": False}
def members(model, k, n, **tr):
    out = []
    for i in range(k):
        kind = ["siddo", "kd", "rcd-uniform", "rcd-gaussian"][i % 4]
        seed = 1 + i // 4
        z = None if kind == "siddo" else (noise_table(kind, seed, n, 10) if kind.startswith("rcd") else torch.randn(n, 10, generator=torch.Generator().manual_seed(seed)))
        out.append(Member(job(model, seed, 0.0 if z is None else 0.5, **tr), target_logits=z, name=f"{kind}-s{seed}"))
    return out
for model, flatten in [({"name": "mlp", "kwargs": {"hidden": [256]}}, True), ({"name": "small-cnn", "kwargs": {"width": 16}}, False)]:
    data = load_dataset("digits", flatten=flatten)
    n = len(data.x_train)
    m0 = init_weights({"model": model, "init_seed": 0}, data)
    for prec in ["fp32", "bf16"]:
        ms = members(model, 4, n, precision=prec)
        res = train_ensemble(ms, data, m0, device=dev)
        for m, r in zip(ms, res):
            s = train_model(m.params, data, m0, target_logits=m.target_logits, device=dev)
            d = max(float((r.state[k].double()-s.state[k].double()).abs().max()) for k in s.state)
            print(model["name"], prec, m.name, "state", f"{d:.2e}", "logits", f"{np.abs(r.test_logits-s.test_logits).max():.2e}", "hist", f"{max(abs(a['train_loss']-b['train_loss']) for a, b in zip(r.history, s.history)):.2e}")
    for k in (8, 32, 128):
        ms = members(model, k, n)
        torch.cuda.synchronize(); t0 = time.perf_counter()
        train_ensemble(ms, data, m0, device=dev)
        torch.cuda.synchronize(); te = time.perf_counter() - t0
        t0 = time.perf_counter()
        for m in ms[:4]:
            train_model(m.params, data, m0, target_logits=m.target_logits, device=dev)
        torch.cuda.synchronize(); ts = (time.perf_counter() - t0) / 4 * k
        print(model["name"], f"K={k} ensemble {te:.2f}s  sequential (est.) {ts:.2f}s  x{ts/te:.1f}", flush=True)
