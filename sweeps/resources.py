"""Job resources of a sweep spec (nodes, tasks, CPUs, GPUs, memory, time limit, SLURM account fields), validated.

Kept apart from the spec parser because the same checks apply to the top-level ``resources`` block and to every
override's; errors name the spec file and the field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SpecError(ValueError):
    """An invalid sweep spec; the message starts with the file and names the field and what is allowed."""


@dataclass(frozen=True)
class Resources:
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None  # 0 asks for the whole memory of every node (sbatch --mem=0)
    timeout_min: int = 60
    signal_delay_s: int = 90  # USR2 this long before the time limit: time to write a checkpoint
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch_extra: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {exclusive: true}

    def sbatch_parameters(self) -> dict[str, Any]:
        """The submitit SLURM executor parameters (names as AutoExecutor takes them, prefixed ``slurm_`` or not)."""
        params: dict[str, Any] = {"nodes": self.nodes, "tasks_per_node": self.tasks_per_node,
                                  "cpus_per_task": self.cpus_per_task, "timeout_min": self.timeout_min,
                                  "slurm_signal_delay_s": self.signal_delay_s}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb == 0:
            params["slurm_mem"] = "0"  # sbatch --mem=0: all the memory of each node
        elif self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                params[f"slurm_{name}"] = getattr(self, name)
        if self.sbatch_extra:
            params["slurm_additional_parameters"] = dict(self.sbatch_extra)
        return params


RESOURCE_FIELDS = tuple(f.name for f in fields(Resources) if f.name != "timeout_min") + ("time_limit",)


def parse_time_limit(value: Any, where: str) -> int:
    """Minutes from an int (minutes) or a SLURM time string: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    if isinstance(value, bool):
        raise SpecError(f"{where} must be minutes or a SLURM time like '2:00:00' or '1-12:00:00', got {value!r}")
    if isinstance(value, (int, float)):
        minutes = float(value)
    else:
        text = str(value).strip()
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if not match:
            raise SpecError(f"{where}: cannot parse time limit {value!r}; use minutes (90) or a SLURM time "
                            "('MM', 'HH:MM:SS', 'D-HH:MM:SS', e.g. '2:00:00' or '1-12:00:00')")
        days, a, b, c = match.groups()
        parts = [int(p) for p in (a, b, c) if p is not None]
        if days is not None:  # D-HH[:MM[:SS]]
            parts += [0] * (3 - len(parts))
            minutes = int(days) * 1440 + parts[0] * 60 + parts[1] + parts[2] / 60
        elif len(parts) == 3:
            minutes = parts[0] * 60 + parts[1] + parts[2] / 60
        elif len(parts) == 2:  # MM:SS, as sbatch reads it
            minutes = parts[0] + parts[1] / 60
        else:
            minutes = parts[0]
    if not minutes > 0:
        raise SpecError(f"{where} must be positive, got {value!r}")
    return max(1, int(round(minutes)))


def check_int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_opt_str(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise SpecError(f"{where} must be a string or null, got {value!r}")
    return value


def merge_resources(base: Resources, raw: Any, path: Path | str, where: str = "resources") -> Resources:
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: {where} must be a mapping of {', '.join(RESOURCE_FIELDS)}")
    unknown = sorted(set(raw) - set(RESOURCE_FIELDS) - {"timeout_min"})
    if unknown:
        raise SpecError(f"{path}: unknown field {where}.{unknown[0]}; allowed fields: {', '.join(RESOURCE_FIELDS)}")
    values: dict[str, Any] = {}
    p = f"{path}: {where}"
    for name in ("nodes", "tasks_per_node", "cpus_per_task"):
        if name in raw:
            values[name] = check_int(raw[name], f"{p}.{name}", 1)
    for name in ("gpus_per_node", "signal_delay_s"):
        if name in raw:
            values[name] = check_int(raw[name], f"{p}.{name}", 0)
    if "mem_gb" in raw:
        mem = raw["mem_gb"]
        if mem is not None and (isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem < 0):
            raise SpecError(f"{p}.mem_gb must be a number of GB (0: the whole node's memory) or null, got {mem!r}")
        values["mem_gb"] = mem
    for name in ("time_limit", "timeout_min"):
        if name in raw:
            values["timeout_min"] = parse_time_limit(raw[name], f"{p}.{name}")
    for name in ("partition", "account", "qos", "constraint"):
        if name in raw:
            values[name] = _check_opt_str(raw[name], f"{p}.{name}")
    if "sbatch_extra" in raw:
        extra = raw["sbatch_extra"] or {}
        if not isinstance(extra, dict) or not all(isinstance(v, (str, int, float, bool)) for v in extra.values()):
            raise SpecError(f"{p}.sbatch_extra must map sbatch option names to values, e.g. {{exclusive: true}}")
        values["sbatch_extra"] = {str(k).replace("-", "_"): v for k, v in extra.items()}
    merged = replace(base, **values)
    if merged.signal_delay_s >= merged.timeout_min * 60:
        raise SpecError(f"{p}.signal_delay_s ({merged.signal_delay_s} s) must be shorter than the time limit "
                        f"({merged.timeout_min} min): the checkpoint signal comes that long before the limit")
    return merged
