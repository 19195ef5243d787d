"""`varscale demo`: a whole scaling study on one machine, through the same code paths as a cluster run.

Steps (each one is reused when its inputs have not changed, so an interrupted demo continues where it stopped):
  1. tokenizer: train the small multi-scale VQVAE on the embedded synthetic dataset
     (OUT/tokenizer-<hash of its config>/tokenizer.safetensors);
  2. token cache: encode the train and held-out splits once (OUT/tokens-<hash of tokenizer and data>/);
  3. sweep: the demo spec (sweeps/specs/demo-cpu.yaml) with those paths, submitted through the sweep layer
     (local executor, or SLURM with --executor slurm); finished points are never run twice;
  4. fits and figures (analysis), 5. a sample grid from the largest model, and an evaluation of a small sample
     set when Inception weights are present, 6. the HTML report, whose path and summary are printed.
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

SPEC_TEMPLATE = Path(__file__).with_name("specs") / "demo-cpu.yaml"


@dataclass(frozen=True)
class DemoSize:
    """How much work the demo does: `full` for `make demo`, `quick` for the test of the same code path."""

    train_images: int
    val_images: int
    tokenizer_steps: int
    depths: tuple[int, ...]
    steps: int
    eval_every: int
    grid_per_class: int
    eval_samples_per_class: int
    n_boot: int
    base_lr: float  # peak lr = base_lr * batch / 256; small models on a few hundred steps want a large one


SIZES = {
    "full": DemoSize(train_images=4096, val_images=512, tokenizer_steps=300, depths=(1, 2, 3, 4, 5), steps=400,
                     eval_every=50, grid_per_class=8, eval_samples_per_class=50, n_boot=1000,
                     base_lr=0.06),
    "quick": DemoSize(train_images=256, val_images=64, tokenizer_steps=30, depths=(1, 2, 3), steps=12,
                      eval_every=6, grid_per_class=2, eval_samples_per_class=4, n_boot=200,
                      base_lr=0.06),
}


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="a whole scaling study on this machine: data, tokenizer, sweep, fits, "
                                           "figures, samples, report (resumes when run again)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="working directory (default: runs/demo)")
    p.add_argument("--size", choices=sorted(SIZES), default="full",
                   help="full (make demo, about 4 min on 2 cores) or quick (under a minute; the settings of its test)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="run the sweep here (default) or on the SLURM cluster that answers to sinfo")
    p.add_argument("--inception-weights", help="Inception weights for the sample evaluation (default: cache)")
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
    print(f"tokenizer: held-out reconstruction MSE {val.get('rec_mse', float('nan')):.4f}, codebook usage "
          f"{100 * val.get('codebook_usage_all', float('nan')):.0f}%  ({folder / 'tokenizer.safetensors'})")
    return folder / "tokenizer.safetensors", summary["sha256"], data


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


def write_spec(out: Path, size: DemoSize, tokenizer_path: Path, token_cache: Path, data, executor: str) -> Path:
    from harness.config import to_dict
    from models.files import atomic_write_text

    spec = yaml.safe_load(SPEC_TEMPLATE.read_text())
    spec["executor"] = executor
    spec["output_root"] = str((out / "sweeps").resolve())
    spec["grid"]["depth"] = list(size.depths)
    train = spec["train"]
    train["tokenizer"] = {"path": str(tokenizer_path.resolve())}
    train["data"] = {**to_dict(data), "token_cache": str(token_cache.resolve())}
    train["total_steps"] = size.steps
    train["base_lr"] = size.base_lr
    train["eval_every"] = size.eval_every
    train["eval_images"] = size.val_images
    path = out / "demo-sweep.yaml"
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


def largest_run(table) -> Path:
    last = table.sort_values("params_total").iloc[-1]
    return Path(last["run_dir"])


def sample_command(run_dir: Path, out: Path, per_class: int, seed: int) -> list[str]:
    # the tokenizer's vocabulary is smaller than the protocol's top-k 900: filter by top-p alone
    return ["sample", "--run", str(run_dir), "--per-class", str(per_class), "--batch-size", "20", "--top-k", "0",
            "--seed", str(seed), "--device", "cpu", "--out", str(out)]


def sample_and_evaluate(run_dir: Path, size: DemoSize, val_images: int, inception_weights: str | None) -> dict:
    from harness.cli.main import main as varscale

    grid = run_dir / "samples" / "demo-grid.npz"
    if varscale(sample_command(run_dir, grid, size.grid_per_class, seed=0)) != 0:
        raise SystemExit("sampling the grid failed (see above)")
    result = {"grid": str(grid)}
    try:
        from harness.evaluation.inception import find_weights

        find_weights(inception_weights)
    except FileNotFoundError as exc:
        result["eval"] = None
        result["eval_skipped"] = (f"FID skipped: {exc} Then run `varscale demo` again: only the evaluation "
                                  f"step is left to do.")
        return result
    evalset = run_dir / "samples" / "demo-eval.npz"
    if varscale(sample_command(run_dir, evalset, size.eval_samples_per_class, seed=1)) != 0:
        raise SystemExit("sampling the evaluation set failed (see above)")
    ref = write_reference(run_dir.parent.parent / "reference-val.npz", val_images)
    eval_args = ["eval", str(evalset), "--ref", str(ref), "--device", "cpu", "--expected-samples", "0",
                 "--fid-method", "gram", "--out", str(run_dir / "eval" / "demo-eval.json")]
    if inception_weights:
        eval_args += ["--inception-weights", inception_weights]
    if varscale(eval_args) != 0:
        raise SystemExit("the evaluation failed (see above)")
    result["eval"] = json.loads((run_dir / "eval" / "demo-eval.json").read_text())
    return result


def write_reference(path: Path, count: int) -> Path:
    """The held-out synthetic images as an ADM-format reference batch (same rounding rule as the samples)."""
    import numpy as np
    import torch

    from harness.data.synthetic import generate_image
    from harness.sampling.loop import to_uint8
    from harness.sampling.npz import write_npz

    if path.is_file():
        return path
    images, labels = zip(*(generate_image(0, "val", i, 32, 10) for i in range(count)))
    images_B3HW = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return write_npz(path, {"arr_0": to_uint8(images_B3HW), "arr_1": np.array(labels, dtype=np.int64)})


def print_summary(analysis_dir: Path, table, report: Path, sample_result: dict, elapsed_s: float) -> None:
    final = table[table["split"] == "val"].sort_values("step").groupby("point_id").tail(1)
    final = final.sort_values("params_total")
    print("\nmodel          params   train PFLOPs   val loss (all / last)   token error (all / last)")
    for _, row in final.iterrows():
        print(f"VAR-mini-d{int(row['depth']):<4}{int(row['params_total']):>10,}{row['train_flops'] / 1e15:>13.3g}"
              f"      {row['loss_mean']:.4f} / {row['loss_last']:.4f}          "
              f"{row['err_mean']:.3f} / {row['err_last']:.3f}")
    fits = json.loads((analysis_dir / "fits.json").read_text())
    for fit in fits.get("fits", []):
        if fit["form"] != "paper" or fit["x"] != "N":
            continue
        print(f"fit {fit['metric']:<10} vs N: L = (beta N)^alpha, alpha = {fit['params']['alpha']:.3f}  "
              f"{100 * fit['ci_level']:.0f}% CI [{fit['ci_low']['alpha']:.3f}, {fit['ci_high']['alpha']:.3f}]  "
              f"r = {fit['r']:.3f}")
    if sample_result.get("eval"):
        metrics = sample_result["eval"].get("metrics", sample_result["eval"])
        print(f"samples: FID {metrics.get('fid', float('nan')):.2f} against the held-out synthetic images")
    else:
        print(sample_result.get("eval_skipped", ""))
    print(f"\nreport: {report.resolve()}\nsample grid: {sample_result['grid']}\ndone in {elapsed_s / 60:.1f} min")


def cmd_demo(args) -> int:
    import os

    import torch

    from reports import build_report
    from sweeps.collect import collect_table, write_table
    from sweeps.state import SweepState

    # the tokenizer and the encode run alone and may use every core; the sweep then runs one process per core
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    size = SIZES[args.size]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    step_banner(1, "synthetic dataset and tokenizer")
    tokenizer_path, tokenizer_sha, data = ensure_tokenizer(out, size)
    step_banner(2, "token cache")
    token_cache = ensure_token_cache(out, tokenizer_path, tokenizer_sha, data)
    step_banner(3, f"sweep of {len(size.depths)} model sizes ({args.executor} executor)")
    spec = run_sweep(write_spec(out, size, tokenizer_path, token_cache, data, args.executor))
    step_banner(4, "collect, fit, figures")
    table = collect_table(SweepState.load(spec.sweep_dir))
    write_table(table, spec.sweep_dir / "table.csv")
    step_banner(5, "samples from the largest model")
    sample_result = sample_and_evaluate(largest_run(table), size, size.val_images, args.inception_weights)
    step_banner(6, "report")
    report = build_report(spec.sweep_dir, n_boot=size.n_boot, resolution=32)
    print_summary(report.parent, table, report, sample_result, time.monotonic() - start)
    return 0
