"""What a sweep submit would send, without sending it: resource groups, the exact #SBATCH lines submitit writes,
missing inputs, and the ``--dry-run`` text. ``sweeps.launch`` submits from the same groups."""
from __future__ import annotations

import os
from typing import Any

from sweeps.points import Point, path_problems
from sweeps.resources import Resources
from sweeps.spec import SweepSpec
from sweeps.state import SweepState
from sweeps.status import PointStatus


def group_by_resources(points: list[Point]) -> list[tuple[Resources, list[Point]]]:
    groups: dict[str, tuple[Resources, list[Point]]] = {}
    for p in points:
        groups.setdefault(repr(p.resources), (p.resources, []))[1].append(p)
    return list(groups.values())


def parallelism(spec: SweepSpec, resources: Resources) -> int:
    if spec.array_parallelism is not None:
        return spec.array_parallelism
    if spec.executor == "slurm":
        return 256
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // (resources.cpus_per_task * resources.tasks_per_node))


def sbatch_lines(spec: SweepSpec, resources: Resources, count: int) -> list[str]:
    """The #SBATCH lines submitit writes for this group (for --dry-run)."""
    # submitit's own renderer, so the dry run shows exactly what sbatch will get
    from submitit.slurm.slurm import _make_sbatch_string

    native: dict[str, Any] = {"job_name": spec.name, "time": resources.timeout_min, "nodes": resources.nodes,
                              "ntasks_per_node": resources.tasks_per_node, "cpus_per_task": resources.cpus_per_task,
                              "signal_delay_s": resources.signal_delay_s,
                              "array_parallelism": parallelism(spec, resources)}
    if resources.gpus_per_node:
        native["gpus_per_node"] = resources.gpus_per_node
    if resources.mem_gb is not None:
        mem = resources.mem_gb
        native["mem"] = "0" if mem == 0 else f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(resources, name) is not None:
            native[name] = getattr(resources, name)
    if resources.sbatch_extra:
        native["additional_parameters"] = dict(resources.sbatch_extra)
    if count > 1:
        native["map_count"] = count
    text = _make_sbatch_string(command="(the point's job)", folder=SweepState(spec.sweep_dir, {}).jobs_dir, **native)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def dry_run_text(spec: SweepSpec, statuses: list[PointStatus], points: list[Point], todo: list[Point]) -> str:
    todo_ids = {p.id for p in todo}
    lines = [f"sweep {spec.name}: {len(points)} points, executor {spec.executor}, directory {spec.sweep_dir}"]
    width = max(len(p.id) for p in points)
    for p, st in zip(points, statuses):
        action = "submit" if p.id in todo_ids else "skip"
        lines.append(f"  {p.id.ljust(width)}  {st.state:<10} {action:<6}  {p.label}  "
                     f"(total_steps={p.train['total_steps']})")
    for resources, group in group_by_resources(todo):
        lines.append(f"{len(group)} point(s) with resources {resources_summary(resources)}:")
        if spec.executor == "slurm":
            lines += ["  " + line for line in sbatch_lines(spec, resources, len(group))]
        else:
            lines.append(f"  local executor: {parallelism(spec, resources)} process(es) at once, time limit "
                         f"{resources.timeout_min} min, {resources.tasks_per_node} task(s) each")
    problems = grouped_problems(todo)
    if problems:
        lines.append("submit would refuse (missing inputs):")
        lines += ["  " + line for line in problems]
    lines.append(f"nothing submitted (--dry-run); {len(todo)} point(s) would be submitted")
    return "\n".join(lines)


def grouped_problems(points: list[Point]) -> list[str]:
    """Missing inputs, each once, with the points it concerns (usually all of them share one dataset)."""
    by_message: dict[str, list[str]] = {}
    for p in points:
        for message in path_problems(p):
            by_message.setdefault(message, []).append(p.id)
    lines = []
    for message, ids in by_message.items():
        which = f"all {len(ids)} points" if len(ids) == len(points) > 1 else ", ".join(ids)
        lines.append(f"{message} ({which})")
    return lines


def resources_summary(r: Resources) -> str:
    parts = [f"nodes={r.nodes}", f"tasks_per_node={r.tasks_per_node}", f"cpus_per_task={r.cpus_per_task}",
             f"time={r.timeout_min}min"]
    if r.gpus_per_node:
        parts.append(f"gpus_per_node={r.gpus_per_node}")
    if r.mem_gb is not None:
        parts.append("mem=whole node" if r.mem_gb == 0 else f"mem={r.mem_gb}GB")
    return " ".join(parts)
