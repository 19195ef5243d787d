"""From a sweep on disk to fits, figures and the baseline comparison, in one call (used by the CLI and reports).

Layout written under OUT (default: SWEEP_DIR/analysis, or TABLE_DIR/analysis for a table file):
  OUT/fits.json, fits.csv, points.csv, frontier_<metric>.csv   see analysis/results.py
  OUT/figures/fig5_scaling_vs_params.{png,pdf}     paper Figure 5: loss and error vs N
  OUT/figures/fig6_scaling_vs_compute.{png,pdf}    paper Figure 6: curves vs compute, frontier, fits
  OUT/figures/per_scale_metrics.{png,pdf}          final loss and error at each scale, per run
  OUT/figures/per_scale_curves.{png,pdf}           loss of each scale over training, largest run
  OUT/figures/samples_grid.{png,pdf}               when a sample batch is given or found
  OUT/figures/baselines_fid_vs_params.{png,pdf}, baselines_fid_vs_time.{png,pdf}
                                                   when comparison.csv has a row (published or ours)
  OUT/comparison.csv                               published results + our evaluations
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from analysis.baselines import (
    comparison_table,
    figure_fid_vs_params,
    figure_fid_vs_time,
    find_eval_results,
)
from analysis.compute import COMPUTE_CONVENTION
from analysis.fits import FitOptions, fit_sweep
from analysis.outputs import staged_outputs
from analysis.powerlaw import FitError
from analysis.results import FitResults
from analysis.table import load_table
from models.files import atomic_write_text


def default_out_dir(source: Path | str) -> Path:
    source = Path(source)
    return (source.parent if source.is_file() else source) / "analysis"


def sweep_root(source: Path | str) -> Path:
    source = Path(source)
    return source.parent if source.is_file() else source


@dataclass
class Analysis:
    source: str
    out_dir: Path
    table: pd.DataFrame
    fits: FitResults
    fit_files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    comparison: pd.DataFrame | None = None
    eval_results: list[Path] = field(default_factory=list)
    resolution: int = 256  # of the published results compared with


def _fit(source, out_dir, options, allow_nothing_fitted: bool, overrides: dict) -> Analysis:
    table, described = load_table(source)
    out_dir = Path(out_dir) if out_dir else default_out_dir(source)
    try:
        fits = fit_sweep(table, options, source=described, **overrides)
    except FitError as exc:
        if not allow_nothing_fitted:
            raise
        options = FitOptions(**{**asdict(options or FitOptions()), **overrides})
        fits = FitResults(fits=[], options=asdict(options), convention=COMPUTE_CONVENTION,
                          points=pd.DataFrame(), frontiers={}, skipped=[str(exc)], source=described)
    return Analysis(source=described, out_dir=out_dir, table=table, fits=fits)


def run_fits(source: Path | str, out_dir: Path | str | None = None, options: FitOptions | None = None,
             allow_nothing_fitted: bool = False, **overrides) -> Analysis:
    """Load the sweep table, fit every law, save the fit files (as one set, analysis/outputs.py).

    With `allow_nothing_fitted` (a report of a single run, or of a sweep with too few finished runs) a table
    that supports no fit gives empty results that say why, instead of an error; the fit files are then not
    written, so earlier good ones stay."""
    analysis = _fit(source, out_dir, options, allow_nothing_fitted, overrides)
    if analysis.fits.fits:
        with staged_outputs(analysis.out_dir) as outputs:
            analysis.fit_files = [outputs.final(p) for p in analysis.fits.save(outputs.stage)]
    return analysis


def find_samples(root: Path, table: pd.DataFrame) -> Path | None:
    """The sample batch of the largest model that has one (RUN_DIR/samples/*.npz)."""
    sizes = table.groupby("point_id")["params_total"].max().to_dict()
    found = sorted(Path(root).rglob("samples/*.npz"))
    if not found:
        return None
    return max(found, key=lambda npz: (sizes.get(npz.parent.parent.name, -1), str(npz)))


def run_all(source: Path | str, out_dir: Path | str | None = None, options: FitOptions | None = None,
            samples: Path | str | None = None, paper_laws: str | None = "normalised", resolution: int = 256,
            formats=("png", "pdf"), require_fits: bool = False, **overrides) -> Analysis:
    """Fits, every figure and the baseline comparison of one sweep (or run, or table), written as one set.

    `require_fits` (the `figures` command): a table that supports no fit is an error and nothing is written.
    Without it (reports of single runs) the figures that need no fit are still drawn, and fit files are written
    only when there are fits, so good earlier ones are never replaced with empty ones."""
    from analysis.figures import draw_all
    from analysis.style import save_figure

    analysis = _fit(source, out_dir, options, not require_fits, overrides)
    root = sweep_root(source)
    if samples is None:
        samples = find_samples(root, analysis.table)
    with staged_outputs(analysis.out_dir) as outputs:
        staged = analysis.fits.save(outputs.stage) if analysis.fits.fits else []
        figure_dir = outputs.stage / "figures"
        figures = draw_all(analysis.table, analysis.fits, figure_dir, samples=samples, paper_laws=paper_laws,
                           formats=formats)
        analysis.eval_results = find_eval_results(root)
        analysis.resolution = resolution
        analysis.comparison = comparison_table(analysis.eval_results, resolution=resolution)
        staged.append(atomic_write_text(outputs.stage / "comparison.csv", analysis.comparison.to_csv(index=False)))
        if len(analysis.comparison):  # nothing published at this resolution and nothing evaluated: no empty axes
            figures += save_figure(figure_fid_vs_params(analysis.comparison), figure_dir, "baselines_fid_vs_params",
                                   formats)
            figures += save_figure(figure_fid_vs_time(analysis.comparison), figure_dir, "baselines_fid_vs_time",
                                   formats)
        analysis.fit_files = [outputs.final(p) for p in staged]
        analysis.figures = [outputs.final(p) for p in figures]
    return analysis
