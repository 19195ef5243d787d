"""The metrics against independent implementations of the ADM evaluator's own formulas (written here, in NumPy),
and KID / bootstrap intervals against direct recomputation."""
from __future__ import annotations

import numpy as np
import pytest
from adm_reference import adm_inception_score, adm_precision_recall

from harness.evaluation import fid, intervals
from harness.evaluation.inception_score import inception_score
from harness.evaluation.precision_recall import precision_recall, precision_recall_full

# ------------------------------------------------------------------------------------------------ IS

def _imagenet_like_logits(n, classes=100, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) * 1.5
    logits[np.arange(n), labels] += rng.uniform(2, 8, n)     # confident but not certain, uneven per sample
    return logits.astype(np.float32)


@pytest.mark.parametrize("n", [12_345, 10_000])
def test_inception_score_follows_adm_split_rule(n):
    logits = _imagenet_like_logits(n)
    expected, expected_scores = adm_inception_score(logits)
    mean, _, scores = inception_score(logits)
    assert len(scores) == len(expected_scores) == -(-n // 5000)      # 3 chunks at 12,345 (the last of 2,345)
    assert mean == pytest.approx(expected, rel=1e-6)
    assert scores == pytest.approx(expected_scores, rel=1e-6)
    equal_rule, _, _ = inception_score(logits, "equal", num_splits=10)
    assert equal_rule < expected * 0.995   # the old 10-equal-splits rule gives a lower number here


def test_inception_score_rules_agree_only_at_fifty_thousand():
    logits = _imagenet_like_logits(50_000, classes=20, seed=1)
    assert inception_score(logits)[2] == pytest.approx(inception_score(logits, "equal", num_splits=10)[2],
                                                       rel=1e-12)


# ------------------------------------------------------------------------------------- precision / recall

def _grid_features(n, d, seed, shift=0):
    """Multiples of 1/8 below 4: every float32 sum and product below is exact, so only the float16 rounding ADM
    does can make two correct implementations differ -- and it cannot, here."""
    rng = np.random.default_rng(seed)
    return ((rng.integers(0, 32, size=(n, d)) + shift) / 8).astype(np.float32)


def test_adm_float16_precision_recall_equals_adm_formula_and_differs_from_float32():
    samples, refs = _grid_features(300, 64, 0, shift=3), _grid_features(200, 64, 1)
    expected = adm_precision_recall(samples, refs)
    assert 0.02 < expected[0] < 0.98 and 0.02 < expected[1] < 0.98
    assert abs(expected[0] - expected[1]) > 0.05       # asymmetric: swapping precision and recall shows
    assert precision_recall(samples, refs) == expected                   # default: adm-float16
    assert precision_recall(samples, refs, row_chunk=37, col_chunk=53) == expected
    assert precision_recall(samples, refs, distances="float32") != expected   # the float16 rounding matters


def test_adm_float16_falls_back_to_float32_when_a_block_overflows():
    samples, refs = _grid_features(40, 16, 2) * 100, _grid_features(30, 16, 3) * 100   # norms > 65504
    full = precision_recall_full(samples, refs)
    assert full.float32_fallback_blocks > 0
    assert (full.precision, full.recall) == adm_precision_recall(samples, refs)


def test_points_exactly_on_a_sphere_are_inside():
    """Ties: reference points on a line at 0..4; the 3rd neighbour of the end points is 3 away. A sample at
    distance exactly 3 from an end point is inside its ball with '<=' (ADM), outside with '<'."""
    line = np.zeros((5, 4), np.float32)
    line[:, 0] = np.arange(5)
    samples = np.zeros((5, 4), np.float32)
    samples[:, 0] = [-3, 7, 10, 11, 12]    # -3 and 7: exactly on the spheres of ref 0 and ref 4
    samples[:, 1] = 0
    for distances in ("adm-float16", "float32", "float64"):
        precision, recall = precision_recall(samples, line, distances=distances)
        assert precision == pytest.approx(2 / 5), distances
        assert (precision, recall) == adm_precision_recall(samples, line)
        _, recall_swapped_roles = precision_recall(line, samples, distances=distances)   # the tie on recall's side
        assert recall_swapped_roles == pytest.approx(2 / 5), distances


# ------------------------------------------------------------------------------------------------ FID

def test_eigh_trace_agrees_with_sqrtm_to_1e6_full_and_rank_deficient():
    rng = np.random.default_rng(0)
    for n1, n2 in ((500, 400), (40, 500), (30, 20)):       # full rank, one side deficient, both deficient
        x1 = rng.normal(size=(n1, 96)) @ rng.normal(size=(96, 96)) / 10
        x2 = rng.normal(size=(n2, 96)) @ rng.normal(size=(96, 96)) / 10 + 0.2
        (mu1, s1), (mu2, s2) = fid.feature_statistics(x1), fid.feature_statistics(x2)
        reference = fid.frechet_distance(mu1, s1, mu2, s2, "sqrtm")
        assert fid.frechet_distance(mu1, s1, mu2, s2, "eigh") == pytest.approx(reference, rel=1e-6), (n1, n2)
        assert fid.frechet_distance(mu1, s1, mu2, s2) == fid.frechet_distance(mu1, s1, mu2, s2, "eigh")


# ------------------------------------------------------------------------------------------ KID, intervals

def test_kid_equals_cleanfid_kernel_distance_with_the_same_draws():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(4)
    samples, refs = rng.normal(size=(300, 32)) + 0.1, rng.normal(size=(250, 32))
    ours = intervals.kid(samples, refs, subsets=20, subset_size=100, seed=5)
    state = np.random.get_state()
    np.random.seed(5)
    theirs = kernel_distance(samples, refs, num_subsets=20, max_subset_size=100)
    np.random.set_state(state)
    assert ours["kid"] == pytest.approx(theirs, rel=1e-9)
    assert ours["kid_std"] > 0


def test_fid_bootstrap_rounds_equal_direct_recomputation():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 24)) + 0.3
    ref = rng.normal(size=(400, 24))
    ref_mu, ref_sigma = fid.feature_statistics(ref)
    result = intervals.fid_bootstrap_interval(x, ref_mu, ref_sigma, rounds=5, seed=9)
    direct = [fid.frechet_distance(*fid.feature_statistics(x[rows]), ref_mu, ref_sigma, "sqrtm")
              for rows in intervals.draws(len(x), 5, 9)]
    assert result["low"] == pytest.approx(np.percentile(direct, 2.5), rel=1e-8)
    assert result["high"] == pytest.approx(np.percentile(direct, 97.5), rel=1e-8)
    point = fid.frechet_distance(*fid.feature_statistics(x), ref_mu, ref_sigma)
    assert result["low"] < point * 1.5 and result["high"] > point * 0.5


@pytest.mark.parametrize("shift", [0.05, 0.3])   # covariance term dominant / mean term dominant
def test_fid_delta_interval_matches_the_spread_of_fresh_draws(shift):
    """The delta-method standard error against the truth it estimates: FID's standard deviation over 200 fresh
    sample sets from one distribution (reference statistics fixed), and the bootstrap's on one set."""
    rng = np.random.default_rng(11)
    d, n = 12, 1500
    ref_mu, ref_sigma = fid.feature_statistics(rng.normal(size=(20_000, d)))
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)   # one fixed law for every draw
    values, ses = [], []
    for _ in range(200):
        x = rng.normal(size=(n, d)) @ mixing.T + rng.normal(size=(n, d)) * 0.5 + shift
        out = intervals.fid_delta_interval(x, ref_mu, ref_sigma)
        values.append(out["value"])
        ses.append(out["std"])
    values, ses = np.array(values), np.array(ses)
    x = rng.normal(size=(n, d)) @ mixing.T + rng.normal(size=(n, d)) * 0.5 + shift
    point = fid.frechet_distance(*fid.feature_statistics(x), ref_mu, ref_sigma, "sqrtm")
    delta = intervals.fid_delta_interval(x, ref_mu, ref_sigma)
    assert delta["value"] == pytest.approx(point, rel=1e-8)
    assert delta["low"] < point < delta["high"]
    assert delta["high"] - point == pytest.approx(1.959964 * delta["std"], rel=1e-5)   # a 95 % normal interval
    # the Monte Carlo sd of 200 draws is itself uncertain by ~5%; the delta se of one set by a few % more
    assert np.mean(ses) == pytest.approx(values.std(ddof=1), rel=0.15)
    bootstrap = intervals.fid_bootstrap_interval(x, ref_mu, ref_sigma, rounds=300, seed=0)
    assert delta["std"] == pytest.approx(bootstrap["std"], rel=0.15)
    covered = np.mean(np.abs(values - values.mean()) <= 1.959964 * ses)
    assert 0.90 <= covered <= 0.99, covered      # 95 % nominal; binomial sd at 200 draws is 0.015


@pytest.mark.parametrize("rule", ["adm", "equal"])
def test_inception_score_bootstrap_equals_direct_recomputation(rule):
    logits = _imagenet_like_logits(1234, classes=50, seed=3)
    result = intervals.is_interval(logits, rounds=6, seed=2, split_rule=rule, split_size=500, num_splits=4)
    direct = [inception_score(logits[rows], rule, 500, 4)[0] for rows in intervals.draws(len(logits), 6, 2)]
    assert result["low"] == pytest.approx(np.percentile(direct, 2.5), rel=1e-10)
    assert result["high"] == pytest.approx(np.percentile(direct, 97.5), rel=1e-10)
    assert result["std"] == pytest.approx(np.std(direct, ddof=1), rel=1e-8)


def test_stratified_draws_keep_every_position_in_its_class():
    labels = np.repeat(np.arange(5), 7)[np.random.default_rng(0).permutation(35)]
    assert intervals.balanced_strata(labels) is labels
    assert intervals.balanced_strata(labels[:-1]) is None and intervals.balanced_strata(None) is None
    first, again = list(intervals.draws(35, 3, 4, labels)), list(intervals.draws(35, 3, 4, labels))
    for rows, same in zip(first, again):
        assert (labels[rows] == labels).all() and (rows == same).all()
    assert len({tuple(rows) for rows in first}) == 3 and len(np.unique(np.concatenate(first))) > 20


def test_stratified_fid_interval_matches_fresh_class_balanced_draws():
    """Samples drawn 100 per class from ten well-separated clusters: FID's spread over fresh balanced draws is what
    the stratified delta method and the stratified bootstrap estimate; resampling all rows overstates it (it adds
    class-proportion noise that the design does not have)."""
    rng = np.random.default_rng(5)
    d, per_class, classes = 6, 100, 10
    centres = rng.normal(size=(classes, d)) * 3
    labels = np.repeat(np.arange(classes), per_class)

    def balanced_draw():
        return centres[labels] + rng.normal(size=(len(labels), d)) * 0.7

    ref_mu, ref_sigma = fid.feature_statistics(centres[rng.integers(0, classes, 20_000)]
                                               + rng.normal(size=(20_000, d)) + 0.5)   # FID well above 0
    fresh = [intervals.fid_delta_interval(balanced_draw(), ref_mu, ref_sigma)["value"] for _ in range(200)]
    x = balanced_draw()
    stratified = intervals.fid_delta_interval(x, ref_mu, ref_sigma, labels)
    plain = intervals.fid_delta_interval(x, ref_mu, ref_sigma)
    booted = intervals.fid_bootstrap_interval(x, ref_mu, ref_sigma, 300, 0, labels)
    assert stratified["std"] == pytest.approx(np.std(fresh, ddof=1), rel=0.2)
    assert booted["std"] == pytest.approx(stratified["std"], rel=0.2)
    assert plain["std"] > 1.5 * stratified["std"]
    assert "within their class" in stratified["method"] and "within their class" in booted["method"]


def test_kid_on_float32_features_equals_the_float64_computation():
    """Inception features are float32: the inner products run in float32 (fast), the sums in float64. Measured
    relative difference ~1e-7; clean-fid, all in float32, is ~2e-5 off on the same features."""
    rng = np.random.default_rng(2)
    samples = np.maximum(rng.normal(0.3, 0.4, size=(400, 256)), 0).astype(np.float32)
    refs = np.maximum(rng.normal(0.32, 0.4, size=(300, 256)), 0).astype(np.float32)
    fast = intervals.kid(samples, refs, subsets=10, subset_size=200, seed=1)
    exact = intervals.kid(samples.astype(np.float64), refs.astype(np.float64), subsets=10, subset_size=200, seed=1)
    assert fast["kid"] == pytest.approx(exact["kid"], rel=1e-5)
    assert "float32" in fast["method"] and "float64" in exact["method"]


def test_precision_recall_bootstrap_equals_direct_recomputation_with_fixed_radii():
    samples, refs = _grid_features(120, 32, 7, shift=2), _grid_features(100, 32, 8)
    full = precision_recall_full(samples, refs, distances="float64")
    result = intervals.precision_recall_interval(full, rounds=4, seed=3)
    s = samples.astype(np.float64)
    r = refs.astype(np.float64)
    d_sr = ((s[:, None] - r[None]) ** 2).sum(-1)
    sample_radii = np.sort(((s[:, None] - s[None]) ** 2).sum(-1), 1)[:, 3]
    ref_radii = np.sort(((r[:, None] - r[None]) ** 2).sum(-1), 1)[:, 3]
    precisions, recalls = [], []
    for rows in intervals.draws(len(s), 4, 3):
        precisions.append(np.mean((d_sr[rows] <= ref_radii[None]).any(1)))
        recalls.append(np.mean((d_sr[rows] <= sample_radii[rows, None]).any(0)))
    assert result["precision"]["low"] == pytest.approx(np.percentile(precisions, 2.5), abs=1e-12)
    assert result["recall"]["high"] == pytest.approx(np.percentile(recalls, 97.5), abs=1e-12)
    assert result["recall"]["low"] == pytest.approx(np.percentile(recalls, 2.5), abs=1e-12)


def test_recall_bootstrap_keeps_bounded_coverers_with_the_same_interval(monkeypatch):
    """A wide sample cloud around a compact reference (a poor model): every sample ball covers every reference,
    400 coverers each; only 64 per reference are kept, and the bootstrap interval does not change."""
    from harness.evaluation import precision_recall as pr_module

    rng = np.random.default_rng(0)
    samples = rng.normal(size=(400, 64)).astype(np.float32)
    refs = (rng.normal(size=(150, 64)) * 0.3).astype(np.float32)
    capped = precision_recall_full(samples, refs, row_chunk=70, col_chunk=90)
    assert np.bincount(capped.cover_ref).max() == pr_module.MAX_COVERERS == 64
    monkeypatch.setattr(pr_module, "MAX_COVERERS", 10**9)
    every = precision_recall_full(samples, refs, row_chunk=70, col_chunk=90)
    assert np.bincount(every.cover_ref).max() == 400 and every.recall == capped.recall == 1.0
    assert (intervals.precision_recall_interval(capped, 30, 1)
            == intervals.precision_recall_interval(every, 30, 1))
