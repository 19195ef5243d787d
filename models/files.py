"""Files every layer writes and checks: the one atomic writer, the one advisory lock, JSON results, content hashes,
time stamps.

It sits in models/, the bottom layer, so that harness, sweeps, analysis and reports all write through the same
code without importing upward. A reader (another rank, a sweep status, a crash-resumed run) sees the old file or
the whole new one, never half of it.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import glob
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

FILE_MODE = 0o644  # results are meant to be shared; mkstemp alone would leave them private (0600)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write; when the block ends without error it is fsynced,
    given mode 0644 and renamed over ``path``; on error it is removed. The name is unique per process and call
    (``.NAME.<random>.tmp``), so two writers never share a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:  # whatever the block used to write it, the bytes reach the disk first
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def save_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def utc_now_iso() -> str:
    """The time stamp stored with results and states: UTC, to the second, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------ locks

class LockedError(RuntimeError):
    """Another process holds the lock; the message names it (host, pid, SLURM job) and the lock file."""


_HELD: dict[str, int] = {}  # lock files this process holds -> nesting depth (a CLI and the code it calls may both lock)


def lock_holder() -> str:
    """Who this process is, as written into a lock file and shown to a refused second process."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '?')}"
    return f"host {socket.gethostname()} pid {os.getpid()}" + (f" SLURM job {job}" if job else "")


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an advisory lock (``fcntl.flock``) on ``lock_path`` for the block: the one way the project keeps two
    processes off one run directory, tokenizer output, sample output or sweep state. The lock dies with its
    process (a SIGKILL leaves nothing stale to clean up). Waits up to ``wait_s`` seconds, then raises
    ``LockedError`` naming ``what`` and the holder written in the file."""
    key = os.path.realpath(lock_path)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    Path(key).parent.mkdir(parents=True, exist_ok=True)
    fh = open(os.open(key, os.O_RDWR | os.O_CREAT, FILE_MODE), "r+")
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = fh.read().strip() or "another process"
                    raise LockedError(f"{what} is in use by {holder} (lock file {key}); wait until it ends, or "
                                      "stop that process, then run the same command again") from None
                time.sleep(0.2)
        fh.seek(0)
        fh.truncate()
        fh.write(lock_holder() + "\n")
        fh.flush()
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def remove_stale_temps(directory: str | os.PathLike, name: str) -> list[Path]:
    """Delete temporary files that ``atomic_target`` left for ``directory/name`` when its writer was killed.
    Call it only while holding the lock of whatever writes ``name``: a live writer's temp file looks the same."""
    removed = []
    for tmp in Path(directory).glob(f".{glob.escape(name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed
