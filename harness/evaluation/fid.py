"""Fréchet distance of Inception features (FID on pool_3, sFID on the spatial features), as the ADM evaluator
(openai/guided-diffusion ``evaluations/evaluator.py``) computes it.

mu = mean, sigma = ``np.cov(rowvar=False)`` in float64. ADM, TTUR and clean-fid get ``tr sqrt(sigma1 sigma2)``
from ``scipy.linalg.sqrtm`` (retry with 1e-6 on the diagonals when not finite; an imaginary part above 1e-3 is an
error): ``sqrtm`` here, 80-480 s per 2048-d matrix on a 2-core CPU. The default, ``eigh``, gets the same trace
from two symmetric eigenproblems in seconds (agreement with sqrtm to 1e-6 relative is tested end to end).
Two other exact ways are offered: ``eigvals`` (torch-fidelity's sum of square roots of the eigenvalues of the
non-symmetric product) and ``gram``, which needs the raw features of one side at least and solves an n x n
problem instead of the d x d one (see ``trace_sqrt_product_gram``): exact, and much faster when there are fewer
samples than dimensions (small test and smoke evaluations).
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

FID_METHODS = ("auto", "eigh", "sqrtm", "eigvals", "gram")
DEFAULT_FID_METHOD = "auto"   # the fastest exact route; agrees with sqrtm to 1e-6 relative (tests/unit/evaluation)


def resolve_method(method: str, features1=None, features2=None) -> str:
    """``auto``: ``gram`` when a side's raw features have fewer rows than dimensions (an n x n problem smaller
    than d x d), else ``eigh``. Any other method is returned as it is."""
    if method != "auto":
        return method
    small = [f for f in (features1, features2) if f is not None and len(f) < np.shape(f)[1]]
    return "gram" if small else "eigh"


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


def trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Symmetric eigenvalues only. With S = B B^T for one side (Cholesky when that side is positive definite,
    else B = V diag(sqrt w) from its eigendecomposition), S1 S2 is similar to the symmetric PSD B^T S_other B,
    whose eigenvalues' square roots sum to tr sqrt(S1 S2) (tr sqrt(S1 S2) = tr sqrt(S2 S1)). No non-symmetric
    eigensolver and no matrix square root: a 2048-d FID takes seconds where sqrtm takes minutes on a CPU."""
    for factored, other in ((sigma2, sigma1), (sigma1, sigma2)):   # the reference (sigma2) is usually full rank
        try:
            b = np.linalg.cholesky(factored)
        except np.linalg.LinAlgError:
            continue
        break
    else:   # both rank-deficient (fewer samples than dimensions on both sides)
        w, v = np.linalg.eigh(sigma1)
        b, other = v * np.sqrt(np.clip(w, 0, None)), sigma2
    eigenvalues = np.linalg.eigvalsh(b.T @ other @ b)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


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
        return trace_sqrt_product_eigh(np.cov(np.asarray(features1, np.float64), rowvar=False), sigma2)
    a = scaled_centred(features1)
    eigenvalues = np.linalg.eigvalsh(a @ np.asarray(sigma2, np.float64) @ a.T)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = DEFAULT_FID_METHOD, features1=None,
                     features2=None) -> float:
    """||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"Fréchet distance: statistics of different sizes {mu1.shape} vs {mu2.shape}")
    method = resolve_method(method, features1, features2)
    if method == "eigh":
        tr_covmean = trace_sqrt_product_eigh(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = trace_sqrt_product_sqrtm(sigma1, sigma2)
    elif method == "eigvals":
        tr_covmean = trace_sqrt_product_eigvals(sigma1, sigma2)
    elif method == "gram":
        tr_covmean = trace_sqrt_product_gram(features1, features2, sigma1, sigma2)
    else:
        raise ValueError(f"unknown Fréchet method {method!r}; expected one of {FID_METHODS}")
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
