"""Scaling-law fits of a collected sweep: `fit_sweep(table, ...) -> FitResults`.

For each metric (test loss and token error, last scale and all scales):
- against N: one point per model size, the final validation record of its run (with several runs of one
  size: the best one, their mean, or all of them, `aggregate`);
- against C: the Pareto-optimal validation records over all runs' training curves (analysis/frontier.py).
Forms: the VAR paper's pure power law (log-log least squares + Pearson r), the power law plus constant
(least squares on log L, multi-start) and, where the records vary both N and D, the Chinchilla form
(analysis/joint.py, Huber on log L as Hoffmann et al.).
Intervals (analysis/intervals.py): exact t / Fieller intervals for the pure power law against N, profile
likelihood for the power law plus constant against N, a percentile bootstrap over runs for the Chinchilla form;
laws against C get none (the frontier's selection of favourable noise defeats every resampling scheme tried).
Every fit carries flags (analysis/flags.py) and a hold-out-largest extrapolation test: refit without the
largest model size and predict it (for C: predict the frontier beyond the compute the remaining runs reached).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from analysis.compute import COMPUTE_CONVENTION, add_compute_columns, final_records
from analysis.flags import outside_interval_flags, saturating_boundary_flags, unique
from analysis.frontier import pareto_frontier
from analysis.intervals import (
    Interval,
    fit_saturating_ls,
    loglog_intervals,
    saturating_intervals,
)
from analysis.joint import fits_chinchilla, late_records
from analysis.laws import X_UNITS
from analysis.powerlaw import FitError, fit_loglog
from analysis.results import FitResults, LawFit
from analysis.table import METRIC_COLUMNS, is_finished, validate_table
from analysis.validate import validate_for_fit

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


def _fit_one(form: str, x: np.ndarray, y: np.ndarray):
    if form == "paper":
        return fit_loglog(x, y)
    return fit_saturating_ls(x, y)


def _intervals(form: str, fit, x: np.ndarray, y: np.ndarray, level: float) -> dict[str, Interval]:
    if form == "paper":
        return loglog_intervals(np.log(x), np.log(y), level)
    return saturating_intervals(fit, x, y, level)


FRONTIER_NO_INTERVAL = ("no interval: a frontier fit keeps the records with favourable noise, which no resampling "
                        "of runs reproduces (a run bootstrap covered 80% at a nominal 95%; docs/analysis.md)")


def fit_law(form: str, x: np.ndarray, y: np.ndarray, level: float = 0.95, metric: str = "", x_name: str = "N",
            with_intervals: bool = True) -> LawFit:
    """Fit one law to points (x in the unit of `x_name`) with the intervals fits.json reports, and its flags.

    The coverage benchmark and tests call this very function."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    fit = _fit_one(form, x, y)
    names = list(fit.params())
    if with_intervals:
        intervals = _intervals(form, fit, x, y, level)
        method = "t (exact); Fieller for beta" if form == "paper" else "profile likelihood, t-calibrated"
    else:
        intervals = {name: Interval(np.nan, np.nan) for name in names}
        method = "none"
    residuals = np.log(y) - np.log(fit.predict(x))
    law = LawFit(metric=metric, x=x_name, form=form, params=fit.params(),
                 ci_low={n: float(intervals[n].low) for n in names},
                 ci_high={n: float(intervals[n].high) for n in names},
                 se={}, ci_level=level, n_boot=0, n_points=int(x.size),
                 r=float(fit.r) if form == "paper" else None,
                 rmse_log=float(np.sqrt(np.mean(residuals ** 2))), x_values=x.tolist(), y_values=y.tolist(),
                 residuals_log=residuals.tolist(), x_unit=X_UNITS[x_name][0],
                 intercept=float(fit.intercept) if form == "paper" else None, interval_method=method)
    flags = list(getattr(fit, "flags", []))
    for name in names:
        flags += intervals[name].flags
    if form == "saturating":
        flags += saturating_boundary_flags(fit, x, y)
    if not with_intervals:
        flags.append(FRONTIER_NO_INTERVAL)
    law.flags = unique(flags + outside_interval_flags(law))
    return law


def _holdout(form: str, x_fit, y_fit, x_test, y_test) -> dict:
    if len(x_test) == 0:
        return {"skipped": "nothing beyond the remaining runs to predict"}
    try:
        fit = _fit_one(form, np.asarray(x_fit, float), np.asarray(y_fit, float))
    except FitError as exc:
        return {"skipped": f"too little data without the largest model: {exc}"}
    predicted = fit.predict(np.asarray(x_test, float))
    rel = predicted / np.asarray(y_test, float) - 1
    return {"x": list(map(float, x_test)), "y": list(map(float, y_test)), "predicted": predicted.tolist(),
            "rel_error": rel.tolist(), "max_abs_rel_error": float(np.max(np.abs(rel)))}


def _fits_vs_params(finals, options, results: list, skipped: list, notes: list) -> None:
    for metric in options.metrics:
        table = points_vs_params(finals, metric, options.aggregate)
        several = finals.dropna(subset=[metric]).groupby("N_billion")["point_id"].nunique()
        for size, count in several[several > 1].items():
            notes.append(f"{metric}: {count} runs of N={size:.4g}B; aggregate={options.aggregate!r} "
                         + ("kept the one with the lowest final value" if options.aggregate == "best" else
                            "averaged them" if options.aggregate == "mean" else "fitted every run"))
        x, y = table["N_billion"].to_numpy(float), table["y"].to_numpy(float)
        for form in options.forms:
            try:
                law = fit_law(form, x, y, options.ci_level, metric, "N")
            except FitError as exc:
                skipped.append(f"{metric} vs N, {form}: {exc}")
                continue
            largest = x == x.max()
            law.holdout = _holdout(form, x[~largest], y[~largest], x[largest], y[largest])
            results.append(law)


def _fits_vs_compute(curves, options, results: list, skipped: list, frontiers: dict) -> None:
    curves = curves[curves["C_pflops"] > 0]
    if curves["N"].nunique() < 2:
        skipped.append("laws against compute: the Pareto frontier needs runs of at least 2 model sizes "
                       f"(found {curves['N'].nunique()}); one run's own curve is not a compute-optimal frontier")
        return
    largest_n = curves["N"].max()
    small = curves[curves["N"] < largest_n]
    for metric in options.metrics:
        usable = curves.dropna(subset=[metric])
        if usable.empty:
            skipped.append(f"{metric} vs C: no record has a value of {metric}")
            continue
        front = pareto_frontier(usable, x="C_pflops", y=metric)
        front = front[front["C_pflops"] >= options.frontier_min_pflops]
        frontiers[metric] = front[["C_pflops", "C_flops", metric, "point_id", "N", "step"]].reset_index(drop=True)
        x, y = front["C_pflops"].to_numpy(float), front[metric].to_numpy(float)
        for form in options.forms:
            try:
                law = fit_law(form, x, y, options.ci_level, metric, "C", with_intervals=False)
            except FitError as exc:
                skipped.append(f"{metric} vs C, {form}: {exc}")
                continue
            reduced = small.dropna(subset=[metric])
            if reduced.empty:
                law.holdout = {"skipped": "only one model size"}
            else:
                reduced = pareto_frontier(reduced, x="C_pflops", y=metric)
                reduced = reduced[reduced["C_pflops"] >= options.frontier_min_pflops]
                beyond = x > reduced["C_pflops"].max()
                law.holdout = _holdout(form, reduced["C_pflops"], reduced[metric], x[beyond], y[beyond])
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
    table = validate_table(table, source or "sweep table")
    validate_for_fit(table, source or "sweep table")
    table = add_compute_columns(table)
    finals = final_records(table, split=options.split, finished_only=not options.include_unfinished)
    curves = table[table["split"] == options.split]
    if not options.include_unfinished and "state" in curves:
        curves = curves[is_finished(curves["state"])]
    fits: list[LawFit] = []
    skipped: list[str] = []
    notes: list[str] = []
    frontiers: dict[str, pd.DataFrame] = {}
    if "N" in options.against:
        _fits_vs_params(finals, options, fits, skipped, notes)
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
                      source=source, notes=notes)
