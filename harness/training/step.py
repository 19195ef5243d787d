"""Next-scale prediction with teacher forcing: one optimizer step, evaluation, and the state that resumes them.

Follows the official trainer (docs/references.md §2.3): targets are the tokenizer's ids of all scales concatenated, the
inputs ``idxBl_to_var_input`` computed outside autocast, cross-entropy averaged over all L tokens, AdamW (0.9,
0.95) with the official no-weight-decay group, peak lr = base_lr * batch / 256 with warmup and ``lin0`` decay,
grad-norm clipping, bf16/fp16 autocast on GPU (fp16 with the official GradScaler settings), fp32 on CPU.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F

from harness.config import TrainConfig
from harness.distributed import DistEnv, all_reduce_sum
from harness.training.metrics import ScaleStats

# official nowd keys (utils/lr_control.py filter_params via train.py)
NO_WEIGHT_DECAY_KEYS = ("cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC", "pos_start",
                        "start_pos", "lvl_embed", "gamma", "beta", "ada_gss", "moe_bias", "scale_mul")
FP16_MAX_SCALE = 32768.0


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; training stops without overwriting the last good checkpoint."""


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Official ``lin0`` (utils/lr_control.py): warmup from 0.5% of peak, 5% flat, then linear to wpe*peak."""
    peak, max_it = cfg.peak_lr, cfg.total_steps
    wp_it = round(cfg.warmup_frac * max_it)
    if step < wp_it:
        return peak * (0.005 + 0.995 * step / wp_it)
    passed = (step - wp_it) / max(max_it - 1 - wp_it, 1)
    if passed < 0.05:
        return peak
    return peak * (cfg.lr_end_ratio + (1 - cfg.lr_end_ratio) * (1 - passed) / 0.95)


def weight_decay_at(cfg: TrainConfig, step: int) -> float:
    wd, wd_end = cfg.weight_decay, cfg.weight_decay if cfg.weight_decay_end is None else cfg.weight_decay_end
    passed = step / max(cfg.total_steps - 1, 1)
    return wd_end + (wd - wd_end) * (0.5 + 0.5 * math.cos(math.pi * passed))


def param_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim == 1 or name.endswith("bias") or any(k in name for k in NO_WEIGHT_DECAY_KEYS):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "wd_sc": 1.0}, {"params": no_decay, "wd_sc": 0.0}]


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.precision == "fp32":
        return None
    return torch.float16 if cfg.precision == "fp16" else torch.bfloat16


class Trainer:
    """Owns the VAR (wrapped in DDP when distributed), the frozen tokenizer, optimizer and scaler."""

    def __init__(self, cfg: TrainConfig, vae, var, env: DistEnv) -> None:
        self.cfg, self.vae, self.var, self.env = cfg, vae, var, env
        self.device = env.device
        self.model = var
        if env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(var, device_ids=ids, broadcast_buffers=False)
        self.forward_loss = self._forward_loss
        if cfg.compile:  # forward, loss and backward compiled; evaluation keeps the eager module (no recompile)
            import torch._inductor.config as inductor_config

            inductor_config.fallback_random = True  # cond-drop and drop-path draw the same numbers as eager
            # the cross-entropy inside the graph: fused with the head, it no longer writes the (B, L, V) log-
            # probabilities and their gradient as separate passes (a step 5% faster on a CPU than compiling the
            # model alone, benchmarks/RESULTS.md)
            self.forward_loss = torch.compile(self._forward_loss)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(param_groups(var), lr=cfg.peak_lr, betas=(0.9, 0.95), eps=1e-8,
                                           weight_decay=0.0, fused=fused)
        self.amp_dtype = autocast_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**11, growth_interval=1000,
                                           enabled=self.amp_dtype == torch.float16)
        self.begin_ends = var.begin_ends
        self.V = var.V

    # ------------------------------------------------------------------ batches
    @torch.no_grad()
    def targets_and_inputs(self, batch: torch.Tensor, from_cache: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) and teacher-forcing inputs (B, L-1, Cvae), computed in fp32 outside autocast."""
        batch = batch.to(self.device, non_blocking=True)
        if from_cache:
            gt_BL = batch.long()
            idx_list = [gt_BL[:, b:e] for b, e in self.begin_ends]
        else:
            idx_list = self.vae.img_to_idxBl(batch)
            gt_BL = torch.cat(idx_list, dim=1)
        return gt_BL, self.vae.quantize.idxBl_to_var_input(idx_list)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ training
    def _forward_loss(self, label_B: torch.Tensor, x_BLCv: torch.Tensor, gt_BL: torch.Tensor):
        """Logits (B, L, V) and per-token cross-entropy (B, L), the latter in fp32 outside autocast."""
        with self._autocast():
            logits_BLV = self.model(label_B, x_BLCv)
        ce_BL = F.cross_entropy(logits_BLV.float().view(-1, self.V), gt_BL.view(-1),
                                label_smoothing=self.cfg.label_smoothing, reduction="none").view(gt_BL.shape)
        return logits_BLV, ce_BL

    def train_step(self, step: int, micro_batches: list[tuple[torch.Tensor, torch.Tensor]], from_cache: bool,
                   stats: ScaleStats) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches; adds per-scale stats; returns lr/loss/grad norm."""
        cfg = self.cfg
        lr, wd = lr_at(cfg, step), weight_decay_at(cfg, step)
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, wd * group["wd_sc"]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        accum = len(micro_batches)
        for k, (data, label_B) in enumerate(micro_batches):
            gt_BL, x_BLCv = self.targets_and_inputs(data, from_cache)
            label_B = label_B.to(self.device, non_blocking=True)
            sync = contextlib.nullcontext()
            if self.env.distributed and k < accum - 1:
                sync = self.model.no_sync()
            with sync:
                logits_BLV, ce_BL = self.forward_loss(label_B, x_BLCv, gt_BL)
                loss = ce_BL.mean()  # official: (CE * 1/L).sum(-1).mean() over the batch
                self.scaler.scale(loss / accum).backward()
            plain_ce = ce_BL.detach() if cfg.label_smoothing == 0 else None
            stats.add(logits_BLV.detach(), gt_BL, plain_ce)
            loss_sum += loss.detach().double()
        # every rank must take the same decision, so the check uses the all-reduced loss
        loss_mean = float(all_reduce_sum(self.env, loss_sum)) / (accum * self.env.world_size)
        if not math.isfinite(loss_mean):
            raise NonFiniteLossError(f"training loss is {loss_mean} at step {step + 1}")
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.var.parameters(), cfg.grad_clip))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            raise NonFiniteLossError(f"gradient norm is {grad_norm} at step {step + 1} (loss {loss_mean:.4f})")
        self.scaler.step(self.optimizer)  # skips the update when fp16 gradients overflowed
        self.scaler.update()
        if self.scaler.is_enabled() and self.scaler.get_scale() > FP16_MAX_SCALE:
            self.scaler.update(FP16_MAX_SCALE)
        return {"lr": lr, "loss": loss_mean, "grad_norm": grad_norm}

    def parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.var.parameters())

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, loader, from_cache: bool) -> ScaleStats:
        """Held-out per-scale stats with cond-drop OFF (the release keeps its 10% on; see the run's protocol).

        The global RNG is forked so that evaluating never changes the training trajectory.
        """
        stats = ScaleStats(self.var.patch_nums)
        was_training, rate = self.var.training, self.var.cond_drop_rate
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            self.var.eval()
            self.var.cond_drop_rate = 0.0
            try:
                for data, label_B, _ in loader:
                    gt_BL, x_BLCv = self.targets_and_inputs(data, from_cache)
                    with self._autocast():
                        logits_BLV = self.var(label_B.to(self.device), x_BLCv)
                    stats.add(logits_BLV.float(), gt_BL)
            finally:
                self.var.cond_drop_rate = rate
                self.var.train(was_training)
        packed = all_reduce_sum(self.env, stats.packed().to(self.device))
        stats.load_packed(packed)
        return stats

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.var.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.var.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
