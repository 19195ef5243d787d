"""Atomic full-state checkpoints of a training run: ``checkpoints/last.pt`` and ``checkpoints/last.prev.pt``.

A save writes a temp file and fsyncs it, renames the current ``last.pt`` to ``last.prev.pt`` and then the temp
file to ``last.pt``. A crash at any moment leaves at least one complete checkpoint: if ``last.pt`` is missing or
unreadable, loading falls back to ``last.prev.pt``. Only rank 0 writes.

A checkpoint is a dict of plain containers and tensors, loaded with ``weights_only=True``.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from models.files import atomic_target

LAST, PREV = "last.pt", "last.prev.pt"


class Checkpointer:
    def __init__(self, run_dir: Path, is_writer: bool = True) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.is_writer = is_writer

    @property
    def last_path(self) -> Path:
        return self.dir / LAST

    def save(self, state: dict[str, Any]) -> Path | None:
        if not self.is_writer:
            return None
        with atomic_target(self.last_path) as tmp:
            _torch_save(state, tmp)
            if self.last_path.exists():  # keep the one before: load() falls back to it if the new one is torn
                os.replace(self.last_path, self.dir / PREV)
        _fsync_dir(self.dir)
        return self.last_path

    def load(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest readable checkpoint, or None when the run has none yet."""
        for name in (LAST, PREV):
            path = self.dir / name
            if not path.exists():
                continue
            try:
                return torch.load(path, map_location=map_location, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a torn or corrupt file: fall back to the previous one
                warnings.warn(f"checkpoint {path} is unreadable ({exc}); trying the previous one", stacklevel=2)
        return None


def _torch_save(state: dict[str, Any], path: Path) -> None:
    """``torch.save``, with a failed write (torch's C++ writer reports a full disk as a RuntimeError) raised as
    the OSError it is. Raised after the except block: torch's writer, which keeps the half-written file open,
    is freed first, so the space comes back when the caller removes the file and the status can still be written."""
    failure = None
    try:
        torch.save(state, path)
    except RuntimeError as exc:
        failure = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if failure is None:
        return
    if shutil.disk_usage(path.parent).free < NEARLY_FULL_BYTES:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent))
    raise OSError(errno.EIO, f"writing the checkpoint failed ({failure})", str(path.parent))


NEARLY_FULL_BYTES = 16 << 20


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def capture_rng_states(extra_generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG the training step touches: torch CPU, all CUDA devices, python ``random``, named generators."""
    states: dict[str, Any] = {"torch_cpu": torch.get_rng_state(), "python": _python_state_to_plain()}
    if torch.cuda.is_available():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    for name, gen in (extra_generators or {}).items():
        states[f"gen:{name}"] = gen.get_state()
    return states


def restore_rng_states(states: dict[str, Any], extra_generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(states["torch_cpu"].cpu())
    random.setstate(_plain_to_python_state(states["python"]))
    if "torch_cuda" in states and torch.cuda.is_available():
        cuda_states = states["torch_cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
    for name, gen in (extra_generators or {}).items():
        key = f"gen:{name}"
        if key in states:
            gen.set_state(states[key].cpu())


def _python_state_to_plain():
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _plain_to_python_state(plain):
    return plain["version"], tuple(plain["internal"]), plain["gauss"]
