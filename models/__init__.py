"""VAR model family: multi-scale VQVAE tokenizer and the VAR transformer, faithful to the official release.

`from models import VQVAE, VAR, build_vae_var` works as in the official demo notebook.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .quant import PATCH_NUMS_256
from .var import VAR
from .vqvae import RELEASE_CH_MULT, VQVAE

__all__ = ["VQVAE", "VAR", "build_vae_var", "depth_rule"]


def depth_rule(depth: int, width_per_depth: int = 64) -> tuple[int, int, float]:
    """The official scaling rule: width = 64 * depth, heads = depth (head dim 64), drop-path 0.1 * depth / 24."""
    return depth * width_per_depth, depth, 0.1 * depth / 24


def build_vae_var(device=None, patch_nums: Sequence[int] = PATCH_NUMS_256, V: int = 4096,
                  Cvae: int = 32, ch: int = 160, share_quant_resi: int = 4, num_classes: int = 1000, depth: int = 16,
                  shared_aln: bool = False, attn_l2_norm: bool = True, flash_if_available: bool = True,
                  fused_if_available: bool = True, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5,
                  init_head: float = 0.02, init_std: float = -1, ch_mult: Sequence[int] = RELEASE_CH_MULT,
                  ) -> tuple[VQVAE, VAR]:
    """Build the released tokenizer and a VAR of the given depth, initialised as the official code does.

    Unlike the official function this does not patch `reset_parameters` of torch's layers globally; pass
    `device="meta"` to build a large model without allocating memory.
    """
    width, heads, dpr = depth_rule(depth)
    device = torch.device(device) if device is not None else torch.device("cpu")
    with torch.device(device):
        vae = VQVAE(vocab_size=V, z_channels=Cvae, ch=ch, test_mode=True, share_quant_resi=share_quant_resi,
                    v_patch_nums=patch_nums, ch_mult=ch_mult)
        var = VAR(vae_local=vae, num_classes=num_classes, depth=depth, embed_dim=width, num_heads=heads,
                  mlp_ratio=4.0, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=dpr, norm_eps=1e-6,
                  shared_aln=shared_aln, cond_drop_rate=0.1, attn_l2_norm=attn_l2_norm, patch_nums=patch_nums,
                  flash_if_available=flash_if_available, fused_if_available=fused_if_available)
    if device.type != "meta":
        var.init_weights(init_adaln=init_adaln, init_adaln_gamma=init_adaln_gamma, init_head=init_head,
                         init_std=init_std)
    return vae, var
