"""``varscale train``, ``varscale tokenizer train``, ``varscale tokenize`` and ``varscale data``.

Options of a config are given as a JSON file (``--config``) and/or ``--set name=value`` (nested names with dots,
values parsed as JSON: ``--set data.resolution=32 --set model=VAR-mini-d4``). Unknown names and invalid values
are errors naming the option and what is allowed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a VAR (resumes when RUN_DIR already holds a checkpoint)",
                              description="Train a VAR in RUN_DIR. Running the same command again resumes.")
    p.add_argument("--run-dir", required=True, type=Path, help="run directory (config.json is written there)")
    p.add_argument("--config", type=Path, help="JSON file with TrainConfig options")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one option, e.g. --set total_steps=2000 --set data.num_classes=10")
    p.set_defaults(func=_cmd_train)

    tok = subparsers.add_parser("tokenizer", help="tokenizer (VQVAE) training")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    t = tok_sub.add_parser("train", help="train a multi-scale VQVAE on a dataset (resumes in --out)")
    t.add_argument("--out", required=True, type=Path, help="output directory (tokenizer.safetensors, summary.json)")
    t.add_argument("--config", type=Path, help="JSON file with TokenizerTrainConfig options")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    t.set_defaults(func=_cmd_tokenizer_train)

    c = subparsers.add_parser("tokenize", help="encode a dataset once into a token cache for training")
    c.add_argument("--tokenizer", required=True, type=Path, help="tokenizer file (.safetensors or .pth)")
    c.add_argument("--out", required=True, type=Path, help="new cache directory")
    c.add_argument("--config", type=Path, help="JSON file with DataConfig options")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="data option, e.g. --set source=imagefolder --set root=/data/imagenet")
    c.add_argument("--kwargs", help="VQVAE constructor kwargs as JSON (needed for official .pth files)")
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    c.set_defaults(func=_cmd_tokenize)

    d = subparsers.add_parser("data", help="datasets: write the synthetic set, check an image folder")
    d_sub = d.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    s = d_sub.add_parser("synth", help="write the synthetic dataset as an ImageFolder (train/ and val/)")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--classes", type=int, default=10)
    s.add_argument("--train-size", type=int, default=4096)
    s.add_argument("--val-size", type=int, default=512)
    s.add_argument("--resolution", type=int, default=32, help="training resolution; files are 1.125x larger")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_data_synth)
    k = d_sub.add_parser("check", help="open every image of ROOT/train and ROOT/val; list unreadable files")
    k.add_argument("root", type=Path)
    k.set_defaults(func=_cmd_data_check)


def _config_dict(config_file: Path | None, overrides: list[str]) -> dict:
    from harness.config import ConfigError, load_json, parse_override

    raw = load_json(config_file) if config_file else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_file} must hold a JSON object")
    for assignment in overrides:
        parse_override(raw, assignment)
    return raw


def _usage_errors(func):
    def wrapper(args):
        from harness.cli.main import UsageError
        from harness.config import ConfigError
        from harness.data.images import DatasetError

        try:
            return func(args)
        except (ConfigError, DatasetError) as exc:
            raise UsageError(str(exc)) from None
    return wrapper


@_usage_errors
def _cmd_train(args: argparse.Namespace) -> int:
    import contextlib
    import os
    import signal
    import sys

    from harness.training.control import TrainControl
    from harness.training.loop import run_lock, train_run
    from harness.training.step import NonFiniteLossError

    _settle_config(args, write=False)  # a bad config is refused before anything is created
    control = TrainControl()
    # SIGTERM (kill, a scheduler's stop): save at the next step boundary and record "interrupted"; SIGINT raises
    # KeyboardInterrupt, which records "interrupted" at the last checkpoint without waiting for a save
    previous = signal.signal(signal.SIGTERM, lambda *_: control.request_checkpoint(stop=True, reason="interrupted"))
    # the lock covers config.json too: a second command must not rewrite the config of a run that is training
    # (under torchrun every rank runs this command; rank 0 locks, as in train_run)
    locked = run_lock(args.run_dir) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    try:
        with locked:
            _settle_config(args, write=True)
            result = train_run(args.run_dir, control)
    except NonFiniteLossError as exc:
        print(f"varscale train: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result["state"] == "interrupted":
        print(f"varscale train: stopped by SIGTERM at step {result['step']}, checkpoint saved; run the same command "
              "to continue", file=sys.stderr)
        return 128 + signal.SIGTERM
    final = result.get("final") or {}
    print(json.dumps({"state": result["state"], "step": result["step"], "val_loss_mean": final.get("loss_mean"),
                      "val_err_mean": final.get("err_mean"), "run_dir": result["run_dir"]}))
    return 0


def _settle_config(args: argparse.Namespace, write: bool) -> None:
    """A new run's config.json from --config/--set (written when ``write``), or the check that options given for an
    existing run match the config it was started with."""
    from harness.config import (
        ConfigError,
        TrainConfig,
        first_difference,
        from_dict,
        to_dict,
    )
    from harness.training.loop import DERIVED_BLOCKS, read_run_config
    from models.files import save_json

    config_path = args.run_dir / "config.json"
    if config_path.exists():
        if args.config is not None or args.overrides:
            existing, _ = read_run_config(args.run_dir)
            wanted = _absolute_paths(from_dict(TrainConfig, {**to_dict(existing), **_merge(to_dict(existing), args)}))
            wanted.validate()
            if to_dict(wanted) != to_dict(existing):
                diff = first_difference(to_dict(existing), to_dict(wanted), wanted_word="asked")
                raise ConfigError(f"{config_path} already holds a different config ({diff}); use a new --run-dir "
                                  f"or run without --config/--set to resume")
        return
    raw = {k: v for k, v in _config_dict(args.config, args.overrides).items() if k not in DERIVED_BLOCKS}
    cfg = _absolute_paths(from_dict(TrainConfig, raw))
    cfg.validate()
    if write:
        save_json(config_path, to_dict(cfg))


def _absolute_paths(cfg):
    """Paths given on the command line are relative to the caller's directory; the run must not depend on it."""
    import os

    from harness.config import PATH_OPTIONS

    for group, name in PATH_OPTIONS:
        options = getattr(cfg, group)
        if getattr(options, name):
            setattr(options, name, os.path.abspath(getattr(options, name)))
    return cfg


def _merge(base: dict, args: argparse.Namespace) -> dict:
    from harness.config import load_json, parse_override

    merged = json.loads(json.dumps(base))
    if args.config:
        file_cfg = load_json(args.config)
        for key, value in file_cfg.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
    for assignment in args.overrides:
        parse_override(merged, assignment)
    return {k: v for k, v in merged.items() if k not in ("model", "protocol")}


@_usage_errors
def _cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from harness.config import TokenizerTrainConfig, from_dict, load_json
    from harness.tokenizer.train import train_tokenizer

    raw = _config_dict(args.config, args.overrides)
    saved = args.out / "config.json"
    if saved.exists() and not raw:
        raw = load_json(saved)  # resume with the stored config
    cfg = from_dict(TokenizerTrainConfig, raw)
    cfg.validate()
    summary = train_tokenizer(cfg, args.out)
    print(json.dumps({"tokenizer": str(args.out / "tokenizer.safetensors"), "sha256": summary["sha256"],
                      **summary["val"]}))
    return 0


@_usage_errors
def _cmd_tokenize(args: argparse.Namespace) -> int:
    from harness.cli.main import UsageError
    from harness.config import DataConfig, TokenizerRef, from_dict
    from harness.data.token_cache import encode_dataset
    from harness.distributed import resolve_device
    from harness.tokenizer.storage import load_tokenizer

    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    data_cfg = from_dict(DataConfig, _config_dict(args.config, args.overrides), prefix="data.")
    data_cfg.validate()
    if data_cfg.root:
        import os

        data_cfg.root = os.path.abspath(data_cfg.root)
    device = resolve_device(args.device)
    kwargs = json.loads(args.kwargs) if args.kwargs else None
    vae, ref = load_tokenizer(TokenizerRef(path=str(args.tokenizer), kwargs=kwargs), device)
    import sys

    out = encode_dataset(vae, ref, data_cfg, args.out, batch_size=args.batch_size, device=device,
                         progress=sys.stderr.isatty())
    print(json.dumps({"token_cache": str(out)}))
    return 0


@_usage_errors
def _cmd_data_synth(args: argparse.Namespace) -> int:
    import sys

    from harness.cli.main import UsageError
    from harness.data.synthetic import write_imagefolder

    for name in ("classes", "train_size", "val_size", "resolution"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    out = write_imagefolder(args.out, args.classes, args.train_size, args.val_size, args.resolution, args.seed,
                            progress=sys.stderr.isatty())
    print(json.dumps({"imagefolder": str(out), "train": args.train_size, "val": args.val_size,
                      "classes": args.classes, "set": f"data.source=imagefolder data.root={out}"}))
    return 0


@_usage_errors
def _cmd_data_check(args: argparse.Namespace) -> int:
    from harness.data.images import check_image_folder

    report = check_image_folder(args.root)
    print(json.dumps(report, indent=2))
    bad = sum(len(s["unreadable"]) for s in report["splits"].values())
    return 1 if bad else 0
