"""Shared set-up of the sweep tests: a real tiny tokenizer file and sweep specs written to a temporary directory."""
from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

SUPPORT_DIR = Path(__file__).resolve().parent
FIXTURE_TRAINER = "sweeps_fixture_trainer:train_run"


def make_tokenizer(path: Path) -> Path:
    """A randomly initialised mini VQVAE saved the way `varscale tokenizer train` saves one."""
    import torch

    from harness.tokenizer.storage import save_tokenizer
    from models import VQVAE
    from models.registry import TOKENIZERS

    if not path.exists():
        torch.manual_seed(0)
        save_tokenizer(VQVAE(**TOKENIZERS["mini-f8-32px"].vqvae_kwargs(), test_mode=True), path)
    return path


def use_fixture_trainer(monkeypatch, step_s: float = 0.01) -> None:
    """Make tests/support/sweeps_fixture_trainer importable in job processes (local and SLURM inherit the environment)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SUPPORT_DIR), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("VARSCALE_FIXTURE_STEP_S", str(step_s))


def write_spec(tmp_path: Path, name: str, *, executor: str = "local", depths=(2, 3), trainer: str = FIXTURE_TRAINER,
               train: dict | None = None, resources: dict | None = None, extra: dict | None = None) -> Path:
    tokenizer = make_tokenizer(tmp_path / "tokenizer.safetensors")
    base_train = {"tokenizer": {"path": str(tokenizer)},
                  "data": {"source": "synthetic", "resolution": 32, "num_classes": 4, "synthetic_train_size": 64,
                           "synthetic_val_size": 16},
                  "total_steps": 20, "batch_size": 8, "eval_every": 5, "eval_images": 16, "eval_batch_size": 16,
                  "device": "cpu", "checkpoint_every_steps": 0, "checkpoint_every_minutes": 0}
    base_train.update(train or {})
    spec = {"name": name, "model_family": "VAR-mini", "executor": executor,
            "output_root": str(tmp_path / "runs"), "trainer": trainer, "grid": {"depth": list(depths)},
            "train": base_train,
            "resources": {"cpus_per_task": 1, "time_limit": 30, "signal_delay_s": 20, **(resources or {})},
            **(extra or {})}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
