"""Side by side with the official VAR code: training step and sampling, same config, same weights, same outputs.

    python benchmarks/bench_vs_official.py --official /path/to/VAR
    python benchmarks/bench_vs_official.py --official /path/to/VAR --device cuda --dtype bf16 --depth 16 \
        --batch 64 --sample-batch 64 --vae-ch 160

The official checkout is the repository github.com/FoundationVision/VAR (the golden vectors were made at commit
78b95394fc5896192e3a003e4b295f8ea743c48f): `git clone` it and `git checkout` that commit; nothing of it is copied
here. Each code base runs in its own worker process (both packages are called `models`); the parent writes one
set of random weights and inputs, both workers load them, and the parent then alternates the arms A B A B ...
so that load from other jobs hits both alike. Before timing, the outputs are compared: teacher-forced logits to
float tolerance, the losses of the first training steps, and the sampled token ids exactly. A mismatch stops
the run (exit 1) unless --no-check-exit is given. Each worker's peak resident memory is printed at the end.

`--profile` (CPU) adds where the time goes: three profiled training steps and sampling calls per arm give the
FLOPs of the matrix products (linear layers, batched attention products, convolutions) and the time in fused
attention kernels; at the rate a plain matmul reaches on the machine, those set a floor under each arm's time,
and the official median over ours' floor is the most that any work on the rest could give ours.

Default config (fits a 2-core CPU): depth 6 (width 384, 6 heads, the release's width rule), the release's 10
scales at 256 px, a small VQVAE (ch 32, vocab 4096, Cvae 32). Training step = forward, cross-entropy, backward,
grad clip 2.0, AdamW (ours fused on CUDA only, as varscale's trainer); sampling = `autoregressive_infer_cfg`
(cfg 1.5, top-k 900, top-p 0.96, decode included).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------- worker side
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# kernels whose time is matrix products: their FLOPs are counted by torch.profiler (with_flops)
PRODUCT_KERNELS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
                   "aten::_slow_conv2d_forward")
# fused attention kernels: products and softmax in one, FLOPs not counted
FUSED_ATTENTION_KERNELS = ("aten::_scaled_dot_product_flash_attention_for_cpu",
                           "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def _timed(fn, iters: int, device: torch.device) -> list[float]:
    seconds = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _profile_split(fn, device: torch.device, calls: int = 3) -> dict:
    """`calls` calls of `fn`, each under its own torch.profiler: the products' FLOPs per call, and the least time
    per call (over the calls) in matrix-product kernels, in fused-attention kernels and in each kernel (self time in
    the calling thread, with its call count). The least, because on a shared machine the memory-bound kernels of
    one call can take four times as long as those of the next."""
    from torch.profiler import ProfilerActivity, profile

    runs = []
    for _ in range(calls):
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            fn()
            _sync(device)
        runs.append({e.key: (e.self_cpu_time_total / 1e6, e.count, e.flops) for e in prof.key_averages()})
    kernels = {key: (min(run.get(key, (0.0, 0, 0))[0] for run in runs), runs[0][key][1])
               for key in runs[0] if runs[0][key][0]}
    return {"products_s": min(sum(run[k][0] for k in run if k in PRODUCT_KERNELS) for run in runs),
            "attention_s": min(sum(run[k][0] for k in run if k in FUSED_ATTENTION_KERNELS) for run in runs),
            "gflop": sum(flops for _, _, flops in runs[0].values()) / 1e9, "kernels": kernels}


def _matmul_rate(device: torch.device, width: int, tokens: int) -> float:
    """GFLOP/s of a plain MLP-sized fp32 product (tokens x width x 4 width), best of 6: what the products can reach."""
    x, w = torch.randn(tokens, width, device=device), torch.randn(4 * width, width, device=device)
    best = float("inf")
    for _ in range(6):
        _sync(device)
        start = time.perf_counter()
        torch.nn.functional.linear(x, w)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * tokens * width * 4 * width / best / 1e9


def _build_official(cfg: dict, device: torch.device):
    from models import VAR, VQVAE  # the official package: the worker put its checkout first on sys.path
    import models.var as official_var_module

    vae = VQVAE(vocab_size=cfg["vocab"], z_channels=cfg["cvae"], ch=cfg["vae_ch"], test_mode=True,
                share_quant_resi=4, v_patch_nums=PATCH_NUMS).to(device)
    depth = cfg["depth"]
    var = VAR(vae_local=vae, num_classes=cfg["num_classes"], depth=depth, embed_dim=64 * depth, num_heads=depth,
              drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1 * depth / 24, norm_eps=1e-6, shared_aln=False,
              cond_drop_rate=0.1, attn_l2_norm=True, patch_nums=PATCH_NUMS).to(device)
    recorded: list[torch.Tensor] = []
    original = official_var_module.sample_with_top_k_top_p_

    def recording_sampler(*args, **kwargs):  # a pass-through that keeps the ids the official loop drew
        ids = original(*args, **kwargs)
        recorded.append(ids[:, :, 0].clone())
        return ids

    official_var_module.sample_with_top_k_top_p_ = recording_sampler

    def sample_ids(B, labels, seed):
        recorded.clear()
        img = var.autoregressive_infer_cfg(B, labels, g_seed=seed, cfg=1.5, top_k=900, top_p=0.96)
        return torch.cat(recorded, 1), img

    return vae, var, sample_ids


def _build_ours(cfg: dict, device: torch.device):
    from models import VAR, VQVAE

    vae = VQVAE(vocab_size=cfg["vocab"], z_channels=cfg["cvae"], ch=cfg["vae_ch"], test_mode=True,
                share_quant_resi=4, v_patch_nums=PATCH_NUMS).to(device)
    depth = cfg["depth"]
    var = VAR(vae_local=vae, num_classes=cfg["num_classes"], depth=depth, embed_dim=64 * depth, num_heads=depth,
              drop_path_rate=0.1 * depth / 24, cond_drop_rate=0.1, attn_l2_norm=True, patch_nums=PATCH_NUMS).to(device)
    if cfg["compile_sampling"]:
        var.compile_sampling_step()

    def sample_ids(B, labels, seed):
        out = var.sample_scales(B, labels, g_seed=seed, cfg=1.5, top_k=900, top_p=0.96)
        return torch.cat(out["idx_Bl"], 1), vae.fhat_to_img(out["f_hat"]).add_(1).mul_(0.5)

    return vae, var, sample_ids


def worker(arm: str, cfg: dict) -> None:
    replies = os.fdopen(os.dup(1), "w")  # the protocol channel; anything else printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if arm == "official":
        sys.path.insert(0, cfg["official"])
    else:
        sys.path.insert(0, str(HERE.parent))
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    vae, var, sample_ids = (_build_official if arm == "official" else _build_ours)(cfg, device)
    work = Path(cfg["work"])
    weights = torch.load(work / "weights.pt", map_location=device)
    vae.load_state_dict(weights["vae"], strict=True)
    var.load_state_dict(weights["var"], strict=True)
    inputs = torch.load(work / "inputs.pt", map_location=device)
    with torch.no_grad():
        idx_list = list(inputs["ids_BL"].split([pn * pn for pn in PATCH_NUMS], dim=1))
        x_BLCv = vae.quantize.idxBl_to_var_input(idx_list)
    ids_BL, labels = inputs["ids_BL"], inputs["labels"]
    sample_labels = inputs["sample_labels"]
    amp = dict(device_type=device.type, dtype=DTYPES[cfg["dtype"]], enabled=cfg["dtype"] != "fp32")
    optimizer = torch.optim.AdamW(var.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                                  fused=cfg["fused_adamw"] if arm == "ours" else None)
    def forward_loss(labels, x_BLCv, ids_BL):
        with torch.autocast(**amp):
            logits_BLV = var(labels, x_BLCv)
        return torch.nn.functional.cross_entropy(logits_BLV.float().view(-1, var.V), ids_BL.view(-1))

    if arm == "ours" and cfg["compile_train"]:  # as harness/training/step.py: model and loss in one graph
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True  # the eager random numbers
        forward_loss = torch.compile(forward_loss)

    def train_step() -> float:
        var.train()
        loss = forward_loss(labels, x_BLCv, ids_BL)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        var.eval()
        with torch.autocast(**amp), torch.no_grad():
            return sample_ids(cfg["sample_batch"], sample_labels, cfg["seed"])

    for line in sys.stdin:
        op = json.loads(line)
        if op["op"] == "check":
            var.eval()
            rate, var.cond_drop_rate = var.cond_drop_rate, 0.0
            with torch.no_grad(), torch.autocast(**amp):
                logits = var(labels, x_BLCv).float()
            var.cond_drop_rate = rate
            ids, img = sample()
            torch.manual_seed(0)
            losses = [train_step() for _ in range(op["train_steps"])]
            var.load_state_dict(weights["var"], strict=True)  # timing starts from the shared weights again
            optimizer.state.clear()
            buffer = io.BytesIO()
            torch.save({"x_BLCv": x_BLCv.cpu(), "logits": logits.cpu(), "ids": ids.cpu(), "img": img.float().cpu(),
                        "losses": losses}, buffer)
            (work / f"check_{arm}.pt").write_bytes(buffer.getvalue())  # scratch file in the run's temp dir
            reply = {"ok": True}
        elif op["op"] in ("train", "sample"):
            reply = {"seconds": _timed(train_step if op["op"] == "train" else sample, op["iters"], device)}
        elif op["op"] == "profile":
            reply = {"train": _profile_split(train_step, device), "sample": _profile_split(sample, device),
                     "matmul_gflops": _matmul_rate(device, cfg["depth"] * 64, cfg["batch"] * var.L)}
        else:
            break
        reply["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


# ---------------------------------------------------------------------------------------------- parent side
class Arm:
    def __init__(self, name: str, cfg: dict):
        self.name = name
        env = dict(os.environ, PYTHONPATH="")  # each worker puts its own code base first on sys.path
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", name, "--worker-config", json.dumps(cfg)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def call(self, **op) -> dict:
        self.proc.stdin.write(json.dumps(op) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.name} worker stopped (exit code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
        self.proc.stdin.close()
        self.proc.wait()


def write_shared_files(cfg: dict, work: Path) -> None:
    """Random weights (every weight matters: no near-zero AdaLN gammas) and inputs, loaded by both workers."""
    sys.path.insert(0, str(HERE.parent))
    from models import VAR, VQVAE
    from models.files import atomic_write_bytes

    gen = torch.Generator().manual_seed(cfg["seed"])
    vae = VQVAE(vocab_size=cfg["vocab"], z_channels=cfg["cvae"], ch=cfg["vae_ch"], share_quant_resi=4,
                v_patch_nums=PATCH_NUMS)
    depth = cfg["depth"]
    var = VAR(vae_local=vae, num_classes=cfg["num_classes"], depth=depth, embed_dim=64 * depth, num_heads=depth,
              drop_path_rate=0.1 * depth / 24, attn_l2_norm=True, patch_nums=PATCH_NUMS)
    with torch.no_grad():
        for module in (vae, var):
            for name, p in module.named_parameters():
                fan_in = p[0].numel() if p.ndim >= 2 else 1
                p.copy_(torch.randn(p.shape, generator=gen) * (fan_in ** -0.5 if p.ndim >= 2 else 0.1))
            for name, p in module.named_parameters():
                if "norm" in name and name.endswith("weight"):
                    p.add_(1.0)
        for block in var.blocks:
            block.attn.scale_mul_1H11.fill_(torch.tensor(4.0).log().item())
    state = {"vae": vae.state_dict(), "var": var.state_dict()}
    for name, data in (("weights.pt", state), ("inputs.pt", {
        "ids_BL": torch.randint(0, cfg["vocab"], (cfg["batch"], var.L), generator=gen),
        "labels": torch.randint(0, cfg["num_classes"], (cfg["batch"],), generator=gen),
        "sample_labels": torch.randint(0, cfg["num_classes"], (cfg["sample_batch"],), generator=gen)})):
        buffer = io.BytesIO()
        torch.save(data, buffer)
        atomic_write_bytes(work / name, buffer.getvalue())


def compare_outputs(work: Path, args) -> list[str]:
    official, ours = (torch.load(work / f"check_{arm}.pt") for arm in ("official", "ours"))
    tol = dict(atol=1e-4, rtol=1e-4) if args.dtype == "fp32" else dict(atol=5e-2, rtol=5e-2)
    lines = []

    def close(key):
        diff = (official[key] - ours[key]).abs().max().item()
        ok = torch.allclose(official[key], ours[key], **tol)
        lines.append(f"{key}: max |diff| {diff:.2e} -> {'equal' if ok else 'DIFFERENT'} (atol/rtol {tol['atol']})")
        return ok

    ok = close("x_BLCv") & close("logits") & close("img")
    same_ids = torch.equal(official["ids"], ours["ids"])
    mismatched = (official["ids"] != ours["ids"]).sum().item()
    lines.append(f"sampled ids: {'identical' if same_ids else f'DIFFERENT at {mismatched} positions'} "
                 f"({official['ids'].numel()} ids)")
    loss_diff = max(abs(a - b) for a, b in zip(official["losses"], ours["losses"]))
    lines.append(f"training losses official {official['losses']} ours {ours['losses']} (max |diff| {loss_diff:.2e})")
    ok = ok and same_ids and loss_diff <= (1e-4 if args.dtype == "fp32" else 5e-2)
    return lines if ok else lines + ["OUTPUTS DIFFER"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help="path of a checkout of github.com/FoundationVision/VAR")
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--vae-ch", type=int, default=32, help="VQVAE base channels (the release uses 160)")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=4, help="training batch")
    parser.add_argument("--sample-batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="A B alternations")
    parser.add_argument("--train-iters", type=int, default=2, help="training steps per arm per round")
    parser.add_argument("--sample-iters", type=int, default=1, help="sampling calls per arm per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile-train", action="store_true",
                        help="ours: torch.compile the training forward and loss (as varscale's train.compile)")
    parser.add_argument("--compile-sampling", action="store_true", help="ours: compile the per-scale sampling step")
    parser.add_argument("--fused-adamw", action="store_true",
                        help="ours: fused AdamW on a CPU too (varscale's trainer fuses it on CUDA only, as here)")
    parser.add_argument("--profile", action="store_true",
                        help="after the timings, 3 profiled steps and calls per arm: time in matrix products vs the "
                             "rest, and the ratio ours would reach if it spent nothing outside its products (CPU)")
    parser.add_argument("--no-check-exit", action="store_true", help="time even if the outputs differ")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.worker_config))
        return
    if args.profile and args.device != "cpu":
        parser.error("--profile splits CPU kernel times; on a GPU use the PyTorch profiler's CUDA view instead")
    if not args.official or not (Path(args.official) / "models" / "var.py").is_file():
        parser.error(f"--official {args.official!r}: expected a checkout of FoundationVision/VAR (with models/var.py)")
    with tempfile.TemporaryDirectory(prefix="bench_vs_official_") as tmp:
        cfg = {"official": str(Path(args.official).resolve()), "work": tmp, "depth": args.depth,
               "vae_ch": args.vae_ch, "vocab": args.vocab, "cvae": 32, "num_classes": args.num_classes,
               "batch": args.batch, "sample_batch": args.sample_batch, "device": args.device, "dtype": args.dtype,
               "threads": args.threads, "seed": args.seed, "compile_train": args.compile_train,
               "compile_sampling": args.compile_sampling,
               "fused_adamw": args.fused_adamw or args.device.startswith("cuda")}
        write_shared_files(cfg, Path(tmp))
        arms = {name: Arm(name, cfg) for name in ("official", "ours")}
        try:
            start = time.perf_counter()
            for arm in arms.values():  # also the warm-up (and the compilation, if any)
                arm.call(op="check", train_steps=2)
            print(f"config: {json.dumps({k: v for k, v in cfg.items() if k not in ('work', 'official')})}")
            print(f"torch {torch.__version__}; checks and warm-up {time.perf_counter() - start:.1f} s")
            lines = compare_outputs(Path(tmp), args)
            print("\n".join(lines))
            if lines[-1] == "OUTPUTS DIFFER" and not args.no_check_exit:
                raise SystemExit(1)
            times = {(name, kind): [] for name in arms for kind in ("train", "sample")}
            for arm in arms.values():
                arm.call(op="train", iters=1)
                arm.call(op="sample", iters=1)
            peak_rss = {}
            for _ in range(args.rounds):
                for kind, iters in (("train", args.train_iters), ("sample", args.sample_iters)):
                    for name, arm in arms.items():
                        reply = arm.call(op=kind, iters=iters)
                        times[(name, kind)] += reply["seconds"]
                        peak_rss[name] = reply["peak_rss_mb"]
            profiles = {name: arm.call(op="profile") for name, arm in arms.items()} if args.profile else None
        finally:
            for arm in arms.values():
                arm.close()
    for kind, batch in (("train", args.batch), ("sample", args.sample_batch)):
        rate = {name: batch / statistics.median(times[(name, kind)]) for name in arms}
        # the ratio of neighbouring measurements follows the machine's load less than the ratio of medians
        paired = sorted(a / b for a, b in zip(times[("official", kind)], times[("ours", kind)]))
        print(f"{kind:6s} images/s (median of {len(times[('ours', kind)])}): official {rate['official']:.2f}  "
              f"ours {rate['ours']:.2f}  ratio {rate['ours'] / rate['official']:.2f}x  "
              f"(paired ratios {paired[0]:.2f}..{paired[-1]:.2f}, median {statistics.median(paired):.2f}x)")
        for name in arms:
            print(f"  {name:8s} seconds: {' '.join(f'{t:.2f}' for t in times[(name, kind)])}")
    print(f"peak resident memory (MB): {'  '.join(f'{name} {mb:.0f}' for name, mb in peak_rss.items())}")
    if profiles:
        print_profiles(profiles, times)


def print_profiles(profiles: dict, times: dict) -> None:
    """Where the time goes, against the unprofiled medians: the products' FLOPs (counted by the profiler) at the
    rate a plain matmul reaches here, and the ratio ours would reach if nothing else cost time; then the largest
    kernels side by side (the least self time per profiled step or call, of 3; the profiler adds a little)."""
    rate = statistics.median(p["matmul_gflops"] for p in profiles.values())
    print(f"where the time goes (FLOPs and the least kernel times of 3 profiled steps and calls per arm; "
          f"plain fp32 matmul here: {rate:.0f} GFLOP/s):")
    for kind in ("train", "sample"):
        floors = {}
        for name, prof in profiles.items():
            p, median = prof[kind], statistics.median(times[(name, kind)])
            floors[name] = p["gflop"] / rate + p["attention_s"]
            print(f"  {kind:6s} {name:8s} {median:.2f} s: products {p['gflop']:.0f} GFLOP = {p['gflop'] / rate:.2f} s "
                  f"at that rate, fused attention {p['attention_s']:.2f} s, the rest {median - floors[name]:.2f} s")
        official = statistics.median(times[("official", kind)])
        print(f"  {kind:6s} ceiling: official {official:.2f} s / ours' products and fused attention "
              f"{floors['ours']:.2f} s = {official / floors['ours']:.2f}x if ours spent nothing on anything else")
    for kind in ("train", "sample"):
        kernels = {name: prof[kind]["kernels"] for name, prof in profiles.items()}
        keys = sorted(set().union(*kernels.values()),
                      key=lambda k: -max(kernels[name].get(k, (0, 0))[0] for name in kernels))
        print(f"  {kind} kernels (self ms, calls){'':14s}" + "".join(f"{name:>16s}" for name in kernels))
        for key in keys[:14]:
            cells = "".join(f"{kernels[name].get(key, (0, 0))[0] * 1e3:10.1f} {kernels[name].get(key, (0, 0))[1]:5d}"
                            for name in kernels)
            print(f"    {key.removeprefix('aten::')[:40]:40s}{cells}")
        totals = "".join(f"{sum(t for t, _ in kernels[name].values()) * 1e3:10.1f}      " for name in kernels)
        print(f"    {'all profiled events':40s}{totals}")


if __name__ == "__main__":
    main()
