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


def ignore_job_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: a forked worker inherits the trainer's signal handlers, and SLURM
    and terminals signal every process of a job, so without this each worker would run the checkpoint handler (and
    wait for a save only the main process can make) or die before the main process has saved, which fails the
    step it is in. The main process alone decides; its workers end when it closes their queues, or with it
    (PyTorch's workers watch their parent), and SIGKILL still stops them."""
    for signum in JOB_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def job_signals_blocked() -> Iterator[None]:
    """Hold the job signals back in this thread while it forks DataLoader workers: a signal that lands between
    the fork and the worker's ``ignore_job_signals`` would run the parent's handlers in a half-started child.
    The children keep the mask (so never see them); the parent receives a held-back signal when the block ends."""
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
