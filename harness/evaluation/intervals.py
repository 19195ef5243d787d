"""How far each headline number could move with another draw of samples, and KID, beyond the ADM evaluator.

Bootstrap over samples: each round draws N sample rows with replacement (seeded NumPy ``default_rng``; the
reference side is held fixed, as a published reference batch is) and recomputes the metric from the drawn rows;
the interval is the 2.5th and 97.5th percentile of the rounds (95 %), with their standard deviation.

* IS: the same split rule on the drawn rows (in drawn order).
* FID / sFID: the drawn rows' mean and covariance (counts as weights), against the same reference statistics,
  exact trace by symmetric eigenvalues (``fid.trace_sqrt_product_eigh``'s route with the reference factor computed
  once). One round costs one n x d x d product and one d x d eigenvalue problem: about a second at 10k x 2048 on
  a 2-core CPU, hence fewer rounds by default than for the others.
* precision / recall: the k-NN radii are held at their values on the full sets (a bootstrap draw repeats points,
  and a repeated point has a neighbour at distance 0, which would shrink every radius); precision = share of drawn
  samples inside a reference ball, recall = share of references inside the ball of at least one drawn sample.

When the samples carry labels with the same count for every class (VAR's protocol: 50 per class), each round
resamples within classes (``balanced_strata``, ``draws``): another run of that protocol keeps the class counts.

A bootstrap interval describes sampling noise at this N; it does not cover the bias of FID at small N.

KID (Bińkowski et al. 2018) on the pool_3 features: unbiased MMD^2 with the cubic polynomial kernel
(x.y / d + 1)^3, averaged over ``subsets`` random subsets of min(1000, N, M) rows from each side, drawn exactly as
clean-fid's ``kernel_distance`` draws them from ``np.random.RandomState(seed)``; the std over subsets is reported
with it (torch-fidelity's convention).
"""
from __future__ import annotations

import numpy as np

from harness.evaluation.inception_score import softmax, split_bounds

LEVEL = 0.95


def summarise(values, rounds: int, seed: int, how: str) -> dict:
    values = np.asarray(values, np.float64)
    tail = (1 - LEVEL) / 2 * 100
    return {"low": float(np.percentile(values, tail)), "high": float(np.percentile(values, 100 - tail)),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "level": LEVEL,
            "method": f"bootstrap over samples, {rounds} rounds, seed {seed}, percentile interval; {how}"}


def balanced_strata(labels) -> np.ndarray | None:
    """The class labels when the file has the same number of samples of every class (VAR's protocol draws 50 per
    class), else None. Such a design fixes the class counts, so another draw of samples keeps them: resampling
    within classes measures that draw's noise, where resampling all rows adds class-proportion noise the design
    does not have (on the demo's clustered features it doubled the FD's standard error)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    counts = np.unique(labels, return_counts=True)[1]
    return labels if len(counts) > 1 and counts.min() == counts.max() > 1 else None


def draws(n: int, rounds: int, seed: int, strata=None):
    """Row indices of each bootstrap round; with ``strata`` (a label per row) every position draws from the rows
    of its own label, so each split and class keeps its composition."""
    rng = np.random.default_rng(seed)
    if strata is None:
        for _ in range(rounds):
            yield rng.integers(0, n, size=n)
        return
    order = np.argsort(strata, kind="stable")
    sorted_labels = np.asarray(strata)[order]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    size = np.searchsorted(sorted_labels, sorted_labels, side="right") - first
    for _ in range(rounds):
        rows = np.empty(n, dtype=np.int64)
        rows[order] = order[first + (rng.random(n) * size).astype(np.int64)]
        yield rows


def _resampling(strata) -> str:
    return "rows resampled within their class (balanced labels)" if strata is not None else "rows resampled"


def is_interval(logits_NK, rounds: int, seed: int, split_rule: str, split_size: int, num_splits: int,
                strata=None) -> dict:
    """A split's score exp(mean_i sum_k p_ik (log p_ik - log p_k)) with p_k the split's marginal equals
    exp(mean_i h_i - sum_k p_k log p_k), h_i = sum_k p_ik log p_ik: the logarithms of the N x K matrix are taken
    once, and a round only averages the drawn rows (hundreds of times cheaper than recomputing every split)."""
    probs = softmax(logits_NK)
    bounds = split_bounds(len(probs), split_rule, split_size, num_splits)
    row_terms = (probs * np.log(probs + 1e-30)).sum(axis=1)
    values = []
    for rows in draws(len(probs), rounds, seed, strata):
        scores = []
        for start, end in bounds:
            part = rows[start:end]
            marginal = probs[part].mean(axis=0)
            scores.append(np.exp(row_terms[part].mean() - marginal @ np.log(marginal + 1e-30)))
        values.append(np.mean(scores))
    return summarise(values, rounds, seed, f"same split rule on the drawn rows; {_resampling(strata)}")


def precision_recall_interval(pr, rounds: int, seed: int, strata=None) -> dict[str, dict]:
    """``pr``: a ``precision_recall.PrecisionRecall`` (per-sample and per-pair results of the full sets)."""
    n = len(pr.sample_inside)
    precisions, recalls = [], []
    for rows in draws(n, rounds, seed, strata):
        counts = np.bincount(rows, minlength=n)
        precisions.append(float((counts * pr.sample_inside).sum()) / n)
        covered = np.zeros(pr.num_ref, dtype=bool)
        covered[pr.cover_ref[counts[pr.cover_sample] > 0]] = True
        recalls.append(float(covered.mean()))
    how = f"k-NN radii held at their full-set values; {_resampling(strata)}"
    return {"precision": summarise(precisions, rounds, seed, how), "recall": summarise(recalls, rounds, seed, how)}


def _factor(sigma: np.ndarray) -> np.ndarray:
    """B with B B^T = sigma (Cholesky when positive definite, else from the eigendecomposition)."""
    try:
        return np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(sigma)
        return v * np.sqrt(np.clip(w, 0, None))


def _frechet_from_spectrum(mean_diff, trace_samples: float, trace_ref: float, eigenvalues) -> float:
    """|mu2 - mu1|^2 + tr S2 + tr S1 - 2 tr sqrt(S1 S2), the trace from the eigenvalues of B^T S2 B."""
    return float(mean_diff @ mean_diff + trace_samples + trace_ref - 2 * np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def fid_bootstrap_interval(features_ND, ref_mu, ref_sigma, rounds: int, seed: int, strata=None) -> dict:
    import torch

    x = torch.from_numpy(np.asarray(features_ND, np.float64))
    ref_mu = np.asarray(ref_mu, np.float64)
    ref_sigma = np.asarray(ref_sigma, np.float64)
    y = x @ torch.from_numpy(_factor(ref_sigma))        # S2 = B B^T: tr sqrt(S1 S2) from eig(B^T S1 B) = cov(x B)
    n = len(x)
    trace_ref = float(np.trace(ref_sigma))
    values = []
    for rows in draws(n, rounds, seed, strata):
        w = torch.from_numpy(np.bincount(rows, minlength=n).astype(np.float64))
        mu = (w @ x) / n
        mu_y = (w @ y) / n
        centred_y = y - mu_y
        inner = (centred_y * w[:, None]).T @ centred_y / (n - 1)
        trace_s1 = float((w @ (x - mu) ** 2).sum()) / (n - 1)
        eigenvalues = np.linalg.eigvalsh(inner.numpy())
        values.append(_frechet_from_spectrum(mu.numpy() - ref_mu, trace_s1, trace_ref, eigenvalues))
    return summarise(values, rounds, seed, f"reference statistics held fixed; {_resampling(strata)}")


def fid_delta_interval(features_ND, ref_mu, ref_sigma, strata=None) -> dict:
    """Normal interval FID +- z * se, with se from FID's influence function over samples (the delta method, i.e.
    the infinitesimal jackknife: the limit of the bootstrap's standard deviation), reference statistics fixed.

    With S1 = B B^T (reference) and M = B^T S2 B = V diag(w) V^T (so tr sqrt(S1 S2) = sum sqrt(w)), the derivative
    of FID along dmu, dS2 is 2 (mu2 - mu1).dmu + tr dS2 - tr(M^-1/2 B^T dS2 B); one sample x moves mu2 by
    (x - mu2) and S2 by (x - mu2)(x - mu2)^T - S2, so its influence is
    2 (mu2 - mu1).c + |c|^2 - |w^-1/4 * (c B V)|^2 (+ a constant), c = x - mu2. se^2 = var(influence) / n.
    Cost: one covariance, one d x d eigenproblem, one n x d x d product (seconds at 10k x 2048 on a CPU, where
    the bootstrap needs that per round). Needs more samples than dimensions (else S2 is singular). With
    ``strata`` (balanced class labels) the influence is centred within each class: the variance of a draw that
    keeps the class counts."""
    from scipy.stats import norm

    x = np.asarray(features_ND, np.float64)
    n, d = x.shape
    if n <= d:
        raise ValueError(f"FID delta-method interval: needs more samples than feature dimensions, got {n} <= {d}")
    ref_mu = np.asarray(ref_mu, np.float64)
    ref_sigma = np.asarray(ref_sigma, np.float64)
    mu = x.mean(0)
    centred = x - mu
    sigma = centred.T @ centred / (n - 1)
    b = _factor(ref_sigma)
    w, v = np.linalg.eigh(b.T @ sigma @ b)
    w = np.clip(w, 0, None)
    value = _frechet_from_spectrum(mu - ref_mu, np.trace(sigma), np.trace(ref_sigma), w)
    # A zero eigenvalue has no derivative; its direction carries no sample variance either, so it gets weight 0.
    weight = np.where(w > w.max() * 1e-12, w, np.inf) ** -0.25
    rotated = centred @ (b @ v) * weight
    influence = 2 * centred @ (mu - ref_mu) + (centred ** 2).sum(1) - (rotated ** 2).sum(1)
    if strata is None:
        se = float(influence.std(ddof=1) / np.sqrt(n))
    else:
        classes, index = np.unique(strata, return_inverse=True)
        class_means = np.bincount(index, weights=influence) / np.bincount(index)
        se = float(np.sqrt(((influence - class_means[index]) ** 2).sum() / (n - len(classes)) / n))
    z = float(norm.ppf(0.5 + LEVEL / 2))
    return {"value": value, "low": max(value - z * se, 0.0), "high": value + z * se, "std": se, "level": LEVEL,
            "method": "normal interval, standard error from the influence function over samples (delta method); "
                      f"reference statistics held fixed; {_resampling(strata)}"}


def kid(sample_features, ref_features, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict:
    """KID mean and std over subsets; the subsets are those clean-fid's ``kernel_distance`` draws after
    ``np.random.seed(seed)`` (the reference's rows first, then the samples', per subset).

    The inner products are taken in the features' own precision (float32 for Inception features, as clean-fid
    does: float32 matrix products are about twice as fast as float64 here); the cube and the sums run in float64,
    where clean-fid stays in float32."""
    import torch

    both_float32 = all(np.asarray(f).dtype == np.float32 for f in (sample_features, ref_features))
    dtype = torch.float32 if both_float32 else torch.float64
    samples = torch.from_numpy(np.asarray(sample_features)).to(dtype)
    refs = torch.from_numpy(np.asarray(ref_features)).to(dtype)
    d = samples.shape[1]
    m = min(len(samples), len(refs), subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images on each side, got {len(samples)} and {len(refs)}")

    def kernel(a, b):
        return ((a @ b.T).double() / d + 1) ** 3

    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        x = refs[torch.from_numpy(rng.choice(len(refs), m, replace=False))]
        y = samples[torch.from_numpy(rng.choice(len(samples), m, replace=False))]
        k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        values.append(float(within - 2 * k_xy.mean()))
    precision = "float32" if dtype == torch.float32 else "float64"
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values)),
            "method": f"cubic polynomial kernel MMD^2 (unbiased), {subsets} subsets of {m} rows per side, "
                      f"np.random.RandomState({seed}) draws as clean-fid's kernel_distance; std over subsets; "
                      f"inner products in {precision}, kernel sums in float64"}
