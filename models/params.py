"""Exact parameter counts of a VAR from its spec alone (no modules built).

`embeddings` = class_emb + pos_start + pos_1LC + lvl_embed (the split used for "without embeddings").
"""
from __future__ import annotations

from .registry import VARSpec


def _hidden(spec: VARSpec) -> int:
    return round(spec.width * spec.mlp_ratio)


def param_counts(spec: VARSpec) -> dict[str, int]:
    """Parameter counts by part; `total` equals sum(p.numel() for p in var.parameters())."""
    C, h, V, Cvae = spec.width, _hidden(spec), spec.tokenizer.vocab_size, spec.tokenizer.z_channels
    first_l = spec.patch_nums[0] ** 2
    attn = 3 * C * C + 2 * C + C * C + C + (spec.heads if spec.attn_l2_norm else 0)
    ffn = C * h + h + h * C + C
    ada = 6 * C if spec.shared_aln else 6 * C * C + 6 * C
    parts = {
        "class_emb": (spec.num_classes + 1) * C,
        "pos_start": first_l * C,
        "pos_1LC": spec.L * C,
        "lvl_embed": len(spec.patch_nums) * C,
        "word_embed": Cvae * C + C,
        "shared_ada_lin": 6 * C * C + 6 * C if spec.shared_aln else 0,
        "blocks": spec.depth * (attn + ffn + ada),
        "head_nm": C * 2 * C + 2 * C,
        "head": C * V + V,
    }
    embeddings = parts["class_emb"] + parts["pos_start"] + parts["pos_1LC"] + parts["lvl_embed"]
    total = sum(parts.values())
    return {**parts, "embeddings": embeddings, "total": total, "total_wo_embeddings": total - embeddings}
