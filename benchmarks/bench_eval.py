"""Evaluation throughput: Inception feature extraction (images/s) and precision/recall at 50k x 10k.

Prints measured figures (no assertions). The Inception weights are random (the real ones cannot be downloaded
here) but the network, resize and feature hooks are exactly what ``varscale eval`` runs, so the speed is the real
one. Precision/recall uses random 2048-d features of the protocol's sizes: 50,000 samples vs 10,000 reference
images; its cost is dominated by the samples' own k-NN radii (50k x 50k distances, as in ADM).

    .venv/bin/python benchmarks/bench_eval.py [--device cuda] [--images 32] [--pr-samples 50000 --pr-ref 10000]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def bench_features(device: str, images: int, batch_size: int, resolution: int) -> float:
    from harness.evaluation.inception import (
        InceptionExtractor,
        _synthetic_images,
        iter_chunks,
        write_random_inception_weights,
    )

    with tempfile.TemporaryDirectory() as tmp:
        weights = write_random_inception_weights(Path(tmp) / "w.pth")
        extractor = InceptionExtractor(weights, device=device)
    batch = _synthetic_images(images, resolution, seed=0)
    extractor.batch(batch[:min(4, images)])   # warm-up (allocations, cuDNN autotune)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    extractor.run(iter_chunks(batch, batch_size), total=images)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def bench_precision_recall(device: str, n_samples: int, n_ref: int, chunk: int) -> float:
    from harness.evaluation.precision_recall import precision_recall

    rng = np.random.default_rng(0)
    samples = rng.standard_normal((n_samples, 2048), dtype=np.float32)
    ref = rng.standard_normal((n_ref, 2048), dtype=np.float32) + 0.05
    start = time.perf_counter()
    precision_recall(samples, ref, 3, chunk, chunk, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--pr-samples", type=int, default=50_000)
    parser.add_argument("--pr-ref", type=int, default=10_000)
    parser.add_argument("--pr-chunk", type=int, default=10_000)
    parser.add_argument("--skip-pr", action="store_true")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} cpu={cpu}")
    ips = bench_features(args.device, args.images, args.batch_size, args.resolution)
    print(f"inception features: {ips:.2f} images/s ({args.images} images {args.resolution}x{args.resolution}, "
          f"batch {args.batch_size}); 50k samples + 10k reference would take {60_000 / ips / 60:.1f} min")
    if not args.skip_pr:
        seconds = bench_precision_recall(args.device, args.pr_samples, args.pr_ref, args.pr_chunk)
        print(f"precision/recall {args.pr_samples} x {args.pr_ref} (2048-d, k=3, blocks {args.pr_chunk}): "
              f"{seconds:.1f} s")


if __name__ == "__main__":
    main()
