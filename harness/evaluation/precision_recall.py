"""Improved precision and recall (Kynkäänniemi et al. 2019) of Inception features, as the ADM evaluator computes
them.

Radius of each point = squared distance to its k-th nearest neighbour (k = 3; the point itself, at distance 0,
is the first of the k + 1 smallest) within its own set; precision = share of samples inside at least one reference
ball (``<=``: a point exactly on a sphere is inside), recall = share of references inside at least one sample ball.

Distances (``distances=``):

* ``adm-float16`` (default): ADM's ``DistanceBlock`` reproduced. ADM casts both feature blocks to float16 and
  evaluates ``max(|u|^2 - 2 u.v + |v|^2, 0)`` op by op in float16, falling back to float32 for a whole block when
  any float16 value is not finite. Here every op's inputs are the float16 values, the op runs in float32 (an
  exact product of two float16 numbers, then a float32 sum) and its output is rounded to float16: what TF does
  with half tensors on a GPU and what Eigen does per element on a CPU. In the cross block the reference is the
  row side, as in ADM (``(|u|^2 - 2 u.v) + |v|^2`` rounds differently when the sides swap).
* ``float32`` / ``float64``: the same formula without the float16 rounding (the float32 path scores 1e-3 to
  2.4e-3 lower than ADM on real features; see docs/evaluation.md).

Work is done in row x column blocks (ADM: 10,000 x 10,000), so 50k x 10k never needs more than one block in
memory. Besides the two shares, the result keeps which samples are inside and, per reference, up to
``MAX_COVERERS`` samples whose balls cover it, so ``intervals.py`` can bootstrap both over samples without
another distance pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DISTANCE_MODES = ("adm-float16", "float32", "float64")
# For recall's bootstrap: a reference keeps at most this many covering samples. It then counts as uncovered in a
# bootstrap draw only if none of them is drawn, which for a reference with more coverers has probability about
# exp(-64) instead of less: the interval is unchanged in practice, and memory stays bounded when a poor model's
# wide sample balls cover every reference thousands of times.
MAX_COVERERS = 64
PAIR_ROWS = 1000
FLOAT16_MAX = 65504.0


@dataclass
class PrecisionRecall:
    precision: float
    recall: float
    sample_inside: np.ndarray        # (N,) bool: sample i lies in some reference ball
    cover_ref: np.ndarray            # (P,) int: reference j ...
    cover_sample: np.ndarray         # (P,) int: ... lies in the ball of sample i (first MAX_COVERERS per j)
    num_ref: int
    float32_fallback_blocks: int     # adm-float16 blocks that overflowed float16 and were done in float32


def _to_half_values(x):
    """Round to float16 and hold the result in float32 (exact), so later float32 ops see float16 inputs."""
    return x.half().float()


def _sq_norms(x, mode: str):
    if mode == "adm-float16":
        return _to_half_values((x * x).half().float().sum(1))   # square rounded to float16, sum rounded again
    return (x * x).sum(1)


class _DistanceBlock:
    def __init__(self, mode: str):
        if mode not in DISTANCE_MODES:
            raise ValueError(f"precision/recall distances {mode!r}; expected one of {DISTANCE_MODES}")
        self.mode = mode
        self.fallbacks = 0

    def prepare(self, x):
        """(values the formula sees, their squared norms) of a feature block."""
        if self.mode == "adm-float16":
            half = _to_half_values(x)
            return half, _sq_norms(half, self.mode), x, _sq_norms(x, "float32")
        return x, _sq_norms(x, self.mode), None, None

    def __call__(self, rows, cols):
        import torch

        u, nu, u32, nu32 = rows
        v, nv, v32, nv32 = cols
        if self.mode != "adm-float16":
            return (nu[:, None] - 2.0 * (u @ v.T) + nv[None, :]).clamp_(min=0)
        # Half tensors: each in-place op computes in float32 and rounds its result to float16, which is ADM's
        # op-by-op float16 arithmetic (-2p + nu is nu - 2p exactly), at half the memory traffic of float32 copies.
        d = (u @ v.T).half().mul_(-2).add_(nu.half()[:, None]).add_(nv.half()[None, :]).clamp_(min=0)
        if _cannot_overflow(nu, nv) or bool(torch.isfinite(d).all()):
            return d
        self.fallbacks += 1   # as ADM: the whole block again in float32
        return (nu32[:, None] - 2.0 * (u32 @ v32.T) + nv32[None, :]).clamp_(min=0)


def _cannot_overflow(nu, nv) -> bool:
    """|u.v| <= |u| |v| bounds every intermediate of the float16 formula; 1% margin for the rounded norms.
    When it holds, the pass that looks for an infinity is skipped."""
    nu_max, nv_max = float(nu.max()), float(nv.max())
    return (nu_max + nv_max + 2 * (nu_max * nv_max) ** 0.5) * 1.01 < FLOAT16_MAX


def _first_coverers(hits, recorded, row_offset: int):
    """(reference, sample) index pairs of ``hits`` (rows: references from ``row_offset``), keeping for each
    reference only its first MAX_COVERERS covering samples overall (``recorded`` counts them, updated here)."""
    import torch

    j, i = torch.nonzero(hits, as_tuple=True)
    j = j + row_offset
    counts = torch.bincount(j - row_offset, minlength=len(hits))
    rank = torch.arange(len(j), device=j.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    keep = rank + recorded[j] < MAX_COVERERS
    recorded[row_offset:row_offset + len(hits)] += counts
    return j[keep], i[keep]


def _blocks(prepared, start: int, size: int):
    return tuple(None if t is None else t[start:start + size] for t in prepared)


def knn_radii_squared(x, k: int = 3, row_chunk: int = 10000, col_chunk: int = 10000, block=None):
    """Squared distance of each row of tensor ``x`` to its k-th nearest other row (itself, at 0, excluded)."""
    import torch

    block = block or _DistanceBlock("float32" if x.dtype == torch.float32 else "float64")
    if len(x) <= k:
        raise ValueError(f"precision/recall: {len(x)} points cannot have a {k}-th nearest neighbour")
    prepared = block.prepare(x)
    radii = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for r0 in range(0, len(x), row_chunk):
        rows = _blocks(prepared, r0, row_chunk)
        best = None  # the k+1 smallest distances so far (self included)
        for c0 in range(0, len(x), col_chunk):
            d = block(rows, _blocks(prepared, c0, col_chunk))
            candidates = d if best is None else torch.cat([best, d], dim=1)
            best = torch.topk(candidates, min(k + 1, candidates.shape[1]), dim=1, largest=False).values
        radii[r0:r0 + row_chunk] = best[:, k]
    return radii


def precision_recall_full(sample_features, ref_features, k: int = 3, row_chunk: int = 10000,
                          col_chunk: int = 10000, device: str = "cpu",
                          distances: str = "adm-float16") -> PrecisionRecall:
    """Memory: one (row_chunk x col_chunk) distance block plus the features, on ``device``."""
    import torch

    block = _DistanceBlock(distances)
    torch_dtype = torch.float64 if distances == "float64" else torch.float32
    samples = torch.as_tensor(np.asarray(sample_features), device=device).to(torch_dtype)
    refs = torch.as_tensor(np.asarray(ref_features), device=device).to(torch_dtype)
    ref_radii = knn_radii_squared(refs, k, row_chunk, col_chunk, block)
    sample_radii = knn_radii_squared(samples, k, row_chunk, col_chunk, block)
    ref_prep, sample_prep = block.prepare(refs), block.prepare(samples)
    sample_inside = torch.zeros(len(samples), dtype=torch.bool, device=samples.device)
    ref_covered = torch.zeros(len(refs), dtype=torch.bool, device=refs.device)
    recorded = torch.zeros(len(refs), dtype=torch.long, device=refs.device)   # coverers kept per reference
    pairs_ref, pairs_sample = [], []
    for r0 in range(0, len(refs), row_chunk):       # rows: references, columns: samples (ADM's orientation)
        rows = _blocks(ref_prep, r0, row_chunk)
        for c0 in range(0, len(samples), col_chunk):
            d = block(rows, _blocks(sample_prep, c0, col_chunk))
            in_ref_ball = d <= ref_radii[r0:r0 + row_chunk, None]
            sample_inside[c0:c0 + col_chunk] |= in_ref_ball.any(dim=0)
            in_sample_ball = d <= sample_radii[None, c0:c0 + col_chunk]
            ref_covered[r0:r0 + row_chunk] |= in_sample_ball.any(dim=1)
            for s0 in range(0, len(in_sample_ball), PAIR_ROWS):   # bounded memory even if every pair covers
                j, i = _first_coverers(in_sample_ball[s0:s0 + PAIR_ROWS], recorded, r0 + s0)
                pairs_ref.append(j.cpu().numpy())
                pairs_sample.append((i + c0).cpu().numpy())
    return PrecisionRecall(
        precision=int(sample_inside.sum().item()) / len(samples),
        recall=int(ref_covered.sum().item()) / len(refs),
        sample_inside=sample_inside.cpu().numpy(), cover_ref=np.concatenate(pairs_ref),
        cover_sample=np.concatenate(pairs_sample),
        num_ref=len(refs), float32_fallback_blocks=block.fallbacks)


def precision_recall(sample_features, ref_features, k: int = 3, row_chunk: int = 10000, col_chunk: int = 10000,
                     device: str = "cpu", distances: str = "adm-float16") -> tuple[float, float]:
    """(precision, recall) of the samples against the reference."""
    full = precision_recall_full(sample_features, ref_features, k, row_chunk, col_chunk, device, distances)
    return full.precision, full.recall
