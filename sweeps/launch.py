"""``varscale sweep submit``: expand a spec, prepare run directories, submit what is neither done nor in flight.

SLURM: the points that share resources go out as one job array (``executor.batch()``), ``array_parallelism`` of
them at once. Local: submitit's local executor, as many processes at once as the CPUs allow, and the command
stays in the foreground until the sweep is done (a local job belongs to the shell that started it). The
executor is always named explicitly: submitit's AutoExecutor would otherwise pick SLURM whenever ``srun`` is on
PATH, even with no cluster behind it.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from submitit.core.utils import FailedJobError

from harness.submit import SubmitError, make_executor
from models.files import atomic_write_text, save_json
from sweeps.dryrun import (
    dry_run_text,
    group_by_resources,
    grouped_problems,
    parallelism,
    resources_summary,
)
from sweeps.job import PointJob
from sweeps.points import Point, expand
from sweeps.resources import Resources, SpecError
from sweeps.spec import SweepSpec
from sweeps.state import SweepState, locked_state, submit_lock
from sweeps.status import ACTIVE, FAILED_LIKE, PointStatus, slurm_query, sweep_status


@dataclass
class SubmitReport:
    submitted: list[str] = field(default_factory=list)  # point ids
    job_ids: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # point id -> state that kept it from submission
    final: list[PointStatus] = field(default_factory=list)  # local runs and --wait: states at the end


def _note_points(state: SweepState, spec: SweepSpec, points: list[Point]) -> None:
    state.data.update(sweep=spec.name, spec=str(spec.path.absolute()), executor=spec.executor)
    for p in points:
        state.note_point(p.id, p.axes, p.run_dir, p.depth)


def plan(spec: SweepSpec, retry_failed: bool = False) -> tuple[list[Point], list[PointStatus], list[Point]]:
    """Points of the spec, their current status, and those a submit would send."""
    points = expand(spec)
    state = SweepState.load(spec.sweep_dir)
    _note_points(state, spec, points)  # in memory only: status needs run_dir for points never submitted
    statuses = sweep_status(state, [p.id for p in points])
    retry = FAILED_LIKE | {"FAILED"} if retry_failed else set()
    todo = [p for p, st in zip(points, statuses) if st.state in ("NEW", "INTERRUPTED") or st.state in retry]
    return points, statuses, todo


def prepare_run_dir(spec: SweepSpec, point: Point) -> None:
    """config.json (the resolved TrainConfig, what the trainer reads) and point.json (the sweep's view)."""
    point.run_dir.mkdir(parents=True, exist_ok=True)
    (point.run_dir / "logs").mkdir(exist_ok=True)
    if not (point.run_dir / "config.json").exists():  # the trainer may have added its model block already
        save_json(point.run_dir / "config.json", point.train)
    save_json(point.run_dir / "point.json", {"sweep": spec.name, "point_id": point.id, "axes": point.axes,
                                             "spec": str(spec.path.absolute()), "trainer": spec.trainer})


def _executor(spec: SweepSpec, resources: Resources, folder: Path):
    if spec.executor == "slurm":
        params = resources.sbatch_parameters()
        timeout_min = params.pop("timeout_min")
        at_once = parallelism(spec, resources)
    else:
        params = {"tasks_per_node": resources.tasks_per_node, "gpus_per_node": resources.gpus_per_node}
        timeout_min, at_once = resources.timeout_min, None
    try:
        return make_executor(folder, spec.executor, spec.name, timeout_min, max_requeues=spec.max_requeues,
                             array_parallelism=at_once, **params)
    except SubmitError as exc:
        raise SpecError(f"{spec.path}: executor is {spec.executor!r} but {exc}") from None


def _job(spec: SweepSpec, point: Point) -> PointJob:
    # the trainer must save within the warning time SLURM gives before the limit (leave a margin to requeue)
    save_timeout_s = max(10.0, 0.8 * point.resources.signal_delay_s)
    return PointJob(point.run_dir, spec.trainer, threads=point.resources.cpus_per_task, save_timeout_s=save_timeout_s)


def _submit_slurm(spec: SweepSpec, todo: list[Point], report: SubmitReport, out: TextIO) -> None:
    jobs_dir = SweepState(spec.sweep_dir, {}).jobs_dir
    for resources, group in group_by_resources(todo):
        ex = _executor(spec, resources, jobs_dir)
        try:
            with ex.batch():
                jobs = [ex.submit(_job(spec, p)) for p in group]
        except FailedJobError as exc:
            raise SubmitError(f"sbatch refused {len(group)} point(s) ({', '.join(p.id for p in group)}) with "
                              f"resources {resources_summary(resources)}: {str(exc).strip() or exc!r}. Is the "
                              "cluster up (sinfo)? On one machine, as root: scripts/local-slurm start") from None
        with locked_state(spec.sweep_dir) as state:
            for p, job in zip(group, jobs):
                state.note_submission(p.id, "slurm", job.job_id, job.paths.stdout, job.paths.stderr)
                report.submitted.append(p.id)
                report.job_ids[p.id] = job.job_id
        print(f"submitted {len(group)} point(s) as {'array ' if len(group) > 1 else 'job '}"
              f"{jobs[0].job_id.split('_')[0]}", file=out)


def _run_local(spec: SweepSpec, todo: list[Point], report: SubmitReport, out: TextIO, poll_s: float) -> None:
    from tqdm import tqdm

    jobs_dir = SweepState(spec.sweep_dir, {}).jobs_dir
    queue = list(todo)
    running: dict[str, tuple[Point, Any]] = {}
    bar = tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="point", disable=not sys.stderr.isatty())

    def tell(message: str) -> None:
        if bar.disable:
            print(message, file=out, flush=True)
        else:
            bar.write(message, file=out)

    try:
        while queue or running:
            while queue and len(running) < parallelism(spec, queue[0].resources):
                p = queue.pop(0)
                job = _executor(spec, p.resources, jobs_dir).submit(_job(spec, p))
                with locked_state(spec.sweep_dir) as state:
                    state.note_submission(p.id, "local", job.job_id, job.paths.stdout, job.paths.stderr)
                running[job.job_id] = (p, job)
                report.submitted.append(p.id)
                report.job_ids[p.id] = job.job_id
                tell(f"started {p.id} ({p.label}) as local job {job.job_id}")
            for job_id, (p, job) in list(running.items()):
                if job.done():
                    del running[job_id]
                    st = sweep_status(SweepState.load(spec.sweep_dir), [p.id])[0]
                    tell(f"{p.id}: {st.state}" + (f" ({st.error}; log {st.err_log or st.log})" if st.error else ""))
                    bar.update(1)
            if queue or running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        # Ctrl-C stops this machine's jobs (they belong to this command) but is not a cancel: the next submit
        # starts them again and they resume from their checkpoints
        with locked_state(spec.sweep_dir) as state:
            for job_id, (p, job) in running.items():
                job.cancel(check=False)
                state.record(p.id)["interrupted"] = True
        raise
    finally:
        bar.close()


def wait_for(spec_or_state: SweepSpec | SweepState, point_ids: list[str], timeout_s: float, poll_s: float = 2.0,
             out: TextIO | None = None) -> list[PointStatus]:
    """Poll until none of the points is queued or running (or the deadline passes: TimeoutError)."""
    sweep_dir = spec_or_state.sweep_dir
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while True:
        statuses = sweep_status(SweepState.load(sweep_dir), point_ids)
        for st in statuses:
            if out is not None and last.get(st.point_id) != st.state:
                print(f"{st.point_id}: {st.state}", file=out, flush=True)
            last[st.point_id] = st.state
        if not any(st.state in ACTIVE for st in statuses):
            return statuses
        if time.monotonic() > deadline:
            raise TimeoutError(f"points still active after {timeout_s:.0f} s: "
                               + ", ".join(f"{s.point_id}={s.state}" for s in statuses if s.state in ACTIVE))
        time.sleep(poll_s)


def check_output_root(spec: SweepSpec) -> None:
    """Refuse early (dry run included) when the sweep directory cannot be created or written."""
    target = spec.sweep_dir
    existing = next(p for p in [target, *target.parents] if p.exists())
    if not existing.is_dir():
        raise SpecError(f"{spec.path}: output_root: {existing} is a file, not a directory; point output_root at a "
                        "directory")
    read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    if read_only or not os.access(existing, os.W_OK | os.X_OK):
        why = "read-only file system" if read_only else "permission denied"
        raise SpecError(f"{spec.path}: output_root: {existing} is not writable ({why}); choose a writable "
                        "output_root")


def check_same_sweep(spec: SweepSpec) -> None:
    """Two different specs with one name and output root would share (and overwrite) one sweep directory. The
    same spec file may change (new points get new ids); another file with other content is refused."""
    stored = spec.sweep_dir / "spec.yaml"
    if not stored.is_file() or stored.read_text() == spec.path.read_text():
        return
    origin = SweepState.load(spec.sweep_dir).data.get("spec")
    if origin and Path(origin) != spec.path.absolute():
        raise SpecError(f"{spec.path}: sweep name {spec.name!r} is already used in {spec.sweep_dir} by another spec "
                        f"({origin}, other content); give this sweep another name or output_root")


def submit(spec: SweepSpec, dry_run: bool = False, retry_failed: bool = False, wait: bool = False,
           wait_timeout_s: float = float("inf"), out: TextIO | None = None, poll_s: float = 1.0) -> SubmitReport:
    out = out or sys.stdout
    check_output_root(spec)
    check_same_sweep(spec)
    if dry_run:
        points, statuses, todo = plan(spec, retry_failed)
        print(dry_run_text(spec, statuses, points, todo), file=out)
        return SubmitReport(skipped={st.point_id: st.state for st in statuses if st.point_id not in
                                     {p.id for p in todo}})
    # SLURM submits take seconds: a second one waits, then finds the first one's jobs in the queue. A local
    # sweep runs in the foreground for hours: a second one is refused at once, naming the first.
    with submit_lock(spec.sweep_dir, wait_s=120.0 if spec.executor == "slurm" else 0.0):
        report, todo = _submit_locked(spec, retry_failed, out, poll_s)
    if todo and (wait or spec.executor == "local"):
        report.final = wait_for(spec, [p.id for p in todo], wait_timeout_s,
                                out=out if spec.executor == "slurm" else None)
    return report


def _submit_locked(spec: SweepSpec, retry_failed: bool, out: TextIO, poll_s: float) -> tuple[SubmitReport, list]:
    check_same_sweep(spec)  # again under the lock: another spec of this name may have been submitted meanwhile
    points, statuses, todo = plan(spec, retry_failed)
    report = SubmitReport(skipped={st.point_id: st.state for st in statuses if st.point_id not in
                                   {p.id for p in todo}})
    problems = grouped_problems(todo)
    if problems:
        raise SpecError(f"{spec.path}: missing inputs, nothing submitted:\n  " + "\n  ".join(problems))
    atomic_write_text(spec.sweep_dir / "spec.yaml", spec.path.read_text())
    with locked_state(spec.sweep_dir) as state:
        _note_points(state, spec, points)
    for p in todo:
        prepare_run_dir(spec, p)
    for pid, st in report.skipped.items():
        print(f"skip {pid}: {st}", file=out)
    if not todo:
        print("nothing to submit: every point is finished or in flight"
              + ("" if retry_failed else " (failed points are resubmitted with --retry-failed)"), file=out)
    elif spec.executor == "slurm":
        _submit_slurm(spec, todo, report, out)
    else:
        _run_local(spec, todo, report, out, poll_s)
    return report, todo


def cancel(state: SweepState, point_ids: list[str] | None = None, out: TextIO | None = None) -> list[str]:
    """Cancel the queued or running jobs of the given points (default: all); returns the cancelled point ids."""
    out = out or sys.stdout
    import signal

    statuses = sweep_status(state, point_ids)
    cancelled = []
    with locked_state(state.sweep_dir) as fresh:
        for st in statuses:
            if st.state not in ACTIVE:
                continue
            rec = fresh.record(st.point_id)
            if rec.get("executor") == "local":
                os.kill(int(rec["job_id"]), signal.SIGINT)  # submitit's local controller stops its tasks on SIGINT
            else:
                slurm_query(["scancel", rec["job_id"]], "controller (scancel)")
            rec["cancelled"] = True
            cancelled.append(st.point_id)
            print(f"cancelled {st.point_id} (job {rec['job_id']})", file=out)
    return cancelled
