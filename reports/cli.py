"""``varscale report RUN_OR_SWEEP_DIR``: fits, figures, baseline comparison and environment as HTML + Markdown."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from analysis.cli import _add_fit_options

    p = subparsers.add_parser("report", help="write an HTML and Markdown report of a sweep or run",
                              description="Fit the scaling laws, draw the figures, compare evaluations with "
                                          "published results and write SOURCE/analysis/report.html "
                                          "(self-contained) and report.md.")
    _add_fit_options(p)
    p.add_argument("--samples", type=Path, default=None, help="sample batch (.npz) for the sample grid")
    p.add_argument("--paper-laws", choices=("normalised", "absolute", "none"), default="normalised",
                   help="the VAR paper's Eqs. 11-16: on the quantity they describe (default: loss laws against "
                        "(L-E)/E, error laws as published), all as published, or none")
    p.add_argument("--resolution", type=int, default=256, help="baseline table resolution (256 or 512)")
    p.add_argument("--title", default=None, help="report title (default: the sweep directory's name)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.cli import OptionError, fit_options_from_args, usage_error
    from analysis.powerlaw import FitError
    from analysis.table import TableError
    from reports.build import build_report

    try:
        options = fit_options_from_args(args)
        html_path = build_report(args.source, args.out, options, samples=args.samples,
                                 paper_laws=None if args.paper_laws == "none" else args.paper_laws,
                                 resolution=args.resolution, title=args.title)
    except (OptionError, TableError, FitError, FileNotFoundError) as exc:
        return usage_error(args.command, exc)
    print(f"wrote {html_path}")
    print(f"wrote {html_path.with_suffix('.md')}")
    return 0
