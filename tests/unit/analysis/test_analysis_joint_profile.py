"""The Chinchilla form's intervals of B (t-calibrated profile) and E (inverted parametric-bootstrap test),
checked against their definitions with scipy's least squares."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import least_squares

from analysis.bootstrap import fit_rng
from analysis.fits import fit_sweep
from analysis.synthetic import SyntheticLaw, synthetic_sweep_table

FLAT = lambda n, d: 0.5 + 0 * n  # noqa: E731  (metrics the test does not look at)
NAMES = ("E", "A", "a", "B", "b")  # fitted as log E, log A, a, log B, b on raw N and D
NULL_SWEEPS = 200  # the simulated sweeps behind each tested value of E, as documented in analysis/joint_e_test.py


def sweep_fit(seed: int, depths=(6, 12, 18, 24, 30)):
    law = SyntheticLaw(e_inf=1.8, a_coef=400.0, a_exp=0.34, b_coef=410.0, b_exp=0.28)
    table = synthetic_sweep_table(depths=depths, images_per_run=(3e5, 1e6, 3e6, 1e7), evals_per_run=1,
                                  noise=0.01, seed=seed,
                                  laws={"loss_last": law, "loss_mean": FLAT, "err_last": FLAT, "err_mean": FLAT})
    table["tokens_seen"] = np.nan  # D in images, the synthetic law's units
    return fit_sweep(table, metrics=("loss_last",), against=("N",), forms=("paper",), n_boot=50,
                     seed=seed).get("loss_last", "N,D", "chinchilla")


def log_law(p: dict, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.logaddexp.reduce([np.full(n.size, p["E"]), p["A"] - p["a"] * np.log(n), p["B"] - p["b"] * np.log(d)],
                               axis=0)


def least_squares_fit(n, d, log_y, starts: list[dict], held: dict[str, float]) -> tuple[float, dict]:
    """Least-squares SSR of log L and parameters (logs of E, A, B) over those not in `held`, best of `starts`."""
    free = [name for name in NAMES if name not in held]

    def residuals(sub):
        return log_law(dict(held, **dict(zip(free, sub))), n, d) - log_y
    best = min((least_squares(residuals, [start[k] for k in free], method="lm", xtol=1e-14, ftol=1e-14,
                              gtol=1e-14, max_nfev=20000) for start in starts), key=lambda r: r.cost)
    return 2 * best.cost, dict(held, **dict(zip(free, best.x)))


def observed(fit):
    n, d, log_y = np.array(fit.x_values), np.array(fit.d_values), np.log(fit.y_values)
    start = {"E": np.log(max(fit.params["E"], 1e-6)), "A": np.log(fit.params["A"]), "a": fit.params["a"],
             "B": np.log(fit.params["B"]), "b": fit.params["b"]}
    starts = [{k: v + shift * (k in "EAB") for k, v in start.items()} for shift in (0.0, 0.5, -0.5)]
    return n, d, log_y, starts


def ssr_with(fit, held: dict[str, float]) -> float:
    n, d, log_y, starts = observed(fit)
    return least_squares_fit(n, d, log_y, starts, {name: np.log(value) for name, value in held.items()})[0]


@pytest.mark.parametrize("seed", [1, 3])
def test_b_ends_raise_the_least_squares_ssr_by_t_squared_s_squared(seed):
    fit = sweep_fit(seed)
    assert "B: profile likelihood" in fit.interval_method
    dof = len(fit.y_values) - 5
    ssr_min = ssr_with(fit, {})
    allowed = stats.t.ppf(0.975, dof) ** 2 * ssr_min / dof
    low, high = fit.ci_low["B"], fit.ci_high["B"]
    assert 0 < low <= fit.params["B"] <= high < np.inf
    for end in (low, high):
        assert ssr_with(fit, {"B": end}) - ssr_min == pytest.approx(allowed, rel=0.02), end


def signed_root(n, d, log_y, starts, log_e) -> tuple[float, dict]:
    """r(e) = sign(e - e_hat) sqrt((SSR held at e - SSR_min) / s^2) and the fit held at e."""
    ssr_min, free = least_squares_fit(n, d, log_y, starts, {})
    ssr_held, held = least_squares_fit(n, d, log_y, starts[:1], {"E": log_e})
    ssr_min = min(ssr_min, ssr_held)
    return float(np.sign(log_e - free["E"]) * np.sqrt((ssr_held - ssr_min) / (ssr_min / (log_y.size - 5)))), held


@pytest.mark.parametrize("seed, depths, end", [(0, (6, 12, 18, 24, 30), "high"), (2, (6, 12, 18, 24, 30), "high"),
                                               (1, (6, 8, 10, 12, 16, 20, 24, 30), "low")])
def test_e_end_is_where_the_signed_root_meets_its_simulated_null_quantile_not_t(seed, depths, end):
    """At E's reported end the observed signed root equals the 2.5% or 97.5% quantile of the signed roots of
    sweeps simulated from the fit held there (noise sd s, the fit's own standard-normal draws), and that
    quantile is not t: the t-calibrated profile end would fail this."""
    fit = sweep_fit(seed, depths)
    assert "E: inverted parametric-bootstrap test" in fit.interval_method
    n, d, log_y, starts = observed(fit)
    dof = log_y.size - 5
    value = fit.ci_high["E"] if end == "high" else fit.ci_low["E"]
    assert 0 < value < np.inf
    r_observed, held = signed_root(n, d, log_y, starts, np.log(value))
    s = np.sqrt(least_squares_fit(n, d, log_y, starts, {})[0] / dof)
    draws = fit_rng(seed, "loss_last", "N,D", "chinchilla", "E test").standard_normal((NULL_SWEEPS, log_y.size))
    null = [signed_root(n, d, log_law(held, n, d) + s * z, [held, starts[0]], np.log(value))[0] for z in draws]
    quantile = np.quantile(null, 0.975 if end == "high" else 0.025)
    t = stats.t.ppf(0.975, dof) * (1 if end == "high" else -1)
    assert abs(quantile - t) > 0.08  # the case tells the calibration from t
    assert r_observed == pytest.approx(quantile, abs=0.02)


def test_profile_ends_at_zero_or_infinity_are_flagged_not_identified():
    from types import SimpleNamespace

    from analysis.flags import chinchilla_interval_flags
    from analysis.powerlaw import chinchilla_bounds
    box = chinchilla_bounds(np.array([2.0, 3.0]))
    inside = {"E": 1.0, "A": 10.0, "a": 0.3, "B": 10.0, "b": 0.3}
    law = SimpleNamespace(ci_low=dict(inside), ci_high={k: 2 * v for k, v in inside.items()})
    assert chinchilla_interval_flags(law, box) == []
    law.ci_low["B"], law.ci_high["B"], law.ci_high["E"] = 0.0, np.inf, np.inf
    assert chinchilla_interval_flags(law, box) == [
        "E: the data do not bound its upper end (not identified)",
        "B: the data do not bound its lower end (not identified)",
        "B: the data do not bound its upper end (not identified)"]
