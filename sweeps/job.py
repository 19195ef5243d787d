"""The job a sweep point runs: the trainer in a worker thread, checkpoint-and-requeue on SLURM's warning signal.

submitit calls ``PointJob.checkpoint`` from its USR2 handler (time limit in ``signal_delay_s`` seconds, or
preemption). A signal handler cannot save a consistent training state itself, so the trainer runs in a worker
thread and polls a ``TrainControl`` after each optimizer step; the handler asks for a checkpoint, waits (bounded)
until the trainer confirms it, and hands submitit a fresh ``PointJob`` to requeue. The requeued job calls the
trainer again, which resumes from ``RUN_DIR/checkpoints/last.pt``: the step counter continues, nothing is lost.

The trainer is named by ``module:function`` and is called as ``fn(run_dir: Path, control: TrainControl) -> dict``
(``harness.training.loop.train_run``); it owns ``status.json`` and ``metrics.jsonl`` (docs/contracts.md). This module
only writes ``status.json`` when the trainer could not (it failed before starting, or the job was not requeued).
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

import submitit
from submitit.core.utils import UncompletedJobError

from harness.training.control import TrainControl
from models.files import save_json, utc_now_iso


def say(message: str) -> None:
    """One line in the job's stderr log (submitit's own lines are there too)."""
    print(f"varscale sweep job: {message}", file=sys.stderr, flush=True)


def resolve_trainer(entry: str) -> Callable[..., Any]:
    module_name, _, attr = entry.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"trainer {entry!r}: module {module_name} has no function {attr}") from None


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def mark_failed(run_dir: Path, error: str) -> None:
    """Record a failure the trainer did not record itself (keeps its step counters)."""
    status = read_status(run_dir) or {}
    if status.get("state") == "failed" and status.get("error"):
        return
    _mark(run_dir, status, state="failed", error=error)


def mark_requeued(run_dir: Path) -> None:
    """The job is requeued before the trainer could record it (the signal came before its first step)."""
    status = read_status(run_dir) or {}
    if status.get("state") in ("finished", "requeued"):
        return
    _mark(run_dir, status, state="requeued", error=None)


def _mark(run_dir: Path, status: dict[str, Any], **fields: Any) -> None:
    status.update(**fields, updated=utc_now_iso())
    status.setdefault("step", 0)
    status.setdefault("total_steps", None)
    save_json(Path(run_dir) / "status.json", status)


def _link_logs(run_dir: Path) -> None:
    """RUN_DIR/logs/<job id>.out|.err point at submitit's log files, so a run directory explains itself."""
    try:
        env = submitit.JobEnvironment()
        paths = env.paths
    except RuntimeError:  # not inside a submitit job (called directly)
        return
    logs = Path(run_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for source, suffix in ((paths.stdout, "out"), (paths.stderr, "err")):
        link = logs / f"{env.job_id}.{suffix}"
        if not link.is_symlink():
            try:
                link.symlink_to(Path(source).absolute())
            except OSError:
                pass  # a filesystem without symlinks: the sweep state still knows the log path


def _setup_environment(threads: int | None) -> None:
    env = submitit.JobEnvironment()
    if env.num_tasks > 1 and "RANK" not in os.environ:
        # one task per process, all joining one process group; the trainer calls init_process_group
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if threads:
        # torch reads OMP_NUM_THREADS when it is first imported (by the trainer); if it is already loaded, tell it
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


class PointJob(submitit.helpers.Checkpointable):
    """Callable submitted by the sweep; one instance per point and per (re)queued run."""

    def __init__(self, run_dir: str | Path, trainer: str, threads: int | None = None, save_timeout_s: float = 60.0):
        self.run_dir = str(run_dir)
        self.trainer = trainer
        self.threads = threads
        self.save_timeout_s = save_timeout_s
        self._control: TrainControl | None = None
        self._thread: threading.Thread | None = None
        self._rank = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_control"] = state["_thread"] = None  # threads and events do not pickle; a requeue starts fresh
        return state

    def __call__(self) -> dict[str, Any]:
        run_dir = Path(self.run_dir)
        status = read_status(run_dir)
        if status and status.get("state") == "finished":
            say(f"point {run_dir.name} already finished; nothing to do")
            return {"state": "finished", "skipped": True}
        try:
            env = submitit.JobEnvironment()
            rank = env.global_rank
        except RuntimeError:
            rank = 0
        if rank == 0:
            _link_logs(run_dir)
            if status:
                say(f"point {run_dir.name} continues: status.json says {status.get('state')} at step "
                    f"{status.get('step')}/{status.get('total_steps')}")
            else:
                say(f"point {run_dir.name} starts")
        self._rank = rank
        try:
            _setup_environment(self.threads)
            train_fn = resolve_trainer(self.trainer)
        except Exception as exc:  # a requeue signal here (SystemExit from submitit's handler) is no failure
            if rank == 0:
                mark_failed(run_dir, f"{type(exc).__name__}: {exc}")
            raise
        control = TrainControl()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = train_fn(run_dir, control)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                outcome["error"] = exc
                outcome["traceback"] = traceback.format_exc()

        self._control = control
        self._thread = threading.Thread(target=work, name="varscale-train", daemon=True)
        self._thread.start()
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)  # short waits keep the main thread free for signal handlers
        except UncompletedJobError as exc:  # submitit's handler refused to requeue (too many timeouts)
            if rank == 0:
                mark_failed(run_dir, f"not requeued: {exc}")
            raise
        except KeyboardInterrupt:
            # Ctrl-C of a local sweep (submitit's local controller sends SIGINT, then SIGKILL a second later):
            # try to save so that the next submit loses as little as possible
            control.request_checkpoint(stop=True, reason="interrupted")
            control.wait_saved(timeout=0.8)
            raise
        if "error" in outcome:
            exc = outcome["error"]
            if rank == 0:
                mark_failed(run_dir, f"{type(exc).__name__}: {exc}")
            say(f"trainer failed:\n{outcome['traceback']}")
            raise exc
        return outcome["result"]

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        control, thread = self._control, self._thread
        if control is not None and thread is not None and thread.is_alive():
            control.request_checkpoint(stop=True)
            if control.wait_saved(timeout=self.save_timeout_s):
                say(f"checkpoint saved; requeueing {Path(self.run_dir).name}")
            else:
                # requeue anyway: the trainer resumes from its last periodic checkpoint
                say(f"no checkpoint confirmation within {self.save_timeout_s:.0f} s; requeueing from the last "
                    "periodic checkpoint")
                if self._rank == 0:
                    mark_requeued(Path(self.run_dir))
            thread.join(timeout=10.0)
        elif self._rank == 0:
            # the signal came before training started: nothing to save, but the status must not stay "running"
            # (or turn "failed" when submitit's exit unwinds the set-up)
            mark_requeued(Path(self.run_dir))
            say(f"requeueing {Path(self.run_dir).name} before its first step")
        return submitit.helpers.DelayedSubmission(
            PointJob(self.run_dir, self.trainer, self.threads, self.save_timeout_s))

