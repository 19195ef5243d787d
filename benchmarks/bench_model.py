"""Training-step and sampling throughput of a VAR preset, with MFU from the analytic FLOP counter.

    python benchmarks/bench_model.py --model VAR-mini-d4 --batch 32
    python benchmarks/bench_model.py --model VAR-d16 --batch 64 --device cuda --dtype bf16 --peak-tflops 989

Random weights and random token inputs: the figures measure compute, not quality. MFU = analytic training FLOPs
per image x images/s / peak FLOP/s (the peak is what you pass; nothing is assumed).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from models.flops import (
    phi_flops_per_image,
    sample_flops_per_image,
    train_flops_per_image,
)
from models.registry import build, var_spec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_calls(fn, warmup: int, iters: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    seconds = time_calls(lambda: a @ a, warmup=2, iters=5, device=device)
    return round(2 * n ** 3 / seconds / 1e12, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="VAR-mini-d4")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sample-batch", type=int, default=None, help="images per sampling call (default: --batch)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="autocast dtype for the transformer")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense TFLOP/s of the device for MFU")
    parser.add_argument("--measure-peak", action="store_true",
                        help="use the measured throughput of a large matmul in --dtype as the peak (CPU runs)")
    parser.add_argument("--skip-sampling", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = var_spec(args.model)
    torch.manual_seed(0)
    vae, var = build(spec, device=device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    autocast = dict(device_type=device.type, dtype=DTYPES[args.dtype], enabled=args.dtype != "fp32")
    optimizer = torch.optim.AdamW(var.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    B = args.batch
    ids_BL = torch.randint(0, spec.tokenizer.vocab_size, (B, spec.L), device=device)
    x_BLCv = torch.randn(B, spec.L - spec.patch_nums[0] ** 2, spec.tokenizer.z_channels, device=device)
    labels = torch.randint(0, spec.num_classes, (B,), device=device)
    var.train()

    def train_step() -> None:
        with torch.autocast(**autocast):
            logits = var(labels, x_BLCv)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), ids_BL.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s = time_calls(train_step, args.warmup, args.steps, device)
    peak_source = "given" if args.peak_tflops else None
    if args.measure_peak and not args.peak_tflops:
        args.peak_tflops, peak_source = measured_matmul_tflops(device, DTYPES[args.dtype]), "measured 2048^3 matmul"
    train_flops = train_flops_per_image(spec) * B
    result = {
        "model": spec.name, "params": sum(p.numel() for p in var.parameters()), "batch": B, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": args.dtype, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "train_step_s": round(step_s, 5), "train_images_per_s": round(B / step_s, 2),
        "train_tokens_per_s": round(B * spec.L / step_s, 1), "train_tflops_per_s": round(train_flops / step_s / 1e12, 4),
        "mfu": round(train_flops / step_s / (args.peak_tflops * 1e12), 4) if args.peak_tflops else None,
        "peak_tflops": args.peak_tflops, "peak_source": peak_source,
    }
    if not args.skip_sampling:
        var.eval()
        SB = args.sample_batch or B
        sample_labels = torch.randint(0, spec.num_classes, (SB,), device=device)

        def sample_tokens() -> None:
            with torch.autocast(**autocast):
                var.sample_scales(SB, sample_labels, g_seed=0, cfg=1.5, top_k=min(900, spec.tokenizer.vocab_size),
                                  top_p=0.96)

        def sample_images() -> None:
            with torch.autocast(**autocast):
                var.autoregressive_infer_cfg(SB, sample_labels, g_seed=0, cfg=1.5,
                                             top_k=min(900, spec.tokenizer.vocab_size), top_p=0.96)

        iters = max(1, args.steps // 2)
        tok_s = time_calls(sample_tokens, 1, iters, device)
        img_s = time_calls(sample_images, 1, iters, device)
        flops = (sample_flops_per_image(spec) + phi_flops_per_image(spec.tokenizer)) * SB
        result.update({
            "sample_batch": SB, "sample_tokens_images_per_s": round(SB / tok_s, 2),
            "sample_with_decode_images_per_s": round(SB / img_s, 2),
            "sample_tflops_per_s": round(flops / tok_s / 1e12, 4),
        })
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
