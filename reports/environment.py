"""The environment a report was made in: library versions, git commit of the code, hardware.

Versions are read from package metadata (no heavy imports); the GPU list comes from nvidia-smi when it exists.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("varscale", "numpy", "scipy", "pandas", "matplotlib", "seaborn", "torch", "torchvision",
            "torch-fidelity", "clean-fid", "submitit")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(repo: Path = REPO_ROOT) -> dict:
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    if commit is None:
        return {"commit": "unknown (not a git checkout)"}
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return {"commit": commit, "uncommitted_changes": bool(dirty)}


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def gpus() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    listing = _run(["nvidia-smi", "-L"])
    return listing.splitlines() if listing else []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "versions": versions,
        "git": git_state(),
        "hardware": {"host": platform.node(), "platform": platform.platform(), "cpu": cpu_model(),
                     "cpu_count": os.cpu_count(), "memory_gib": memory_gib(), "gpus": gpus() or ["none"]},
    }
