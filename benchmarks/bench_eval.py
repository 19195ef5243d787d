"""Evaluation throughput: Inception feature extraction (images/s), precision/recall at 50k x 10k, and a whole
``varscale eval`` of cached features against a reference with stored statistics (``--cached-eval``).

Prints measured figures (no assertions). The Inception weights are random (the real ones cannot be downloaded
here) but the network, resize and feature hooks are exactly what ``varscale eval`` runs, so the speed is the real
one. Precision/recall uses random 2048-d features of the protocol's sizes: 50,000 samples vs 10,000 reference
images; its cost is dominated by the samples' own k-NN radii (50k x 50k distances, as in ADM).

    .venv/bin/python benchmarks/bench_eval.py [--device cuda] [--images 32] [--pr-samples 50000 --pr-ref 10000]
    .venv/bin/python benchmarks/bench_eval.py --cached-eval 10000 --skip-features --skip-pr

``--cached-eval N``: N samples and a 10,000-image reference that stores mu/sigma/mu_s/sigma_s (as ADM's), both
with their features already in the feature cache (random features of the protocol's sizes: 2048 / 2023 / 1008;
the images are 8x8 since only their hash is read), then ``evaluate()`` exactly as ``varscale eval`` runs it:
input checks, IS, FID and sFID (default trace), precision/recall (ADM float16) and KID, with and without the
bootstrap intervals. Loading the Inception network is included (as in a real run).
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


def bench_cached_eval(n_samples: int, n_ref: int, device: str,
                      with_intervals: bool = True) -> list[tuple[str, float, float, dict]]:
    """(label, wall s, CPU s of this process, result) per configuration; on a shared machine the CPU seconds
    divided by the thread count bound what the wall time would be without other jobs."""
    from harness.evaluation.evaluate import EvalConfig, evaluate
    from harness.evaluation.feature_cache import cache_key, save_features
    from harness.evaluation.inception import (
        InceptionFeatures,
        write_random_inception_weights,
    )
    from harness.sampling.npz import write_npz
    from models.files import sha256_file

    rng = np.random.default_rng(0)

    def features(n, shift):
        pool = np.maximum(rng.normal(0.3 + shift, 0.4, size=(n, 2048)), 0).astype(np.float32)
        spatial = np.maximum(rng.normal(0.5, 0.5, size=(n, 2023)), 0).astype(np.float32)
        return InceptionFeatures(pool, spatial, rng.normal(0, 3, size=(n, 1008)).astype(np.float32))

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = write_random_inception_weights(tmp / "w.pth")
        ref_feats, sample_feats = features(n_ref, 0.0), features(n_samples, 0.02)
        stats = {"mu": ref_feats.pool.mean(0, dtype=np.float64), "sigma": np.cov(ref_feats.pool, rowvar=False),
                 "mu_s": ref_feats.spatial.mean(0, dtype=np.float64),
                 "sigma_s": np.cov(ref_feats.spatial, rowvar=False)}
        write_npz(tmp / "ref.npz", {"arr_0": rng.integers(0, 256, (n_ref, 8, 8, 3), dtype=np.uint8)} | stats)
        write_npz(tmp / "samples.npz", {"arr_0": rng.integers(0, 256, (n_samples, 8, 8, 3), dtype=np.uint8)})
        weights_sha = sha256_file(weights)
        for name, feats in (("ref.npz", ref_feats), ("samples.npz", sample_feats)):
            save_features(tmp / "cache", cache_key(sha256_file(tmp / name), weights_sha, "float32"), feats, {})
        configs = [("no intervals (KID included)", {"bootstrap_rounds": 0, "fid_interval": "none"})]
        if with_intervals:
            configs.append(("defaults (delta-method FID/sFID intervals, 200-round bootstrap for IS, P, R, KID)", {}))
        for label, extra in configs:
            cfg = EvalConfig(samples=str(tmp / "samples.npz"), ref=str(tmp / "ref.npz"), device=device,
                             inception_weights=str(weights), cache_dir=str(tmp / "cache"), cache_samples=True,
                             **extra)
            start, cpu_start = time.perf_counter(), time.process_time()
            result = evaluate(cfg)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            assert result["inputs"]["samples"]["feature_cache"]["cache_hit"], "the samples were not cached"
            runs.append((label, seconds, cpu_seconds, result))
    return runs


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
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument("--cached-eval", type=int, default=0, metavar="N",
                        help="time a whole evaluation of N cached sample features vs a 10k reference with stats")
    parser.add_argument("--no-intervals-only", action="store_true",
                        help="--cached-eval: only the run without bootstrap intervals")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} cpu={cpu}")
    if not args.skip_features:
        ips = bench_features(args.device, args.images, args.batch_size, args.resolution)
        print(f"inception features: {ips:.2f} images/s ({args.images} images {args.resolution}x{args.resolution}, "
              f"batch {args.batch_size}); 50k samples + 10k reference would take {60_000 / ips / 60:.1f} min")
    if not args.skip_pr:
        seconds = bench_precision_recall(args.device, args.pr_samples, args.pr_ref, args.pr_chunk)
        print(f"precision/recall {args.pr_samples} x {args.pr_ref} (2048-d, k=3, blocks {args.pr_chunk}): "
              f"{seconds:.1f} s")
    if args.cached_eval:
        runs = bench_cached_eval(args.cached_eval, 10_000, args.device, not args.no_intervals_only)
        for label, seconds, cpu_seconds, result in runs:
            m = result["metrics"]
            print(f"cached eval, {args.cached_eval} samples vs 10000-image reference with stored statistics, "
                  f"{label}: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU (FID {m['fid']:.3f}, sFID {m['sfid']:.3f}, "
                  f"trace {result['protocol']['fid_trace_sqrt']}, P {m['precision']:.4f}, R {m['recall']:.4f})")


if __name__ == "__main__":
    main()
