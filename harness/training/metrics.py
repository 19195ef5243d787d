"""Per-scale loss and token error rate, the metrics.jsonl records and status.json of a run (docs/contracts.md).

Sums (not means) are accumulated per scale so that batches of any size, micro-batches and ranks combine exactly:
loss_mean is the cross-entropy averaged over all tokens of all scales (each scale weighted by its token count,
as the official loss), loss_last the mean over the last scale's tokens, err = 1 - top-1 accuracy as a fraction.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.files import save_json, utc_now_iso

# dense bf16 peak FLOP/s per device, for MFU when the config gives none (vendor data sheets, SXM parts)
KNOWN_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12,
                    "V100": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12}


def peak_flops_per_device(configured: float | None, device: torch.device) -> float | None:
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in KNOWN_PEAK_FLOPS.items():
        if key in name:
            return value
    return None


class ScaleStats:
    """Running per-scale sums of cross-entropy, wrong top-1 predictions and token counts (float64)."""

    def __init__(self, patch_nums) -> None:
        self.patch_nums = tuple(patch_nums)
        S = len(self.patch_nums)
        self.loss_sum = torch.zeros(S, dtype=torch.float64)
        self.wrong = torch.zeros(S, dtype=torch.float64)
        self.count = torch.zeros(S, dtype=torch.float64)

    @torch.no_grad()
    def add(self, logits_BLV: torch.Tensor, target_BL: torch.Tensor, ce_BL: torch.Tensor | None = None) -> None:
        """Add a batch; ``ce_BL`` (unsmoothed per-token CE) is reused when the caller already has it."""
        if ce_BL is None:
            V = logits_BLV.shape[-1]
            ce_BL = F.cross_entropy(logits_BLV.float().reshape(-1, V), target_BL.reshape(-1), reduction="none")
            ce_BL = ce_BL.view(target_BL.shape)
        wrong_BL = (logits_BLV.argmax(dim=-1) != target_BL).double()
        if self.loss_sum.device != ce_BL.device:  # accumulate where the batch is: no GPU sync per step
            self.loss_sum, self.wrong, self.count = (t.to(ce_BL.device) for t in self.packed())
        begin = 0
        for si, pn in enumerate(self.patch_nums):
            end = begin + pn * pn
            self.loss_sum[si] += ce_BL[:, begin:end].double().sum()
            self.wrong[si] += wrong_BL[:, begin:end].sum()
            self.count[si] += ce_BL[:, begin:end].numel()
            begin = end

    def packed(self) -> torch.Tensor:
        return torch.stack([self.loss_sum, self.wrong, self.count])

    def load_packed(self, packed: torch.Tensor) -> None:
        self.loss_sum, self.wrong, self.count = (t.clone() for t in packed.double().cpu())

    def reset(self) -> None:
        for t in (self.loss_sum, self.wrong, self.count):
            t.zero_()

    def empty(self) -> bool:
        return bool(self.count.sum() == 0)

    def summary(self) -> dict[str, Any]:
        count = self.count.clamp_min(1)
        loss_s, err_s = self.loss_sum / count, self.wrong / count
        total = self.count.sum().clamp_min(1)
        return {
            "loss_mean": float(self.loss_sum.sum() / total), "loss_last": float(loss_s[-1]),
            "err_mean": float(self.wrong.sum() / total), "err_last": float(err_s[-1]),
            "loss_per_scale": [float(x) for x in loss_s], "err_per_scale": [float(x) for x in err_s],
        }


class MetricsLog:
    """Append-only metrics.jsonl of a run (rank 0 writes).

    A resumed run first cuts the file back to the length it had at the checkpoint it resumes from: records after
    that point belong to the lost stretch of the run and are recomputed, identically on CPU, by the resumed one.
    """

    def __init__(self, run_dir: Path, is_writer: bool) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.is_writer = is_writer

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate_to(self, size: int) -> None:
        if self.is_writer and self.path.exists() and self.path.stat().st_size > size:
            with open(self.path, "r+b") as fh:
                fh.truncate(size)

    def append(self, record: dict[str, Any]) -> None:
        if not self.is_writer:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def write_status(run_dir: Path, state: str, step: int, total_steps: int, error: str | None = None,
                 **extra: Any) -> None:
    save_json(Path(run_dir) / "status.json", {
        "state": state, "step": step, "total_steps": total_steps, "error": error,
        "updated": utc_now_iso(), **extra})
