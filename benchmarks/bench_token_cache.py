"""Training throughput with and without the token cache (CPU, small depth).

Without a cache every training step runs the VQVAE encoder and the multi-scale quantizer on the batch (as the
official trainer does); with a cache the step reads token ids from a memory-mapped file and only builds the
teacher-forcing input. Both runs go through ``train_run`` on the synthetic dataset with the same seed; the figure
is images per second of training wall time (evaluation excluded), from the run's own metrics.jsonl.

    python benchmarks/bench_token_cache.py --tokenizer-preset mini-f8-32px --model VAR-mini-d2 --steps 30
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer-preset", default="mini-f8-32px", help="models.registry tokenizer preset")
    parser.add_argument("--model", default="VAR-mini-d2", help="VAR preset")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=512, help="synthetic training images (cached once)")
    args = parser.parse_args(argv)

    import torch

    from harness.config import DataConfig, TokenizerRef
    from harness.data.token_cache import encode_dataset
    from harness.tokenizer.storage import load_tokenizer, save_tokenizer
    from harness.training.loop import train_run
    from models import VQVAE
    from models.registry import TOKENIZERS

    torch.set_num_threads(args.threads)
    spec = TOKENIZERS[args.tokenizer_preset]
    with tempfile.TemporaryDirectory(prefix="bench_token_cache_") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        save_tokenizer(VQVAE(test_mode=True, **spec.vqvae_kwargs()), tmp / "tokenizer.safetensors")
        vae, ref = load_tokenizer(TokenizerRef(path=str(tmp / "tokenizer.safetensors")))
        data = DataConfig(resolution=spec.resolution, num_classes=10, synthetic_train_size=args.images,
                          synthetic_val_size=64)
        t0 = time.perf_counter()
        cache = encode_dataset(vae, ref, data, tmp / "cache", batch_size=64)
        encode_s = time.perf_counter() - t0

        results = {}
        for label, token_cache in (("images (encoder every step)", None), ("token cache", str(cache))):
            run = tmp / label.split()[0]
            run.mkdir()
            config = {"tokenizer": {"path": str(tmp / "tokenizer.safetensors")},
                      "data": {**data.__dict__, "token_cache": token_cache}, "model_preset": args.model,
                      "total_steps": args.steps, "batch_size": args.batch_size, "eval_every": 0, "eval_images": 64,
                      "checkpoint_every_steps": 0, "checkpoint_every_minutes": 0.0, "device": "cpu"}
            (run / "config.json").write_text(json.dumps(config))
            train_run(run)
            final = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
            results[label] = final["images_seen"] / final["wall_time_s"]

    print(f"# token cache benchmark  python {platform.python_version()}  torch {torch.__version__}  "
          f"threads {args.threads}  {platform.processor() or platform.machine()}")
    print(f"tokenizer {args.tokenizer_preset} ({spec.resolution}px, L={sum(p * p for p in spec.patch_nums)}), "
          f"model {args.model}, batch {args.batch_size}, {args.steps} steps")
    print(f"encoding {args.images + 64} images into the cache: {encode_s:.2f} s")
    for label, ips in results.items():
        print(f"{label:32s} {ips:10.1f} img/s")
    base, cached = results["images (encoder every step)"], results["token cache"]
    print(f"speed-up with the cache: {cached / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
