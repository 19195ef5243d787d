"""The CLI boundary: what an exception that reaches ``varscale`` becomes (one line and an exit status).

Exit statuses (docs/training.md): 2 = the command or its input is wrong (an option, a config, a corrupt or
truncated input file); 1 = the environment stopped it (no space, read-only or not writable, a file where a
directory belongs, a busy lock, anything unexpected). A traceback is printed only with ``--debug`` or
``VARSCALE_DEBUG=1``. Where the command works on a run directory that already has a ``status.json``, the line is
recorded there as ``failed``, so the run's status never keeps saying "running" after its process gave up.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from models.files import LockedError, save_json, utc_now_iso

# errno -> what it means for the path and what to do
OS_ADVICE = {
    errno.ENOSPC: "no space left on the device; free space (or point the output elsewhere) and run the same "
                  "command again: it continues from the last checkpoint",
    errno.EDQUOT: "disk quota exceeded; free space and run the same command again",
    errno.EROFS: "read-only file system; choose a writable location",
    errno.EACCES: "permission denied; choose a location you may write (or fix its permissions)",
    errno.EPERM: "operation not permitted; choose a location you may write (or fix its permissions)",
    errno.ENOTDIR: "a file is in the way where a directory is needed; remove it or choose another path",
    errno.EEXIST: "already exists as a file; remove it or choose another path",
    errno.EISDIR: "is a directory where a file is needed; give a file path",
    errno.ENOENT: "not found; check the path",
}
CORRUPT_INPUT = (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, json.JSONDecodeError, UnicodeDecodeError)


def debug_wanted(args: Any) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("VARSCALE_DEBUG", "") not in ("", "0")


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def describe(exc: BaseException) -> tuple[str, int]:
    """(one line, exit status) for an exception that reached the CLI boundary."""
    if isinstance(exc, LockedError):
        return str(exc), 1
    if isinstance(exc, OSError) and exc.errno in OS_ADVICE:
        where = exc.filename or "a file"
        if exc.filename2:
            where = f"{exc.filename2}"
        return f"{where}: {OS_ADVICE[exc.errno]}", 1
    if isinstance(exc, CORRUPT_INPUT):
        return (f"unreadable input ({type(exc).__name__}: {first_line(exc)}); the file is truncated, empty or of "
                "another format: write or copy it again"), 2
    return f"{type(exc).__name__}: {first_line(exc)} (run with --debug for the traceback)", 1


def record_failure(args: Any, line: str) -> None:
    """Mark the command's run directory failed with ``line``, where a run has a status already."""
    run_dir = getattr(args, "run_dir", None)
    if run_dir is None:
        return
    status_path = Path(run_dir) / "status.json"
    try:
        status = json.loads(status_path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(status, dict) or status.get("state") == "finished":
        return
    status.update(state="failed", error=line, updated=utc_now_iso())
    try:
        save_json(status_path, status)
    except OSError:
        pass  # the disk that failed the command may refuse this too; the line on stderr still says it
