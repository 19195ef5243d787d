"""Writing the outputs of `fit`, `figures` and `report` as one set: all or nothing.

Every file of a set is first written (through models/files.py) into a staging folder beside the outputs; only
when the whole set is complete are the files renamed into place, one `os.replace` each. A failure while
computing or drawing (a bad table, a figure that cannot be drawn) leaves the earlier results untouched, and a
set never mixes files of two runs unless the process dies during the final renames themselves.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


class StagedOutputs:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stage = Path(tempfile.mkdtemp(dir=self.out_dir, prefix=".staging-"))

    def final(self, staged: Path) -> Path:
        """Where a staged file will lie once committed."""
        return self.out_dir / Path(staged).relative_to(self.stage)

    def commit(self) -> list[Path]:
        committed = []
        for staged in sorted(p for p in self.stage.rglob("*") if p.is_file() and not p.name.startswith(".")):
            target = self.final(staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            committed.append(target)
        return committed

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


@contextlib.contextmanager
def staged_outputs(out_dir: Path | str) -> Iterator[StagedOutputs]:
    """Write into `.stage`; on leaving the block without error the files move into out_dir, else they vanish."""
    outputs = StagedOutputs(Path(out_dir))
    try:
        yield outputs
        outputs.commit()
    finally:
        outputs.discard()
