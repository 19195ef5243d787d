"""The paper's scaling figures for any collected sweep (matplotlib with seaborn styling, Agg backend).

- `figure_vs_params(results)`: VAR Figure 5, test loss and token error against N, last scale and all scales,
  log-log: runs labelled by size, the largest (held out in the extrapolation test) ringed, each fitted law with
  a compact legend (C*N^alpha, the exponent's interval and r) and, for the pure power law, its exact 95% band;
- `figure_vs_compute(table, results)`: VAR Figure 6, every run's validation curve against training compute
  (coloured by model size), the Pareto frontier and the laws fitted to it;
- the paper's published laws (Eqs. 11-16), `paper_laws="normalised"` (default): its error laws on the error
  panels (the same quantity, a fraction), its loss laws only in `figure_paper_normalised` (analysis/
  figures_normalised.py), against (L - E)/E of our runs, the quantity they describe; `"absolute"` draws all
  as published on the raw panels (not comparable for loss), None none;
- `figure_per_scale(table)`, `figure_per_scale_curves(table)` and `figure_sample_grid(...)` in
  analysis/run_figures.py.
Sizes are for a two-column paper: FULL_WIDTH inches wide, 8 pt text. `draw_all` writes every figure as PNG
(200 dpi) and PDF and returns the paths.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter  # noqa: E402

from analysis.compute import add_compute_columns  # noqa: E402
from analysis.figures_normalised import figure_paper_normalised  # noqa: E402
from analysis.frontier_fit import paper_band  # noqa: E402
from analysis.intervals import loglog_band  # noqa: E402
from analysis.laws import METRIC_LABELS, X_UNITS, paper_law  # noqa: E402
from analysis.results import FitResults, LawFit  # noqa: E402
from analysis.run_figures import (  # noqa: E402
    figure_per_scale,
    figure_per_scale_curves,
    figure_sample_grid,
)
from analysis.style import FULL_WIDTH, apply_style, plain_log_x_ticks, save_figure  # noqa: E402

PANEL_ORDER = ("loss_last", "loss_mean", "err_last", "err_mean")
FORM_STYLE = {"paper": dict(color="C0", linestyle="-", linewidth=1.4),
              "saturating": dict(color="C3", linestyle="--", linewidth=1.4)}
REFERENCE_STYLE = dict(color="0.45", linestyle=":", linewidth=1.3)
Y_UNITS = {"loss": "nats", "err": "fraction"}


def y_label(metric: str) -> str:
    return f"{METRIC_LABELS[metric]} ({Y_UNITS[metric.split('_')[0]]})"


def fit_label(fit: LawFit) -> str:
    """Two short lines: the law as C*X^alpha (or E + C*X^-alpha), then the exponent's interval and r."""
    low, high = fit.ci_low.get("alpha"), fit.ci_high.get("alpha")
    parts = []
    if low is not None and high is not None and np.isfinite(low):
        parts.append(f"α∈[{low:.3g}, {high if np.isfinite(high) else np.inf:.3g}]")
    elif fit.x == "C":
        parts.append("no interval")
    if fit.r is not None:
        parts.append(f"r={fit.r:.3f}")
    if fit.flags and not all(flag.startswith("no interval") for flag in fit.flags):
        parts.append("flagged")
    return f"{fit.equation}\n{', '.join(parts)}" if parts else fit.equation


def size_text(n_billion: float) -> str:
    """18M, 2.0B, and for the demo's tiny models 31k."""
    n = n_billion * 1e9
    return f"{n / 1e3:.0f}k" if n < 1e6 else f"{n / 1e6:.0f}M" if n < 1e9 else f"{n / 1e9:.2g}B"


def _log_axes(ax, x_label: str, metric: str, legend_room: float = 0.5) -> None:
    """Log-log axes with labels; the top `legend_room` of the panel is left free for the legend."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label(metric))
    plain_log_x_ticks(ax)
    low, high = ax.get_ylim()
    # room below the lowest point for a size label set under it (11 pt of the panel's height)
    label_room = 11 / (ax.get_position().height * ax.figure.get_figheight() * 72)
    low = low / (high / low) ** (label_room / (1 - legend_room - label_room))
    if high / low < 10:
        # Less than a decade of data, where log ticks would leave it unlabelled: plain, evenly stepped
        # numbers over the data only (the legend's room above stays free of ticks).
        ticks = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        ax.set_yticks(ticks[(ticks >= low) & (ticks <= high)])
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(low, high * (high / low) ** (legend_room / (1 - legend_room)))


def _draw_reference(ax, metric: str, x_name: str, x_grid: np.ndarray, mode: str | None):
    """The published law where it describes the plotted quantity (see the module docstring)."""
    if mode is None or (mode == "normalised" and metric.startswith("loss")):
        return
    law = paper_law(metric, x_name)
    note = "" if metric.startswith("err") else " (normalised L: not comparable)"
    ax.plot(x_grid, law(x_grid), label=f"VAR paper Eq. {law.equation_number}, as published{note}",
            **REFERENCE_STYLE)


def _draw_fits(ax, results: FitResults, metric: str, x_name: str, x_grid: np.ndarray) -> None:
    for form in ("paper", "saturating"):
        fit = results.get(metric, x_name, form)
        if fit is None:
            continue
        ax.plot(x_grid, fit.predict(x_grid), label=fit_label(fit), **FORM_STYLE[form])
        if form == "paper" and np.isfinite(fit.ci_low["alpha"]) and fit.n_points > 2:
            y = np.array(fit.y_values)
            if x_name == "N":
                low, high = loglog_band(np.array(fit.x_values), y, x_grid, fit.ci_level)
            elif fit.samples is not None and len(fit.samples):  # this session's frontier bootstrap
                low, high = paper_band(fit.params["alpha"], fit.intercept, fit.samples, x_grid, fit.ci_level)
            else:
                continue
            # a band wider than the panel (3 points, 1 degree of freedom) is drawn to the panel's edge only
            low, high = np.maximum(low, y.min() / 3), np.minimum(high, y.max() * 3)
            ax.fill_between(x_grid, low, high, color=FORM_STYLE[form]["color"], alpha=0.15, linewidth=0,
                            label=f"{int(round(fit.ci_level * 100))}% band of the power law")


def _draw_points(ax, x: np.ndarray, y: np.ndarray, results: FitResults, metric: str) -> None:
    ax.plot(x, y, "o", color="k", markersize=3.5, linestyle="none", label=f"runs ({len(x)})")
    fit = results.get(metric, "N", "paper") or results.get(metric, "N", "saturating")
    held = (fit.holdout if fit is not None else {}) or {}
    ringed_x = np.atleast_1d(held["x"]) if "predicted" in held else np.array([])  # the ring drawn below
    points = sorted(zip(x, y))
    lowest = int(np.argmin([yi for _, yi in points]))
    for k, (xi, yi) in enumerate(points):
        # alternate below/above so that neighbours do not collide, with the lowest point's label above it (below,
        # it ran into the x axis); the held-out ring's point gets its label clear of the ring
        above = (k - lowest) % 2 == 0
        ringed = bool(np.any(np.isclose(xi, ringed_x)))
        ax.annotate(size_text(xi), (xi, yi), xytext=(6 if ringed else 2, 4 if above else -9),
                    textcoords="offset points", fontsize=5.5, color="0.25")
    if "predicted" in held:
        error = held["max_abs_rel_error"]
        ax.plot(held["x"], held["y"], "o", markersize=8, markerfacecolor="none", markeredgecolor="C3",
                markeredgewidth=1.1, linestyle="none",
                label=f"held out: predicted by a fit to the rest ({error:.1%} off)")


def _panel_points(results: FitResults, metric: str) -> tuple[np.ndarray, np.ndarray]:
    fit = next((f for f in results.fits if f.metric == metric and f.x == "N"), None)
    if fit is not None:
        return np.array(fit.x_values), np.array(fit.y_values)
    points = results.points.dropna(subset=[metric]) if metric in results.points else pd.DataFrame()
    if points.empty:
        return np.array([]), np.array([])
    return points["N_billion"].to_numpy(float), points[metric].to_numpy(float)


def figure_vs_params(results: FitResults, paper_laws: str | None = "normalised") -> plt.Figure:
    apply_style()
    requested = results.options.get("metrics", PANEL_ORDER)
    metrics = [m for m in PANEL_ORDER if m in requested]
    if not any(f.x == "N" for f in results.fits):
        raise ValueError("no fits against N in these results; run the fits with against=('N', ...)")
    fig, axes = plt.subplots(2, 2, figsize=(FULL_WIDTH, 5.2), squeeze=False)
    for ax, metric in zip(axes.ravel(), PANEL_ORDER):
        if metric not in metrics:
            ax.set_visible(False)
            continue
        x, y = _panel_points(results, metric)
        ax.set_title(METRIC_LABELS[metric])
        if x.size == 0 or np.any(x <= 0) or np.any(y <= 0):
            ax.text(0.5, 0.5, "no points to fit", ha="center", va="center", transform=ax.transAxes)
            continue
        x_grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, 200)
        _draw_points(ax, x, y, results, metric)
        _draw_fits(ax, results, metric, "N", x_grid)
        if not any(f.metric == metric and f.x == "N" for f in results.fits):
            ax.plot([], [], " ", label="not fitted (see the fit report)")
        _draw_reference(ax, metric, "N", x_grid, paper_laws)
        _log_axes(ax, X_UNITS["N"][1], metric, legend_room=0.55)
        ax.legend(loc="upper right", fontsize=5.5, handlelength=1.6, labelspacing=0.3)
    fig.tight_layout()
    return fig


def figure_vs_compute(table: pd.DataFrame, results: FitResults, paper_laws: str | None = "normalised",
                      split: str = "val") -> plt.Figure:
    apply_style()
    data = table if "C_pflops" in table else add_compute_columns(table)
    data = data[(data["split"] == split) & (data["C_pflops"] > 0)]
    metrics = [m for m in PANEL_ORDER if m in results.frontiers]
    if not metrics:
        raise ValueError("no fits against compute in these results; run the fits with against=(..., 'C')")
    sizes = data.groupby("point_id")["N"].first()
    norm = LogNorm(vmin=sizes.min() / 1e9, vmax=max(sizes.max(), sizes.min() * 1.01) / 1e9)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(2, 2, figsize=(FULL_WIDTH, 5.4), squeeze=False)
    for ax, metric in zip(axes.ravel(), metrics):
        for point_id, run in data.sort_values("step").groupby("point_id"):
            ax.plot(run["C_pflops"], run[metric], color=cmap(norm(sizes[point_id] / 1e9)), linewidth=0.9,
                    alpha=0.8)
        front = results.frontiers[metric]
        # the frontier is a step function: the best loss reached with at most this compute
        ax.plot(front["C_pflops"], front[metric], color="k", linewidth=1.0, marker=".", markersize=3,
                drawstyle="steps-post", label=f"Pareto frontier ({len(front)} records)")
        fitted = results.get(metric, "C", "paper") or results.get(metric, "C", "saturating")
        if fitted is not None:
            ax.plot(fitted.x_values, fitted.y_values, color="0.35", linewidth=0.9, linestyle=(0, (1, 1)),
                    label="frontier of the smoothed curves (fitted)")
        x_grid = np.geomspace(front["C_pflops"].min(), front["C_pflops"].max(), 200)
        _draw_fits(ax, results, metric, "C", x_grid)
        _draw_reference(ax, metric, "C", x_grid, paper_laws)
        _log_axes(ax, X_UNITS["C"][1], metric, legend_room=0.55)
        ax.set_title(METRIC_LABELS[metric])
        ax.legend(loc="upper right", fontsize=5.5, handlelength=1.6, labelspacing=0.3)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    bar_ax = fig.add_axes((0.915, 0.15, 0.015, 0.7))
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=bar_ax, label="Model parameters N (billions)")
    return fig


def draw_all(table: pd.DataFrame, fits: FitResults, out_dir: Path | str, samples=None,
             paper_laws: str | None = "normalised", formats=("png", "pdf")) -> list[Path]:
    """Every figure of a sweep into out_dir; `samples` is an ADM .npz path or a (N, H, W, 3) uint8 array."""
    written: list[Path] = []
    if any(f.x == "N" for f in fits.fits):
        written += save_figure(figure_vs_params(fits, paper_laws), out_dir, "fig5_scaling_vs_params", formats)
    if fits.frontiers:
        written += save_figure(figure_vs_compute(table, fits, paper_laws), out_dir, "fig6_scaling_vs_compute",
                               formats)
    if paper_laws == "normalised" and any(f.form == "saturating" and f.metric.startswith("loss") for f in fits.fits):
        written += save_figure(figure_paper_normalised(fits), out_dir, "fig5_6_paper_laws_normalised", formats)
    if any(c.startswith("loss_s") for c in table.columns):
        written += save_figure(figure_per_scale(table), out_dir, "per_scale_metrics", formats)
        written += save_figure(figure_per_scale_curves(table), out_dir, "per_scale_curves", formats)
    if samples is not None:
        written += save_figure(figure_sample_grid(samples), out_dir, "samples_grid", formats)
    return written
