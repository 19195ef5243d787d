"""Transformer blocks of VAR: AdaLN-modulated self-attention with L2-normalised queries and keys.

Module and parameter names match the released checkpoints (`blocks.N.attn.mat_qkv`, `ada_lin.1`, ...).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .block_attention import BlockCausalMask


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4f}"


class FFN(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop, inplace=True) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class SelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attn_l2_norm: bool = True):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)  # keeps the learned temperature bounded
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)  # the official (unusual) choice without L2 norm
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))  # keys carry no bias
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop, inplace=True) if proj_drop > 0 else nn.Identity()
        self.attn_drop = attn_drop
        self.caching = False
        self.cached_k_BHLc: torch.Tensor | None = None
        self.cached_v_BHLc: torch.Tensor | None = None
        self.cache_max_len: int | None = None
        self.cached_len = 0

    def kv_caching(self, enable: bool, max_len: int | None = None) -> None:
        """Start (or stop) caching keys/values; with `max_len` the cache is allocated once at its full length."""
        self.caching = enable
        self.cached_k_BHLc = self.cached_v_BHLc = None
        self.cache_max_len = max_len if enable else None
        self.cached_len = 0

    def _cache_keys_values(self, k_BHLc: torch.Tensor, v_BHLc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this scale's keys/values; returns those of all scales so far. The cache holds normalised keys."""
        if self.cache_max_len is None:
            if self.cached_k_BHLc is not None:
                k_BHLc = torch.cat((self.cached_k_BHLc, k_BHLc), dim=2)
                v_BHLc = torch.cat((self.cached_v_BHLc, v_BHLc), dim=2)
            self.cached_k_BHLc, self.cached_v_BHLc = k_BHLc, v_BHLc
            return k_BHLc, v_BHLc
        if self.cached_k_BHLc is None:  # static shapes: no reallocation per scale (ready for CUDA graphs)
            B, H, _, c = k_BHLc.shape
            self.cached_k_BHLc = k_BHLc.new_empty(B, H, self.cache_max_len, c)
            self.cached_v_BHLc = v_BHLc.new_empty(B, H, self.cache_max_len, c)
        begin, end = self.cached_len, self.cached_len + k_BHLc.shape[2]
        if end > self.cache_max_len:
            raise ValueError(f"KV cache of length {self.cache_max_len} cannot take tokens {begin}..{end}")
        self.cached_k_BHLc[:, :, begin:end] = k_BHLc
        self.cached_v_BHLc[:, :, begin:end] = v_BHLc
        self.cached_len = end
        return self.cached_k_BHLc[:, :, :end], self.cached_v_BHLc[:, :, :end]

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q_BHLc, k_BHLc, v_BHLc = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.attn_l2_norm:
            scale_mul_1H11 = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q_BHLc = F.normalize(q_BHLc, dim=-1).mul(scale_mul_1H11)
            k_BHLc = F.normalize(k_BHLc, dim=-1)
        if self.caching:
            k_BHLc, v_BHLc = self._cache_keys_values(k_BHLc, v_BHLc)
        dropout_p = self.attn_drop if self.training else 0.0
        if isinstance(attn_bias, BlockCausalMask):
            out_BHLc = attn_bias.attend(q_BHLc, k_BHLc, v_BHLc, scale=self.scale, dropout_p=dropout_p)
        else:
            out_BHLc = F.scaled_dot_product_attention(q_BHLc, k_BHLc, v_BHLc, attn_mask=attn_bias,
                                                      dropout_p=dropout_p, scale=self.scale)
        return self.proj_drop(self.proj(out_BHLc.transpose(1, 2).reshape(B, L, C)))


class AdaLNSelfAttn(nn.Module):
    """x += g1 * attn(LN(x)(1+s1)+b1); x += g2 * ffn(LN(x)(1+s2)+b2), modulations from the class condition."""

    def __init__(self, embed_dim: int, cond_dim: int, shared_aln: bool, num_heads: int, mlp_ratio: float = 4.0,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6,
                 attn_l2_norm: bool = True):
        super().__init__()
        self.C, self.D = embed_dim, cond_dim
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.attn = SelfAttention(embed_dim, num_heads, attn_drop=attn_drop, proj_drop=drop,
                                  attn_l2_norm=attn_l2_norm)
        self.ffn = FFN(embed_dim, round(embed_dim * mlp_ratio), drop=drop)
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.shared_aln = shared_aln
        if shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, embed_dim) / embed_dim ** 0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 6 * embed_dim))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        if self.shared_aln:  # cond_BD is already the shared projection, shape (B, 1, 6, C)
            mods = (self.ada_gss + cond_BD).unbind(2)
        else:
            mods = self.ada_lin(cond_BD).view(-1, 1, 6, self.C).unbind(2)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mods
        h = self.attn(self.ln_wo_grad(x_BLC).mul(scale1.add(1)).add_(shift1), attn_bias=attn_bias)
        x_BLC = x_BLC + self.drop_path(h.mul_(gamma1))
        h = self.ffn(self.ln_wo_grad(x_BLC).mul(scale2.add(1)).add_(shift2))
        return x_BLC + self.drop_path(h.mul(gamma2))


class SharedAdaLin(nn.Linear):
    """One AdaLN projection shared by all blocks (used by VAR-d36)."""

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        C = self.weight.shape[0] // 6
        return super().forward(cond_BD).view(-1, 1, 6, C)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, D: int, norm_eps: float = 1e-6):
        super().__init__()
        self.C, self.D = C, D
        self.ln_wo_grad = nn.LayerNorm(C, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 2 * C))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)
