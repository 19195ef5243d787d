"""Scaling-law fits of a collected sweep: `fit_sweep(table, ...) -> FitResults`.

For each metric (test loss and token error, last scale and all scales):
- against N: one point per model size, the final validation record of its run (with several runs of one
  size: the best one, their mean, or all of them, `aggregate`);
- against C: the Pareto-optimal validation records over all runs' training curves (analysis/frontier.py).
Forms: the VAR paper's pure power law (log-log least squares + Pearson r), the power law plus constant
(Huber on log L, multi-start L-BFGS) and, where the records vary both N and D, the Chinchilla form
(analysis/joint.py).
Every fit gets bootstrap percentile CIs over runs (seeded) and a hold-out-largest extrapolation test: refit
without the largest model size and predict it (for C: predict the frontier beyond the compute the
remaining runs reached).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from analysis.batched import huber_lm, saturating_model
from analysis.bootstrap import (
    distinct_present,
    draw_until,
    fit_rng,
    frontier_weights,
    percentile_interval,
    resample_counts,
    weighted_loglog,
)
from analysis.compute import COMPUTE_CONVENTION, add_compute_columns, final_records
from analysis.frontier import pareto_frontier
from analysis.joint import fits_chinchilla, late_records
from analysis.laws import X_UNITS
from analysis.powerlaw import FitError, fit_loglog, fit_saturating, saturating_bounds
from analysis.results import FitResults, LawFit
from analysis.table import METRIC_COLUMNS, is_finished, validate_table

FORMS = ("paper", "saturating")
AGGREGATES = ("best", "mean", "all")


@dataclass
class FitOptions:
    metrics: tuple[str, ...] = METRIC_COLUMNS
    forms: tuple[str, ...] = FORMS
    against: tuple[str, ...] = ("N", "C")  # fit against model size, compute, or both
    chinchilla: bool = True          # fit E + A/N^a + B/D^b when the records vary both N and D
    chinchilla_on: str = "final"     # final: each run's last record; curves: every record past the fraction below
    chinchilla_min_fraction: float = 0.25
    n_boot: int = 1000
    seed: int = 0
    ci_level: float = 0.95
    huber_delta: float = 1e-3
    aggregate: str = "best"          # several runs of one size: best | mean | all
    include_unfinished: bool = False
    split: str = "val"
    frontier_min_pflops: float = 0.0  # ignore frontier records below this compute (warm-up transients)

    def check(self) -> None:
        unknown = [m for m in self.metrics if m not in METRIC_COLUMNS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; expected some of {list(METRIC_COLUMNS)}")
        unknown = [f for f in self.forms if f not in FORMS]
        if unknown:
            raise ValueError(f"unknown form(s) {unknown}; expected some of {list(FORMS)}")
        if self.chinchilla_on not in ("final", "curves"):
            raise ValueError(f"chinchilla_on must be 'final' or 'curves', got {self.chinchilla_on!r}")
        if not set(self.against) <= {"N", "C"}:
            raise ValueError(f"against must name 'N' and/or 'C', got {self.against}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if self.n_boot < 0 or not 0 < self.ci_level < 1:
            raise ValueError(f"need n_boot >= 0 and 0 < ci_level < 1, got {self.n_boot}, {self.ci_level}")


def points_vs_params(finals: pd.DataFrame, metric: str, aggregate: str) -> pd.DataFrame:
    """Columns N_billion, y, point_id: one row per model size (or per run with aggregate='all')."""
    data = finals[["N_billion", "point_id", metric]].dropna().rename(columns={metric: "y"})
    if aggregate == "all":
        return data.sort_values("N_billion").reset_index(drop=True)
    if aggregate == "mean":
        grouped = data.groupby("N_billion", as_index=False).agg(y=("y", "mean"), point_id=("point_id", ",".join))
        return grouped.sort_values("N_billion").reset_index(drop=True)
    best = data.loc[data.groupby("N_billion")["y"].idxmin()]
    return best.sort_values("N_billion").reset_index(drop=True)


def _fit_one(form: str, x: np.ndarray, y: np.ndarray, options: FitOptions):
    if form == "paper":
        return fit_loglog(x, y)
    return fit_saturating(x, y, delta=options.huber_delta)


@dataclass
class _PointSet:
    """Candidate points with the weights of the full data and a sampler of bootstrap weights (B, n)."""

    x: np.ndarray
    y: np.ndarray
    base_weights: np.ndarray
    sample_weights: Callable[[int, np.random.Generator], np.ndarray]

    @property
    def used(self) -> tuple[np.ndarray, np.ndarray]:
        keep = self.base_weights > 0
        return self.x[keep], self.y[keep]


def _bootstrap(form: str, fit, points: _PointSet, options: FitOptions, rng: np.random.Generator,
               chunk: int = 256) -> np.ndarray:
    def draw(batch: int):
        weights = points.sample_weights(batch, rng)
        # Records on no resample's frontier carry no weight anywhere: leave them out of the arithmetic.
        used = weights.any(axis=0)
        weights, x, y = weights[:, used], points.x[used], points.y[used]
        distinct = distinct_present(x, weights)
        if form == "paper":
            slope, intercept = weighted_loglog(np.log(x), np.log(y), weights)
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                params = np.column_stack([slope, np.exp(intercept / slope)])
            return params, distinct >= 2
        model = saturating_model(np.log(x / fit.x_scale))
        lower, upper = np.array(saturating_bounds(points.y)).T
        thetas = [huber_lm(model, np.tile(fit.theta, (len(w), 1)), np.log(y), w, options.huber_delta, lower, upper)
                  for w in np.array_split(weights, max(1, len(weights) // chunk))]
        e, a, alpha = np.concatenate(thetas).T
        params = np.column_stack([np.exp(e), fit.x_scale * np.exp(a / alpha), alpha])
        return params, distinct >= 3

    return draw_until(options.n_boot, draw) if options.n_boot else np.empty((0, len(fit.params())))


def _law_fit(metric: str, x_name: str, form: str, points: _PointSet, options: FitOptions) -> LawFit:
    x, y = points.used
    fit = _fit_one(form, x, y, options)
    names = list(fit.params())
    samples = _bootstrap(form, fit, points, options, fit_rng(options.seed, metric, x_name, form))
    if len(samples):
        low, high = percentile_interval(samples, options.ci_level)
    else:
        low = high = np.full(len(names), np.nan)
    with np.errstate(over="ignore", invalid="ignore"):  # X0 samples can reach 1e10+ where E ~ min(L)
        se = samples.std(axis=0, ddof=1) if len(samples) > 1 else np.full(len(names), np.nan)
    residuals = np.log(y) - np.log(fit.predict(x))
    return LawFit(metric=metric, x=x_name, form=form, params=fit.params(),
                  ci_low=dict(zip(names, map(float, low))), ci_high=dict(zip(names, map(float, high))),
                  se=dict(zip(names, map(float, se))), ci_level=options.ci_level, n_boot=int(len(samples)),
                  n_points=int(x.size), r=float(fit.r) if form == "paper" else None,
                  rmse_log=float(np.sqrt(np.mean(residuals ** 2))), x_values=x.tolist(), y_values=y.tolist(),
                  residuals_log=residuals.tolist(), x_unit=X_UNITS[x_name][0], samples=samples,
                  intercept=float(fit.intercept) if form == "paper" else None)


def _holdout(form: str, x_fit, y_fit, x_test, y_test, options: FitOptions) -> dict:
    if len(x_test) == 0:
        return {"skipped": "nothing beyond the remaining runs to predict"}
    try:
        fit = _fit_one(form, np.asarray(x_fit, float), np.asarray(y_fit, float), options)
    except FitError as exc:
        return {"skipped": f"too little data without the largest model: {exc}"}
    predicted = fit.predict(np.asarray(x_test, float))
    rel = predicted / np.asarray(y_test, float) - 1
    return {"x": list(map(float, x_test)), "y": list(map(float, y_test)), "predicted": predicted.tolist(),
            "rel_error": rel.tolist(), "max_abs_rel_error": float(np.max(np.abs(rel)))}


def _fits_vs_params(finals, options, results: list, skipped: list) -> None:
    for metric in options.metrics:
        table = points_vs_params(finals, metric, options.aggregate)
        x, y = table["N_billion"].to_numpy(float), table["y"].to_numpy(float)
        points = _PointSet(x, y, np.ones(x.size), lambda batch, rng, n=x.size: resample_counts(n, batch, rng))
        for form in options.forms:
            try:
                law = _law_fit(metric, "N", form, points, options)
            except FitError as exc:
                skipped.append(f"{metric} vs N, {form}: {exc}")
                continue
            largest = x == x.max()
            law.holdout = _holdout(form, x[~largest], y[~largest], x[largest], y[largest], options)
            results.append(law)


def _frontier_points(curves: pd.DataFrame, metric: str, options: FitOptions) -> _PointSet:
    """All records sorted by (compute, loss); a resample's weights mark its own runs' frontier."""
    data = curves.dropna(subset=[metric]).sort_values(["C_pflops", metric], kind="mergesort")
    runs = np.array(sorted(data["point_id"].unique()))
    run_code = np.searchsorted(runs, data["point_id"].to_numpy())
    x, y = data["C_pflops"].to_numpy(float), data[metric].to_numpy(float)
    above_floor = (x >= options.frontier_min_pflops).astype(float)
    base = frontier_weights(run_code, y, np.ones((1, runs.size)))[0] * above_floor
    return _PointSet(x, y, base, lambda batch, rng: frontier_weights(
        run_code, y, resample_counts(runs.size, batch, rng)) * above_floor[None, :])


def _fits_vs_compute(curves, options, results: list, skipped: list, frontiers: dict) -> None:
    curves = curves[curves["C_pflops"] > 0]
    if curves["N"].nunique() < 2:
        skipped.append("laws against compute: the Pareto frontier needs runs of at least 2 model sizes "
                       f"(found {curves['N'].nunique()}); one run's own curve is not a compute-optimal frontier")
        return
    largest_n = curves["N"].max()
    small = curves[curves["N"] < largest_n]
    for metric in options.metrics:
        points = _frontier_points(curves, metric, options)
        front = pareto_frontier(curves.dropna(subset=[metric]), x="C_pflops", y=metric)
        front = front[front["C_pflops"] >= options.frontier_min_pflops]
        frontiers[metric] = front[["C_pflops", "C_flops", metric, "point_id", "N", "step"]].reset_index(drop=True)
        for form in options.forms:
            try:
                law = _law_fit(metric, "C", form, points, options)
            except FitError as exc:
                skipped.append(f"{metric} vs C, {form}: {exc}")
                continue
            if small.empty:
                law.holdout = {"skipped": "only one model size"}
            else:
                reduced = pareto_frontier(small.dropna(subset=[metric]), x="C_pflops", y=metric)
                reduced = reduced[reduced["C_pflops"] >= options.frontier_min_pflops]
                x, y = front["C_pflops"].to_numpy(float), front[metric].to_numpy(float)
                beyond = x > reduced["C_pflops"].max()
                law.holdout = _holdout(form, reduced["C_pflops"], reduced[metric], x[beyond], y[beyond], options)
            results.append(law)


def fit_sweep(table: pd.DataFrame, options: FitOptions | None = None, source: str = "",
              **overrides) -> FitResults:
    """Fit every law of `options` (fields may also be given as keyword overrides) to a collected sweep table."""
    options = options or FitOptions()
    if overrides:
        options = FitOptions(**{**asdict(options), **overrides})
    options.check()
    # The problems are tiny (3-5 parameters, tens of points): BLAS threads only contend for the cores.
    with threadpool_limits(limits=1):
        return _fit_sweep(table, options, source)


def _fit_sweep(table: pd.DataFrame, options: FitOptions, source: str) -> FitResults:
    table = add_compute_columns(validate_table(table, source or "sweep table"))
    finals = final_records(table, split=options.split, finished_only=not options.include_unfinished)
    curves = table[table["split"] == options.split]
    if not options.include_unfinished and "state" in curves:
        curves = curves[is_finished(curves["state"])]
    fits: list[LawFit] = []
    skipped: list[str] = []
    frontiers: dict[str, pd.DataFrame] = {}
    if "N" in options.against:
        _fits_vs_params(finals, options, fits, skipped)
    if "C" in options.against:
        _fits_vs_compute(curves, options, fits, skipped, frontiers)
    if options.chinchilla:
        records = finals if options.chinchilla_on == "final" else late_records(curves, options.chinchilla_min_fraction)
        fits_chinchilla(records, options, fits, skipped)
    if not fits:
        raise FitError("no law could be fitted: " + "; ".join(skipped))
    return FitResults(fits=fits, options={**asdict(options), "metrics": list(options.metrics),
                                          "forms": list(options.forms), "against": list(options.against)},
                      convention=COMPUTE_CONVENTION, points=finals, frontiers=frontiers, skipped=skipped,
                      source=source)
