"""Small shared pieces of the harness tests: a tiny tokenizer file, tiny run configs, the CLI as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

# 32x32 images, 4 scales (L = 30), 64 codes: the smallest VQVAE the architecture allows (GroupNorm(32) needs ch=32)
TINY_VQVAE = {"vocab_size": 64, "z_channels": 8, "ch": 32, "ch_mult": [1, 2, 2, 4], "v_patch_nums": [1, 2, 3, 4],
              "share_quant_resi": 4}
# the `varscale` entry point, run by this interpreter (works without the console script on PATH)
VARSCALE = [sys.executable, "-c", "import sys; from harness.cli.main import main; sys.exit(main())"]


def make_tokenizer(path: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny VQVAE saved as a tokenizer file (real format; weights need not be trained)."""
    from harness.tokenizer.storage import save_tokenizer
    from models import VQVAE

    torch.manual_seed(seed)
    vae = VQVAE(**TINY_VQVAE, test_mode=True)
    with torch.no_grad():  # spread the codebook over the encoder's output range so that many codes get used
        vae.quantize.embedding.weight.mul_(0.05)
    save_tokenizer(vae, path)
    return path


def tiny_run_config(tokenizer: Path, **overrides) -> dict:
    cfg = {
        "tokenizer": {"path": str(tokenizer)},
        "data": {"synthetic_train_size": 64, "synthetic_val_size": 16, "num_classes": 4},
        "model_preset": "VAR-mini-d1", "total_steps": 12, "batch_size": 8, "base_lr": 0.1, "warmup_frac": 0.1,
        "eval_every": 4, "eval_images": 16, "eval_batch_size": 16, "checkpoint_every_steps": 4,
        "checkpoint_every_minutes": 0.0, "seed": 0,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_run(run_dir: Path, config: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


def subprocess_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def run_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*VARSCALE, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or subprocess_env())


def records(run_dir: Path, split: str | None = None) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    out = [json.loads(line) for line in lines if line.strip()]
    return [r for r in out if split is None or r["split"] == split]


METRIC_FIELDS = ("loss_mean", "loss_last", "err_mean", "err_last", "loss_per_scale", "err_per_scale")


def learning_fields(record: dict) -> dict:
    """The fields that depend on the trajectory only (not on wall-clock time)."""
    keep = ("split", "step", "images_seen", "tokens_seen", "train_flops") + METRIC_FIELDS
    return {k: record[k] for k in keep}
