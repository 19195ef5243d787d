"""Scaling-law fitters on data drawn from known laws: recovery, CI coverage, agreement with numpy and scipy."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.batched import chinchilla_model, huber_lm
from analysis.bootstrap import resample_counts
from analysis.fits import fit_sweep
from analysis.intervals import fit_saturating_ls
from analysis.laws import PAPER_LAWS, X_UNITS
from analysis.powerlaw import FitError, chinchilla_bounds, fit_chinchilla, fit_loglog
from analysis.synthetic import PAPER_DEPTHS, paper_params, synthetic_sweep_table
from analysis.table import TableError

PAPER_PARAMS_BY_DEPTH = {depth: paper_params(depth) for depth in PAPER_DEPTHS}
E_TRUE, X0_TRUE, ALPHA_TRUE = 2.0, 0.05, 0.35        # saturating law in N (billions)
BETA_TRUE, ALPHA_PURE = 2.0, -0.23                    # the paper's Eq. 11 form
FLAT = lambda n, d: 0.5 + 0 * n                       # noqa: E731  (metrics a test does not look at)


def laws_in_n():
    return {"loss_last": lambda n, d: E_TRUE + (X0_TRUE / (n / 1e9)) ** ALPHA_TRUE,
            "loss_mean": lambda n, d: (BETA_TRUE * n / 1e9) ** ALPHA_PURE, "err_last": FLAT, "err_mean": FLAT}


def test_loglog_fit_equals_numpy_polyfit():
    rng = np.random.default_rng(3)
    x = np.geomspace(0.02, 2.0, 9)
    y = 3.0 * x ** -0.2 * np.exp(rng.normal(0, 0.03, x.size))
    fit = fit_loglog(x, y)
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    assert fit.alpha == pytest.approx(slope, rel=1e-12)
    assert fit.intercept == pytest.approx(intercept, rel=1e-12)
    assert fit.beta == pytest.approx(np.exp(intercept / slope), rel=1e-12)
    assert fit.r == pytest.approx(np.corrcoef(np.log(x), np.log(y))[0, 1], rel=1e-12)
    np.testing.assert_allclose(fit.predict(x), np.exp(np.polyval([slope, intercept], np.log(x))), rtol=1e-12)


@pytest.mark.parametrize("law", PAPER_LAWS, ids=lambda law: f"eq{law.equation_number}-{law.metric}-{law.x}")
def test_paper_equations_sampled_at_paper_depths_give_back_their_coefficients(law):
    if law.x == "N":
        x = np.array(list(PAPER_PARAMS_BY_DEPTH.values()), dtype=float) / X_UNITS["N"][0]
    else:  # the paper's C_min spans 6 orders of magnitude
        x = np.geomspace(1e-1, 1e5, 13)
    fit = fit_loglog(x, law(x))
    assert fit.alpha == pytest.approx(law.alpha, rel=1e-9)
    assert fit.beta == pytest.approx(law.beta, rel=1e-6)
    assert fit.r == pytest.approx(-1.0, abs=1e-12)


def test_fit_sweep_recovers_the_paper_laws_in_n_from_a_table():
    laws = {law.metric: (lambda n, d, law=law: law(n / 1e9)) for law in PAPER_LAWS if law.x == "N"}
    table = synthetic_sweep_table(depths=PAPER_DEPTHS, evals_per_run=1, noise=0.0, laws=laws)
    results = fit_sweep(table, forms=("paper",), against=("N",), chinchilla=False, n_boot=200)
    for law in (law for law in PAPER_LAWS if law.x == "N"):
        fit = results.get(law.metric, "N", "paper")
        assert fit.n_points == len(PAPER_DEPTHS)
        assert fit.params["alpha"] == pytest.approx(law.alpha, rel=1e-9)
        assert fit.params["beta"] == pytest.approx(law.beta, rel=1e-6)


def test_fitters_recover_known_laws_within_their_cis():
    table = synthetic_sweep_table(depths=PAPER_DEPTHS, evals_per_run=1, noise=0.005, seed=11, laws=laws_in_n())
    results = fit_sweep(table, metrics=("loss_last", "loss_mean"), against=("N",), chinchilla=False,
                        n_boot=1000, seed=0)
    saturating = results.get("loss_last", "N", "saturating")
    pure = results.get("loss_mean", "N", "paper")
    assert saturating.interval_method.startswith("profile likelihood") and pure.interval_method.startswith("t (exact)")
    for fit, truth in ((saturating, {"E": E_TRUE, "X0": X0_TRUE, "alpha": ALPHA_TRUE}),
                       (pure, {"alpha": ALPHA_PURE, "beta": BETA_TRUE})):
        for name, value in truth.items():
            assert fit.ci_low[name] <= value <= fit.ci_high[name], (fit.form, name, fit.ci_text(name))
            assert fit.ci_low[name] <= fit.params[name] <= fit.ci_high[name]
    assert saturating.params["alpha"] == pytest.approx(ALPHA_TRUE, rel=0.25)
    assert pure.params["alpha"] == pytest.approx(ALPHA_PURE, rel=0.05)
    assert pure.r < -0.99


def test_chinchilla_form_recovered_within_cis_when_n_and_d_vary():
    from analysis.synthetic import SyntheticLaw
    law = SyntheticLaw(e_inf=1.8, a_coef=400.0, a_exp=0.34, b_coef=410.0, b_exp=0.28)
    laws = {"loss_last": law, "loss_mean": FLAT, "err_last": FLAT, "err_mean": FLAT}
    table = synthetic_sweep_table(depths=(6, 10, 14, 18, 24, 30), images_per_run=(3e5, 1e6, 3e6, 1e7, 3e7),
                                  evals_per_run=1, noise=0.003, seed=5, laws=laws)
    table["tokens_seen"] = np.nan  # fit against images so B is in the synthetic law's units
    results = fit_sweep(table, metrics=("loss_last",), against=("N",), n_boot=300, seed=1, forms=("paper",))
    fit = results.get("loss_last", "N,D", "chinchilla")
    assert fit is not None, results.skipped
    truth = {"E": 1.8, "A": 400.0, "a": 0.34, "B": 410.0, "b": 0.28}
    for name, value in truth.items():
        assert fit.ci_low[name] <= value <= fit.ci_high[name], (name, fit.ci_text(name))
    assert fit.params["a"] == pytest.approx(0.34, abs=0.05)
    assert fit.params["b"] == pytest.approx(0.28, abs=0.05)


def test_batched_refits_agree_with_scipy_lbfgs():
    """The bootstrap's batched Levenberg-Marquardt reaches the optimum L-BFGS-B finds for each resample."""
    rng = np.random.default_rng(2)
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 4), np.geomspace(3e5, 1e7, 4)))
    y = (1.8 + 400 / n ** 0.34 + 410 / d ** 0.28) * np.exp(rng.normal(0, 0.003, n.size))
    full = fit_chinchilla(n, d, y)
    counts = resample_counts(n.size, 8, rng)
    lower, upper = np.array(chinchilla_bounds(y)).T
    model = chinchilla_model(np.log(n / full.scales[0]), np.log(d / full.scales[1]))
    batched = huber_lm(model, np.tile(full.theta, (8, 1)), np.log(y), counts.astype(float), 1e-3, lower, upper)
    for row, theta in zip(counts, batched):
        index = np.repeat(np.arange(n.size), row)
        single = fit_chinchilla(n[index], d[index], y[index], start=full.theta, scales=full.scales)
        assert theta[2] == pytest.approx(single.theta[2], abs=2e-3)
        assert np.exp(theta[0]) == pytest.approx(single.e_inf, rel=2e-3)


def test_holdout_largest_predicts_the_largest_model_from_the_others():
    table = synthetic_sweep_table(depths=PAPER_DEPTHS, evals_per_run=1, noise=0.0, laws=laws_in_n())
    results = fit_sweep(table, metrics=("loss_last",), against=("N",), chinchilla=False, n_boot=50)
    right = results.get("loss_last", "N", "saturating").holdout
    wrong = results.get("loss_last", "N", "paper").holdout
    largest = max(PAPER_PARAMS_BY_DEPTH.values()) / 1e9
    assert right["x"] == [pytest.approx(largest)]
    assert right["max_abs_rel_error"] < 1e-4  # the true form extrapolates exactly
    assert wrong["max_abs_rel_error"] > 10 * right["max_abs_rel_error"]  # the pure power law does not


def test_intervals_against_n_need_no_seed_and_the_chinchilla_bootstrap_is_seeded():
    table = synthetic_sweep_table(depths=(6, 8, 10, 12, 16), evals_per_run=4, noise=0.01, seed=1)
    first = fit_sweep(table, metrics=("loss_last",), against=("N",), n_boot=100, seed=7).to_frame()
    other = fit_sweep(table, metrics=("loss_last",), against=("N",), n_boot=100, seed=8).to_frame()
    pd.testing.assert_frame_equal(first, other)  # exact and profile intervals: nothing random
    from analysis.synthetic import SyntheticLaw
    laws = {"loss_last": SyntheticLaw(e_inf=1.8, a_coef=400.0, a_exp=0.34, b_coef=410.0, b_exp=0.28),
            "loss_mean": FLAT, "err_last": FLAT, "err_mean": FLAT}
    table = synthetic_sweep_table(depths=(6, 10, 14, 18), images_per_run=(3e5, 1e6, 3e6), evals_per_run=1,
                                  noise=0.003, seed=5, laws=laws)
    common = dict(metrics=("loss_last",), against=("N",), forms=("paper",), n_boot=100)
    runs = [fit_sweep(table, seed=seed, **common).get("loss_last", "N,D", "chinchilla") for seed in (7, 7, 8)]
    assert runs[0].ci_low == runs[1].ci_low and runs[0].ci_low != runs[2].ci_low


def test_bad_input_gives_clear_errors():
    with pytest.raises(FitError, match="2 points, at least 3"):
        fit_loglog([1.0, 2.0], [1.0, 0.5])
    with pytest.raises(FitError, match="positive and finite"):
        fit_loglog([1.0, 2.0, 3.0], [1.0, 0.0, 0.5])
    with pytest.raises(FitError, match="distinct x"):
        fit_saturating_ls([1.0, 1.0, 2.0, 2.0], [3.0, 3.1, 2.0, 2.1])
    table = synthetic_sweep_table(depths=(6, 8), evals_per_run=3)
    with pytest.raises(TableError, match="missing column.*loss_last"):
        fit_sweep(table.drop(columns=["loss_last"]))
    with pytest.raises(FitError, match="no law could be fitted.*at least 3"):
        fit_sweep(table, forms=("paper",), against=("N",), n_boot=10)
    percent = synthetic_sweep_table(depths=(6, 8, 10), evals_per_run=3)
    percent["err_last"] *= 100
    with pytest.raises(TableError, match="err_last must be a fraction"):
        fit_sweep(percent)
    with pytest.raises(ValueError, match="aggregate must be one of"):
        fit_sweep(percent.assign(err_last=0.5), aggregate="median")


def test_fit_sweep_recovers_the_paper_laws_in_compute_from_training_curves():
    """Curves of 4 model sizes whose records lie on Eqs. 13-16; the frontier fit gives the coefficients back
    (the smoothed curves are the curves: a cubic in log C holds a line)."""
    laws = {law.metric: law for law in PAPER_LAWS if law.x == "C"}
    rows = []
    for k, depth in enumerate((6, 12, 18, 24)):
        n_params = PAPER_PARAMS_BY_DEPTH[depth]
        # overlapping spans, 6 decades in all, where Eqs. 15-16 give error rates below 1
        for pflops in np.geomspace(10.0 ** (k + 1.5), 10.0 ** (k + 4.5), 9):
            rows.append({"point_id": f"d{depth}", "split": "val", "step": int(pflops * 1e3),
                         "params_total": n_params, "train_flops": pflops * 1e15, "state": "finished",
                         **{metric: float(law(pflops)) for metric, law in laws.items()}})
    table = pd.DataFrame(rows)
    results = fit_sweep(table, forms=("paper",), against=("C",), chinchilla=False, n_boot=200)
    for metric, law in laws.items():
        fit = results.get(metric, "C", "paper")
        assert fit.params["alpha"] == pytest.approx(law.alpha, rel=1e-9)
        assert fit.params["beta"] == pytest.approx(law.beta, rel=1e-6)
        # records without noise: every resample is the data, so the interval is the point
        assert fit.ci_low["alpha"] == pytest.approx(law.alpha, rel=1e-9) == fit.ci_high["alpha"]
        assert fit.interval_method.startswith("basic bootstrap") and not fit.flags
        assert np.ptp(results.frontiers[metric]["C_pflops"]) > 1e5  # the frontier spans the 6 decades


def test_chinchilla_form_from_training_curves():
    from analysis.synthetic import SyntheticLaw
    law = SyntheticLaw(e_inf=1.8, a_coef=400.0, a_exp=0.34, b_coef=410.0, b_exp=0.28)
    laws = {"loss_last": law, "loss_mean": FLAT, "err_last": FLAT, "err_mean": FLAT}
    table = synthetic_sweep_table(depths=(6, 10, 14, 18, 24, 30), images_per_run=(3e7,), evals_per_run=10,
                                  noise=0.002, seed=9, laws=laws)
    table["tokens_seen"] = np.nan
    common = dict(metrics=("loss_last",), against=("N",), forms=("paper",), n_boot=300, seed=2)
    assert any("3 data amounts" in s for s in fit_sweep(table, **common).skipped)  # final records: one D
    late = fit_sweep(table, chinchilla_on="curves", **common).get("loss_last", "N,D", "chinchilla")
    assert late.n_points == 6 * 3  # the log-spaced records past a quarter of each run
    fit = fit_sweep(table, chinchilla_on="curves", chinchilla_min_fraction=0.0, **common).get(
        "loss_last", "N,D", "chinchilla")
    assert fit.n_points == 6 * 10 and "records of 6 runs" in fit.note
    # one sweep cannot show coverage (tests/unit/analysis/test_analysis_frontier_interval.py and
    # benchmarks/bench_coverage.py do): here the truth lies within 3 half-widths of every estimate
    for name, value in {"E": 1.8, "A": 400.0, "a": 0.34, "B": 410.0, "b": 0.28}.items():
        half = (fit.ci_high[name] - fit.ci_low[name]) / 2
        assert 0 < half and abs(fit.params[name] - value) < 3 * half, (name, fit.ci_text(name))
