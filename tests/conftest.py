"""Shared fixtures: the golden vectors from the official code, the SLURM requirement, deterministic torch."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# the official code's vectors travel with the repository (tests/golden/README.md says how they were made);
# VARSCALE_GOLDEN_DIR points the tests at another copy, e.g. a regenerated one
GOLDEN_DIR = Path(os.environ.get("VARSCALE_GOLDEN_DIR", REPO_ROOT / "tests" / "golden"))


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
    if os.environ.get("VARSCALE_REQUIRE_SLURM") == "1":
        return  # pytest_runtest_setup fails them instead when no cluster answers
    slurm_items = [it for it in items if "slurm" in it.keywords]
    if slurm_items and not slurm_available():
        skip = pytest.mark.skip(reason="no SLURM cluster answers (run as root: scripts/local-slurm start)")
        for it in slurm_items:
            it.add_marker(skip)


_SLURM_OK: bool | None = None


def pytest_runtest_setup(item):
    global _SLURM_OK
    if "slurm" in item.keywords and os.environ.get("VARSCALE_REQUIRE_SLURM") == "1":
        if _SLURM_OK is None:
            _SLURM_OK = slurm_available()
        if not _SLURM_OK:
            pytest.fail("VARSCALE_REQUIRE_SLURM=1 but no SLURM cluster answers to sinfo", pytrace=False)


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


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A real tiny tokenizer file (random weights, saved as `varscale tokenizer train` saves one), one per module."""
    from harness_helpers import make_tokenizer

    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.safetensors")
