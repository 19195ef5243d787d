"""Named model presets: `VAR-d16` ... `VAR-d36` (the release's depth rule) and small-study families.

A preset is a plain description (`VARSpec` with its `TokenizerSpec`); `build(spec)` turns it into modules.
Names:
  * `VAR-d{N}`: the official rule (width 64*N, N heads, drop-path 0.1*N/24) on the released 256px tokenizer;
    `VAR-d36` uses shared AdaLN at 512px, as the release trained it.
  * `VAR-mini-d{N}`: a CPU-sized family for scaling studies (width 32*N, N heads, head dim 32) on the
    `mini-f8-32px` tokenizer (32x32 images, 4 scales, L = 30 tokens).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import torch

from .quant import PATCH_NUMS_256, PATCH_NUMS_512
from .var import VAR
from .vqvae import VQVAE


@dataclass(frozen=True)
class TokenizerSpec:
    name: str
    vocab_size: int
    z_channels: int
    ch: int
    ch_mult: tuple[int, ...]
    patch_nums: tuple[int, ...]
    share_quant_resi: int = 4

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def resolution(self) -> int:
        return self.patch_nums[-1] * self.downsample

    def vqvae_kwargs(self) -> dict:
        return dict(vocab_size=self.vocab_size, z_channels=self.z_channels, ch=self.ch, ch_mult=self.ch_mult,
                    v_patch_nums=self.patch_nums, share_quant_resi=self.share_quant_resi)


TOKENIZERS: dict[str, TokenizerSpec] = {
    "vqvae-f16-256": TokenizerSpec("vqvae-f16-256", 4096, 32, 160, (1, 1, 2, 2, 4), PATCH_NUMS_256),
    "vqvae-f16-512": TokenizerSpec("vqvae-f16-512", 4096, 32, 160, (1, 1, 2, 2, 4), PATCH_NUMS_512),
    "mini-f8-32px": TokenizerSpec("mini-f8-32px", 256, 16, 32, (1, 2, 2, 4), (1, 2, 3, 4)),
    "mini-f4-32px": TokenizerSpec("mini-f4-32px", 512, 16, 32, (1, 2, 4), (1, 2, 3, 4, 6, 8)),
    "mini-f8-64px": TokenizerSpec("mini-f8-64px", 512, 16, 64, (1, 2, 2, 4), (1, 2, 3, 4, 6, 8)),
}


@dataclass(frozen=True)
class VARSpec:
    name: str
    depth: int
    width: int
    heads: int
    drop_path_rate: float
    tokenizer: TokenizerSpec
    num_classes: int = 1000
    shared_aln: bool = False
    mlp_ratio: float = 4.0
    attn_l2_norm: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.tokenizer.patch_nums

    @property
    def L(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    def var_kwargs(self) -> dict:
        return dict(num_classes=self.num_classes, depth=self.depth, embed_dim=self.width, num_heads=self.heads,
                    mlp_ratio=self.mlp_ratio, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=self.drop_path_rate,
                    norm_eps=1e-6, shared_aln=self.shared_aln, cond_drop_rate=0.1, attn_l2_norm=self.attn_l2_norm,
                    patch_nums=self.patch_nums)

    def to_dict(self) -> dict:
        return asdict(self)


_NAME_RE = re.compile(r"^VAR-(?P<family>mini-)?d(?P<depth>\d+)$")
STANDARD_DEPTHS = (6, 8, 10, 12, 14, 16, 18, 20, 24, 30, 36)


def var_spec(name: str, *, num_classes: int | None = None, tokenizer: str | TokenizerSpec | None = None,
             width_per_depth: int | None = None) -> VARSpec:
    """Resolve a preset name; `num_classes`, `tokenizer` and `width_per_depth` override the preset's."""
    match = _NAME_RE.match(name)
    if not match:
        raise ValueError(f"unknown model name {name!r}: expected 'VAR-d<depth>' (e.g. VAR-d16) or 'VAR-mini-d<depth>'"
                         f" (standard depths: {', '.join(map(str, STANDARD_DEPTHS))})")
    depth = int(match["depth"])
    if depth < 1:
        raise ValueError(f"model depth must be >= 1; got {name!r}")
    mini = match["family"] is not None
    per_depth = width_per_depth or (32 if mini else 64)
    if isinstance(tokenizer, str):
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {tokenizer!r}; known: {', '.join(TOKENIZERS)}")
        tokenizer = TOKENIZERS[tokenizer]
    if tokenizer is None:
        tokenizer = TOKENIZERS["mini-f8-32px" if mini else ("vqvae-f16-512" if depth == 36 else "vqvae-f16-256")]
    spec = VARSpec(name=name, depth=depth, width=per_depth * depth, heads=depth, drop_path_rate=0.1 * depth / 24,
                   tokenizer=tokenizer, num_classes=1000 if not mini else 10, shared_aln=(depth == 36 and not mini))
    if num_classes is not None:
        spec = replace(spec, num_classes=num_classes)
    return spec


def list_presets() -> list[str]:
    return [f"VAR-d{d}" for d in STANDARD_DEPTHS] + [f"VAR-mini-d{d}" for d in range(1, 9)]


def build(spec: VARSpec, device: str | torch.device = "cpu", init: bool = True, vae=None):
    """Instantiate (vae, var) for a spec; `device="meta"` builds the structure without memory."""
    with torch.device(device):
        if vae is None:
            vae = VQVAE(test_mode=True, **spec.tokenizer.vqvae_kwargs())
        var = VAR(vae_local=vae, **spec.var_kwargs())
    if init and torch.device(device).type != "meta":
        var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    return vae, var


def spec_from_checkpoint_keys(shapes: dict[str, Sequence[int]]) -> dict:
    """Infer depth, width and heads from a VAR state dict's key shapes (for error messages)."""
    depth = 1 + max((int(k.split(".")[1]) for k in shapes if k.startswith("blocks.")), default=-1)
    width = int(shapes["word_embed.weight"][0]) if "word_embed.weight" in shapes else None
    heads = None
    if "blocks.0.attn.scale_mul_1H11" in shapes:
        heads = int(shapes["blocks.0.attn.scale_mul_1H11"][1])
    return {"depth": depth, "width": width, "heads": heads, "shared_aln": "shared_ada_lin.1.weight" in shapes}
