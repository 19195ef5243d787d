"""The single ``varscale`` entry point.

Each area registers its own subcommands through a small ``register(subparsers)`` function in its ``cli`` module;
this file only wires them together. Those modules keep heavy imports (torch, pandas) inside the command
functions so that ``varscale --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# module path -> the subcommands it registers (for the help text only)
COMMAND_MODULES = [
    "harness.cli.train",     # train, tokenizer, tokenize, data
    "harness.cli.sample",    # sample
    "harness.cli.show",      # show (sample grid)
    "harness.cli.edit",      # edit (zero-shot in/out-painting, class editing)
    "harness.cli.evaluate",  # eval, assets
    "sweeps.cli",            # sweep submit|status|collect
    "analysis.cli",          # fit, figures
    "reports.cli",           # report
    "sweeps.demo",           # demo
    "models.cli",            # models (list presets, param/FLOP table, checkpoint inspection)
]


class UsageError(Exception):
    """A bad option value: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varscale",
        description="Scaling laws and standardized evaluation for VAR image generators.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of an error (also: VARSCALE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)  # a missing module is an install error: let it show
    return parser


def main(argv: list[str] | None = None) -> int:
    from harness.cli.failures import debug_wanted, describe, record_failure
    from models.files import LockedError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the subcommand
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UsageError as exc:
        print(f"varscale {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug_wanted(args):
            raise
        line, code = describe(exc)
        print(f"varscale {args.command}: error: {line}", file=sys.stderr)
        if not isinstance(exc, LockedError):  # a lock held elsewhere: that process owns the run's status
            record_failure(args, line)
        return code
    return int(result or 0)
