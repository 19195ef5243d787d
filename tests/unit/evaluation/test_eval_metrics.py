"""ADM metrics on features, each checked against an independent computation and torch-fidelity's own code."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from harness.evaluation import fid
from harness.evaluation.inception_score import inception_score
from harness.evaluation.precision_recall import precision_recall


def _features(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mixing + shift).astype(np.float32)


def _fid_by_symmetric_roots(x1, x2):
    """Independent route: tr sqrt(S1 S2) = tr sqrt(A S2 A) with A = S1^(1/2) from a symmetric eigendecomposition."""
    mu1, mu2 = x1.mean(0, dtype=np.float64), x2.mean(0, dtype=np.float64)
    s1, s2 = np.cov(x1.astype(np.float64), rowvar=False), np.cov(x2.astype(np.float64), rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_fid_of_a_set_with_itself_is_zero():
    x = _features(400, 64, 0)
    mu, sigma = fid.feature_statistics(x)
    for method in fid.FID_METHODS:
        assert abs(fid.frechet_distance(mu, sigma, mu, sigma, method, x, x)) < 1e-6, method


@pytest.mark.parametrize("n1,n2", [(400, 300), (40, 30)])   # full-rank and rank-deficient covariances
def test_fid_matches_independent_computation_and_torch_fidelity(n1, n2):
    from torch_fidelity.metric_fid import (
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    x1, x2 = _features(n1, 64, 1), _features(n2, 64, 2, shift=0.3)
    mu1, s1 = fid.feature_statistics(x1)
    mu2, s2 = fid.feature_statistics(x2)
    expected = _fid_by_symmetric_roots(x1, x2)
    assert expected > 1.0
    for method in fid.FID_METHODS:
        assert fid.frechet_distance(mu1, s1, mu2, s2, method, x1, x2) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    for one_side in ((x1, None), (None, x2)):   # gram with only one side's raw features (a stored reference)
        assert fid.frechet_distance(mu1, s1, mu2, s2, "gram", *one_side) == pytest.approx(expected, rel=1e-6)
    # n >= d falls back to the d x d route (no 50k x 50k matrix at protocol scale), with the same value
    assert fid.trace_sqrt_product_gram(x1, x2) == pytest.approx(fid.trace_sqrt_product_eigvals(s1, s2), rel=1e-6)
    tf_fid = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(x1.astype(np.float64))),
                                      fid_features_to_statistics(torch.from_numpy(x2.astype(np.float64))), False)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(tf_fid["frechet_inception_distance"], rel=1e-6)


def test_fid_rejects_statistics_of_different_sizes():
    with pytest.raises(ValueError, match="different sizes"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def _class_sorted_logits(n_classes=20, per_class=25, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    logits = rng.normal(size=(len(labels), 50))
    logits[np.arange(len(labels)), labels] += 6.0     # confident, class-specific predictions
    return logits.astype(np.float32)


def test_inception_score_matches_numpy_and_torch_fidelity_unshuffled():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = _class_sorted_logits()
    mean, std, scores = inception_score(logits, "equal", num_splits=10)
    # numpy, by hand: consecutive splits of 50 rows
    manual = []
    for part in np.split(logits.astype(np.float64), 10):
        p = np.exp(part - part.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        q = p.mean(0)
        manual.append(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))))
    assert scores == pytest.approx(manual, rel=1e-9)
    tf = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=False)
    assert mean == pytest.approx(tf["inception_score_mean"], rel=1e-9)
    assert std == pytest.approx(tf["inception_score_std"], rel=1e-9)


def test_inception_score_consecutive_splits_differ_from_shuffled_on_class_sorted_input():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = _class_sorted_logits()
    consecutive, _, _ = inception_score(logits, "equal", num_splits=10)
    shuffled = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True)["inception_score_mean"]
    # each consecutive split sees only 2 of the 20 classes, so its marginal is narrow and IS collapses
    assert consecutive < 2.5 and shuffled > 6.0
    permuted, _, _ = inception_score(logits[np.random.default_rng(1).permutation(len(logits))], "equal",
                                     num_splits=10)
    assert permuted > 6.0


def _brute_force_pr(samples, refs, k=3):
    d_ss, d_rr, d_sr = cdist(samples, samples), cdist(refs, refs), cdist(samples, refs)
    r_s = np.sort(d_ss, axis=1)[:, k]       # column 0 is the point itself
    r_r = np.sort(d_rr, axis=1)[:, k]
    precision = np.mean((d_sr <= r_r[None, :]).any(axis=1))
    recall = np.mean((d_sr.T <= r_s[None, :]).any(axis=1))
    return precision, recall


def test_precision_recall_match_brute_force_and_chunking_does_not_matter():
    samples = _features(150, 16, 3, shift=0.4).astype(np.float64)
    refs = _features(120, 16, 4).astype(np.float64)
    expected = _brute_force_pr(samples, refs)
    assert 0.05 < expected[0] < 0.95 and 0.05 < expected[1] < 0.95   # a non-trivial case
    whole = precision_recall(samples, refs, distances="float64")
    chunked = precision_recall(samples, refs, row_chunk=17, col_chunk=23, distances="float64")
    assert whole == pytest.approx(expected, abs=1e-12)
    assert chunked == whole
    chunked32 = precision_recall(samples, refs, row_chunk=7, col_chunk=11, distances="float32")
    assert chunked32 == pytest.approx(expected, abs=2.0 / 120)   # float32: at most a borderline point may flip


def test_precision_recall_of_identical_sets_are_one_and_agree_with_torch_fidelity():
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    x = _features(100, 8, 5)
    assert precision_recall(x, x) == (1.0, 1.0)
    samples, refs = _features(90, 8, 6, shift=0.5), _features(80, 8, 7)
    ours = precision_recall(samples, refs, distances="float64")
    theirs = calculate_precision_recall_full(torch.from_numpy(samples).double(), torch.from_numpy(refs).double(), 3)
    assert ours == pytest.approx(theirs, abs=1e-6)   # torch-fidelity averages in float32
