"""The model side of ``varscale sample``: load a VAR and wrap its official sampling call.

Two sources: (a) a varscale run directory -- ``config.json`` (the TrainConfig: model preset, tokenizer path and
kwargs) plus ``final/model.safetensors``; (b) an official preset (``VAR-d16`` ...) with checkpoint files, given
explicitly or read from the cache ``varscale assets fetch --what vae,var-d16`` fills.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.sampling.loop import SamplingError, SamplingProtocol


def load_run_model(run_dir: str | Path, device: str = "cpu"):
    """(var, model_info) for a finished run."""
    from harness.tokenizer.storage import load_tokenizer
    from harness.training.loop import read_run_config
    from harness.training.model_setup import var_spec_for
    from models import VAR
    from models.checkpoint import load_state_dict_file, load_strict
    from models.files import sha256_file

    run_dir = Path(run_dir)
    final = run_dir / "final" / "model.safetensors"
    if not final.is_file():
        raise SamplingError(f"{final} not found: the run in {run_dir} has not finished (varscale train writes it)")
    cfg, raw = read_run_config(run_dir)
    vae, tokenizer = load_tokenizer(cfg.tokenizer, device)
    spec = var_spec_for(cfg, vae)
    var = VAR(vae_local=vae, **spec.var_kwargs()).to(device)
    load_strict(var, load_state_dict_file(final), source=str(final))
    info = {"source": "run", "run_dir": str(run_dir.resolve()), "name": spec.name, "spec": spec.to_dict(),
            "params_total": sum(p.numel() for p in var.parameters()),
            "config_model_block": raw.get("model"),
            "checkpoints": {"var": {"path": str(final.resolve()), "sha256": sha256_file(final)},
                            "tokenizer": {"path": str(Path(tokenizer.path).resolve()), "sha256": tokenizer.sha256}}}
    return var.eval(), info


def load_preset_model(name: str, vae_path: str | None = None, var_path: str | None = None, device: str = "cpu"):
    """(var, model_info) for an official preset; paths default to the released files in the cache."""
    from models.checkpoint import (
        OFFICIAL_VAR_FILES,
        VAE_FILE,
        load_vae_var,
        resolve_official_file,
    )
    from models.registry import var_spec

    spec = var_spec(name)
    if var_path is None:
        if name not in {f"VAR-d{d}" for d in OFFICIAL_VAR_FILES}:
            raise SamplingError(f"{name} has no released checkpoint; pass --var-checkpoint (and --vae-checkpoint)")
        var_path = resolve_official_file(OFFICIAL_VAR_FILES[spec.depth], offline=True)   # never download here:
    vae_path = vae_path or resolve_official_file(VAE_FILE, offline=True)               # `varscale assets fetch`
    _, var, provenance = load_vae_var(spec, vae_path, var_path, device)
    info = {"source": "preset", "name": name, "spec": spec.to_dict(),
            "params_total": sum(p.numel() for p in var.parameters()),
            "checkpoints": {"var": provenance["var"], "tokenizer": provenance["vae"]}}
    return var.eval(), info


def make_generate(var, protocol: SamplingProtocol, device: str):
    """``generate(B, labels, g_seed)`` calling ``var.autoregressive_infer_cfg`` with the protocol's settings."""
    import torch

    vocab = var.V
    if protocol.top_k > vocab:
        raise SamplingError(f"top_k={protocol.top_k} exceeds the vocabulary size {vocab} of this model; pass "
                            f"--top-k {vocab} or smaller (0 disables top-k)")
    if protocol.num_classes != var.num_classes:
        raise SamplingError(f"protocol has {protocol.num_classes} classes but the model has {var.num_classes}")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(protocol.precision)
    if autocast_dtype is not None and torch.device(device).type != "cuda":
        raise SamplingError(f"precision {protocol.precision} needs a CUDA device; use fp32 on {device}")

    on_cpu = torch.device(device).type == "cpu"

    def generate(batch: int, labels: np.ndarray, g_seed: int):
        label_B = torch.as_tensor(labels, dtype=torch.long, device=device)
        threads = torch.get_num_threads()
        if on_cpu:
            torch.set_num_threads(protocol.cpu_threads)
        try:
            with torch.no_grad(), torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
                return var.autoregressive_infer_cfg(batch, label_B, g_seed=g_seed, cfg=protocol.cfg,
                                                    top_k=protocol.top_k, top_p=protocol.top_p,
                                                    more_smooth=protocol.more_smooth).float()
        finally:
            torch.set_num_threads(threads)

    return generate
