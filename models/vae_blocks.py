"""Convolutional encoder and decoder of the multi-scale VQVAE.

The layout (module names, channel progression, where attention sits) follows the LDM vq-f16 network as the
official VAR release uses it, so that `vae_ch160v4096z32.pth` loads with strict key matching. The channel
multipliers are configurable so that small studies can use 4x or 8x downsampling.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class Upsample2x(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BCHW, scale_factor=2, mode="nearest"))


class Downsample2x(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        # asymmetric padding (right and bottom only), as in the released weights' training code
        return self.conv(F.pad(x_BCHW, pad=(0, 1, 0, 1), mode="constant", value=0))


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        in_place = not torch.is_grad_enabled()  # the norms' outputs are fresh; autograd needs them kept
        h = self.conv1(F.silu(self.norm1(x_BCHW), inplace=in_place))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=in_place)))
        if in_place:  # the sum into conv2's fresh output (the same bits: addition commutes): one large buffer
            return h.add_(self.nin_shortcut(x_BCHW))  # fewer to fault in, 8% of a 256-px decode on a CPU
        return self.nin_shortcut(x_BCHW) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over all positions, with one fused 1x1 qkv convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.C = channels
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        q_BCN, k_BCN, v_BCN = self.qkv(self.norm(x_BCHW)).reshape(B, 3, C, H * W).unbind(1)
        out_B1NC = F.scaled_dot_product_attention(
            q_BCN.transpose(1, 2).unsqueeze(1), k_BCN.transpose(1, 2).unsqueeze(1), v_BCN.transpose(1, 2).unsqueeze(1)
        )
        h_BCHW = out_B1NC.squeeze(1).transpose(1, 2).reshape(B, C, H, W)
        return x_BCHW + self.proj_out(h_BCHW)  # not in place: proj_out's output is channels-last, x's layout wins


class _Level(nn.Module):
    """One resolution level: residual blocks, optional attention after each, optional resampling."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module], resample_name: str | None,
                 resample: nn.Module | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)
        if resample_name is not None:
            setattr(self, resample_name, resample)
        self._resample_name = resample_name

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[j](h)
        if self._resample_name is not None:
            h = getattr(self, self._resample_name)(h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, dropout: float, with_attn: bool):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels) if with_attn else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, *, ch: int = 128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks: int = 2, dropout: float = 0.0,
                 in_channels: int = 3, z_channels: int = 32, using_sa: bool = True, using_mid_sa: bool = True):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        in_mult = (1,) + tuple(ch_mult)
        num_levels = len(ch_mult)
        levels = []
        for i in range(num_levels):
            c_in, c_out = ch * in_mult[i], ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(c_in, c_out, dropout))
                c_in = c_out
                if using_sa and i == num_levels - 1:  # attention only at the coarsest level
                    attns.append(AttnBlock(c_out))
            last = i == num_levels - 1
            levels.append(_Level(blocks, attns, None if last else "downsample", None if last else Downsample2x(c_out)))
        self.down = nn.ModuleList(levels)
        c_top = ch * ch_mult[-1]
        self.mid = _Mid(c_top, dropout, using_mid_sa)
        self.norm_out = group_norm(c_top)
        self.conv_out = nn.Conv2d(c_top, z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(img_B3HW)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))


class Decoder(nn.Module):
    def __init__(self, *, ch: int = 128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks: int = 2, dropout: float = 0.0,
                 in_channels: int = 3, z_channels: int = 32, using_sa: bool = True, using_mid_sa: bool = True):
        super().__init__()
        num_levels = len(ch_mult)
        c_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, c_in, kernel_size=3, stride=1, padding=1)
        self.mid = _Mid(c_in, dropout, using_mid_sa)
        levels: list[nn.Module] = []
        for i in reversed(range(num_levels)):
            c_out = ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(c_in, c_out, dropout))
                c_in = c_out
                if using_sa and i == num_levels - 1:
                    attns.append(AttnBlock(c_out))
            first = i == 0
            # stored fine-to-coarse: `up.0` is the full-resolution level, as in the released key layout
            levels.insert(0, _Level(blocks, attns, None if first else "upsample", None if first else Upsample2x(c_out)))
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, z_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z_BCHW))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))
