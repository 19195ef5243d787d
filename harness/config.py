"""Typed configs of the training harness, saved as JSON next to the results they produced.

``from_dict`` is strict on purpose: a misspelt option in a sweep spec would otherwise silently train the default,
so an unknown field, a wrong type or a value outside its allowed set is an error that names the option and what
was expected.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Allowed values of the string options; validated in ``validate``.
DATA_SOURCES = ("synthetic", "imagefolder")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("lin0",)
# TrainConfig options naming files or folders, as (group, option): they are stored absolute, so that a run means
# the same files wherever its job starts.
PATH_OPTIONS = (("data", "root"), ("data", "token_cache"), ("tokenizer", "path"))


class ConfigError(ValueError):
    """An invalid config value; the message names the option and what is allowed."""


@dataclass
class DataConfig:
    source: str = "synthetic"  # one of DATA_SOURCES
    root: str | None = None  # imagefolder: directory holding train/<class>/ and val/<class>/
    resolution: int = 32  # square crop side fed to the tokenizer
    num_classes: int = 10  # synthetic: classes generated; imagefolder: must equal the folder count
    synthetic_seed: int = 0
    synthetic_train_size: int = 4096
    synthetic_val_size: int = 512
    token_cache: str | None = None  # directory written by ``varscale tokenize``; training then reads ids
    workers: int = 0  # DataLoader worker processes

    def validate(self, prefix: str = "data") -> None:
        _check_choice(f"{prefix}.source", self.source, DATA_SOURCES)
        if self.source == "imagefolder" and not self.root:
            raise ConfigError(f"{prefix}.root is required when {prefix}.source is 'imagefolder'")
        _check_positive(f"{prefix}.resolution", self.resolution)
        _check_positive(f"{prefix}.num_classes", self.num_classes)
        _check_positive(f"{prefix}.synthetic_train_size", self.synthetic_train_size)
        _check_positive(f"{prefix}.synthetic_val_size", self.synthetic_val_size)
        if self.workers < 0:
            raise ConfigError(f"{prefix}.workers must be >= 0, got {self.workers}")


@dataclass
class TokenizerRef:
    """Which frozen VQVAE turns images into tokens; ``kwargs`` rebuilds it (read from the file when omitted)."""

    path: str = ""
    sha256: str | None = None  # checked against the file when given
    kwargs: dict[str, Any] | None = None  # VQVAE constructor kwargs

    def validate(self, prefix: str = "tokenizer") -> None:
        if not self.path:
            raise ConfigError(f"{prefix}.path is required: a tokenizer file (varscale tokenizer train writes one)")


@dataclass
class TrainConfig:
    """One VAR training run. Defaults follow the official recipe where it applies (docs/references.md §2.3)."""

    tokenizer: TokenizerRef = field(default_factory=TokenizerRef)
    data: DataConfig = field(default_factory=DataConfig)
    # model: a preset of models.registry (VAR-d<N>: width 64N; VAR-mini-d<N>: width 32N; N heads)
    model_preset: str = "VAR-mini-d2"
    width_per_depth: int | None = None  # None: the preset's
    shared_aln: bool | None = None  # None: the preset's
    attn_l2_norm: bool = True
    drop_path_rate: float | None = None  # None: the preset's (official 0.1*depth/24)
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    init_head: float = 0.02
    init_std: float = -1.0
    cond_drop_rate: float = 0.1
    # optimisation
    seed: int = 0
    total_steps: int = 1000
    batch_size: int = 64  # global images per optimizer step (all ranks and accumulation steps together)
    grad_accum: int = 1
    base_lr: float = 1e-4  # peak lr = base_lr * batch_size / 256 (official tblr)
    lr_schedule: str = "lin0"
    warmup_frac: float = 0.02  # official: ep/50 warmup epochs
    lr_end_ratio: float = 0.01  # official wpe: final lr = lr_end_ratio * peak
    weight_decay: float = 0.05
    weight_decay_end: float | None = None  # None: constant (official twde default)
    grad_clip: float = 2.0
    label_smoothing: float = 0.0
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    device: str = "auto"
    compile: bool = False  # torch.compile the VAR forward and loss (+ their backward); pays off only for long runs
    # metrics and checkpoints
    eval_every: int = 100  # steps between metric records (train and held-out); 0: only at the end
    eval_images: int = 512  # held-out images per evaluation (capped at the split size)
    eval_batch_size: int = 64
    checkpoint_every_steps: int = 500  # 0: off
    checkpoint_every_minutes: float = 30.0  # 0: off
    peak_flops: float | None = None  # per device, for MFU; None: a known GPU's bf16 peak, null on CPU

    def validate(self) -> None:
        self.tokenizer.validate()
        self.data.validate()
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("total_steps", "batch_size", "grad_accum", "eval_images", "eval_batch_size"):
            _check_positive(name, getattr(self, name))
        if self.width_per_depth is not None:
            _check_positive("width_per_depth", self.width_per_depth)
        from models.registry import var_spec

        try:
            var_spec(self.model_preset)
        except ValueError as exc:
            raise ConfigError(f"model_preset: {exc}") from None
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum})")
        for name in ("base_lr", "weight_decay", "grad_clip", "init_adaln", "init_adaln_gamma", "init_head"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("cond_drop_rate", "label_smoothing", "warmup_frac", "lr_end_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
        if self.drop_path_rate is not None and not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate must be in [0, 1) or null, got {self.drop_path_rate!r}")
        if self.eval_every < 0 or self.checkpoint_every_steps < 0 or self.checkpoint_every_minutes < 0:
            raise ConfigError("eval_every, checkpoint_every_steps and checkpoint_every_minutes must be >= 0")

    @property
    def peak_lr(self) -> float:
        return self.base_lr * self.batch_size / 256


@dataclass
class TokenizerTrainConfig:
    """Training of our multi-scale VQVAE (the official release ships none)."""

    data: DataConfig = field(default_factory=DataConfig)
    vocab_size: int = 256
    z_channels: int = 16
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    share_quant_resi: int = 4
    patch_nums: tuple[int, ...] = (1, 2, 3, 4)
    beta: float = 0.25  # commitment weight inside the official VQ loss
    vq_weight: float = 1.0
    seed: int = 0
    total_steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: float = 2.0
    dead_code_every: int = 50  # steps between dead-code re-initialisations; 0: off
    ae_warmup_frac: float = 0.1  # first steps train encoder/decoder without quantization, then codes start on data
    log_every: int = 50
    eval_images: int = 256
    device: str = "auto"

    def validate(self) -> None:
        self.data.validate()
        _check_choice("device", self.device, DEVICES)
        for name in ("vocab_size", "z_channels", "ch", "total_steps", "batch_size", "log_every", "eval_images"):
            _check_positive(name, getattr(self, name))
        if self.ch % 32:
            raise ConfigError(f"ch must be a multiple of 32 (GroupNorm has 32 groups), got {self.ch}")
        if not self.ch_mult or any(m <= 0 for m in self.ch_mult):
            raise ConfigError(f"ch_mult must be a non-empty list of positive ints, got {list(self.ch_mult)}")
        if list(self.patch_nums) != sorted(set(self.patch_nums)) or self.patch_nums[0] < 1:
            raise ConfigError(f"patch_nums must be strictly increasing positive ints, got {list(self.patch_nums)}")
        latent = self.data.resolution // 2 ** (len(self.ch_mult) - 1)
        if latent * 2 ** (len(self.ch_mult) - 1) != self.data.resolution or latent != self.patch_nums[-1]:
            raise ConfigError(
                f"data.resolution ({self.data.resolution}) / 2**(len(ch_mult)-1) must equal the last patch_num "
                f"({self.patch_nums[-1]}); with ch_mult={list(self.ch_mult)} use resolution "
                f"{self.patch_nums[-1] * 2 ** (len(self.ch_mult) - 1)}")
        if self.dead_code_every < 0:
            raise ConfigError(f"dead_code_every must be >= 0, got {self.dead_code_every}")
        if not 0.0 <= self.ae_warmup_frac < 1.0:
            raise ConfigError(f"ae_warmup_frac must be in [0, 1), got {self.ae_warmup_frac}")

    @property
    def ae_warmup_steps(self) -> int:
        return round(self.ae_warmup_frac * self.total_steps)

    def vqvae_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "z_channels": self.z_channels, "ch": self.ch,
                "ch_mult": list(self.ch_mult), "share_quant_resi": self.share_quant_resi,
                "v_patch_nums": list(self.patch_nums), "beta": self.beta}


# ---------------------------------------------------------------------------------------------------------------
# dict / JSON conversion


def to_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists, a plain JSON tree


def as_current(cls: type, stored: dict[str, Any]) -> dict[str, Any]:
    """A config that an earlier varscale stored, as this version reads it: fields added since take their defaults
    (a new field defaults to the behaviour before it), so an upgrade alone never makes a stored run look changed.
    A field this version no longer has raises ConfigError naming it."""
    return to_dict(from_dict(cls, stored))


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError naming the option."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown option {prefix}{unknown[0]!s}; allowed options: {', '.join(sorted(known))}")
    values = {}
    for name, raw in data.items():
        values[name] = _coerce(hints[name], raw, f"{prefix}{name}")
    return cls(**values)


def _coerce(hint: Any, raw: Any, name: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, raw, prefix=name + ".")
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], raw, name)
    if hint is Any:
        return raw
    if origin is tuple:
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {raw!r}")
        return tuple(_coerce(args[0], v, name) for v in raw)
    if origin is dict:
        if not isinstance(raw, dict):
            raise ConfigError(f"{name} must be a JSON object, got {raw!r}")
        return dict(raw)
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{name} must be true or false, got {raw!r}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{name} must be an integer, got {raw!r}")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(f"{name} must be a number, got {raw!r}")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{name} must be a string, got {raw!r}")
        return raw
    raise ConfigError(f"{name}: unsupported type {hint}")


def parse_override(config_dict: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b=value`` (value parsed as JSON, else taken as a string) to a nested config dict in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like name=value (e.g. data.resolution=64)")
    key, text = assignment.split("=", 1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    node = config_dict
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part} is not a group of options")
    node[parts[-1]] = value


def first_difference(there: Any, wanted: Any, wanted_word: str = "now", prefix: str = "") -> str:
    """The first place (dotted key, in sorted key order) where two JSON trees differ, as
    ``"a.b: 1 there, 2 <wanted_word>"``; ``""`` when they are equal. Used to say why a stored config refuses a resume."""
    if isinstance(there, dict) and isinstance(wanted, dict):
        for key in sorted(set(there) | set(wanted)):
            if there.get(key) != wanted.get(key):
                return first_difference(there.get(key), wanted.get(key), wanted_word, f"{prefix}{key}.")
        return ""
    if there == wanted:
        return ""
    return f"{prefix.rstrip('.')}: {there!r} there, {wanted!r} {wanted_word}"


def load_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; allowed values: {', '.join(map(repr, allowed))}")


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
