"""Shared fixtures: the golden vectors from the official code, the SLURM requirement, deterministic torch, a tiny
tokenizer, a read-only directory."""
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


class ReadOnlyDir:
    """A directory that becomes unwritable on ``seal()``, with whatever was put in it before. As root (which
    passes every permission check, so a chmod would prove nothing) it is a real tmpfs remounted read-only;
    otherwise its folders get mode 0555. ``advice`` is the end of the one-line error the CLI prints for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.as_root = os.geteuid() == 0
        self.advice = ("read-only file system; choose a writable location" if self.as_root else
                       "permission denied; choose a location you may write (or fix its permissions)")
        self.reason = "read-only file system" if self.as_root else "permission denied"  # sweeps' output_root check
        if self.as_root:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True,
                           capture_output=True)

    def seal(self) -> None:
        if self.as_root:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True, capture_output=True)
        else:
            for folder in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
                folder.chmod(0o555)

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.path)): p.read_bytes() for p in sorted(self.path.rglob("*")) if p.is_file()}

    def release(self) -> None:
        if self.as_root:
            subprocess.run(["umount", str(self.path)], check=True)
        else:
            for folder in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
                folder.chmod(0o755)


@pytest.fixture
def read_only_dir(tmp_path):
    directory = tmp_path / "read_only"
    directory.mkdir()
    ro = ReadOnlyDir(directory)
    try:
        yield ro
    finally:
        ro.release()
