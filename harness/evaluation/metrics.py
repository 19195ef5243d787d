"""The ADM evaluator's metrics on Inception features: FID, sFID, IS, precision and recall.

Follows openai/guided-diffusion ``evaluations/evaluator.py`` (see docs of ``harness.evaluation.evaluate`` for the protocol):

* Fréchet distance: mu = mean, sigma = ``np.cov(rowvar=False)`` in float64; ``tr sqrt(sigma1 sigma2)`` with
  ``scipy.linalg.sqrtm`` (retry with 1e-6 on the diagonals when not finite; an imaginary part above 1e-3 is an
  error), as ADM, TTUR and clean-fid do. Two other exact ways to get the same trace are offered: ``eigvals``
  (torch-fidelity's sum of square roots of the eigenvalues) and ``gram``, which needs the raw features of one
  side at least and solves an n x n problem instead of the d x d one (see ``trace_sqrt_product_gram``): exact,
  and much faster when there are fewer samples than dimensions (small test and smoke evaluations).
* IS: softmax of the unbiased logits; ``num_splits`` consecutive equal splits, no shuffling (ADM uses 5000-row
  splits, which is the same at N = 50,000); mean and std of exp(mean KL) over splits; float64.
* Precision / recall (Kynkäänniemi et al. 2019): radius of each point = distance to its k-th nearest neighbour
  (k = 3, the point itself excluded) within its own set; precision = share of samples inside at least one
  reference ball, recall = share of references inside at least one sample ball. Squared distances are computed
  in float32 (ADM uses float16) in row x column blocks, so 50k x 10k never needs more than one block in memory.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

FID_METHODS = ("sqrtm", "eigvals", "gram")


def feature_statistics(features_ND: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features_ND = np.asarray(features_ND, dtype=np.float64)
    if len(features_ND) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(features_ND)}")
    return features_ND.mean(axis=0), np.cov(features_ND, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about near-singular products; we check finiteness below
        return linalg.sqrtm(matrix)


def trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(np.trace(covmean))


def trace_sqrt_product_eigvals(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    eigenvalues = np.linalg.eigvals(sigma1.dot(sigma2))
    return float(np.sqrt(eigenvalues.astype(complex)).real.sum())


def trace_sqrt_product_gram(features1=None, features2=None, sigma1=None, sigma2=None) -> float:
    """tr sqrt(S1 S2) through an n x n problem instead of a d x d one (exact; fast when n << d).

    With A = Xc / sqrt(n - 1) for a side whose raw features X are given (S = A^T A), the non-zero eigenvalues
    of S1 S2 are those of A1 S2 A1^T (symmetric PSD), and with both sides given the square roots are the
    singular values of A1 A2^T. Where the n x n problem is not smaller (n >= d, as for 50k samples) it falls
    back to the d x d eigenvalue route, so it never builds a 50k x 50k matrix."""
    def scaled_centred(x):
        x = np.asarray(x, np.float64)
        return (x - x.mean(0)) / np.sqrt(len(x) - 1)

    if features1 is not None and features2 is not None:
        if len(features1) * len(features2) <= features1.shape[1] ** 2:
            return float(np.linalg.svd(scaled_centred(features1) @ scaled_centred(features2).T,
                                       compute_uv=False).sum())
        if sigma2 is None:  # 50k x 10k is no smaller than d x d: use one side only (or the d x d route below)
            sigma2 = np.cov(np.asarray(features2, np.float64), rowvar=False)
        features2 = None
    if features1 is None:  # tr sqrt(S1 S2) = tr sqrt(S2 S1): put the side with features first
        features1, sigma2 = features2, sigma1
    if features1 is None or sigma2 is None:
        raise ValueError("the 'gram' method needs the raw features of at least one set")
    if len(features1) >= features1.shape[1]:  # n >= d: the n x n problem is no smaller than the d x d one
        return trace_sqrt_product_eigvals(np.cov(np.asarray(features1, np.float64), rowvar=False), sigma2)
    a = scaled_centred(features1)
    eigenvalues = np.linalg.eigvalsh(a @ np.asarray(sigma2, np.float64) @ a.T)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "sqrtm", features1=None, features2=None) -> float:
    """||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"Fréchet distance: statistics of different sizes {mu1.shape} vs {mu2.shape}")
    if method == "sqrtm":
        tr_covmean = trace_sqrt_product_sqrtm(sigma1, sigma2)
    elif method == "eigvals":
        tr_covmean = trace_sqrt_product_eigvals(sigma1, sigma2)
    elif method == "gram":
        tr_covmean = trace_sqrt_product_gram(features1, features2, sigma1, sigma2)
    else:
        raise ValueError(f"unknown Fréchet method {method!r}; expected one of {FID_METHODS}")
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def softmax(logits_NK: np.ndarray) -> np.ndarray:
    z = np.asarray(logits_NK, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def inception_score(logits_NK: np.ndarray, num_splits: int = 10) -> tuple[float, float, list[float]]:
    """IS over ``num_splits`` consecutive splits (row order as given; never shuffled). Returns mean, std, scores."""
    probs = softmax(logits_NK)
    if len(probs) < num_splits:
        raise ValueError(f"IS: {len(probs)} samples cannot make {num_splits} splits")
    scores = []
    n = len(probs)
    for i in range(num_splits):  # boundaries floor(i N / splits), as torch-fidelity; ADM's 5000-row splits at 50k
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-30) - np.log(marginal + 1e-30))).sum(axis=1).mean()
        scores.append(float(np.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores)), scores


# ----------------------------------------------------------------------------------------- precision / recall

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
