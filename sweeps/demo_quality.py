"""Sample quality of every size of the demo study, on the embedded default (no Inception weights needed).

Per size: ``varscale sample`` draws ``quality_per_class`` samples of every class (the same protocol for all sizes),
and the demo's synthetic feature network (harness/evaluation/demo_features.py, trained on the synthetic training
images as the tokenizer reconstructs them) embeds them and as many reconstructed held-out images: the best a
generator on this tokenizer can do. The Frechet distance, precision and recall of those features come
from the same evaluator functions as Inception FID (harness/evaluation/fid.py, precision_recall.py); the
network's class accuracy on the samples says whether a sample shows its class. Each result is stored in
RUN_DIR/quality/synthetic-features.json with everything that produced it and reused when that is unchanged.
Where Inception weights are present, the largest model's samples also get a real Inception FID (`varscale eval`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

METRIC_NAME = "synthetic-feature FD"  # never "FID": the features are not Inception's
SAMPLING = {"cfg": 1.5, "top_k": 0, "top_p": 0.96, "batch_size": 50}  # top-k 0: the vocabulary is below 900
# Another draw of the same number of samples per class would move the FD by about its standard error; the
# reference images are held fixed (harness/evaluation/intervals.py).
FD_INTERVAL = "95% normal interval, delta-method standard error, samples resampled within their class"


def sample_command(run_dir: Path, out: Path, per_class: int, seed: int) -> list[str]:
    return ["sample", "--run", str(run_dir), "--per-class", str(per_class), "--batch-size",
            str(SAMPLING["batch_size"]), "--cfg", str(SAMPLING["cfg"]), "--top-k", str(SAMPLING["top_k"]),
            "--top-p", str(SAMPLING["top_p"]), "--seed", str(seed), "--device", "cpu", "--out", str(out)]


def final_runs(table) -> list[dict]:
    """One row per point (its final held-out record), smallest model first."""
    final = table[table["split"] == "val"].sort_values("step").groupby("point_id").tail(1)
    return final.sort_values("params_total").to_dict("records")


def feature_net_config(size, tokenizer_sha256: str | None):
    from harness.evaluation.demo_features import FeatureNetConfig

    return FeatureNetConfig(**size.feature_net, tokenizer_sha256=tokenizer_sha256)


def evaluate_sizes(table, out: Path, size, seed: int, tokenizer_path: Path, tokenizer_sha256: str,
                   inception_weights: str | None) -> dict:
    """Sample and score every size; returns {"metric", "protocol", "sizes": [...], "inception": {...}}."""
    import torch

    from harness.config import TokenizerRef
    from harness.evaluation.demo_features import (
        embed_images,
        load_or_train,
        synthetic_images,
        tokenizer_round_trip,
    )
    from harness.tokenizer.storage import load_tokenizer

    torch.set_num_threads(1)  # small convolutions: more threads only contend on a shared machine
    vae, _ = load_tokenizer(TokenizerRef(path=str(tokenizer_path), sha256=tokenizer_sha256), "cpu")
    round_trip = tokenizer_round_trip(vae)
    cfg = feature_net_config(size, tokenizer_sha256)
    cfg_hash = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    net = load_or_train(out / f"feature-net-{cfg_hash}", cfg, round_trip)
    n_ref = size.quality_per_class * cfg.num_classes
    ref_images, _ = synthetic_images("val", n_ref, cfg)
    ref_features, _ = embed_images(net, round_trip(ref_images))
    protocol = {"feature_net": cfg.to_dict(), "feature_net_hash": cfg_hash,
                "reference": f"synthetic val 0..{n_ref - 1} through the tokenizer (encode, decode, 8-bit)",
                "samples_per_class": size.quality_per_class, "sampling": SAMPLING, "sampling_seed": 1000 + seed,
                "precision_recall_k": 3, "fd_method": "auto", "fd_interval": FD_INTERVAL}
    runs = final_runs(table)
    sizes = [score_run(Path(row["run_dir"]), row, net, ref_features, protocol) for row in runs]
    for row in sizes:
        print(f"  {row['name']:<14} {METRIC_NAME} {row['fd']:8.3f}   precision {row['precision']:.3f}   recall "
              f"{row['recall']:.3f}   class accuracy {row['class_accuracy']:.3f}", flush=True)
    largest = Path(runs[-1]["run_dir"])
    return {"metric": METRIC_NAME, "protocol": protocol, "sizes": sizes, "largest_run": str(largest),
            "inception": inception_fid(largest, Path(sizes[-1]["samples"]), out, n_ref, inception_weights),
            "samples": {row["name"]: row["samples"] for row in sizes}}


def quality_samples_path(run_dir: Path, protocol: dict) -> Path:
    """Named by everything that decides the samples, so a changed protocol never reuses an older file."""
    decides = {key: protocol[key] for key in ("samples_per_class", "sampling", "sampling_seed")}
    digest = hashlib.sha256(json.dumps(decides, sort_keys=True).encode()).hexdigest()[:8]
    return run_dir / "samples" / f"quality-seed{protocol['sampling_seed']}-{digest}.npz"


def score_run(run_dir: Path, row: dict, net, ref_features: np.ndarray, protocol: dict) -> dict:
    from harness.cli.main import main as varscale
    from harness.evaluation.demo_features import embed_images, uint8_to_model_range
    from harness.evaluation.fid import feature_statistics, frechet_distance
    from harness.evaluation.intervals import balanced_strata, fid_delta_interval
    from harness.evaluation.precision_recall import precision_recall
    from models.files import save_json

    result_path = run_dir / "quality" / "synthetic-features.json"
    samples = quality_samples_path(run_dir, protocol)
    if result_path.is_file():
        stored = json.loads(result_path.read_text())
        if stored.get("protocol") == protocol and stored["result"].get("samples") == str(samples):
            return stored["result"]
    if not samples.is_file():
        command = sample_command(run_dir, samples, protocol["samples_per_class"], protocol["sampling_seed"])
        if varscale(command) != 0:
            raise SystemExit(f"sampling {run_dir} failed (see above)")
    with np.load(samples) as data:
        images, labels = data["arr_0"], data["arr_1"]
    features, predicted = embed_images(net, uint8_to_model_range(images))
    mu_r, sigma_r = feature_statistics(ref_features)
    if len(features) > features.shape[1]:
        fd = fid_delta_interval(features, mu_r, sigma_r, balanced_strata(labels))
        fd = {"fd": fd["value"], "fd_low": fd["low"], "fd_high": fd["high"], "fd_se": fd["std"]}
    else:   # fewer samples than feature dimensions (the quick test size): no interval
        fd = {"fd": frechet_distance(*feature_statistics(features), mu_r, sigma_r, method=protocol["fd_method"],
                                     features1=features)}
    precision, recall = precision_recall(features, ref_features, k=protocol["precision_recall_k"])
    result = {"name": f"VAR-mini-d{int(row['depth'])}", "depth": int(row["depth"]),
              "params_total": int(row["params_total"]), "samples": str(samples), "num_samples": len(images),
              **fd,
              "precision": float(precision), "recall": float(recall),
              "class_accuracy": float((predicted == labels).mean())}
    save_json(result_path, {"metric": METRIC_NAME, "protocol": protocol, "result": result})
    return result


def inception_fid(run_dir: Path, samples: Path, out: Path, n_ref: int, weights: str | None) -> dict:
    """Inception FID of the largest model's quality samples, or why it was skipped."""
    from harness.cli.main import main as varscale

    try:
        from harness.evaluation.inception import find_weights

        find_weights(weights)
    except FileNotFoundError as exc:
        return {"skipped": f"Inception FID skipped: {exc} The synthetic-feature FD above needs no download."}
    ref = write_reference(out / f"reference-val-{n_ref}.npz", n_ref)
    result = run_dir / "eval" / f"inception-{samples.stem}.json"
    eval_args = ["eval", str(samples), "--ref", str(ref), "--device", "cpu", "--expected-samples", "0",
                 "--fid-method", "gram", "--out", str(result), "--overwrite"]  # the demo's own file: a rerun renews it
    if weights:
        eval_args += ["--inception-weights", weights]
    if varscale(eval_args) != 0:
        raise SystemExit("the Inception evaluation failed (see above)")
    metrics = json.loads(result.read_text())
    return {"result": str(result), "fid": metrics.get("metrics", metrics).get("fid")}


def write_reference(path: Path, count: int) -> Path:
    """The held-out synthetic images as an ADM-format reference batch (same rounding rule as the samples)."""
    import torch

    from harness.data.synthetic import generate_image
    from harness.sampling.loop import to_uint8
    from harness.sampling.npz import write_npz

    if path.is_file():
        return path
    images, labels = zip(*(generate_image(0, "val", i, 32, 10) for i in range(count)))
    images_B3HW = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return write_npz(path, {"arr_0": to_uint8(images_B3HW), "arr_1": np.array(labels, dtype=np.int64)})
