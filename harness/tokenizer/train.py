"""Training of our multi-scale VQVAE (the official release has no tokenizer training code).

Loss = MSE(reconstruction, image) + vq_weight * the official multi-scale VQ loss (``VQVAE.forward`` returns it:
commitment beta * |sg(f_hat) - f|^2 plus codebook |f_hat - sg(f)|^2, averaged over scales, with the
straight-through estimator). No GAN or perceptual loss: small studies need a working tokenizer, not the best one.

Collapse: from random initialisation the commitment term can win and shrink the encoder output to a constant
that a few codes quantize well (reconstruction then stays at the pixel variance). ``ae_warmup_frac`` first trains
encoder and decoder without quantization, then places every code on a quantizer input of the current batch.

Dead codes: every ``dead_code_every`` steps, codes whose EMA hit count (the quantizer's ``ema_vocab_hit_SV``,
summed over scales) is below 3% of a uniform share are moved onto quantizer inputs of the current batch, drawn
from every scale's residual, and their Adam moments are cleared.

Output directory: ``tokenizer.safetensors`` (state dict + constructor kwargs + final metrics in its metadata),
``config.json``, ``metrics.jsonl``, ``summary.json`` (reconstruction error and codebook usage per scale on the
held-out split) and ``checkpoints/last.pt`` for resuming.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness.config import (
    ConfigError,
    TokenizerTrainConfig,
    as_current,
    first_difference,
    load_json,
    to_dict,
)
from harness.data.images import GlobalBatchSampler, build_image_datasets, collate
from harness.distributed import resolve_device
from harness.tokenizer.storage import save_tokenizer
from harness.training.checkpointer import (
    Checkpointer,
    capture_rng_states,
    restore_rng_states,
)
from harness.training.control import ForkSafeLoader, ignore_job_signals
from harness.training.metrics import MetricsLog
from models.files import exclusive_lock, remove_stale_temps, save_json

DEAD_FRACTION = 0.03


def quantizer_inputs(vae, img: torch.Tensor) -> list[torch.Tensor]:
    """The vectors each scale quantizes (area-pooled residuals), as (N_si, Cvae) rows."""
    q = vae.quantize
    f = vae.img_to_f(img).detach()
    f_hats = q.f_to_idxBl_or_fhat(f, to_fhat=True)
    rows = []
    for si, pn in enumerate(q.v_patch_nums):
        rest = f if si == 0 else f - f_hats[si - 1]
        z = rest if si == len(q.v_patch_nums) - 1 else F.interpolate(rest, size=(pn, pn), mode="area")
        rows.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
    return rows


@torch.no_grad()
def reinit_dead_codes(vae, img: torch.Tensor, optimizer: torch.optim.Optimizer, batch_tokens: int,
                      generator: torch.Generator, all_codes: bool = False) -> int:
    q = vae.quantize
    hits_V = q.ema_vocab_hit_SV.sum(dim=0)
    uniform = batch_tokens / q.vocab_size
    dead = torch.nonzero(hits_V < DEAD_FRACTION * uniform).flatten()
    if all_codes:
        dead = torch.arange(q.vocab_size)
    if dead.numel() == 0:
        return 0
    pool = torch.cat(quantizer_inputs(vae, img))
    pick = torch.randint(0, pool.shape[0], (dead.numel(),), generator=generator).to(pool.device)
    noise = torch.randn(dead.numel(), pool.shape[1], generator=generator).to(pool.device) * 1e-3
    weight = q.embedding.weight
    weight.data[dead] = pool[pick] + noise
    state = optimizer.state.get(weight, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][dead] = 0
    q.ema_vocab_hit_SV[:, dead] = uniform / len(q.v_patch_nums)  # a grace period before they count as dead
    return int(dead.numel())


@torch.no_grad()
def evaluate_tokenizer(vae, loader, device) -> dict[str, Any]:
    """Reconstruction error through the token path (encode -> ids -> decode) and codebook usage per scale."""
    was_training = vae.training
    vae.eval()
    sq_err, count, images = 0.0, 0, 0
    S, V = len(vae.v_patch_nums), vae.vocab_size
    used_SV = torch.zeros(S, V, dtype=torch.long)
    for img, _, _ in loader:
        img = img.to(device)
        idx_list = vae.img_to_idxBl(img)
        rec = vae.idxBl_to_img(idx_list, same_shape=True, last_one=True)
        sq_err += float(F.mse_loss(rec, img, reduction="sum"))
        count += img.numel()
        images += img.shape[0]
        for si, idx in enumerate(idx_list):
            used_SV[si] += torch.bincount(idx.flatten().cpu(), minlength=V)
    vae.train(was_training)
    mse = sq_err / max(count, 1)
    probs = used_SV.double() / used_SV.sum(dim=1, keepdim=True).clamp_min(1)
    perplexity = torch.exp(-(probs * probs.clamp_min(1e-12).log()).sum(dim=1))
    return {
        "images": images, "rec_mse": mse, "rec_psnr_db": float(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12)))),
        "codebook_usage_per_scale": [float((used_SV[si] > 0).double().mean()) for si in range(S)],
        "codebook_usage_all": float((used_SV.sum(0) > 0).double().mean()),
        "perplexity_per_scale": [float(p) for p in perplexity],
    }


def train_tokenizer(cfg: TokenizerTrainConfig, out_dir: Path) -> dict[str, Any]:
    """Train (or continue training) a tokenizer into ``out_dir``; returns the held-out summary."""
    cfg.validate()
    out_dir = Path(out_dir)
    check_resumable(cfg, out_dir)  # before the lock file: a refused command leaves the directory as it was
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out_dir / ".lock", f"tokenizer output {out_dir}"):
        check_resumable(cfg, out_dir)  # again under the lock: another trainer may have started meanwhile
        for folder, name in ((".", "config.json"), (".", "summary.json"), (".", "tokenizer.safetensors"),
                             ("checkpoints", "last.pt")):
            remove_stale_temps(out_dir / folder, name)
        return _train_locked(cfg, out_dir)


def check_resumable(cfg: TokenizerTrainConfig, out_dir: Path) -> None:
    """An existing output is continued only with the config it was started with: other options would rewrite
    ``tokenizer.safetensors`` (a new sha256) under the token caches and runs tied to the old one."""
    saved_path = Path(out_dir) / "config.json"
    if not saved_path.is_file():
        return
    try:
        saved = as_current(TokenizerTrainConfig, load_json(saved_path))
    except ConfigError as exc:
        raise ConfigError(f"{out_dir} holds a tokenizer whose config this varscale cannot read ({exc}); use a new "
                          "--out, or continue it with the varscale that wrote it") from None
    if saved != to_dict(cfg):
        diff = first_difference(saved, to_dict(cfg), wanted_word="asked")
        raise ConfigError(f"{out_dir} holds a tokenizer of another config ({diff}); use a new --out, or run "
                          "without --config/--set to continue that one")


def _stored_config(stored: Any) -> dict[str, Any] | None:
    try:
        return as_current(TokenizerTrainConfig, stored)
    except ConfigError:
        return None  # not this version's config: trained again, as for any other config


def _train_locked(cfg: TokenizerTrainConfig, out_dir: Path) -> dict[str, Any]:
    from tqdm import tqdm

    from models import VQVAE

    done = out_dir / "summary.json"
    if done.exists() and (out_dir / "tokenizer.safetensors").exists():
        summary = json.loads(done.read_text())
        if _stored_config(summary.get("config")) == to_dict(cfg):
            return summary  # finished: rewriting the file would change its sha256 and orphan token caches
    save_json(out_dir / "config.json", to_dict(cfg))
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    vae = VQVAE(**cfg.vqvae_kwargs(), test_mode=False).to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.5, 0.9), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    train_set, val_set = build_image_datasets(cfg.data)
    checkpointer, log = Checkpointer(out_dir), MetricsLog(out_dir, is_writer=True)
    step = 0
    state = checkpointer.load()
    if state is not None:
        vae.load_state_dict(state["model"])
        vae.quantize.record_hit = int(state["record_hit"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        restore_rng_states(state["rng"], {"dead_codes": gen})
        log.truncate_to(int(state["metrics_bytes"]))
    else:
        log.truncate_to(0)
    sampler = GlobalBatchSampler(len(train_set), cfg.batch_size, 1, 0, 1, cfg.seed, start_step=step)
    train_loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.data.workers,
                                               worker_init_fn=ignore_job_signals, collate_fn=collate,
                                               generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(ForkSafeLoader(train_loader))
    n_eval = min(cfg.eval_images, len(val_set))
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, range(n_eval)), batch_size=64,
                                             collate_fn=collate)
    batch_tokens = cfg.batch_size * sum(pn * pn for pn in cfg.patch_nums)
    bar = tqdm(total=cfg.total_steps, initial=step, desc="tokenizer", unit="step", disable=not sys.stderr.isatty())
    sums = {"rec_mse": 0.0, "vq_loss": 0.0, "n": 0, "reinit": 0}
    t0 = time.monotonic()
    while step < cfg.total_steps:
        img, _, _ = next(batches)
        img = img.to(device)
        log_now = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.total_steps
        if step < cfg.ae_warmup_steps:  # plain autoencoder: no quantization yet
            rec, usages, vq_loss = vae.decoder(vae.post_quant_conv(vae.img_to_f(img))), None, img.new_zeros(())
        else:
            if step == cfg.ae_warmup_steps and step > 0:
                reinit_dead_codes(vae, img, optimizer, batch_tokens, gen, all_codes=True)
            rec, usages, vq_loss = vae(img, ret_usages=log_now)
        rec_loss = F.mse_loss(rec, img)
        loss = rec_loss + cfg.vq_weight * vq_loss
        if not torch.isfinite(loss):
            raise RuntimeError(f"tokenizer loss is {float(loss)} at step {step + 1}; lower lr (now {cfg.lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        sums["rec_mse"] += float(rec_loss.detach())
        sums["vq_loss"] += float(vq_loss.detach())
        sums["n"] += 1
        if (cfg.dead_code_every and step % cfg.dead_code_every == 0 and step < cfg.total_steps
                and step > cfg.ae_warmup_steps):
            sums["reinit"] += reinit_dead_codes(vae, img, optimizer, batch_tokens, gen)
        bar.update(1)
        bar.set_postfix(rec=f"{float(rec_loss.detach()):.4f}", vq=f"{float(vq_loss.detach()):.4f}", refresh=False)
        if log_now:
            n = max(sums["n"], 1)
            log.append({"split": "train", "step": step, "images_seen": step * cfg.batch_size,
                        "rec_mse": sums["rec_mse"] / n, "vq_loss": sums["vq_loss"] / n,
                        "codebook_usage_pct_per_scale": usages, "codes_reinitialised": sums["reinit"],
                        "wall_time_s": time.monotonic() - t0})
            sums = {"rec_mse": 0.0, "vq_loss": 0.0, "n": 0, "reinit": 0}
            checkpointer.save({"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                               "record_hit": vae.quantize.record_hit, "metrics_bytes": log.size(),
                               "rng": capture_rng_states({"dead_codes": gen})})
    bar.close()
    summary = {"step": step, "config": to_dict(cfg), "val": evaluate_tokenizer(vae, val_loader, device)}
    log.append({"split": "val", "step": step, **summary["val"]})
    vae.eval()
    summary["sha256"] = save_tokenizer(vae, out_dir / "tokenizer.safetensors",
                                       {"val": summary["val"], "train_config": to_dict(cfg)})
    save_json(out_dir / "summary.json", summary)
    return summary
