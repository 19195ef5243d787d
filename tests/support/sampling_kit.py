"""A tiny finished varscale run (random VAR-mini-d1 on a random 32px tokenizer) for sampling tests."""
from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_run(root: Path, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    from harness.config import DataConfig, TokenizerRef, TrainConfig, to_dict
    from harness.tokenizer.storage import save_tokenizer
    from models.files import save_json
    from models.registry import build, var_spec

    torch.manual_seed(seed)
    run = Path(root) / "run"
    spec = var_spec("VAR-mini-d1")
    vae, var = build(spec)
    with torch.no_grad():   # the official init makes blocks near-identity; spread the head so samples vary
        var.head.weight.normal_(0, 0.5)
    tokenizer = save_tokenizer(vae, run / "tokenizer.safetensors")
    cfg = TrainConfig(tokenizer=TokenizerRef(path=str(run / "tokenizer.safetensors"), sha256=tokenizer),
                      model_preset="VAR-mini-d1", data=DataConfig(num_classes=spec.num_classes, resolution=32))
    save_json(run / "config.json", to_dict(cfg) | {"model": {"name": spec.name, "depth": spec.depth}})
    (run / "final").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in var.state_dict().items()}, str(run / "final" / "model.safetensors"))
    torch.save(vae.state_dict(), run / "vae.pth")       # the same weights as official-style .pth files
    torch.save(var.state_dict(), run / "var.pth")
    return run
