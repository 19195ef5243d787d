"""From a TrainConfig and a loaded tokenizer to the VAR module, its spec, and the run's derived config blocks."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from harness.config import ConfigError, TrainConfig


def tokenizer_spec_of(vae, name: str = "run-tokenizer"):
    from models.registry import TokenizerSpec

    return TokenizerSpec(name=name, vocab_size=vae.vocab_size, z_channels=vae.Cvae, ch=vae.ch,
                         ch_mult=tuple(vae.ch_mult), patch_nums=tuple(vae.v_patch_nums))


def var_spec_for(cfg: TrainConfig, vae):
    """The registry preset of ``cfg.model`` on this run's tokenizer and class count, with the config's overrides."""
    from models.registry import var_spec

    spec = var_spec(cfg.model_preset, num_classes=cfg.data.num_classes, tokenizer=tokenizer_spec_of(vae),
                    width_per_depth=cfg.width_per_depth)
    overrides: dict[str, Any] = {"attn_l2_norm": cfg.attn_l2_norm}
    if cfg.shared_aln is not None:
        overrides["shared_aln"] = cfg.shared_aln
    if cfg.drop_path_rate is not None:
        overrides["drop_path_rate"] = cfg.drop_path_rate
    return dataclasses.replace(spec, **overrides)


def build_var(cfg: TrainConfig, vae, device: torch.device):
    """Instantiate and initialise the VAR as the official build does (init from the config's init_* values)."""
    from models import VAR

    if vae.resolution != cfg.data.resolution:
        raise ConfigError(f"data.resolution is {cfg.data.resolution} but the tokenizer {cfg.tokenizer.path} takes "
                          f"{vae.resolution}x{vae.resolution} images; set data.resolution={vae.resolution}")
    spec = var_spec_for(cfg, vae)
    kwargs = {**spec.var_kwargs(), "cond_drop_rate": cfg.cond_drop_rate}
    var = VAR(vae_local=vae, **kwargs).to(device)
    var.init_weights(init_adaln=cfg.init_adaln, init_adaln_gamma=cfg.init_adaln_gamma, init_head=cfg.init_head,
                     init_std=cfg.init_std)
    return var, spec


def model_block(spec, var) -> dict[str, Any]:
    from models import flops

    block = flops.model_block(spec)
    actual = sum(p.numel() for p in var.parameters())
    if actual != block["params_total"]:  # the analytic count must describe the module that trains
        raise RuntimeError(f"analytic params_total {block['params_total']} != module's {actual} for {spec.name}")
    return block


def protocol_block(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """How the numbers in metrics.jsonl were produced (stored next to them in config.json)."""
    return {
        "objective": "next-scale prediction, teacher forcing; cross-entropy averaged over all L tokens",
        "eval_split": "held-out split: synthetic 'val' stream or <root>/val (centre crop); first eval_images images",
        "eval_cond_drop_rate": 0.0,
        "eval_note": ("held-out loss is computed with cond-drop OFF (cond_drop_rate temporarily 0) and the model in "
                      "eval mode (no drop-path); the official eval_ep keeps its 10% cond-drop active"),
        "train_metrics": "averaged over the optimizer steps since the previous record (with cond-drop, drop-path)",
        "err": "token error rate as a fraction: 1 - top-1 accuracy",
        "flops": "analytic models.flops (dense attention); train_flops = images_seen x flops_train_per_image",
        "wall_time_s": "cumulative time of training steps (data loading included; evaluation and saving not), "
                       "summed over resumptions",
        "throughput_img_s": "images per second of step time since the previous record",
        "mfu": "throughput x flops_train_per_image / (peak_flops x world_size); null without a known peak",
        "lr": f"peak = base_lr x batch_size / 256 = {cfg.peak_lr:.6g}; warmup then official lin0",
        "augmentation": ("none (token cache: one centre-crop view per image)" if cfg.data.token_cache else
                         "random crop of round(1.125 x reso) Lanczos resize, seeded per (seed, epoch, index)"
                         if cfg.data.source == "imagefolder" else "none (procedural images)"),
        "world_size": world_size,
        "precision_resolved": "fp32 on CPU; bf16 autocast on GPU unless precision is set",
    }
