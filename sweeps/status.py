"""Where every point of a sweep stands: scheduler state (SLURM accounting or the local process), run progress.

A point's state combines two sources. ``status.json`` of the run says whether training finished; the scheduler
says whether a job for it is queued, running, or ended badly. ``finished`` in status.json wins (the result is
there); otherwise an active job wins; otherwise the job's end state (FAILED, CANCELLED, TIMEOUT...) or, if no job
is known, NEW (never submitted, or its result was deleted: submit it again). Local jobs stopped by Ctrl-C of the
submitting command are INTERRUPTED, and the next submit continues them like NEW ones.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import pickle
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from sweeps.job import read_status
from sweeps.state import SweepState

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}
FAILED_LIKE = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "REVOKED",
               "SPECIAL_EXIT", "UNKNOWN"}
SACCT_LAG_S = 120  # a job younger than this may not be in accounting yet: UNKNOWN then means PENDING


@dataclass
class PointStatus:
    point_id: str
    depth: int | None
    state: str  # COMPLETED, NEW, INTERRUPTED (local, Ctrl-C), one of ACTIVE or one of FAILED_LIKE
    step: int | None
    total_steps: int | None
    last_val_loss: float | None
    params: int | None
    job_id: str | None
    job_state: str | None  # the scheduler's own word (sacct State, or the local process), None if never submitted
    log: str | None
    error: str | None
    run_dir: str
    err_log: str | None = None  # the job's stderr: where Python tracebacks go (log is its stdout)


def _age_s(iso: str | None) -> float:
    if not iso:
        return float("inf")
    return (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(iso)).total_seconds()


def _result_pickle(jobs_dir: Path, job_id: str) -> tuple[str, Any] | None:
    from submitit.core.utils import JobPaths

    path = JobPaths(jobs_dir, job_id, 0).result_pickle
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (FileNotFoundError, EOFError, pickle.UnpicklingError, AttributeError, ModuleNotFoundError):
        return None


def _error_line(text: str | None) -> str | None:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _local_state(jobs_dir: Path, rec: dict[str, Any]) -> tuple[str, str | None]:
    pid = int(rec["job_id"])
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if b"submitit" in cmdline:
        return "RUNNING", None
    outcome = _result_pickle(jobs_dir, rec["job_id"])
    if outcome is not None:
        if outcome[0] == "success":
            return "COMPLETED", None
        return "FAILED", _error_line(str(outcome[1]))
    if rec.get("cancelled"):
        return "CANCELLED", None
    if rec.get("interrupted"):  # Ctrl-C of the submitting command: submit resumes it
        return "INTERRUPTED", None
    return "FAILED", "the job process ended without a result (killed?)"


class SchedulerError(RuntimeError):
    """The SLURM controller or accounting did not answer: one line naming the command, its error and the fix."""


def slurm_query(cmd: list[str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SchedulerError(f"{cmd[0]} not found: this machine has no SLURM client; run where sbatch works") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{cmd[0]} did not answer within 60 s: the SLURM {what} is overloaded or down; "
                             "try again later") from None
    if proc.returncode != 0:
        reason = (_error_line(proc.stderr) or f"exit status {proc.returncode}").removeprefix(f"{cmd[0]}: ")
        raise SchedulerError(f"the SLURM {what} is not answering ({cmd[0]}: {reason}); nothing was changed, run "
                             f"the command again when `{cmd[0]}` works")
    return proc.stdout


def queued_states(job_ids: Iterable[str]) -> dict[str, str]:
    """States of the jobs SLURM's controller still holds (``squeue``): the live truth, no accounting lag."""
    wanted = set(job_ids)
    out = slurm_query(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"], "controller (squeue)")
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id in wanted:
            states[job_id] = state.split()[0].upper() if state.strip() else "UNKNOWN"
    return states


def accounting_states(job_ids: Iterable[str]) -> dict[str, str]:
    """End states from SLURM accounting (``sacct``) of jobs that left the queue."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    asked = sorted(set(ids) | {i.split("_")[0] for i in ids})  # array tasks never started are known by the array
    out = slurm_query(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(asked)], "accounting (sacct)")
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.strip().partition("|")
        for one in _array_members(job_id):
            if one in ids and state.strip():
                states[one] = state.split()[0].upper()
    return states


def _array_members(job_id: str) -> list[str]:
    """sacct lists array tasks that never started as one record, ``123_[0-3,7%2]``: one id per task."""
    match = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", job_id)
    if not match:
        return [job_id]
    members = []
    for part in match.group(2).split(","):
        first, _, last = part.partition("-")
        members += [f"{match.group(1)}_{i}" for i in range(int(first), int(last or first) + 1)]
    return members


def slurm_states(jobs_dir: Path, job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM states of many jobs: the queue first (a queued job is never mistaken for a new one, whatever
    accounting says), accounting for those that left it. Raises SchedulerError when either does not answer."""
    ids = set(job_ids)
    states = queued_states(ids)
    ended = accounting_states(ids - set(states))
    return {jid: states.get(jid) or ended.get(jid) or "UNKNOWN" for jid in ids}


def _last_val_loss(run_dir: Path) -> float | None:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being appended right now
        if rec.get("split") == "val" and rec.get("loss_mean") is not None:
            return float(rec["loss_mean"])
    return None


def point_params(run_dir: Path) -> int | None:
    try:
        model = json.loads((run_dir / "config.json").read_text()).get("model") or {}
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return model.get("params_total")


def resolve_status(point_id: str, rec: dict[str, Any], jobs_dir: Path, sched: str | None) -> PointStatus:
    run_dir = Path(rec["run_dir"])
    status = read_status(run_dir) if run_dir.is_dir() else None
    error = (status or {}).get("error")
    run_state = (status or {}).get("state")
    if run_state == "finished":
        state = "COMPLETED"
    elif sched is None:  # never submitted from this sweep directory
        state = "FAILED" if run_state == "failed" else "NEW"
    elif sched in ACTIVE or sched == "INTERRUPTED":
        state = sched
    elif sched == "UNKNOWN" and _age_s(rec.get("submitted_at")) < SACCT_LAG_S:
        state = "PENDING"
    elif sched == "COMPLETED":
        # the job ended well but the run is not finished: its result was deleted (run again) or the trainer
        # returned without finishing (a failure)
        if status is None:
            state = "NEW"
        else:
            state, error = "FAILED", error or f"job ended but status.json says {run_state!r}"
    elif sched == "UNKNOWN" and run_state is None:
        state = "NEW"
    else:
        state = sched if sched in FAILED_LIKE else "FAILED"
    if state in FAILED_LIKE and not error and rec.get("job_id"):
        outcome = _result_pickle(jobs_dir, rec["job_id"])
        if outcome is not None and outcome[0] == "error":
            error = _error_line(str(outcome[1]))
    return PointStatus(
        point_id=point_id, depth=rec.get("depth"), state=state, step=(status or {}).get("step"),
        total_steps=(status or {}).get("total_steps"), last_val_loss=_last_val_loss(run_dir),
        params=point_params(run_dir), job_id=rec.get("job_id"), job_state=sched, log=rec.get("log"), error=error,
        run_dir=str(run_dir), err_log=rec.get("err_log"))


def sweep_status(state: SweepState, point_ids: list[str] | None = None) -> list[PointStatus]:
    """Fresh status of the given points (default: every point the state file knows), in that order."""
    ids = point_ids if point_ids is not None else list(state.points)
    recs = {pid: state.points.get(pid, {}) for pid in ids}
    slurm_ids = [r["job_id"] for r in recs.values() if r.get("job_id") and r.get("executor") == "slurm"]
    sched: dict[str, str] = slurm_states(state.jobs_dir, slurm_ids) if slurm_ids else {}
    result = []
    for pid in ids:
        rec = recs[pid]
        if "run_dir" not in rec:
            raise KeyError(f"point {pid} has no run directory in {state.path}")
        job_state, job_error = None, None
        if rec.get("job_id"):
            if rec.get("executor") == "local":
                job_state, job_error = _local_state(state.jobs_dir, rec)
            else:
                job_state = sched.get(rec["job_id"], "UNKNOWN")
        st = resolve_status(pid, rec, state.jobs_dir, job_state)
        st.error = st.error or (job_error if st.state in FAILED_LIKE else None)
        result.append(st)
    return result


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def format_table(rows: list[PointStatus]) -> str:
    header = ("point", "depth", "params", "state", "step/total", "val loss", "job id", "log")
    table = [header]
    for r in rows:
        progress = "-" if r.step is None else f"{r.step}/{r.total_steps if r.total_steps is not None else '?'}"
        table.append((r.point_id, str(r.depth if r.depth is not None else "-"), _fmt_params(r.params), r.state,
                      progress, "-" if r.last_val_loss is None else f"{r.last_val_loss:.4f}", r.job_id or "-",
                      _short(r.log)))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    for r in rows:
        if r.error and r.state not in {"COMPLETED", "NEW", "INTERRUPTED"} | ACTIVE:
            lines.append(f"{r.point_id} {r.state}: {r.error}")
            lines += [f"  {line}" for line in log_tail(r.err_log or r.log)]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no points")
    return "\n".join(lines)


def log_tail(path: str | None, count: int = 5) -> list[str]:
    """The last lines of a failed job's log (its stderr holds the traceback), with the path to read the rest."""
    if not path:
        return []
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 16384))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return [f"(log {path} is not readable)"]
    return [f"last lines of {path}:"] + ["  " + ln for ln in lines[-count:]]


def _short(path: str | None) -> str:
    if not path:
        return "-"
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if len(rel) < len(path) else path
