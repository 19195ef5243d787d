"""The sweep state file: which job runs (or ran) each point, written atomically under a lock.

``SWEEP_DIR/state.json`` is the memory of ``varscale sweep submit``: the scheduler job id of every submitted point
(and the ids before it), where its logs go, and the point's grid values and run directory, so that ``status`` and
``collect`` work from the sweep directory alone. Job states themselves are never stored as truth here; they are
asked from SLURM accounting (or the local process table) each time.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

from models.files import atomic_write_text, exclusive_lock, utc_now_iso

STATE_FILE = "state.json"
JOBS_DIR = "jobs"  # submitit's folder: pickles and logs of every job of the sweep


class SweepState:
    def __init__(self, sweep_dir: Path, data: dict[str, Any]):
        self.sweep_dir = Path(sweep_dir)
        self.data = data
        self.data.setdefault("points", {})

    @property
    def path(self) -> Path:
        return self.sweep_dir / STATE_FILE

    @property
    def jobs_dir(self) -> Path:
        return self.sweep_dir / JOBS_DIR

    @property
    def points(self) -> dict[str, dict[str, Any]]:
        return self.data["points"]

    @classmethod
    def load(cls, sweep_dir: Path) -> "SweepState":
        path = Path(sweep_dir) / STATE_FILE
        if not path.exists():
            return cls(sweep_dir, {"version": 1, "points": {}})
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: sweep state is not valid JSON ({exc}); it is written atomically, so this "
                             "file was edited by hand") from None
        return cls(sweep_dir, data)

    def save(self) -> None:
        self.data["updated"] = utc_now_iso()
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    def record(self, point_id: str) -> dict[str, Any]:
        return self.points.setdefault(point_id, {})

    def note_point(self, point_id: str, axes: dict[str, Any], run_dir: Path, depth: int) -> None:
        rec = self.record(point_id)
        rec.update(axes=axes, run_dir=str(run_dir), depth=depth)

    def note_submission(self, point_id: str, executor: str, job_id: str, stdout: Path, stderr: Path) -> None:
        rec = self.record(point_id)
        if rec.get("job_id"):
            rec.setdefault("previous_job_ids", []).append(rec["job_id"])
        rec.update(executor=executor, job_id=job_id, log=str(stdout), err_log=str(stderr),
                   submitted_at=utc_now_iso(), cancelled=False, interrupted=False)


STATE_LOCK, SUBMIT_LOCK = ".state.lock", ".submit.lock"


@contextlib.contextmanager
def locked_state(sweep_dir: Path, wait_s: float = 60.0) -> Iterator[SweepState]:
    """Load, hand out and save the state with an exclusive lock: two submits at once must not lose job ids."""
    sweep_dir = Path(sweep_dir)
    with exclusive_lock(sweep_dir / STATE_LOCK, f"sweep state {sweep_dir / STATE_FILE}", wait_s=wait_s):
        state = SweepState.load(sweep_dir)
        yield state
        state.save()


def submit_lock(sweep_dir: Path, wait_s: float):
    """Held by ``sweep submit`` from planning to the last recorded job id, so that a second submit of the same
    sweep either waits and then sees the first one's jobs in the queue, or is refused naming the first one."""
    return exclusive_lock(Path(sweep_dir) / SUBMIT_LOCK, f"sweep {Path(sweep_dir).name} (another submit)", wait_s)
