"""Out-of-band control of a running training loop (checkpoint requests from signal handlers).

A SLURM signal handler (submitit's ``Checkpointable.checkpoint``) runs in the main thread between two bytecodes,
so it cannot save a consistent training state itself. The trainer instead polls a ``TrainControl`` after every
optimizer step: ``request_checkpoint()`` asks for a save at the next step boundary, ``wait_saved()`` blocks until
the trainer confirmed it. Code that must wait from a signal handler therefore runs the training loop in a worker
thread (see ``sweeps``), so the main thread is free to wait.
"""
from __future__ import annotations

import signal
import threading


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


JOB_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)  # SLURM's requeue warning, the scheduler's / kill's stop


def ignore_job_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: a forked worker inherits the trainer's signal handlers, and SLURM
    signals every process of a job, so without this each worker would run the checkpoint handler (and wait for a
    save only the main process can make) or die on SIGTERM before the main process has saved."""
    for signum in JOB_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
