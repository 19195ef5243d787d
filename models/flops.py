"""Analytic FLOP counts of a VAR from its spec alone (no modules built).

FLOP convention (1 multiply-add = 2 FLOPs; matrix products only: norms, softmax, activations, interpolation and
embedding lookups are not counted; the VQVAE tokenizer is not counted). For one image, with C = width,
h = round(mlp_ratio * C), L tokens, V codes, Cvae latent channels, S scales, d blocks:

  forward  = d * (L * (8 C^2 + 4 C h)      qkv, proj, fc1, fc2 of every token
                  + 4 C A                  Q K^T and attention x V over A query-key pairs
                  + 12 C^2)                the block's AdaLN projection, once per image (once in total with
                                           shared AdaLN)
             + 2 L C V + 4 C^2             head and its AdaLN
             + 2 (L - first_l) Cvae C      word embedding of the teacher-forcing input

  A = L^2 for the release's dense masked attention (`attention="dense"`; what CUDA executes, and what the compute
  axis counts on every device), or the number of visible block-causal pairs sum_k n_k * cum_k
  (`attention="causal"`; about what the CPU's per-scale blocks execute, models/block_attention.py).

  training step = 3 x forward(dense) - 2 (L - first_l) Cvae C: the backward pass costs twice the forward,
  except that the word embedding's input needs no gradient.

  sampling (KV cache) = for every scale k: the forward terms of its n_k new tokens against cum_k cached keys,
  AdaLN and head AdaLN recomputed at every scale, and the word embedding of the next scale's input;
  x 2 with classifier-free guidance (conditional and unconditional rows), except the word embedding, which
  runs once and is then shared by both rows. `phi_flops_per_image` adds the
  tokenizer's Phi convolutions that sampling runs (one 3x3 conv per scale on the latent grid).
"""
from __future__ import annotations

from .params import _hidden, param_counts
from .registry import TokenizerSpec, VARSpec


def block_causal_pairs(patch_nums) -> int:
    seen, pairs = 0, 0
    for pn in patch_nums:
        seen += pn * pn
        pairs += pn * pn * seen
    return pairs


def _ada_flops(spec: VARSpec) -> int:
    C = spec.width
    return 12 * C * C * (1 if spec.shared_aln else spec.depth)


def forward_flops(spec: VARSpec, attention: str = "dense") -> int:
    """FLOPs of one teacher-forced forward pass of one image."""
    if attention not in ("dense", "causal"):
        raise ValueError(f"attention must be 'dense' or 'causal'; got {attention!r}")
    C, h, L, V, Cvae = spec.width, _hidden(spec), spec.L, spec.tokenizer.vocab_size, spec.tokenizer.z_channels
    pairs = L * L if attention == "dense" else block_causal_pairs(spec.patch_nums)
    first_l = spec.patch_nums[0] ** 2
    per_block = L * (8 * C * C + 4 * C * h) + 4 * C * pairs
    return (spec.depth * per_block + _ada_flops(spec) + 2 * L * C * V + 4 * C * C
            + 2 * (L - first_l) * Cvae * C)


def train_flops_per_image(spec: VARSpec) -> int:
    """FLOPs of forward + backward for one image with the release's dense masked attention (what CUDA runs; a
    CPU skips the masked products, models/block_attention.py, but the compute axis stays device-independent)."""
    first_l = spec.patch_nums[0] ** 2
    return 3 * forward_flops(spec, "dense") - 2 * (spec.L - first_l) * spec.tokenizer.z_channels * spec.width


def sample_flops_per_image(spec: VARSpec, cfg: bool = True) -> int:
    """FLOPs of KV-cached sampling of one image (transformer only; see `phi_flops_per_image`)."""
    C, h, V, Cvae = spec.width, _hidden(spec), spec.tokenizer.vocab_size, spec.tokenizer.z_channels
    rows = 2 if cfg else 1
    # a shared AdaLN projection runs once per call; the head runs once, on the guided (CFG-mixed) features
    total, seen = (rows * _ada_flops(spec) if spec.shared_aln else 0), 0
    for k, pn in enumerate(spec.patch_nums):
        n = pn * pn
        seen += n
        per_row = spec.depth * (n * (8 * C * C + 4 * C * h) + 4 * C * n * seen)
        total += rows * (per_row + (0 if spec.shared_aln else _ada_flops(spec)) + 4 * C * C) + 2 * n * C * V
        if k + 1 < len(spec.patch_nums):  # the next input is embedded once, then shared by both CFG rows
            total += 2 * spec.patch_nums[k + 1] ** 2 * Cvae * C
    return total


def phi_flops_per_image(tokenizer: TokenizerSpec) -> int:
    """The quantizer's Phi convolutions during sampling: one 3x3 conv per scale on the latent grid."""
    grid = tokenizer.patch_nums[-1] ** 2
    return len(tokenizer.patch_nums) * 2 * 9 * tokenizer.z_channels ** 2 * grid


def model_block(spec: VARSpec) -> dict:
    """The `model` block of a run's config.json (docs/contracts.md)."""
    counts = param_counts(spec)
    return {
        "name": spec.name, "depth": spec.depth, "width": spec.width, "heads": spec.heads,
        "patch_nums": list(spec.patch_nums), "vocab_size": spec.tokenizer.vocab_size,
        "num_classes": spec.num_classes, "shared_aln": spec.shared_aln,
        "params_total": counts["total"], "params_wo_emb": counts["total_wo_embeddings"],
        "flops_fwd_per_image": forward_flops(spec, "dense"),
        "flops_train_per_image": train_flops_per_image(spec),
        "flops_sample_per_image": sample_flops_per_image(spec),
    }
