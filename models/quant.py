"""Residual multi-scale vector quantizer (VAR's tokenizer core).

Scale k quantizes the area-downsampled residual `f_rest` to a pn_k x pn_k grid of codebook ids, upsamples the
chosen code vectors back to the latent grid with bicubic interpolation, refines them with a Phi convolution and
adds them to the running reconstruction `f_hat`. The last scale works on the latent grid itself.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

# the released tokenizers' scale schedules (side lengths of the token maps, coarse to fine)
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


class Phi(nn.Conv2d):
    """3x3 residual refinement: h * (1 - r) + conv(h) * r."""

    def __init__(self, channels: int, resi_ratio: float):
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw.mul(1 - self.resi_ratio) + super().forward(h_BChw).mul_(self.resi_ratio)


def phi_ticks(count: int) -> np.ndarray:
    # float64 linspace on purpose: two scales of the 10-scale schedule are exact ties in real arithmetic and the
    # released weights were trained with the tie broken by this rounding (first minimum wins)
    if count == 4:
        return np.linspace(1 / 3 / count, 1 - 1 / 3 / count, count)
    return np.linspace(1 / 2 / count, 1 - 1 / 2 / count, count)


class PhiPartiallyShared(nn.Module):
    """K Phi convolutions shared by all scales; scale position t in [0, 1] picks the nearest tick."""

    def __init__(self, qresi_ls: nn.ModuleList):
        super().__init__()
        self.qresi_ls = qresi_ls
        self.ticks = phi_ticks(len(qresi_ls))

    def index_for(self, at_from_0_to_1: float) -> int:
        return int(np.argmin(np.abs(self.ticks - at_from_0_to_1)))

    def __getitem__(self, at_from_0_to_1: float) -> nn.Module:
        return self.qresi_ls[self.index_for(at_from_0_to_1)]


class PhiShared(nn.Module):
    def __init__(self, qresi: nn.Module):
        super().__init__()
        self.qresi = qresi

    def __getitem__(self, _: float) -> nn.Module:
        return self.qresi


class PhiNonShared(nn.ModuleList):
    """One Phi per scale."""

    def __init__(self, qresi: list[nn.Module]):
        super().__init__(qresi)
        self.ticks = phi_ticks(len(qresi))

    def __getitem__(self, at_from_0_to_1):  # type: ignore[override]
        if isinstance(at_from_0_to_1, float):
            return super().__getitem__(int(np.argmin(np.abs(self.ticks - at_from_0_to_1))))
        return super().__getitem__(at_from_0_to_1)


def _scale_position(si: int, num_scales: int) -> float:
    return si / (num_scales - 1) if num_scales > 1 else 0.0


class VectorQuantizer2(nn.Module):
    def __init__(self, vocab_size: int, Cvae: int, using_znorm: bool, beta: float = 0.25,
                 default_qresi_counts: int = 0, v_patch_nums: Sequence[int] = PATCH_NUMS_256,
                 quant_resi: float = 0.5, share_quant_resi: int = 4):
        super().__init__()
        self.vocab_size, self.Cvae = vocab_size, Cvae
        self.using_znorm = using_znorm
        self.v_patch_nums = tuple(v_patch_nums)
        self.beta = beta
        make_phi = lambda: Phi(Cvae, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity()  # noqa: E731
        if share_quant_resi == 0:
            self.quant_resi = PhiNonShared([make_phi() for _ in range(default_qresi_counts or len(v_patch_nums))])
        elif share_quant_resi == 1:
            self.quant_resi = PhiShared(make_phi())
        else:
            self.quant_resi = PhiPartiallyShared(nn.ModuleList([make_phi() for _ in range(share_quant_resi)]))
        # codebook hit statistics per scale (EMA while the tokenizer trains); part of the released state dict
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.v_patch_nums), vocab_size))
        self.record_hit = 0
        self.embedding = nn.Embedding(vocab_size, Cvae)

    def phi(self, si: int) -> nn.Module:
        return self.quant_resi[_scale_position(si, len(self.v_patch_nums))]

    def nearest_code(self, z_NC: torch.Tensor) -> torch.Tensor:
        E_VC = self.embedding.weight.data
        if self.using_znorm:
            return torch.argmax(F.normalize(z_NC, dim=-1) @ F.normalize(E_VC, dim=-1).T, dim=1)
        dist_NV = torch.sum(z_NC.square(), dim=1, keepdim=True) + torch.sum(E_VC.square(), dim=1)
        dist_NV.addmm_(z_NC, E_VC.T, alpha=-2, beta=1)
        return torch.argmin(dist_NV, dim=1)

    def _check_latent(self, f_BChw: torch.Tensor) -> None:
        pn = self.v_patch_nums[-1]
        if f_BChw.ndim != 4 or f_BChw.shape[1] != self.Cvae or f_BChw.shape[-2:] != (pn, pn):
            raise ValueError(f"quantizer input must be (B, {self.Cvae}, {pn}, {pn}) for patch_nums {self.v_patch_nums};"
                             f" got {tuple(f_BChw.shape)}")

    def _code_map(self, idx_Bhw: torch.Tensor, si: int, H: int, W: int) -> torch.Tensor:
        h_BChw = self.embedding(idx_Bhw).permute(0, 3, 1, 2)
        if si != len(self.v_patch_nums) - 1:
            h_BChw = F.interpolate(h_BChw, size=(H, W), mode="bicubic")
        return self.phi(si)(h_BChw.contiguous())

    def f_to_idxBl_or_fhat(self, f_BChw: torch.Tensor, to_fhat: bool, v_patch_nums=None) -> list[torch.Tensor]:
        """Encode a latent into token ids per scale (or the cumulative f_hat after each scale)."""
        self._check_latent(f_BChw)
        B, C, H, W = f_BChw.shape
        patch_nums = tuple(v_patch_nums or self.v_patch_nums)
        num_scales = len(patch_nums)
        f_rest = f_BChw.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        outputs = []
        for si, pn in enumerate(patch_nums):
            z_BChw = f_rest if si == num_scales - 1 else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx_N = self.nearest_code(z_BChw.permute(0, 2, 3, 1).reshape(-1, C))
            h_BChw = self._code_map(idx_N.view(B, pn, pn), si, H, W)
            f_hat.add_(h_BChw)
            f_rest.sub_(h_BChw)
            outputs.append(f_hat.clone() if to_fhat else idx_N.reshape(B, pn * pn))
        return outputs

    def embed_to_fhat(self, ms_h_BChw: list[torch.Tensor], all_to_max_scale: bool = True, last_one: bool = False):
        """Sum the refined code maps of every scale; returns the final f_hat or the list after each scale."""
        if not all_to_max_scale:
            raise NotImplementedError("all_to_max_scale=False is experimental and unused in the official code")
        B = ms_h_BChw[0].shape[0]
        H = W = self.v_patch_nums[-1]
        num_scales = len(self.v_patch_nums)
        f_hat = ms_h_BChw[0].new_zeros(B, self.Cvae, H, W, dtype=torch.float32)
        per_scale = []
        for si in range(num_scales):
            h_BChw = ms_h_BChw[si]
            if si < num_scales - 1:
                h_BChw = F.interpolate(h_BChw, size=(H, W), mode="bicubic")
            f_hat.add_(self.phi(si)(h_BChw))
            if not last_one:
                per_scale.append(f_hat.clone())
        return f_hat if last_one else per_scale

    def idxBl_to_var_input(self, gt_ms_idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input: for scale k+1, the area-downsampled cumulative f_hat of scales 0..k."""
        B, C = gt_ms_idx_Bl[0].shape[0], self.Cvae
        H = W = self.v_patch_nums[-1]
        num_scales = len(self.v_patch_nums)
        f_hat = gt_ms_idx_Bl[0].new_zeros(B, C, H, W, dtype=torch.float32)
        next_scales = []
        for si in range(num_scales - 1):
            pn = self.v_patch_nums[si]
            h_BChw = self.embedding(gt_ms_idx_Bl[si]).transpose(1, 2).reshape(B, C, pn, pn)
            f_hat.add_(self.phi(si)(F.interpolate(h_BChw, size=(H, W), mode="bicubic")))
            pn_next = self.v_patch_nums[si + 1]
            next_scales.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").view(B, C, -1).transpose(1, 2))
        return torch.cat(next_scales, dim=1)

    def get_next_autoregressive_input(self, si: int, SN: int, f_hat: torch.Tensor, h_BChw: torch.Tensor):
        """One step of sampling: add scale si's code map to f_hat; return (f_hat, next scale's input map)."""
        HW = self.v_patch_nums[-1]
        if si != SN - 1:
            f_hat.add_(self.phi(si)(F.interpolate(h_BChw, size=(HW, HW), mode="bicubic")))
            pn_next = self.v_patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(pn_next, pn_next), mode="area")
        f_hat.add_(self.phi(si)(h_BChw))
        return f_hat, f_hat

    def forward(self, f_BChw: torch.Tensor, ret_usages: bool = False):
        """Training path: straight-through f_hat, per-scale codebook usage (%), and the VQ loss."""
        self._check_latent(f_BChw)
        f_BChw = f_BChw.float()
        B, C, H, W = f_BChw.shape
        f_no_grad = f_BChw.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        num_scales = len(self.v_patch_nums)
        vq_loss = f_BChw.new_zeros(())
        with torch.autocast(device_type=f_BChw.device.type, enabled=False):
            for si, pn in enumerate(self.v_patch_nums):
                z_BChw = f_rest if si == num_scales - 1 else F.interpolate(f_rest, size=(pn, pn), mode="area")
                idx_N = self.nearest_code(z_BChw.permute(0, 2, 3, 1).reshape(-1, C))
                if self.training:
                    self._record_hits(si, idx_N)
                h_BChw = self._code_map(idx_N.view(B, pn, pn), si, H, W)
                f_hat = f_hat + h_BChw
                f_rest = f_rest - h_BChw.detach()
                vq_loss = vq_loss + F.mse_loss(f_hat.detach(), f_BChw).mul(self.beta) + F.mse_loss(f_hat, f_no_grad)
            vq_loss = vq_loss / num_scales
            f_hat_st = (f_hat.detach() - f_no_grad) + f_BChw  # straight-through estimator
        usages = None
        if ret_usages:
            world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            margin = world * (f_BChw.numel() / C) / self.vocab_size * 0.08
            usages = [(self.ema_vocab_hit_SV[si] >= margin).float().mean().item() * 100 for si in range(num_scales)]
        return f_hat_st, usages, vq_loss

    @torch.no_grad()
    def _record_hits(self, si: int, idx_N: torch.Tensor) -> None:
        hit_V = idx_N.bincount(minlength=self.vocab_size).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(hit_V)
        if self.record_hit == 0:
            self.ema_vocab_hit_SV[si].copy_(hit_V)
        elif self.record_hit < 100:
            self.ema_vocab_hit_SV[si].mul_(0.9).add_(hit_V.mul(0.1))
        else:
            self.ema_vocab_hit_SV[si].mul_(0.99).add_(hit_V.mul(0.01))
        if si == len(self.v_patch_nums) - 1:
            self.record_hit += 1
