"""Shared fixtures: the golden vectors from the official code, the SLURM requirement, deterministic torch."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("VARSCALE_GOLDEN_DIR", REPO_ROOT.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN_DIR / "vectors.safetensors").is_file():
        pytest.fail(f"golden vectors not found in {GOLDEN_DIR} (set VARSCALE_GOLDEN_DIR)")
    return GOLDEN_DIR


def slurm_available() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "alloc"))


def pytest_collection_modifyitems(config, items):
    slurm_items = [it for it in items if "slurm" in it.keywords]
    if not slurm_items or slurm_available():
        return
    if os.environ.get("VARSCALE_REQUIRE_SLURM") == "1":
        for it in slurm_items:
            it.add_marker(pytest.mark.usefixtures("_require_slurm"))
    else:
        skip = pytest.mark.skip(reason="no SLURM cluster answers (run as root: scripts/local-slurm start)")
        for it in slurm_items:
            it.add_marker(skip)


@pytest.fixture
def _require_slurm():
    pytest.fail("VARSCALE_REQUIRE_SLURM=1 but no SLURM cluster answers to sinfo")


@pytest.fixture(autouse=True)
def _torch_determinism():
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
