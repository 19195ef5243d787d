"""``varscale fit`` and ``varscale figures``: the scaling-law fits and the figures of a sweep, alone.

Both take a sweep directory (its collected.csv, or its run directories), a run directory or a table file, and
write into SOURCE/analysis unless -o says otherwise (file layout: analysis/pipeline.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

METRICS = ("loss_last", "loss_mean", "err_last", "err_mean")


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="sweep directory, run directory, or collected table (.csv/.parquet)")
    p.add_argument("-o", "--out", type=Path, default=None, help="output folder (default: SOURCE/analysis)")
    p.add_argument("--n-boot", type=int, default=1000,
                   help="bootstrap resamples of the laws against C and of the E + A/N^a + B/D^b fit (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--aggregate", choices=("best", "mean", "all"), default="best",
                   help="several runs of one model size: keep the best, average them, or fit all")
    p.add_argument("--forms", default="paper,saturating",
                   help="laws to fit: paper (L=(beta*X)^alpha), saturating (L=E+(X0/X)^alpha)")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated, from {','.join(METRICS)}")
    p.add_argument("--against", default="N,C", help="fit against N (parameters), C (compute) or both")
    p.add_argument("--no-chinchilla", action="store_true", help="skip the E + A/N^a + B/D^b fit")
    p.add_argument("--chinchilla-on", choices=("final", "curves"), default="final",
                   help="points of the E + A/N^a + B/D^b fit: each run's final record (default) or every record "
                        "past --chinchilla-min-fraction of its training")
    p.add_argument("--chinchilla-min-fraction", type=float, default=0.25,
                   help="with --chinchilla-on curves: records from this fraction of each run's steps on")
    p.add_argument("--include-unfinished", action="store_true", help="also fit runs that have not finished")
    p.add_argument("--frontier-min-pflops", type=float, default=0.0,
                   help="ignore records below this compute in PFLOPs before smoothing and the frontier "
                        "(warm-up transients)")
    p.add_argument("--huber-delta", type=float, default=1e-3, help="Huber loss threshold in log space")


def register(subparsers) -> None:
    p = subparsers.add_parser("fit", help="fit the scaling laws of a sweep (confidence intervals, flags)",
                              description="Check the table, then fit power laws of test loss and token error "
                                          "against parameters and compute, with confidence intervals "
                                          "(docs/analysis.md), flags and a hold-out-largest extrapolation test.")
    _add_fit_options(p)
    p.set_defaults(func=cmd_fit)
    p = subparsers.add_parser("figures", help="draw the paper's scaling figures for a sweep",
                              description="Fit (as `varscale fit`) and draw Figures 5 and 6 of the VAR paper, "
                                          "per-scale metrics, a sample grid and the baseline comparison.")
    _add_fit_options(p)
    p.add_argument("--samples", type=Path, default=None,
                   help="sample batch (.npz) for the grid (default: the largest run's samples/*.npz)")
    p.add_argument("--paper-laws", choices=("normalised", "absolute", "none"), default="normalised",
                   help="the VAR paper's Eqs. 11-16: on the quantity they describe (default: loss laws against "
                        "(L-E)/E, error laws as published), all as published, or none")
    p.add_argument("--formats", default="png,pdf", help="figure formats (default png,pdf)")
    p.add_argument("--resolution", type=int, default=256, help="baseline table resolution (256 or 512)")
    p.set_defaults(func=cmd_figures)


class OptionError(ValueError):
    """A bad option value of fit/figures/report."""


def usage_error(command: str, exc: Exception) -> int:
    """The one-line error of the analysis commands (exit 2), in the dispatcher's format; analysis imports nothing
    from harness, so it does not raise the dispatcher's own error class."""
    print(f"varscale {command}: error: {exc}", file=sys.stderr)
    return 2


def figure_formats(text: str) -> tuple[str, ...]:
    """The --formats list, checked before any fit: a bad one is known now, not after the figures are drawn."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats, known = _split(text), FigureCanvasBase.get_supported_filetypes()
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise OptionError(f"--formats {text!r}: {', '.join(unknown) or 'nothing'} is not a figure format; choose "
                          f"from {', '.join(sorted(known))} (default png,pdf)")
    return formats


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def fit_options_from_args(args: argparse.Namespace):
    from analysis.fits import FitOptions

    options = FitOptions(metrics=_split(args.metrics), forms=_split(args.forms), against=_split(args.against),
                         chinchilla=not args.no_chinchilla, chinchilla_on=args.chinchilla_on,
                         chinchilla_min_fraction=args.chinchilla_min_fraction, n_boot=args.n_boot, seed=args.seed,
                         ci_level=args.ci, huber_delta=args.huber_delta, aggregate=args.aggregate,
                         include_unfinished=args.include_unfinished, frontier_min_pflops=args.frontier_min_pflops)
    try:
        options.check()
    except ValueError as exc:
        raise OptionError(str(exc)) from exc
    if args.n_boot and args.n_boot < 100:
        raise OptionError(f"--n-boot {args.n_boot} is too few for percentile intervals; use at least 100")
    return options


def print_fit_summary(fits) -> None:
    print(f"{'metric':<10} {'x':<4} {'form':<11} {'parameters [CI]':<70} {'r':>8} {'holdout':>8}")
    for fit in fits.fits:
        params = ", ".join(f"{name}={fit.ci_text(name)}" for name in fit.params)
        r = f"{fit.r:.4f}" if fit.r is not None else ""
        held = fit.holdout.get("max_abs_rel_error")
        print(f"{fit.metric:<10} {fit.x:<4} {fit.form:<11} {params:<70} {r:>8} "
              f"{f'{held:.2%}' if held is not None else '':>8}")
    for reason in fits.skipped:
        print(f"skipped: {reason}")
    for note in fits.notes:
        print(f"note: {note}")
    rows = fits.flag_rows()
    if rows:
        print(f"FLAGS ({len(rows)}): fits not to take at face value")
        for row in rows:
            print(f"  {row['metric']} vs {row['x']}, {row['form']}: {row['flag']}")


def _run(args: argparse.Namespace, figures: bool) -> int:
    from analysis.powerlaw import FitError
    from analysis.table import TableError

    try:
        options = fit_options_from_args(args)
        if figures:
            from analysis.pipeline import run_all

            paper_laws = None if args.paper_laws == "none" else args.paper_laws
            result = run_all(args.source, args.out, options, samples=args.samples, paper_laws=paper_laws,
                             resolution=args.resolution, formats=figure_formats(args.formats), require_fits=True)
        else:
            from analysis.pipeline import run_fits

            result = run_fits(args.source, args.out, options)
    except (OptionError, TableError, FitError, FileNotFoundError) as exc:
        return usage_error(args.command, exc)
    print(f"fitted {len(result.fits.fits)} laws to {result.source}")
    print_fit_summary(result.fits)
    for path in result.fit_files + result.figures:
        print(f"wrote {path}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    return _run(args, figures=False)


def cmd_figures(args: argparse.Namespace) -> int:
    return _run(args, figures=True)
