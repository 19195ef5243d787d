"""Does the synthetic dataset show a scaling trend? Held-out loss of VAR-mini models of growing depth (CPU).

Pipeline, all through the harness: train a small tokenizer on the synthetic set (``train_tokenizer``), encode the
set once (``encode_dataset``), then train ``VAR-mini-d{N}`` for the same number of steps and batch size from the
token cache and print the final held-out loss (cond-drop off) per depth, overall and at the last scale.

    python benchmarks/bench_synthetic_scaling.py --depths 1 2 4 --steps 400 --tokenizer-steps 600
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--base-lr", type=float, default=0.1, help="peak lr = base_lr * batch / 256")
    parser.add_argument("--tokenizer-steps", type=int, default=300)
    parser.add_argument("--train-images", type=int, default=4096)
    parser.add_argument("--val-images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the work directory here instead of a temporary one")
    args = parser.parse_args(argv)

    import torch

    from harness.config import DataConfig, TokenizerRef, TokenizerTrainConfig
    from harness.data.token_cache import encode_dataset
    from harness.tokenizer.storage import load_tokenizer
    from harness.tokenizer.train import train_tokenizer
    from harness.training.loop import train_run

    torch.set_num_threads(args.threads)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    data = DataConfig(resolution=32, num_classes=10, synthetic_train_size=args.train_images,
                      synthetic_val_size=args.val_images)
    t0 = time.perf_counter()
    tok_cfg = TokenizerTrainConfig(data=data, total_steps=args.tokenizer_steps, batch_size=16, lr=1e-3,
                                   log_every=50, dead_code_every=25, ae_warmup_frac=0.25)
    tok_summary = train_tokenizer(tok_cfg, work / "tokenizer")
    tok_s = time.perf_counter() - t0
    vae, ref = load_tokenizer(TokenizerRef(path=str(work / "tokenizer" / "tokenizer.safetensors")))
    cache = work / "cache"
    if not (cache / "header.json").exists():
        encode_dataset(vae, ref, data, cache, batch_size=128)
    rows = []
    for depth in args.depths:
        run = work / f"d{depth}"
        run.mkdir(parents=True, exist_ok=True)
        config = {"tokenizer": {"path": ref.path}, "data": {**data.__dict__, "token_cache": str(cache)},
                  "model_preset": f"VAR-mini-d{depth}", "total_steps": args.steps, "batch_size": args.batch_size,
                  "base_lr": args.base_lr, "eval_every": max(args.steps // 3, 1), "eval_images": args.val_images,
                  "checkpoint_every_steps": 0, "checkpoint_every_minutes": 0.0, "device": "cpu"}
        (run / "config.json").write_text(json.dumps(config))
        result = train_run(run)
        model = json.loads((run / "config.json").read_text())["model"]
        rows.append((depth, model["params_wo_emb"], result["final"]))

    val = tok_summary["val"]
    print(f"# synthetic scaling check: 32px, 10 classes, {args.train_images} train / {args.val_images} val images")
    print(f"tokenizer: {args.tokenizer_steps} steps in {tok_s:.0f} s, rec PSNR {val['rec_psnr_db']:.2f} dB, "
          f"codebook usage per scale {[round(u, 3) for u in val['codebook_usage_per_scale']]}")
    print(f"VAR: {args.steps} steps, batch {args.batch_size}, base lr {args.base_lr}; held-out, cond-drop off")
    print(f"{'depth':>5} {'params_wo_emb':>13} {'loss_mean':>9} {'loss_last':>9} {'err_mean':>8} {'err_last':>8}")
    for depth, params, final in rows:
        print(f"{depth:>5} {params:>13,} {final['loss_mean']:>9.4f} {final['loss_last']:>9.4f} "
              f"{final['err_mean']:>8.4f} {final['err_last']:>8.4f}")
    print(f"work directory: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
