"""Intervals of the laws against compute (smoothed frontier, residual bootstrap) and of the Chinchilla form
(parametric bootstrap): the method that fills fits.json, rebuilt here from its definition, and a small
coverage run. The full coverage study is benchmarks/bench_coverage.py (numbers in benchmarks/RESULTS.md)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis.batched import chinchilla_model, huber_lm
from analysis.bootstrap import fit_rng
from analysis.fits import fit_law, fit_sweep, frontier_law
from analysis.flags import chinchilla_interval_flags
from analysis.frontier import pareto_frontier
from analysis.powerlaw import chinchilla_bounds, fit_chinchilla
from analysis.synthetic import SyntheticLaw, paper_params, synthetic_sweep_table

E, A, A_EXP, B, B_EXP = 1.8, 400.0, 0.34, 410.0, 0.28
DEPTHS = (6, 12, 18, 24, 30)


def loss_of(n, images):
    return E + A / n ** A_EXP + B / images ** B_EXP


def per_image(depth: int, flops_d6: float = 2e10) -> float:
    return flops_d6 * paper_params(depth) / paper_params(6)


def curves(records: int = 12):
    """Training curves of E + A/N^a + B/D^b, D log-spaced over two decades; C in PFLOPs."""
    c, loss, runs = [], [], []
    for depth in DEPTHS:
        images = np.geomspace(1e5, 1e7, records)
        c.append(images * per_image(depth) / 1e15)
        loss.append(loss_of(paper_params(depth), images))
        runs += [f"d{depth}"] * records
    return np.concatenate(c), np.concatenate(loss), np.array(runs)


def noise_free_truth(c, grid_points=60):
    """The power law fitted to the noise-free frontier, from the law itself: at each budget of a log grid over
    the records' compute, the lowest loss any run reached with at most that budget."""
    grid = np.geomspace(c.min(), c.max(), grid_points)
    best = np.full(grid_points, np.inf)
    for depth in DEPTHS:
        images = grid * 1e15 / per_image(depth)
        started = images >= 1e5 * (1 - 1e-9)
        best = np.minimum(best, np.where(started, loss_of(paper_params(depth), np.clip(images, 1e5, 1e7)), np.inf))
    return fit_law("paper", grid, best, x_name="C").params["alpha"]


def test_frontier_interval_is_the_basic_bootstrap_at_the_stated_level():
    c, clean, runs = curves()
    y = clean * np.exp(np.random.default_rng(3).normal(0, 0.01, clean.size))
    law = frontier_law("paper", c, y, runs, level=0.95, n_boot=400, seed=7, metric="loss_last")
    assert law.interval_method.startswith("basic bootstrap") and law.n_boot == 400 and law.n_points == 60
    alpha = law.params["alpha"]
    resampled = law.samples[:, 0]
    low, high = np.quantile(resampled, [0.025, 0.975])
    assert (law.ci_low["alpha"], law.ci_high["alpha"]) == pytest.approx((2 * alpha - high, 2 * alpha - low),
                                                                        rel=1e-12)
    # the resamples re-smooth and re-take the frontier: their spread is the noise's, not zero, not the raw one's
    assert 0 < resampled.std() < 0.01
    # the fitted points are the smoothed frontier, not the raw records (fewer, and never below the law's noise)
    raw = pareto_frontier(pd.DataFrame({"C": c, "y": y, "run": runs}), "C", "y", "run")
    assert len(raw) != law.n_points


def test_frontier_interval_covers_the_noise_free_frontier_law():
    """200 simulated sweeps (5 sizes x 12 records); binomial sd 0.015 at 95%, so [0.915, 0.985] fails a 90% or
    a biased interval (the raw frontier, no smoothing) with high probability."""
    c, clean, runs = curves()
    truth = noise_free_truth(c)
    hits = 0
    for seed in range(200):
        y = clean * np.exp(np.random.default_rng([11, seed]).normal(0, 0.01, clean.size))
        law = frontier_law("paper", c, y, runs, level=0.95, n_boot=300, seed=seed)
        hits += law.ci_low["alpha"] <= truth <= law.ci_high["alpha"]
    assert 0.915 <= hits / 200 <= 0.985


def test_too_few_records_per_run_fit_the_raw_frontier_without_interval():
    c, clean, runs = curves(records=5)
    law = frontier_law("paper", c, clean, runs)
    assert np.isnan(law.ci_low["alpha"]) and any("smoothing its curve needs 6" in f for f in law.flags)
    assert law.n_points == len(pareto_frontier(pd.DataFrame({"C": c, "y": clean, "run": runs}), "C", "y", "run"))


def test_chinchilla_interval_is_the_parametric_bootstrap_at_the_stated_level():
    law = SyntheticLaw(e_inf=E, a_coef=A, a_exp=A_EXP, b_coef=B, b_exp=B_EXP)
    flat = lambda n, d: 0.5 + 0 * np.asarray(n, float)  # noqa: E731
    table = synthetic_sweep_table(depths=DEPTHS, images_per_run=(3e5, 1e6, 3e6, 1e7), evals_per_run=1,
                                  noise=0.01, seed=4, laws={"loss_last": law, "loss_mean": flat, "err_last": flat,
                                                            "err_mean": flat}).assign(tokens_seen=np.nan)
    fit = fit_sweep(table, metrics=("loss_last",), against=("N",), forms=("paper",), n_boot=300, seed=5,
                    ci_level=0.95).get("loss_last", "N,D", "chinchilla")
    assert "A, a, b: parametric bootstrap percentile" in fit.interval_method and fit.n_boot == 300
    # rebuilt from the definition: Huber refits to the fitted law plus normal noise of the least-squares residual
    # sd (n - 5 degrees of freedom)
    n, d, y = (np.array(values) for values in (fit.x_values, fit.d_values, fit.y_values))  # in the fit's order
    full = fit_chinchilla(n, d, y)
    log_fitted = np.log(full.predict(n, d))
    model = chinchilla_model(np.log(n / full.scales[0]), np.log(d / full.scales[1]))
    box = np.array(chinchilla_bounds(y)).T
    least_squares = huber_lm(model, full.theta[None, :], np.log(y), np.ones((1, y.size)), 1e3, *box)
    sd = np.sqrt(((np.log(y) - model(least_squares)[0][0]) ** 2).sum() / (y.size - 5))
    rng = fit_rng(5, "loss_last", "N,D", "chinchilla")
    log_y = log_fitted + sd * rng.standard_normal((300, y.size))
    theta = huber_lm(model, np.tile(full.theta, (300, 1)), log_y, np.ones_like(log_y), 1e-3, *box)
    low, high = np.quantile(theta[:, 4], [0.025, 0.975])
    assert (fit.ci_low["b"], fit.ci_high["b"]) == pytest.approx((low, high), rel=1e-9)
    assert fit.ci_low["b"] <= B_EXP <= fit.ci_high["b"]


def test_chinchilla_interval_at_the_search_box_is_flagged_not_identified():
    y = np.array([2.0, 3.0])
    box = chinchilla_bounds(y)
    inside = {"E": 1.0, "A": 10.0, "a": 0.3, "B": 10.0, "b": 0.3}
    law = SimpleNamespace(ci_low=dict(inside), ci_high={k: 2 * v for k, v in inside.items()})
    assert chinchilla_interval_flags(law, box) == []
    law.ci_low["E"], law.ci_high["b"] = np.exp(box[0][0]), box[4][1]  # E down to the floor, b up to 20
    flags = chinchilla_interval_flags(law, box)
    assert len(flags) == 2 and flags[0].startswith("E:") and flags[1].startswith("b, B:")
    assert all("not identified" in flag for flag in flags)
