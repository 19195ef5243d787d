"""``varscale sample --submit slurm|local``: one submitit job per shard (a SLURM job array, or local processes).

Each job runs the same ``varscale sample`` command with ``--shard i --num-shards n``; batches land in the shared
``OUT.npz.parts`` folder, and the job that completes the set merges (``harness.sampling.loop``). A job that dies or
times out can simply be resubmitted with the same command: only its missing batches are made again.
"""
from __future__ import annotations

from pathlib import Path

from harness.submit import SubmitError, make_executor


def run_shard_command(argv: list[str]) -> int:
    """The job body (module level so submitit can pickle it)."""
    from harness.cli.main import main

    code = main(argv)
    if code != 0:
        raise SubmitError(f"varscale {' '.join(argv)} exited with {code}")
    return code


def submit_shards(argv: list[str], num_shards: int, cluster: str, folder: Path, timeout_min: int = 240,
                  gpus_per_node: int = 0, cpus_per_task: int = 4, partition: str | None = None,
                  array_parallelism: int = 64):
    """Submit ``num_shards`` jobs running ``varscale <argv> --shard i --num-shards n``; returns the jobs."""
    extra = {"slurm_partition": partition} if partition else {}
    executor = make_executor(folder, cluster, "varscale-sample", timeout_min, array_parallelism=array_parallelism,
                             gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task, **extra)
    argvs = [argv + ["--shard", str(i), "--num-shards", str(num_shards)] for i in range(num_shards)]
    return executor.map_array(run_shard_command, argvs)
