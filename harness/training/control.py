"""Out-of-band control of a running training loop (checkpoint requests from signal handlers).

A SLURM signal handler (submitit's ``Checkpointable.checkpoint``) runs in the main thread between two bytecodes,
so it cannot save a consistent training state itself. The trainer instead polls a ``TrainControl`` after every
optimizer step: ``request_checkpoint()`` asks for a save at the next step boundary, ``wait_saved()`` blocks until
the trainer confirmed it. Code that must wait from a signal handler therefore runs the training loop in a worker
thread (see ``sweeps``), so the main thread is free to wait.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class TrainControl:
    def __init__(self) -> None:
        self._requested = threading.Event()
        self._saved = threading.Event()
        self.stop_after_save = False
        self.stop_reason = "requeued"  # the run's status after a save-and-stop: "requeued" or "interrupted"

    def request_checkpoint(self, stop: bool = False, reason: str = "requeued") -> None:
        if stop and not self.stop_after_save:
            self.stop_reason = reason
        self.stop_after_save = self.stop_after_save or stop
        self._saved.clear()
        self._requested.set()

    def checkpoint_requested(self) -> bool:
        return self._requested.is_set()

    def acknowledge_saved(self) -> None:
        self._requested.clear()
        self._saved.set()

    def wait_saved(self, timeout: float | None = None) -> bool:
        return self._saved.wait(timeout)


# SLURM's requeue warning, the scheduler's / kill's stop, Ctrl-C (the terminal signals the whole process group)
JOB_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
WORKER_TERM_GRACE_S = 30.0  # a worker told to stop by SIGTERM lives this long: time for the main process to save


def ignore_job_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: a forked worker inherits the trainer's signal handlers, and SLURM
    and terminals signal every process of a job, so without this each worker would run the checkpoint handler (and
    wait for a save only the main process can make) or die before the main process has saved, which fails the
    step it is in. The main process alone decides. Workers normally end when the main process closes their
    queues; SIGTERM (also what the main process sends a worker that does not) ends one after a grace period,
    so that neither a job's stop nor the main process's exit can hang on it."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_after_grace)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, JOB_SIGNALS)  # held back while the worker was forked


def _exit_after_grace(signum: int, frame: object) -> None:
    import os

    timer = threading.Timer(WORKER_TERM_GRACE_S, os._exit, (0,))
    timer.daemon = True
    timer.start()


@contextlib.contextmanager
def job_signals_blocked() -> Iterator[None]:
    """Hold the job signals back in this thread while it forks DataLoader workers: a signal that lands between
    the fork and the worker's ``ignore_job_signals`` would run the parent's handlers in a half-started child.
    A child unblocks them once its own handlers are set; the parent receives a held-back signal when the block
    ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, JOB_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class ForkSafeLoader:
    """A DataLoader whose worker processes are started with the job signals held back (see above)."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def __iter__(self):
        with job_signals_blocked():
            return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)
