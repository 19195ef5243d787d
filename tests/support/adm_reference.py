"""Independent NumPy implementations of the ADM evaluator's formulas (openai/guided-diffusion
``evaluations/evaluator.py``), written for the tests from the formulas alone, to check varscale's metrics against.
"""
from __future__ import annotations

import numpy as np
from scipy.special import softmax as scipy_softmax


def adm_inception_score(logits, split_size=5000):
    """ADM's compute_inception_score: consecutive chunks of split_size rows (the last one shorter), mean of
    exp(mean KL) over the chunks."""
    preds = scipy_softmax(logits.astype(np.float64), axis=1)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), scores


def adm_float16_distances(u, v):
    """ADM's DistanceBlock in NumPy float16: |u|^2 - 2 u.v + |v|^2, every op's output in float16 (sums and the
    matrix product accumulated in float32), max with 0; float32 for the whole block if any value overflows."""
    u16, v16 = u.astype(np.float16), v.astype(np.float16)
    with np.errstate(over="ignore", invalid="ignore"):   # overflow is the case the float32 fallback handles
        return _adm_float16_block(u, v, u16, v16)


def _adm_float16_block(u, v, u16, v16):
    nu = np.sum(np.square(u16), axis=1, dtype=np.float32).astype(np.float16)[:, None]
    nv = np.sum(np.square(v16), axis=1, dtype=np.float32).astype(np.float16)[None, :]
    uv = (u16.astype(np.float32) @ v16.astype(np.float32).T).astype(np.float16)
    d = np.maximum(nu - np.float16(2) * uv + nv, np.float16(0))
    if not np.isfinite(d).all():
        u32, v32 = u.astype(np.float32), v.astype(np.float32)
        d = np.maximum((u32 * u32).sum(1)[:, None] - 2 * u32 @ v32.T + (v32 * v32).sum(1)[None, :], 0)
    return d.astype(np.float32)


def adm_precision_recall(samples, refs, k=3):
    """ADM's ManifoldEstimator: radii = (k+1)-th smallest distance within a set (self included); the reference
    is the row side of the cross block; precision = samples in a reference ball, recall = the converse; '<='."""
    ref_radii = np.partition(adm_float16_distances(refs, refs), k, axis=1)[:, k]
    sample_radii = np.partition(adm_float16_distances(samples, samples), k, axis=1)[:, k]
    d = adm_float16_distances(refs, samples)
    precision = np.mean((d <= ref_radii[:, None]).any(axis=0))
    recall = np.mean((d <= sample_radii[None, :]).any(axis=1))
    return float(precision), float(recall)
