"""``varscale sample``: argument parsing and the shard/merge flow (the protocol lives in harness.sampling.loop)."""
from __future__ import annotations

import argparse
import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample", help="class-balanced samples for FID (VAR protocol by default), sharded and resumable",
        description="Generate N class-balanced samples into an ADM-format .npz (rows in a recorded random "
                    "permutation) with a JSON sidecar. Default settings are VAR's FID protocol: 50 per class, "
                    "cfg 1.5 (ramped), top-k 900, top-p 0.96, more_smooth off. Shard with --shard/--num-shards "
                    "(e.g. a SLURM array) or under torchrun; rerunning the same command redoes only missing "
                    "batches; the shard that completes the set merges.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", "--run-dir", dest="run",
                     help="a finished varscale run directory (config.json + final/model.safetensors); spell it "
                          "--run-dir under torchrun, whose own --run-path makes --run ambiguous")
    src.add_argument("--model", help="an official preset, e.g. VAR-d16 (weights from the cache or the paths below)")
    p.add_argument("--var-checkpoint", help="VAR weights (.pth/.safetensors) for --model")
    p.add_argument("--vae-checkpoint", help="tokenizer weights for --model (default: released vae_ch160v4096z32)")
    p.add_argument("--out", help="output .npz (default with --run: RUN_DIR/samples/<settings>.npz)")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--num-samples", type=int, help="total samples (default: per-class x number of classes)")
    p.add_argument("--batch-size", type=int, default=50, help="part of the protocol: it changes the samples")
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.96)
    p.add_argument("--more-smooth", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the per-scale sampling step (same ids; compiling costs minutes on a CPU)")
    p.add_argument("--seed", type=int, default=0, help="master seed; every batch derives its own seed from it")
    p.add_argument("--rounding", choices=("round", "trunc"), default="round")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--cpu-threads", type=int, default=1,
                   help="torch threads when sampling on CPU; part of the protocol, since the decoder's float sums "
                        "depend on it (default 1)")
    p.add_argument("--shard", type=int, help="this shard's index (default: RANK under torchrun, else 0)")
    p.add_argument("--num-shards", type=int, help="number of shards (default: WORLD_SIZE under torchrun, else 1)")
    p.add_argument("--png", action="store_true", help="also write <out>_png/{row:06d}.png in row order")
    p.add_argument("--no-merge", action="store_true", help="only make this shard's batches")
    p.add_argument("--merge-only", action="store_true", help="assemble --out from its finished batches")
    job = p.add_argument_group("submitting the shards as jobs (submitit)")
    job.add_argument("--submit", choices=("slurm", "local"),
                     help="submit --num-shards jobs (a SLURM array, or local processes) instead of sampling here")
    job.add_argument("--wait", action="store_true", help="with --submit: wait for the jobs and the merged file")
    job.add_argument("--timeout-min", type=int, default=240)
    job.add_argument("--gpus-per-node", type=int, default=0)
    job.add_argument("--cpus-per-task", type=int, default=4)
    job.add_argument("--partition", help="SLURM partition")
    job.add_argument("--jobs-dir", help="submitit logs (default: <out>.jobs)")
    p.set_defaults(func=_cmd_sample)


def _default_out(args) -> str:
    from pathlib import Path

    if not args.run:
        from harness.cli.main import UsageError

        raise UsageError("--out is required with --model (e.g. --out samples/var_d16.npz)")
    n = args.num_samples or "balanced"
    tag = f"cfg{args.cfg:g}-k{args.top_k}-p{args.top_p:g}-n{n}-pc{args.per_class}-s{args.seed}-{args.rounding}"
    return str(Path(args.run) / "samples" / f"{tag}.npz")


def _cmd_sample(args: argparse.Namespace) -> int:
    from harness.cli.main import UsageError
    from harness.config import ConfigError
    from harness.sampling.loop import (
        SampleDir,
        SamplingError,
        SamplingProtocol,
        protocol_header,
        run_shard,
    )
    from harness.sampling.merge import merge
    from models.checkpoint import CheckpointError

    out = SampleDir(args.out or _default_out(args))
    try:
        if args.merge_only:
            print(merge(out, png=args.png))
            return 0
        if args.submit:
            return _submit(args, out)
        if not (args.run or args.model):
            raise UsageError("give the model: --run RUN_DIR or --model VAR-d16 (or --merge-only)")
        env, shard, num_shards = _shard_setup(args)
        from harness.distributed import default_device

        device = str(env.device) if env else (args.device or default_device())   # a rank uses its own GPU
        var, info = _load(args, device)
        var.compile_sampling_step(args.compile)
        protocol = SamplingProtocol(num_classes=var.num_classes, per_class=args.per_class,
                                    num_samples=args.num_samples, batch_size=args.batch_size, cfg=args.cfg,
                                    top_k=args.top_k, top_p=args.top_p, more_smooth=args.more_smooth,
                                    master_seed=args.seed, rounding=args.rounding, precision=args.precision,
                                    device_type=_device_type(device), cpu_threads=args.cpu_threads)
        from harness.sampling.load import make_generate

        generate = make_generate(var, protocol, device)
        out.claim(protocol_header(protocol, info))
        made = run_shard(out, protocol, generate, shard, num_shards)
        print(f"shard {shard}/{num_shards}: made {len(made)} batches into {out.parts}", file=sys.stderr)
        if env is not None and env.distributed:
            from harness.distributed import barrier, shutdown

            barrier(env)   # every rank's batches are on disk; rank 0 merges
            shutdown(env)
            if not env.is_main:
                return 0
        complete = len(out.done(protocol.num_batches)) == protocol.num_batches
        if not args.no_merge and complete:
            print(merge(out, png=args.png))
        elif not complete:
            print(f"{protocol.num_batches - len(out.done(protocol.num_batches))} batches still missing (other "
                  f"shards); the shard that completes the set merges, or run with --merge-only", file=sys.stderr)
        return 0
    except (SamplingError, CheckpointError, ConfigError, ValueError) as exc:
        print(f"varscale sample: error: {exc}", file=sys.stderr)
        return 1


def _shard_setup(args):
    from harness.cli.main import UsageError

    if args.shard is not None or args.num_shards is not None:
        shard, num_shards = args.shard or 0, args.num_shards or 1
        if not 0 <= shard < num_shards:
            raise UsageError(f"--shard {shard} must be in [0, --num-shards {num_shards})")
        return None, shard, num_shards
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:   # torchrun: one shard per rank, rank 0 merges
        from harness.distributed import init_from_env

        env = init_from_env((args.device or "auto").split(":")[0])   # the rank picks its own cuda:LOCAL_RANK
        return env, env.rank, env.world_size
    return None, 0, 1


def _device_type(device: str) -> str:
    import torch

    return torch.device(device).type


def _load(args, device: str):
    from harness.sampling.load import load_preset_model, load_run_model

    if args.run:
        return load_run_model(args.run, device)
    return load_preset_model(args.model, args.vae_checkpoint, args.var_checkpoint, device)


def _forward_argv(args, out) -> list[str]:
    """The sampling options of this command, for the shard jobs."""
    argv = ["sample", "--out", str(out.npz.resolve())]
    argv += ["--run", args.run] if args.run else ["--model", args.model]
    for flag, value in (("--var-checkpoint", args.var_checkpoint), ("--vae-checkpoint", args.vae_checkpoint),
                        ("--per-class", args.per_class), ("--num-samples", args.num_samples),
                        ("--batch-size", args.batch_size), ("--cfg", args.cfg), ("--top-k", args.top_k),
                        ("--top-p", args.top_p), ("--seed", args.seed), ("--rounding", args.rounding),
                        ("--precision", args.precision), ("--device", args.device)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + [f for f, on in (("--more-smooth", args.more_smooth), ("--png", args.png),
                                   ("--compile", args.compile)) if on]


def _submit(args, out) -> int:
    from pathlib import Path

    from harness.cli.main import UsageError
    from harness.sampling.submit import SubmitError, submit_shards

    if not (args.run or args.model):
        raise UsageError("give the model: --run RUN_DIR or --model VAR-d16")
    num_shards = args.num_shards or 1
    if args.shard is not None:
        raise UsageError("--shard is chosen per job with --submit; give only --num-shards")
    folder = Path(args.jobs_dir) if args.jobs_dir else out.npz.with_name(out.npz.name + ".jobs")
    try:
        jobs = submit_shards(_forward_argv(args, out), num_shards, args.submit, folder, args.timeout_min,
                             args.gpus_per_node, args.cpus_per_task, args.partition)
    except SubmitError as exc:
        print(f"varscale sample: error: {exc}", file=sys.stderr)
        return 1
    print(f"submitted {len(jobs)} shard jobs ({args.submit}): {', '.join(j.job_id for j in jobs)}; logs in {folder}",
          file=sys.stderr)
    if not args.wait:
        return 0
    failed = []
    for job in jobs:
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - report every shard
            failed.append(f"{job.job_id}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}")
    if failed:
        print("varscale sample: shard jobs failed (resubmit the same command to redo their batches):\n  "
              + "\n  ".join(failed), file=sys.stderr)
        return 1
    if not out.npz.is_file():
        print(f"varscale sample: all jobs finished but {out.npz} is missing; run with --merge-only", file=sys.stderr)
        return 1
    print(out.npz)
    return 0
