"""Scaling-law fits of a collected sweep: `fit_sweep(table, ...) -> FitResults`.

For each metric (test loss and token error, last scale and all scales):
- against N: one point per model size, the final validation record of its run (with several runs of one
  size: the best one, their mean, or all of them, `aggregate`);
- against C: the frontier of the per-run smoothed training curves on a grid of budgets
  (analysis/frontier_fit.py); the raw Pareto-optimal records (analysis/frontier.py) are kept for the figure.
Forms: the VAR paper's pure power law (log-log least squares + Pearson r), the power law plus constant
(least squares on log L, multi-start) and, where the records vary both N and D, the Chinchilla form
(analysis/joint.py, Huber on log L as Hoffmann et al.).
Intervals: exact t / Fieller intervals for the pure power law against N, profile likelihood for the power law
plus constant against N (analysis/intervals.py), a basic residual bootstrap of smoothing, frontier and fit for
the laws against C (analysis/frontier_fit.py); for the Chinchilla form a parametric bootstrap (A, a, b), the
profile likelihood (B) and an inverted parametric-bootstrap test (E) (analysis/joint.py).
Every fit carries flags (analysis/flags.py) and a hold-out-largest extrapolation test: refit without the
largest model size and predict it (for C: predict the frontier beyond the compute the remaining runs reached).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from analysis.bootstrap import fit_rng
from analysis.compute import COMPUTE_CONVENTION, add_compute_columns, final_records
from analysis.flags import outside_interval_flags, saturating_boundary_flags, unique
from analysis.frontier import pareto_frontier
from analysis.frontier_fit import (
    SmoothedFrontier,
    frontier_paper_intervals,
    frontier_saturating_intervals,
    too_few_records,
)
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

def fit_law(form: str, x: np.ndarray, y: np.ndarray, level: float = 0.95, metric: str = "", x_name: str = "N",
            intervals_of=None) -> LawFit:
    """Fit one law to points (x in the unit of `x_name`) with the intervals fits.json reports, and its flags.

    `intervals_of(fit) -> (intervals, method, samples)` replaces the intervals from the points alone (exact t /
    Fieller, profile likelihood) where the points are not independent observations (the compute frontier).
    The coverage benchmark and tests call this very function."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    fit = _fit_one(form, x, y)
    names = list(fit.params())
    samples = None
    if intervals_of is None:
        intervals = _intervals(form, fit, x, y, level)
        method = "t (exact); Fieller for beta" if form == "paper" else "profile likelihood, t-calibrated"
    else:
        intervals, method, samples = intervals_of(fit)
    residuals = np.log(y) - np.log(fit.predict(x))
    law = LawFit(metric=metric, x=x_name, form=form, params=fit.params(),
                 ci_low={n: float(intervals[n].low) for n in names},
                 ci_high={n: float(intervals[n].high) for n in names},
                 se={}, ci_level=level, n_boot=0 if samples is None else len(samples), n_points=int(x.size),
                 r=float(fit.r) if form == "paper" else None,
                 rmse_log=float(np.sqrt(np.mean(residuals ** 2))), x_values=x.tolist(), y_values=y.tolist(),
                 residuals_log=residuals.tolist(), x_unit=X_UNITS[x_name][0],
                 intercept=float(fit.intercept) if form == "paper" else None, interval_method=method,
                 samples=samples)
    flags = list(getattr(fit, "flags", []))
    for name in names:
        flags += intervals[name].flags
    if form == "saturating":
        flags += saturating_boundary_flags(fit, x, y)
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

FRONTIER_METHOD = ("basic bootstrap over residuals within runs, re-smoothing each curve and re-taking the frontier "
                   "(analysis/frontier_fit.py)")

def _no_interval(reason: str):
    def intervals_of(fit):
        flag = f"no interval: {reason}"
        return {name: Interval(np.nan, np.nan, [flag]) for name in fit.params()}, "none", None
    return intervals_of

def smoothed_frontier(c_pflops, values, runs) -> tuple[np.ndarray, np.ndarray, SmoothedFrontier | None, str]:
    """(compute, value) of the frontier the laws against C are fitted to, its smoother, and '' or why the
    curves could not be smoothed (then the points are the raw Pareto-optimal records)."""
    c_pflops, values = np.asarray(c_pflops, float), np.asarray(values, float)
    _, run_code = np.unique(np.asarray(runs, str), return_inverse=True)
    reason = too_few_records(run_code)
    if reason:
        front = pareto_frontier(pd.DataFrame({"C": c_pflops, "y": values, "run": run_code}), "C", "y", "run")
        return front["C"].to_numpy(float), front["y"].to_numpy(float), None, reason
    smooth = SmoothedFrontier(np.log(c_pflops), run_code)
    return np.exp(smooth.grid), np.exp(smooth.frontier(np.log(values))[0][0]), smooth, ""

def frontier_law(form: str, c_pflops, values, runs, level: float = 0.95, n_boot: int = 1000, seed: int = 0,
                 metric: str = "") -> LawFit:
    """The law against compute with the interval fits.json reports: fitted to the frontier of the smoothed
    training curves (records: compute in PFLOPs, value, run id), basic bootstrap interval over residuals within
    runs (analysis/frontier_fit.py). The coverage benchmark calls this very function."""
    x, y, smooth, reason = smoothed_frontier(c_pflops, values, runs)
    if smooth is None or n_boot == 0:
        reason = reason or "n_boot = 0"
        return fit_law(form, x, y, level, metric, "C", _no_interval(reason))
    rng = fit_rng(seed, metric, "C", form)
    log_y = np.log(np.asarray(values, float))

    def intervals_of(fit):
        resampled = smooth.resample(log_y, n_boot, rng)
        make = frontier_paper_intervals if form == "paper" else frontier_saturating_intervals
        intervals, samples = make(fit, resampled, smooth.grid, level)
        return intervals, FRONTIER_METHOD, samples
    return fit_law(form, x, y, level, metric, "C", intervals_of)

def _fits_vs_compute(curves, options, results: list, skipped: list, frontiers: dict) -> None:
    curves = curves[curves["C_pflops"] > 0]
    if curves["N"].nunique() < 2:
        skipped.append("laws against compute: the Pareto frontier needs runs of at least 2 model sizes "
                       f"(found {curves['N'].nunique()}); one run's own curve is not a compute-optimal frontier")
        return
    curves = curves[curves["C_pflops"] >= options.frontier_min_pflops]
    largest_n = curves["N"].max()
    for metric in options.metrics:
        usable = curves.dropna(subset=[metric])
        if usable.empty:
            skipped.append(f"{metric} vs C: no record has a value of {metric}")
            continue
        front = pareto_frontier(usable, x="C_pflops", y=metric)  # the raw records, drawn in Figure 6
        frontiers[metric] = front[["C_pflops", "C_flops", metric, "point_id", "N", "step"]].reset_index(drop=True)
        records = (usable["C_pflops"], usable[metric], usable["point_id"])
        small = usable[usable["N"] < largest_n]
        for form in options.forms:
            try:
                law = frontier_law(form, *records, options.ci_level, options.n_boot, options.seed, metric)
            except FitError as exc:
                skipped.append(f"{metric} vs C, {form}: {exc}")
                continue
            law.holdout = _holdout_compute(form, small, metric, np.array(law.x_values), np.array(law.y_values))
            results.append(law)

def _holdout_compute(form: str, small: pd.DataFrame, metric: str, x: np.ndarray, y: np.ndarray) -> dict:
    """Refit to the frontier of the runs without the largest size and predict the frontier beyond them."""
    if small.empty:
        return {"skipped": "only one model size"}
    x_small, y_small, _, _ = smoothed_frontier(small["C_pflops"], small[metric], small["point_id"])
    beyond = x > x_small.max()
    return _holdout(form, x_small, y_small, x[beyond], y[beyond])

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
