"""Options shared by the quick-look commands ``varscale show`` and ``varscale edit``: the model source (a run or
a released preset, loaded by harness.sampling.load as ``varscale sample`` does) and its sampling options."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_model_and_sampling_options(p: argparse.ArgumentParser, count_help: str) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a finished varscale run directory (config.json + final/model.safetensors)")
    src.add_argument("--model", help="an official preset, e.g. VAR-d16 (weights from the cache or the paths below)")
    p.add_argument("--var-checkpoint", help="VAR weights (.pth/.safetensors) for --model")
    p.add_argument("--vae-checkpoint", help="tokenizer weights for --model (default: released vae_ch160v4096z32)")
    p.add_argument("--out", required=True, help="the grid PNG; its settings are written beside it as <out>.json")
    p.add_argument("--count", type=int, default=4, help=count_help)
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--top-k", type=int, default=900, help="must not exceed the model's vocabulary (0 disables)")
    p.add_argument("--top-p", type=float, default=0.96)
    p.add_argument("--more-smooth", action="store_true", help="Gumbel-softmax smoothing (the release's demo look)")
    p.add_argument("--seed", type=int, default=0, help="the model generator's seed: the same seed, the same grid")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available; GPU samples differ)")
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads on CPU (the pixels depend on it)")


def check_out(args) -> Path:
    from harness.cli.main import UsageError

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out} must end in .png")
    if args.count < 1:
        raise UsageError(f"--count must be at least 1; got {args.count}")
    return out


def load_model(args):
    """(var, model_info) on the requested device."""
    from harness.distributed import default_device
    from harness.sampling.load import load_preset_model, load_run_model

    args.device = args.device or default_device()   # the sidecar records the device actually used
    if args.run:
        return load_run_model(args.run, args.device)
    return load_preset_model(args.model, args.vae_checkpoint, args.var_checkpoint, args.device)


def sampling_record(args) -> dict:
    return {"cfg": args.cfg, "top_k": args.top_k, "top_p": args.top_p, "more_smooth": args.more_smooth,
            "seed": args.seed, "count": args.count, "device": args.device, "cpu_threads": args.cpu_threads}


def write_sidecar(out: Path, command: str, args, model_info: dict, extra: dict) -> Path:
    """``<out>.json``: the exact command settings, the model (with checkpoint hashes) and what else produced it."""
    from models.files import save_json, sha256_file, utc_now_iso

    record = {"command": command, "png": out.name, "png_sha256": sha256_file(out), "created": utc_now_iso(),
              "sampling": sampling_record(args), "model": model_info, **extra}
    return save_json(out.with_name(out.name + ".json"), record)
