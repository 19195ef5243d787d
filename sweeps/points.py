"""From a validated spec to concrete points: one resolved TrainConfig per grid combination, with a stable id.

The id is a hash of the resolved training config and the trainer entry point, so the same point gets the same id
(and run directory) on every submission, and any change that would change the training makes a new point. Where
a run lives or which partition it uses does not enter the id.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import (
    PATH_OPTIONS,
    ConfigError,
    DataConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from sweeps.resources import Resources, SpecError
from sweeps.spec import (
    AXIS_ALIASES,
    LENGTH_AXES,
    NAMED_AXES,
    SweepSpec,
    override_matches,
)


@dataclass(frozen=True)
class Point:
    id: str
    axes: dict[str, Any]  # grid axis -> value for this point
    train: dict[str, Any]  # the resolved TrainConfig as a JSON tree (what config.json holds)
    resources: Resources
    run_dir: Path

    @property
    def depth(self) -> int:
        return int(self.axes["depth"])

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.axes.items())


def train_option_names(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """Dotted names of every TrainConfig option (data.resolution, tokenizer.path, ...)."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            names += train_option_names(hints[f.name], prefix + f.name + ".")
        else:
            names.append(prefix + f.name)
    return names


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
    tree[parts[-1]] = value


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_axes(spec: SweepSpec) -> None:
    options = set(train_option_names())
    for axis in spec.grid:
        if axis == "model_preset":
            raise SpecError(f"{spec.path}: grid.model_preset: the preset comes from model_family and grid.depth")
        if axis not in NAMED_AXES and axis not in AXIS_ALIASES and axis not in options:
            raise SpecError(f"{spec.path}: unknown grid axis {axis!r}; allowed axes: {', '.join(NAMED_AXES)}, "
                            "or any training option by its dotted name (e.g. data.resolution, weight_decay)")


def _axis_patch(axis: str, value: Any, spec: SweepSpec, axes: dict[str, Any]) -> dict[str, Any]:
    name = AXIS_ALIASES.get(axis, axis)
    if name == "dataset":
        if value == "synthetic":
            return {"data": {"source": "synthetic"}}
        if isinstance(value, str):
            return {"data": {"source": "imagefolder", "root": value}}
        if isinstance(value, dict):
            return {"data": value}
        raise SpecError(f"{spec.path}: grid.dataset value {value!r} must be 'synthetic', an ImageFolder path or a "
                        "mapping of data options")
    if name == "depth":
        return {"model_preset": f"{spec.model_family}-d{value}"}
    if name == "width":  # the presets define width as a multiple of depth
        depth = axes["depth"]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % depth:
            raise SpecError(f"{spec.path}: grid.width={value!r} must be a positive multiple of the depth ({depth}); "
                            "or use the width_per_depth axis")
        return {"width_per_depth": value // depth}
    patch: dict[str, Any] = {}
    _set_dotted(patch, name, value)
    return patch


def _resolve_length(train: dict[str, Any], spec: SweepSpec, where: str) -> None:
    """Turn epochs / train_images / train_tokens into total_steps (the trainer counts optimizer steps)."""
    given = [k for k in LENGTH_AXES if k != "total_steps" and k in train]
    if len(given) > 1:
        raise SpecError(f"{where}: training length given twice ({', '.join(given)}); use one of "
                        f"{', '.join(LENGTH_AXES)}")
    if not given:
        return
    key = given[0]
    amount = train.pop(key)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
        raise SpecError(f"{where}: {key} must be a positive number, got {amount!r}")
    batch = train.get("batch_size", TrainConfig.batch_size)
    if not isinstance(batch, int) or batch <= 0:
        raise SpecError(f"{where}: batch_size must be a positive integer, got {batch!r}")
    if key == "epochs":
        data = train.get("data", {})
        per_epoch = spec.epoch_images
        if per_epoch is None and data.get("source", "synthetic") == "synthetic":
            per_epoch = data.get("synthetic_train_size", DataConfig().synthetic_train_size)
        if per_epoch is None:
            raise SpecError(f"{spec.path}: epoch_images is required with the epochs axis on an imagefolder "
                            "dataset (ImageNet-1k train: 1281167)")
        images = amount * per_epoch
    elif key == "train_images":
        images = amount
    else:
        per_image = spec.tokens_per_image
        kwargs = (train.get("tokenizer") or {}).get("kwargs") or {}
        if per_image is None and kwargs.get("v_patch_nums"):
            per_image = sum(int(p) ** 2 for p in kwargs["v_patch_nums"])
        if per_image is None:
            raise SpecError(f"{spec.path}: tokens_per_image is required with train_tokens (680 for the official "
                            "256px tokenizer) unless train.tokenizer.kwargs.v_patch_nums is given")
        images = amount / per_image
    train["total_steps"] = max(1, math.ceil(images / batch))


def _absolute_paths(train: dict[str, Any]) -> None:
    # jobs may start in another directory; a config.json must mean the same files wherever it is read
    for group, key in PATH_OPTIONS:
        tree = train.get(group) or {}
        if isinstance(tree.get(key), str) and tree[key]:
            tree[key] = str(Path(tree[key]).expanduser().absolute())


def path_problems(point: Point) -> list[str]:
    """Input files a point needs that are missing (checked before submission, reported by --dry-run)."""
    problems = []
    data, tok = point.train["data"], point.train["tokenizer"]
    if data["source"] == "imagefolder" and not Path(data["root"]).is_dir():
        problems.append(f"data.root {data['root']} is not a directory (expected train/<class>/ and val/<class>/)")
    if data.get("token_cache") and not Path(data["token_cache"]).is_dir():
        problems.append(f"data.token_cache {data['token_cache']} is not a directory (varscale tokenize writes it)")
    if tok.get("path") and not Path(tok["path"]).is_file():
        problems.append(f"tokenizer.path {tok['path']} is not a file (varscale tokenizer train writes one)")
    return problems


def point_id(train: dict[str, Any], trainer: str) -> str:
    canonical = json.dumps({"train": train, "trainer": trainer}, sort_keys=True, separators=(",", ":"))
    depth = str(train["model_preset"]).rsplit("-d", 1)[-1]
    return f"d{depth}-{hashlib.sha256(canonical.encode()).hexdigest()[:10]}"


def resolve_point(spec: SweepSpec, axes: dict[str, Any]) -> Point:
    where = f"{spec.path}: point {' '.join(f'{k}={v}' for k, v in axes.items())}"
    train = copy.deepcopy(spec.train)
    for axis, value in axes.items():
        train = _deep_merge(train, _axis_patch(axis, value, spec, axes))
    for override in spec.overrides:
        if override_matches(override, axes):
            train = _deep_merge(train, override.train)
    _resolve_length(train, spec, where)
    try:
        config = from_dict(TrainConfig, train)
        config.validate()
    except ConfigError as exc:
        raise SpecError(f"{where}: {exc}") from None
    resolved = to_dict(config)
    _absolute_paths(resolved)
    pid = point_id(resolved, spec.trainer)
    return Point(id=pid, axes=dict(axes), train=resolved, resources=spec.resources_for(axes),
                 run_dir=spec.sweep_dir / "points" / pid)


def expand(spec: SweepSpec) -> list[Point]:
    """Every grid combination, in the order the spec lists axes and values."""
    check_axes(spec)
    names = list(spec.grid)
    points = [resolve_point(spec, dict(zip(names, combo)))
              for combo in itertools.product(*(spec.grid[n] for n in names))]
    seen: dict[str, Point] = {}
    for point in points:
        if point.id in seen:
            raise SpecError(f"{spec.path}: points {seen[point.id].label} and {point.label} resolve to the same "
                            "training config; an axis has no effect (check overrides)")
        seen[point.id] = point
    return points
