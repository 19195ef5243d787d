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
    "harness.cli_train",     # train, tokenizer, tokenize, data
    "harness.cli_eval",      # sample, eval, assets
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that part is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    return int(result or 0)


if __name__ == "__main__":
    # `python -m harness.cli` runs this file as __main__; the subcommands raise harness.cli.UsageError, a class of
    # the imported module, so dispatch through that module
    from harness.cli import main as _main

    sys.exit(_main())
