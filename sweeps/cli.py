"""``varscale sweep submit|status|collect|cancel``."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser("sweep", help="depth sweeps on SLURM or this machine (submitit)",
                                  description="Submit a sweep spec, follow it, and collect its metrics.")
    sub = sweep.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND")

    p = sub.add_parser("submit", help="submit the points that are neither finished nor queued/running")
    p.add_argument("spec", type=Path, help="sweep spec (YAML), e.g. sweeps/specs/demo-cpu.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the points and sbatch parameters, submit nothing")
    p.add_argument("--retry-failed", action="store_true", help="also resubmit failed, cancelled, timed-out points")
    p.add_argument("--wait", action="store_true", help="SLURM: wait until no point is queued or running")
    p.add_argument("--timeout-min", type=float, default=None, help="give up waiting after this many minutes")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="table of points: state, progress, last val loss, job id, log")
    p.add_argument("sweep", type=Path, help="sweep spec (YAML) or sweep directory (OUTPUT_ROOT/NAME)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("collect", help="one tidy table of every metrics record of every point")
    p.add_argument("sweep", type=Path, help="sweep spec (YAML) or sweep directory")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="table.csv (default: SWEEP_DIR/collected.csv) or table.parquet (needs pyarrow)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("cancel", help="cancel queued or running jobs of a sweep")
    p.add_argument("sweep", type=Path, help="sweep spec (YAML) or sweep directory")
    p.add_argument("--point", action="append", default=None, help="only this point id (repeatable)")
    p.set_defaults(func=cmd_cancel)
    sweep.set_defaults(func=lambda args: sweep.print_help() or 2)


def open_sweep(path: Path):
    """(spec or None, state, point ids in display order) from a spec file or a sweep directory."""
    from harness.cli.main import UsageError
    from sweeps.points import expand
    from sweeps.spec import SpecError, load_spec
    from sweeps.state import STATE_FILE, SweepState

    try:
        if path.is_dir():
            if not (path / STATE_FILE).exists():
                raise UsageError(f"{path}: not a sweep directory (no {STATE_FILE}); give the spec file or "
                                 "OUTPUT_ROOT/NAME of a submitted sweep")
            state = SweepState.load(path)
            return None, state, list(state.points)
        spec = load_spec(path)
        points = expand(spec)
        state = SweepState.load(spec.sweep_dir)
        for p in points:  # points never submitted still show up (as NEW)
            if p.id not in state.points:
                state.note_point(p.id, p.axes, p.run_dir, p.depth)
        return spec, state, [p.id for p in points]
    except SpecError as exc:
        raise UsageError(str(exc)) from None


def _scheduler_errors(func):
    """The controller or accounting down, or a sweep busy in another process: one line, exit 1."""
    def wrapper(args: argparse.Namespace) -> int:
        from models.files import LockedError
        from sweeps.status import SchedulerError

        try:
            return func(args)
        except (SchedulerError, LockedError) as exc:
            print(f"varscale sweep {args.sweep_command}: error: {exc}", file=sys.stderr)
            return 1
    return wrapper


@_scheduler_errors
def cmd_submit(args: argparse.Namespace) -> int:
    from harness.cli.main import UsageError
    from sweeps.launch import SubmitError, submit
    from sweeps.spec import SpecError, load_spec

    try:
        spec = load_spec(args.spec)
        timeout_s = float("inf") if args.timeout_min is None else args.timeout_min * 60
        report = submit(spec, dry_run=args.dry_run, retry_failed=args.retry_failed, wait=args.wait,
                        wait_timeout_s=timeout_s)
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    except (TimeoutError, SubmitError) as exc:
        print(f"varscale sweep submit: {exc}", file=sys.stderr)
        return 1
    if report.final:
        from sweeps.status import format_table

        print(format_table(report.final))
        return 0 if all(st.state == "COMPLETED" for st in report.final) else 1
    return 0


@_scheduler_errors
def cmd_status(args: argparse.Namespace) -> int:
    from sweeps.status import format_table, sweep_status

    _, state, ids = open_sweep(args.sweep)
    rows = sweep_status(state, ids)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print(format_table(rows))
    return 0


@_scheduler_errors
def cmd_collect(args: argparse.Namespace) -> int:
    from harness.cli.main import UsageError
    from sweeps.collect import CollectError, collect_table, write_table

    _, state, ids = open_sweep(args.sweep)
    output = args.output or state.sweep_dir / "collected.csv"
    try:
        frame = collect_table(state, ids)
        write_table(frame, output)
    except CollectError as exc:
        raise UsageError(str(exc)) from None
    points = frame["point_id"].nunique() if len(frame) else 0
    print(f"wrote {len(frame)} records of {points} point(s) to {output}")
    return 0


@_scheduler_errors
def cmd_cancel(args: argparse.Namespace) -> int:
    from harness.cli.main import UsageError
    from sweeps.launch import cancel

    _, state, ids = open_sweep(args.sweep)
    if args.point:
        unknown = sorted(set(args.point) - set(ids))
        if unknown:
            raise UsageError(f"unknown point {unknown[0]}; points of this sweep: {', '.join(ids)}")
        ids = args.point
    cancelled = cancel(state, [i for i in ids if i in state.points and state.points[i].get("job_id")])
    if not cancelled:
        print("nothing to cancel: no point is queued or running")
    return 0
