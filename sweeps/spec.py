"""Sweep specs: a YAML file naming a grid of training runs, the resources each job gets and where results go.

A spec is validated completely before anything is submitted: every error names the spec file, the field and what
is allowed, because a typo found after a week in the queue costs a week. Parsing only; turning a spec into
concrete points (resolved training configs, ids) lives in ``sweeps.points``.

Format (every field except ``name``, ``grid.depth`` and ``train`` has a default)::

    name: demo-cpu
    model_family: VAR-mini         # VAR (official width 64*depth) | VAR-mini; the depth axis picks the preset
    executor: local                # slurm | local
    output_root: runs/sweeps       # the sweep's files go to OUTPUT_ROOT/NAME (relative to the current directory)
    trainer: harness.training.loop:train_run
    grid: {depth: [2, 3, 4], lr: [1.0e-4], seed: [0]}
    train: {...}                   # fixed TrainConfig options, nested as in harness/config.py
    overrides:                     # optional, for recipes that change with the grid (e.g. lr for deep models)
      - when: {depth: [24, 30]}
        train: {base_lr: 8.0e-5}
        resources: {nodes: 4}
    resources: {nodes: 1, tasks_per_node: 1, gpus_per_node: 0, cpus_per_task: 1, mem_gb: 4, time_limit: "1:00:00",
                partition: null, account: null, qos: null, constraint: null, signal_delay_s: 90, sbatch_extra: {}}
    max_requeues: 3                # time limits / preemptions a point may be requeued after
    array_parallelism: 8           # jobs of one array running at once (local: processes at once)
    epoch_images: 1281167          # images per epoch, for the `epochs` axis with an imagefolder dataset
    tokens_per_image: 680          # for the `train_tokens` axis when the tokenizer's patch_nums are not in `train`

String values may use ``${ENV}`` or ``${ENV:-default}``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sweeps.resources import Resources, SpecError, check_int, merge_resources

EXECUTORS = ("slurm", "local")
MODEL_FAMILIES = ("VAR", "VAR-mini")  # models.registry presets: VAR-d<N> (width 64 N), VAR-mini-d<N> (32 N)
DEFAULT_TRAINER = "harness.training.loop:train_run"
# grid axes with a name of their own; any TrainConfig option (dotted, e.g. data.resolution) is an axis too
NAMED_AXES = ("depth", "width", "lr", "seed", "dataset", "total_steps", "epochs", "train_images", "train_tokens",
              "batch_size")
AXIS_ALIASES = {"lr": "base_lr", "steps": "total_steps"}
LENGTH_AXES = ("total_steps", "epochs", "train_images", "train_tokens")
TOP_LEVEL = ("name", "executor", "output_root", "trainer", "model_family", "grid", "train", "overrides", "resources",
             "max_requeues", "array_parallelism", "epoch_images", "tokens_per_image")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Override:
    when: dict[str, list]  # axis -> values for which this override applies (all listed axes must match)
    train: dict[str, Any]
    resources: dict[str, Any]  # raw resource fields, validated when merged


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    name: str
    executor: str
    output_root: Path
    trainer: str
    model_family: str
    grid: dict[str, list]
    train: dict[str, Any]
    resources: Resources
    overrides: tuple[Override, ...] = ()
    max_requeues: int = 3
    array_parallelism: int | None = None  # None: slurm 256, local as many as the CPUs allow
    epoch_images: int | None = None
    tokens_per_image: int | None = None

    @property
    def sweep_dir(self) -> Path:
        return self.output_root / self.name

    def resources_for(self, axes: dict[str, Any]) -> Resources:
        raw: dict[str, Any] = {}
        for override in self.overrides:
            if override_matches(override, axes):
                raw.update(override.resources)
        return merge_resources(self.resources, raw, self.path, "overrides[].resources") if raw else self.resources


def override_matches(override: Override, axes: dict[str, Any]) -> bool:
    return all(axes.get(axis) in values for axis, values in override.when.items())


def expand_env(value: Any, where: str) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string of a YAML tree."""
    if isinstance(value, str):
        def sub(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise SpecError(f"{where}: environment variable {name} is not set (write ${{{name}:-default}} "
                            "to give a default)")
        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _parse_grid(raw: Any, path: Path) -> dict[str, list]:
    if not isinstance(raw, dict) or not raw:
        raise SpecError(f"{path}: grid must be a mapping of axis -> list of values with at least 'depth'")
    grid: dict[str, list] = {}
    for axis, values in raw.items():
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise SpecError(f"{path}: grid.{axis} is empty; give at least one value")
        if len(set(map(repr, values))) != len(values):
            raise SpecError(f"{path}: grid.{axis} lists a value twice: {values}")
        grid[str(axis)] = values
    if "depth" not in grid:
        raise SpecError(f"{path}: grid.depth is required (the model sizes of the sweep), e.g. depth: [6, 8, 10]")
    for depth in grid["depth"]:
        check_int(depth, f"{path}: grid.depth value", 1)
    lengths = [a for a in grid if AXIS_ALIASES.get(a, a) in LENGTH_AXES]
    if len(lengths) > 1:
        raise SpecError(f"{path}: grid has {' and '.join(lengths)}; the training length takes only one of "
                        f"{', '.join(LENGTH_AXES)}")
    return grid


def _parse_overrides(raw: Any, path: Path, grid: dict[str, list]) -> tuple[Override, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(f"{path}: overrides must be a list of {{when: {{axis: [values]}}, train: {{...}}, "
                        "resources: {...}}")
    result = []
    for i, item in enumerate(raw):
        where = f"{path}: overrides[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("when"), dict) or not item["when"]:
            raise SpecError(f"{where} needs a non-empty 'when' mapping of grid axis -> values")
        unknown = sorted(set(item) - {"when", "train", "resources"})
        if unknown:
            raise SpecError(f"{where}: unknown field {unknown[0]}; allowed fields: when, train, resources")
        when = {}
        for axis, values in item["when"].items():
            if axis not in grid:
                raise SpecError(f"{where}.when.{axis} is not a grid axis; grid axes: {', '.join(grid)}")
            when[axis] = values if isinstance(values, list) else [values]
        train = item.get("train") or {}
        if not isinstance(train, dict):
            raise SpecError(f"{where}.train must be a mapping of training options")
        resources = item.get("resources") or {}
        merge_resources(Resources(), resources, path, f"overrides[{i}].resources")  # validate early
        result.append(Override(when=when, train=train, resources=resources))
    return tuple(result)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file (structure only; ``sweeps.points`` validates each training config)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: sweep spec not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, expected a sweep spec file (.yaml)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a sweep spec is a YAML mapping with fields {', '.join(TOP_LEVEL)}")
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise SpecError(f"{path}: unknown field {unknown[0]!s}; allowed fields: {', '.join(TOP_LEVEL)}")
    raw = expand_env(raw, str(path))
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError(f"{path}: name must be a word of letters, digits, '.', '_' or '-', got {name!r}")
    executor = raw.get("executor", "local")
    if executor not in EXECUTORS:
        raise SpecError(f"{path}: executor={executor!r} is not allowed; allowed values: {', '.join(EXECUTORS)}")
    trainer = raw.get("trainer", DEFAULT_TRAINER)
    if not isinstance(trainer, str) or not re.fullmatch(r"[\w.]+:\w+", trainer):
        raise SpecError(f"{path}: trainer must look like 'package.module:function', got {trainer!r}")
    train = raw.get("train")
    if not isinstance(train, dict):
        raise SpecError(f"{path}: train must be a mapping of training options (see harness/config.py TrainConfig)")
    family = raw.get("model_family", "VAR")
    if family not in MODEL_FAMILIES:
        raise SpecError(f"{path}: model_family={family!r} is not allowed; allowed values: {', '.join(MODEL_FAMILIES)}")
    if "model_preset" in train:
        raise SpecError(f"{path}: train.model_preset is set by the sweep (model_family + grid.depth); remove it")
    grid = _parse_grid(raw.get("grid"), path)
    resources = merge_resources(Resources(), raw.get("resources") or {}, path)
    if executor == "local" and resources.nodes != 1:
        raise SpecError(f"{path}: resources.nodes={resources.nodes} but executor 'local' runs on one node; "
                        "use executor: slurm or nodes: 1")
    parallelism = raw.get("array_parallelism")
    output_root = raw.get("output_root", "runs/sweeps")
    if not isinstance(output_root, str) or not output_root:
        raise SpecError(f"{path}: output_root must be a directory path, got {output_root!r}")
    spec = SweepSpec(
        path=path, name=name, executor=executor, output_root=Path(output_root).expanduser().absolute(),
        trainer=trainer, model_family=family, grid=grid, train=train, resources=resources,
        overrides=_parse_overrides(raw.get("overrides"), path, grid),
        max_requeues=check_int(raw.get("max_requeues", 3), f"{path}: max_requeues", 0),
        array_parallelism=None if parallelism is None else check_int(parallelism, f"{path}: array_parallelism", 1),
        epoch_images=None if raw.get("epoch_images") is None
        else check_int(raw["epoch_images"], f"{path}: epoch_images", 1),
        tokens_per_image=None if raw.get("tokens_per_image") is None
        else check_int(raw["tokens_per_image"], f"{path}: tokens_per_image", 1),
    )
    for override in spec.overrides:
        if spec.executor == "local" and spec.resources_for({a: v[0] for a, v in override.when.items()}).nodes != 1:
            raise SpecError(f"{path}: an override asks for several nodes but executor 'local' runs on one node")
    return spec
