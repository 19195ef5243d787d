"""Out-of-band control of a running training loop (checkpoint requests from signal handlers).

A SLURM signal handler (submitit's ``Checkpointable.checkpoint``) runs in the main thread between two bytecodes,
so it cannot save a consistent training state itself. The trainer instead polls a ``TrainControl`` after every
optimizer step: ``request_checkpoint()`` asks for a save at the next step boundary, ``wait_saved()`` blocks until
the trainer confirmed it. Code that must wait from a signal handler therefore runs the training loop in a worker
thread (see ``sweeps``), so the main thread is free to wait.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator


class TrainControl:
    """Requests are numbered, and a save answers the newest request the trainer saw *before* it started saving:
    a request that arrives while a save is being written (a periodic one, say) is answered by the next save
    instead of being taken as done, so a stop is never lost. ``request_checkpoint`` may run inside a signal
    handler that interrupted the trainer itself (``varscale train``), so it takes no lock."""

    def __init__(self) -> None:
        self._requests = 0  # written by request_checkpoint only
        self._answered = 0  # written by acknowledge_saved only (the trainer)
        self._saved = threading.Condition()
        self.stop_after_save = False
        self.stop_reason = "requeued"  # the run's status after a save-and-stop: "requeued" or "interrupted"

    def request_checkpoint(self, stop: bool = False, reason: str = "requeued") -> None:
        if stop and not self.stop_after_save:
            self.stop_reason = reason
        self.stop_after_save = self.stop_after_save or stop
        self._requests += 1  # last: a trainer that sees this request also sees its stop flag

    def pending_request(self) -> int:
        """The number of the newest unanswered request (0: none); give it to ``acknowledge_saved`` once saved."""
        requests = self._requests
        return requests if requests > self._answered else 0

    def checkpoint_requested(self) -> bool:
        return self.pending_request() != 0

    def acknowledge_saved(self, request: int) -> None:
        """The save that began after ``pending_request()`` returned ``request`` is on disk."""
        with self._saved:
            self._answered = max(self._answered, request)
            self._saved.notify_all()

    def wait_saved(self, timeout: float | None = None) -> bool:
        """Wait until a save answered every request made so far (True), or ``timeout`` seconds passed."""
        wanted = self._requests
        with self._saved:
            return self._saved.wait_for(lambda: self._answered >= wanted, timeout)


# SLURM's requeue warning, the scheduler's / kill's stop, Ctrl-C (the terminal signals the whole process group)
JOB_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


def ignore_job_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: a forked worker inherits the trainer's signal handlers, and SLURM
    and terminals signal every process of a job, so without this each worker would run the checkpoint handler (and
    wait for a save only the main process can make) or die (PyTorch's own SIGTERM handler) while the main process
    still needs its next batch to reach the step it saves at. The main process alone decides, and a job's signal
    never costs a worker: USR2 and SIGINT are ignored, and a SIGTERM ends a worker only when its parent sent it
    (the DataLoader shutting down a worker that did not end by itself) or when the parent is gone. A worker that
    ignored a job's SIGTERM still ends when the main process closes it or exits (PyTorch's workers watch their
    parent), and the scheduler's SIGKILL ends it anyway."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGUSR2, signal.SIGINT))  # held back during the fork
    # SIGTERM stays held back in this thread (and so in every thread it starts); one thread takes it with its
    # sender, which a Python signal handler is not told
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM,))
    parent = os.getppid()
    threading.Thread(target=_end_on_parent_term, args=(parent,), name="varscale-worker-sigterm", daemon=True).start()


def _end_on_parent_term(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo((signal.SIGTERM,))
        if info.si_pid == parent or os.getppid() != parent:
            os._exit(0)  # as PyTorch's own handler does for its parent's SIGTERM


@contextlib.contextmanager
def job_signals_blocked() -> Iterator[None]:
    """Hold the job signals back in this thread while it forks DataLoader workers: a signal that lands between
    the fork and the worker's ``ignore_job_signals`` would run the parent's handlers in a half-started child.
    A child takes them over in ``ignore_job_signals``; the parent receives a held-back signal when the block
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
