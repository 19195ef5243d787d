"""`varscale demo`: a whole scaling study on one machine, through the same code paths as a cluster run.

Steps (each one is reused when its inputs have not changed, so an interrupted demo continues where it stopped):
  1. tokenizer: train the small multi-scale VQVAE on the embedded synthetic dataset
     (OUT/tokenizer-<hash of its config>/tokenizer.safetensors);
  2. token cache: encode the train and held-out splits once (OUT/tokens-<hash of tokenizer and data>/);
  3. sweep: the demo spec (sweeps/specs/demo-cpu.yaml) with those paths and the per-size budgets and learning
     rates of sweeps/demo_plan.py, submitted through the sweep layer (local executor, or SLURM with
     --executor slurm); finished points are never run twice;
  4. collect the table; 5. sample quality of every size (sweeps/demo_quality.py: synthetic-feature Frechet
     distance, precision, recall; Inception FID of the largest model where its weights are present);
  6. fits, figures and the HTML report; OUT/summary.json (sweeps/demo_summary.py) and the printed summary.
`--seed S` trains every size with another seed (initialisation, batch order, sampling) in the sweep
demo-cpu-seedS next to the first, on the same data and tokenizer: the check that the trend is not one seed's luck.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from sweeps.demo_plan import Budget, describe, plan_runs, spec_overrides

SPEC_TEMPLATE = Path(__file__).with_name("specs") / "demo-cpu.yaml"


@dataclass(frozen=True)
class DemoSize:
    """How much work the demo does: `full` for `make demo`, `quick` for the test of the same code path."""

    train_images: int
    val_images: int
    tokenizer_steps: int
    budget: Budget  # model sizes, steps and learning rates (sweeps/demo_plan.py)
    feature_net: dict  # FeatureNetConfig options of the quality metric's network (harness/evaluation/demo_features.py)
    quality_per_class: int  # samples per class and size for the quality metric
    n_boot: int


SIZES = {
    "full": DemoSize(train_images=8192, val_images=512, tokenizer_steps=400,
                     budget=Budget(depths=(1, 2, 3, 4, 5, 6, 7), base_steps=100, steps_power=0.15, batch_size=32,
                                   anchor_width=64, lr_at_anchor=7.5e-3, evals_per_run=12),
                     feature_net={"train_images": 4096, "steps": 600, "batch_size": 32},
                     quality_per_class=100, n_boot=1000),
    "quick": DemoSize(train_images=256, val_images=64, tokenizer_steps=30,
                      budget=Budget(depths=(1, 2, 3), base_steps=12, steps_power=0.0, batch_size=32,
                                    anchor_width=64, lr_at_anchor=7.5e-3, evals_per_run=2),
                      feature_net={"train_images": 256, "steps": 10, "batch_size": 32},
                      quality_per_class=3, n_boot=200),
}


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="a whole scaling study on this machine: data, tokenizer, sweep, fits, "
                                           "figures, samples, report (resumes when run again)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="working directory (default: runs/demo)")
    p.add_argument("--size", choices=sorted(SIZES), default="full",
                   help="full (make demo, about 9 min on 2 idle cores) or quick (about a minute; its test's settings)")
    p.add_argument("--seed", type=int, default=0,
                   help="training and sampling seed of every size (default 0); another seed runs a sweep of its own "
                        "on the same data and tokenizer, for checking that the law is not one seed's luck")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="run the sweep here (default) or on the SLURM cluster that answers to sinfo")
    p.add_argument("--inception-weights", help="Inception weights for the largest model's FID (default: cache)")
    p.set_defaults(func=cmd_demo)


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def step_banner(number: int, text: str) -> None:
    print(f"\n[{number}/6] {text}", flush=True)


def ensure_tokenizer(out: Path, size: DemoSize):
    from harness.config import DataConfig, TokenizerTrainConfig, load_json, to_dict
    from harness.tokenizer.train import train_tokenizer

    data = DataConfig(source="synthetic", resolution=32, num_classes=10, synthetic_train_size=size.train_images,
                      synthetic_val_size=size.val_images)
    cfg = TokenizerTrainConfig(data=data, total_steps=size.tokenizer_steps, batch_size=16, lr=1e-3,
                               ae_warmup_frac=0.25, log_every=max(1, size.tokenizer_steps // 6))
    folder = out / f"tokenizer-{config_hash(to_dict(cfg))}"
    if (folder / "summary.json").is_file() and (folder / "tokenizer.safetensors").is_file():
        summary = load_json(folder / "summary.json")
        print(f"reusing {folder} (same config)")
    else:
        summary = train_tokenizer(cfg, folder)  # resumes from its own checkpoint when interrupted
    val = summary["val"]
    per_scale = " / ".join(f"{100 * u:.0f}%" for u in val.get("codebook_usage_per_scale", []))
    print(f"tokenizer: held-out PSNR {val.get('rec_psnr_db', float('nan')):.1f} dB, codebook use per scale "
          f"{per_scale} ({100 * val.get('codebook_usage_all', float('nan')):.0f}% of {cfg.vocab_size} codes in all)"
          f"  ({folder / 'tokenizer.safetensors'})")
    return folder / "tokenizer.safetensors", summary, data


def ensure_token_cache(out: Path, tokenizer_path: Path, tokenizer_sha: str, data) -> Path:
    from harness.config import TokenizerRef, to_dict
    from harness.data.token_cache import encode_dataset
    from harness.tokenizer.storage import load_tokenizer

    folder = out / f"tokens-{config_hash({'tokenizer': tokenizer_sha, 'data': to_dict(data)})}"
    if (folder / "header.json").is_file():
        print(f"reusing {folder}")
        return folder
    if folder.exists():  # an interrupted encode leaves no header: start that step again
        shutil.rmtree(folder)
    vae, ref = load_tokenizer(TokenizerRef(path=str(tokenizer_path), sha256=tokenizer_sha), "cpu")
    return encode_dataset(vae, ref, data, folder, batch_size=128, device="cpu", progress=sys.stderr.isatty())


def sweep_name(seed: int) -> str:
    return "demo-cpu" if seed == 0 else f"demo-cpu-seed{seed}"


def write_spec(out: Path, size: DemoSize, tokenizer_path: Path, token_cache: Path, data, executor: str,
               seed: int) -> Path:
    from harness.config import to_dict
    from models.files import atomic_write_text

    spec = yaml.safe_load(SPEC_TEMPLATE.read_text())
    spec["name"] = sweep_name(seed)
    spec["executor"] = executor
    spec["output_root"] = str((out / "sweeps").resolve())
    # largest first: the longest job starts at once and the small ones fill the other cores around it
    spec["grid"] = {"depth": sorted(size.budget.depths, reverse=True), "seed": [seed]}
    # every size at once: on an idle machine the CPU-bound total is the same as one process per core, and the
    # largest model's run is not left as a long tail; on a shared machine it gets its share from the start
    spec["array_parallelism"] = len(size.budget.depths)
    train = spec["train"]
    train["tokenizer"] = {"path": str(tokenizer_path.resolve())}
    train["data"] = {**to_dict(data), "token_cache": str(token_cache.resolve())}
    train["batch_size"] = size.budget.batch_size
    train["eval_images"] = size.val_images
    spec["overrides"] = spec_overrides(plan_runs(size.budget))
    path = out / f"{spec['name']}.yaml"
    text = "# written by `varscale demo` from sweeps/specs/demo-cpu.yaml\n" + yaml.safe_dump(spec, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


def run_sweep(spec_path: Path):
    from sweeps.launch import submit
    from sweeps.spec import load_spec

    spec = load_spec(spec_path)
    report = submit(spec, wait=True)
    failed = [s for s in (report.final or []) if s.state != "COMPLETED"]
    if failed:
        lines = "\n  ".join(f"{s.point_id}: {s.state} {s.error or ''} (log: {s.log})" for s in failed)
        raise SystemExit(f"some sweep points did not finish:\n  {lines}\nrun `varscale demo` again to continue")
    return spec


def cmd_demo(args) -> int:
    import torch

    from sweeps.collect import collect_table, write_table
    from sweeps.demo_quality import evaluate_sizes
    from sweeps.demo_summary import print_summary, write_report, write_summary
    from sweeps.state import SweepState

    # one thread: the sweep runs one process per core, and on a shared machine a multi-threaded tokenizer
    # mostly spin-waits (measured: 30 tokenizer steps took 12 min with 2 threads on a loaded 2-core machine)
    torch.set_num_threads(1)
    size = SIZES[args.size]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    stage_s: dict[str, float] = {}

    def stage_done(name: str, since: float) -> float:
        now = time.monotonic()
        stage_s[name] = round(now - since, 2)
        return now

    step_banner(1, "synthetic dataset and tokenizer")
    tokenizer_path, tokenizer_summary, data = ensure_tokenizer(out, size)
    t = stage_done("tokenizer", start)
    step_banner(2, "token cache")
    token_cache = ensure_token_cache(out, tokenizer_path, tokenizer_summary["sha256"], data)
    t = stage_done("token_cache", t)
    tokens_per_image = sum(pn * pn for pn in tokenizer_summary["config"]["patch_nums"])
    runs = plan_runs(size.budget)
    step_banner(3, f"sweep of {len(runs)} model sizes, seed {args.seed} ({args.executor} executor)")
    print(describe(runs, size.budget.batch_size, tokens_per_image), flush=True)
    spec = run_sweep(write_spec(out, size, tokenizer_path, token_cache, data, args.executor, args.seed))
    t = stage_done("sweep", t)
    step_banner(4, "collect the table")
    table = collect_table(SweepState.load(spec.sweep_dir))
    write_table(table, spec.sweep_dir / "table.csv")
    t = stage_done("collect", t)
    step_banner(5, "sample quality of every size")
    quality = evaluate_sizes(table, out, size, args.seed, tokenizer_path, tokenizer_summary["sha256"],
                             args.inception_weights)
    t = stage_done("quality", t)
    step_banner(6, "fits, figures, report")
    report = write_report(spec.sweep_dir, size.n_boot, quality)
    stage_done("report", t)
    stage_s["total"] = round(time.monotonic() - start, 2)
    summary = write_summary(out, spec.sweep_dir, table, report, tokenizer_summary, quality, stage_s, args.seed)
    print_summary(summary)
    return 0
