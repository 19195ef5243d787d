"""Improved precision and recall (Kynkäänniemi et al. 2019) of Inception features, as the ADM evaluator computes
them.

Radius of each point = distance to its k-th nearest neighbour (k = 3, the point itself excluded) within its own
set; precision = share of samples inside at least one reference ball, recall = share of references inside at
least one sample ball. Squared distances are computed in float32 (ADM uses float16) in row x column blocks, so
50k x 10k never needs more than one block in memory.
"""
from __future__ import annotations

import numpy as np


def _squared_distances(a, b):
    d = (a * a).sum(1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return d.clamp_(min=0)


def knn_radii_squared(x, k: int = 3, row_chunk: int = 10000, col_chunk: int = 10000):
    """Squared distance of each row of tensor ``x`` to its k-th nearest other row (itself, at 0, excluded)."""
    import torch

    device = x.device
    if len(x) <= k:
        raise ValueError(f"precision/recall: {len(x)} points cannot have a {k}-th nearest neighbour")
    radii = torch.empty(len(x), dtype=x.dtype, device=device)
    for r0 in range(0, len(x), row_chunk):
        rows = x[r0:r0 + row_chunk]
        best = None  # the k+1 smallest distances so far (self included)
        for c0 in range(0, len(x), col_chunk):
            d = _squared_distances(rows, x[c0:c0 + col_chunk])
            candidates = d if best is None else torch.cat([best, d], dim=1)
            best = torch.topk(candidates, min(k + 1, candidates.shape[1]), dim=1, largest=False).values
        radii[r0:r0 + row_chunk] = best[:, k]
    return radii


def _share_inside_balls(points, centres, radii_sq, row_chunk: int, col_chunk: int) -> float:
    import torch

    inside = torch.zeros(len(points), dtype=torch.bool, device=points.device)
    for r0 in range(0, len(points), row_chunk):
        rows = points[r0:r0 + row_chunk]
        hit = torch.zeros(len(rows), dtype=torch.bool, device=points.device)
        for c0 in range(0, len(centres), col_chunk):
            d = _squared_distances(rows, centres[c0:c0 + col_chunk])
            hit |= (d <= radii_sq[None, c0:c0 + col_chunk]).any(dim=1)
        inside[r0:r0 + row_chunk] = hit
    return int(inside.sum().item()) / len(points)


def precision_recall(sample_features, ref_features, k: int = 3, row_chunk: int = 10000, col_chunk: int = 10000,
                     device: str = "cpu", dtype: str = "float32") -> tuple[float, float]:
    """Memory: one (row_chunk x col_chunk) distance block plus the features, on ``device``."""
    import torch

    torch_dtype = getattr(torch, dtype)
    samples = torch.as_tensor(np.asarray(sample_features), device=device).to(torch_dtype)
    refs = torch.as_tensor(np.asarray(ref_features), device=device).to(torch_dtype)
    ref_radii = knn_radii_squared(refs, k, row_chunk, col_chunk)
    sample_radii = knn_radii_squared(samples, k, row_chunk, col_chunk)
    precision = _share_inside_balls(samples, refs, ref_radii, row_chunk, col_chunk)
    recall = _share_inside_balls(refs, samples, sample_radii, row_chunk, col_chunk)
    return precision, recall
