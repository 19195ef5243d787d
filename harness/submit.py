"""The one submitit executor of varscale: sweep points and sampling shards are sent to SLURM (or run as local
processes) through ``make_executor``, so both get the same checks and the same parameter names.

The cluster is always named explicitly: submitit's AutoExecutor would otherwise pick SLURM whenever ``srun`` is on
PATH, and a sweep meant for this machine would end up queued.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CLUSTERS = ("slurm", "local")


class SubmitError(RuntimeError):
    """The jobs could not be sent; the message says why and what to do instead."""


def make_executor(folder: Path, cluster: str, name: str, timeout_min: int, max_requeues: int = 0,
                  array_parallelism: int | None = None, **parameters: Any):
    """A submitit executor for ``cluster`` writing its job files into ``folder``. ``parameters`` are AutoExecutor
    names (generic, or prefixed ``slurm_``, which the local executor ignores); ``max_requeues`` bounds the requeues
    after preemption or time-out."""
    import submitit

    if cluster not in CLUSTERS:
        raise SubmitError(f"unknown cluster {cluster!r}; expected one of {', '.join(CLUSTERS)}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise SubmitError("sbatch is not on PATH (no SLURM client here); run on this machine with the local "
                          "executor instead")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **{f"{cluster}_max_num_timeout": max_requeues})
    if cluster == "slurm" and array_parallelism:
        parameters["slurm_array_parallelism"] = array_parallelism
    executor.update_parameters(name=name, timeout_min=timeout_min, **parameters)
    return executor
