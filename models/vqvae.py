"""The multi-scale VQVAE tokenizer: image <-> token ids per scale.

Constructor keywords and method names match the official `models.VQVAE`, so that code written against the
official API runs unchanged; `ch_mult` (downsampling 2**(len(ch_mult)-1)) is our addition for small studies.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .quant import PATCH_NUMS_256, VectorQuantizer2
from .vae_blocks import Decoder, Encoder

RELEASE_CH_MULT = (1, 1, 2, 2, 4)


class VQVAE(nn.Module):
    def __init__(self, vocab_size: int = 4096, z_channels: int = 32, ch: int = 128, dropout: float = 0.0,
                 beta: float = 0.25, using_znorm: bool = False, quant_conv_ks: int = 3, quant_resi: float = 0.5,
                 share_quant_resi: int = 4, default_qresi_counts: int = 0,
                 v_patch_nums: Sequence[int] = PATCH_NUMS_256, test_mode: bool = True,
                 ch_mult: Sequence[int] = RELEASE_CH_MULT):
        super().__init__()
        if ch % 32 != 0:
            raise ValueError(f"VQVAE ch must be a multiple of 32 (GroupNorm with 32 groups); got ch={ch}")
        if list(v_patch_nums) != sorted(set(v_patch_nums)):
            raise ValueError(f"v_patch_nums must be strictly increasing; got {tuple(v_patch_nums)}")
        self.test_mode = test_mode
        self.V, self.Cvae = vocab_size, z_channels
        self.vocab_size = vocab_size
        self.ch, self.ch_mult = ch, tuple(ch_mult)
        self.v_patch_nums = tuple(v_patch_nums)
        net_kwargs = dict(ch=ch, ch_mult=self.ch_mult, num_res_blocks=2, dropout=dropout, in_channels=3,
                          z_channels=z_channels, using_sa=True, using_mid_sa=True)
        self.encoder = Encoder(**net_kwargs)
        self.decoder = Decoder(**net_kwargs)
        self.downsample = 2 ** (len(self.ch_mult) - 1)
        self.quantize = VectorQuantizer2(
            vocab_size=vocab_size, Cvae=z_channels, using_znorm=using_znorm, beta=beta,
            default_qresi_counts=default_qresi_counts, v_patch_nums=v_patch_nums, quant_resi=quant_resi,
            share_quant_resi=share_quant_resi,
        )
        self.quant_conv = nn.Conv2d(z_channels, z_channels, quant_conv_ks, stride=1, padding=quant_conv_ks // 2)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, quant_conv_ks, stride=1, padding=quant_conv_ks // 2)
        if test_mode:
            self.eval()
            for p in self.parameters():
                p.requires_grad_(False)

    # ---- properties used across varscale ----
    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.v_patch_nums

    @property
    def resolution(self) -> int:
        return self.v_patch_nums[-1] * self.downsample

    def check_image(self, img_B3HW: torch.Tensor) -> None:
        r = self.resolution
        if img_B3HW.ndim != 4 or img_B3HW.shape[1] != 3 or img_B3HW.shape[-2:] != (r, r):
            raise ValueError(
                f"this tokenizer takes images of shape (B, 3, {r}, {r}) in [-1, 1] (patch_nums ending in "
                f"{self.v_patch_nums[-1]}, downsampling {self.downsample}x); got {tuple(img_B3HW.shape)}"
            )

    # ---- official API ----
    def forward(self, inp: torch.Tensor, ret_usages: bool = False):
        self.check_image(inp)
        f_hat, usages, vq_loss = self.quantize(self.quant_conv(self.encoder(inp)), ret_usages=ret_usages)
        return self.decoder(self.post_quant_conv(f_hat)), usages, vq_loss

    def img_to_f(self, inp_img: torch.Tensor) -> torch.Tensor:
        self.check_image(inp_img)
        return self.quant_conv(self.encoder(inp_img))

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        if f_hat.device.type == "cpu" and not torch.is_grad_enabled():
            # the decoder is about a third of sampling on a CPU, and oneDNN's convolutions run about 25% faster on
            # channels-last inputs there; equal to the contiguous decode to float rounding
            f_hat = f_hat.contiguous(memory_format=torch.channels_last)
        return self.decoder(self.post_quant_conv(f_hat)).clamp_(-1, 1).contiguous()

    def img_to_idxBl(self, inp_img_no_grad: torch.Tensor, v_patch_nums=None) -> list[torch.Tensor]:
        return self.quantize.f_to_idxBl_or_fhat(self.img_to_f(inp_img_no_grad), to_fhat=False,
                                                v_patch_nums=v_patch_nums)

    def idxBl_to_img(self, ms_idx_Bl: list[torch.Tensor], same_shape: bool, last_one: bool = False):
        B = ms_idx_Bl[0].shape[0]
        ms_h_BChw = []
        for idx_Bl in ms_idx_Bl:
            pn = round(idx_Bl.shape[1] ** 0.5)
            if idx_Bl.min() < 0 or idx_Bl.max() >= self.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.vocab_size}); got [{idx_Bl.min()}, {idx_Bl.max()}]")
            ms_h_BChw.append(self.quantize.embedding(idx_Bl).transpose(1, 2).reshape(B, self.Cvae, pn, pn))
        return self.embed_to_img(ms_h_BChw, all_to_max_scale=same_shape, last_one=last_one)

    def embed_to_img(self, ms_h_BChw: list[torch.Tensor], all_to_max_scale: bool, last_one: bool = False):
        f_hats = self.quantize.embed_to_fhat(ms_h_BChw, all_to_max_scale=all_to_max_scale, last_one=last_one)
        if last_one:
            return self.fhat_to_img(f_hats)
        return [self.fhat_to_img(f_hat) for f_hat in f_hats]

    def img_to_reconstructed_img(self, x: torch.Tensor, v_patch_nums=None, last_one: bool = False):
        f_hats = self.quantize.f_to_idxBl_or_fhat(self.img_to_f(x), to_fhat=True, v_patch_nums=v_patch_nums)
        if last_one:
            return self.fhat_to_img(f_hats[-1])
        return [self.fhat_to_img(f_hat) for f_hat in f_hats]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # The hit statistics have one row per scale; a checkpoint trained on another schedule still loads
        # (the same rule as the official override): keep this model's own zero buffer instead.
        key = "quantize.ema_vocab_hit_SV"
        own = self.quantize.ema_vocab_hit_SV
        if key in state_dict and state_dict[key].shape[0] != own.shape[0]:
            state_dict = dict(state_dict)
            # a model built on the meta device has no values of its own yet: its fresh buffer is zeros
            state_dict[key] = torch.zeros(own.shape, dtype=own.dtype) if own.is_meta else own
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
