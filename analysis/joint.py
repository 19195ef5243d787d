"""The joint law in model size and data, L = E + A/N^a + B/D^b (Hoffmann et al. 2022), for a sweep table.

Points: each run's final record (`chinchilla_on="final"`, needs runs that differ in training length), or
every record of each run past a fraction of its training (`"curves"`, as Choshen et al. 2025 fit
intermediate checkpoints; under a decaying learning rate an intermediate checkpoint is not a model trained
for that many images, which biases B and b, so this is opt-in). D is tokens seen where the table has them, else
images seen.
Intervals:
- A, a, b: a parametric bootstrap. Each resample is the fitted law at the same (N, D) times log-normal noise
  whose sd is the residual sd of a least-squares fit of log L on n - 5 degrees of freedom (unbiased under
  normal noise; the Huber fit's own residuals overstate it), refitted with the same Huber loss, all resamples
  at once from the estimate (analysis/batched.py); the interval is the resamples' percentile interval. It
  replaced a percentile bootstrap over runs, which over-covered (up to 0.99 at a nominal 0.95).
- B: the t-calibrated profile-likelihood interval of the least-squares fit (analysis/joint_profile.py), the
  rule of the law with a constant; its percentile interval over-covered at 5 sizes (0.975), because its lower
  tail is made of resamples with E at 0.
- E: the values a parametric-bootstrap test does not reject, the test simulated at each tested value
  (analysis/joint_e_test.py). Its percentile interval (0.975 at 5 sizes: its lower end reaches E = 0 in most
  sweeps and the upper tail is not calibrated) and the t-calibrated profile (0.978) both over-covered; a
  one-sided end where the resamples reach E = 0 under-covered (0.922 at 8 sizes; benchmarks/RESULTS.md).
It treats records as independent: with `"curves"`, records of one run share its seed, which it does not see.
Coverage: benchmarks/bench_coverage.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.batched import LEAST_SQUARES_DELTA, chinchilla_model, huber_lm
from analysis.bootstrap import draw_until, fit_rng, percentile_interval, residual_sd
from analysis.flags import chinchilla_flags, chinchilla_interval_flags, outside_interval_flags, unique
from analysis.joint_e_test import e_interval
from analysis.joint_profile import b_interval, sum_of_squares
from analysis.powerlaw import FitError, chinchilla_bounds, fit_chinchilla
from analysis.results import LawFit

CHINCHILLA_INTERVAL_METHOD = (
    "E: inverted parametric-bootstrap test, the profile's signed root of the least-squares fit of log L against "
    "its 2.5/97.5% quantiles simulated (200 sweeps) from the fit with E held at each tested value; "
    "B: profile likelihood of the least-squares fit of log L, t-calibrated on n - 5 degrees of freedom; "
    "A, a, b: parametric bootstrap percentile, Huber refits to the fitted law plus normal noise of the "
    "least-squares residual sd (n - 5 degrees of freedom)")
LEAST_SQUARES_E_STARTS = (0.3, 0.7, 0.95)  # extra starts of the least-squares fit: E as fractions of min L


def late_records(curves: pd.DataFrame, min_fraction: float) -> pd.DataFrame:
    """Records at or after `min_fraction` of their run's last step."""
    last = curves.groupby("point_id")["step"].transform("max")
    return curves[curves["step"] >= min_fraction * last]


def least_squares_fit(model, huber_theta: np.ndarray, log_y: np.ndarray, lower: np.ndarray,
                      upper: np.ndarray) -> np.ndarray:
    """The least-squares fit of log L, (1, 5): from the Huber estimate and from it with E moved to 0.3, 0.7 and
    0.95 of the smallest loss, the best. From a Huber estimate at E ~ 0 alone the solver stays there (E's
    gradient vanishes) even where a lower least-squares optimum has E > 0."""
    starts = np.tile(huber_theta, (1 + len(LEAST_SQUARES_E_STARTS), 1))
    starts[1:, 0] = np.log(np.exp(log_y).min() * np.array(LEAST_SQUARES_E_STARTS))
    theta = huber_lm(model, starts, log_y, np.ones((starts.shape[0], log_y.size)), LEAST_SQUARES_DELTA, lower,
                     upper)
    return theta[[int(np.argmin(sum_of_squares(model, theta, log_y)))]]


def fits_chinchilla(records: pd.DataFrame, options, results: list, skipped: list) -> None:
    d_column = "D_tokens" if records["D_tokens"].notna().all() else "D_images"
    records = records.dropna(subset=[d_column])
    records = records[records[d_column] > 0]
    n, d = records["N"].to_numpy(float), records[d_column].to_numpy(float)
    if np.unique(n).size < 3 or np.unique(d).size < 3:
        skipped.append(f"Chinchilla form: needs at least 3 model sizes and 3 data amounts among the "
                       f"{options.chinchilla_on} records ({np.unique(n).size} sizes, {np.unique(d).size} data "
                       "amounts)")
        return
    runs = np.unique(records["point_id"].to_numpy(str))
    for metric in options.metrics:
        y = records[metric].to_numpy(float)
        try:
            fit = fit_chinchilla(n, d, y, delta=options.huber_delta)
        except FitError as exc:
            skipped.append(f"{metric} vs N,D, chinchilla: {exc}")
            continue
        names = list(fit.params())
        log_n_scaled, log_d_scaled = np.log(n / fit.scales[0]), np.log(d / fit.scales[1])
        model = chinchilla_model(log_n_scaled, log_d_scaled)
        lower, upper = np.array(chinchilla_bounds(y)).T

        rng = fit_rng(options.seed, metric, "N,D", "chinchilla")
        log_fitted = np.log(fit.predict(n, d))
        # the noise sd from the least-squares residuals (unbiased on n - 5 degrees of freedom); the Huber
        # estimate's own residuals overstate it (about 6% at sd 0.01 in simulation)
        least_squares = least_squares_fit(model, fit.theta, np.log(y), lower, upper)
        noise_sd = residual_sd(np.log(y) - model(least_squares)[0][0], len(names))

        def draw(batch, fit=fit, log_fitted=log_fitted, noise_sd=noise_sd, rng=rng):
            log_y = log_fitted + noise_sd * rng.standard_normal((batch, log_fitted.size))
            e, a, a_exp, b, b_exp = huber_lm(model, np.tile(fit.theta, (batch, 1)), log_y,
                                             np.ones_like(log_y), options.huber_delta, lower, upper).T
            params = np.column_stack([np.exp(e), np.exp(a) * fit.scales[0] ** a_exp, a_exp,
                                      np.exp(b) * fit.scales[1] ** b_exp, b_exp])
            return params, np.ones(batch, dtype=bool)
        try:
            samples = draw_until(options.n_boot, draw) if options.n_boot else np.empty((0, len(names)))
        except FitError as exc:
            skipped.append(f"{metric} vs N,D, chinchilla: {exc}")
            continue
        if len(samples):
            low, high = percentile_interval(samples, options.ci_level)
        else:
            low, high = np.full(len(names), np.nan), np.full(len(names), np.nan)
        # E and B: not the percentile interval, which over-covers them (module docstring)
        e_at, b_at = names.index("E"), names.index("B")
        low[b_at], high[b_at] = b_interval(log_n_scaled, log_d_scaled, np.log(fit.scales[1]), np.log(y),
                                           least_squares[0], lower, upper, options.ci_level)
        low[e_at], high[e_at] = e_interval(model, least_squares[0], np.log(y), lower, upper, options.ci_level,
                                           fit_rng(options.seed, metric, "N,D", "chinchilla", "E test"))
        with np.errstate(over="ignore", invalid="ignore"):
            se = samples.std(axis=0, ddof=1) if len(samples) > 1 else np.full(len(names), np.nan)
        residuals = np.log(y) - np.log(fit.predict(n, d))
        law = LawFit(
            metric=metric, x="N,D", form="chinchilla", params=fit.params(),
            ci_low=dict(zip(names, map(float, low))), ci_high=dict(zip(names, map(float, high))),
            se=dict(zip(names, map(float, se))), ci_level=options.ci_level, n_boot=len(samples),
            n_points=n.size, r=None, rmse_log=float(np.sqrt(np.mean(residuals ** 2))), x_values=n.tolist(),
            y_values=y.tolist(), residuals_log=residuals.tolist(), x_unit=1.0, d_values=d.tolist(),
            note=f"N in parameters, D = {d_column}, {options.chinchilla_on} records of {runs.size} runs",
            samples=samples, interval_method=CHINCHILLA_INTERVAL_METHOD)
        box = chinchilla_bounds(y)
        law.flags = unique(chinchilla_flags(fit, box) + chinchilla_interval_flags(law, box)
                           + outside_interval_flags(law))
        results.append(law)
