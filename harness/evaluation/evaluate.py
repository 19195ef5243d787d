"""``varscale eval``: score a sample batch against a reference batch under the ADM protocol, plus clean-fid.

Protocol (openai/guided-diffusion ``evaluations/evaluator.py``, formulas in ``fid.py``, ``inception_score.py`` and ``precision_recall.py``):
torch-fidelity's TF-ported Inception on uint8 images (TF1 bilinear resize to 299 inside); FID on pool_3 and sFID
on mixed_6/conv[:7] against the reference's stored ``mu``/``sigma``/``mu_s``/``sigma_s`` when it has them (as ADM;
otherwise computed from its images, with a warning); IS on the samples over 10 consecutive splits in file order;
precision/recall with k = 3 between the samples and the reference's images. A sample batch that carries
``mu``/``sigma`` itself is scored from those for FID, as ADM does (warned).

Inputs: an ADM ``.npz``, a folder of PNG/JPEG, or a run directory (its ``samples/*.npz``). The result JSON holds
every metric, the protocol, library versions and the sha256 of the weights and of both inputs.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.evaluation import fid
from harness.evaluation.inception_score import inception_score
from harness.evaluation.precision_recall import precision_recall
from harness.sampling.npz import (
    ImageSource,
    SampleFormatError,
    open_images,
    sha256_source,
)
from models.files import sha256_file, utc_now_iso

PROTOCOL_SAMPLES = 50_000


@dataclass
class EvalConfig:
    samples: str
    ref: str | None = None
    out: str | None = None                  # result JSON; default next to the samples
    inception_weights: str | None = None    # default: $VARSCALE_INCEPTION_WEIGHTS, varscale cache, torch hub
    device: str | None = None               # default: cuda when available
    dtype: str = "float32"                  # Inception internal dtype (torch-fidelity allows float64)
    batch_size: int = 64                    # ADM's batch size
    is_splits: int = 10
    pr_k: int = 3
    pr_chunk: int = 10_000
    fid_method: str = "sqrtm"               # sqrtm (ADM) | eigvals (torch-fidelity) | gram (exact, raw features)
    expected_samples: int = PROTOCOL_SAMPLES
    resolution: int | None = None           # required sample resolution, when given
    cache_dir: str | None = None            # feature cache; default ~/.cache/varscale/features
    no_cache: bool = False                  # neither read nor write the cache
    cache_samples: bool = False             # also cache the samples' features (~1 GB per 50k batch)
    cleanfid_modes: tuple[str, ...] = ()    # e.g. ("clean", "legacy_tensorflow")
    cleanfid_weights_dir: str | None = None
    kid_seed: int = 0


def resolve_samples_path(path: str | Path) -> Path:
    """A run directory stands for its single ``samples/*.npz``."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        found = sorted((path / "samples").glob("*.npz")) if (path / "samples").is_dir() else []
        if len(found) != 1:
            listing = ", ".join(p.name for p in found) or "none"
            raise SampleFormatError(f"{path}: a run directory needs exactly one samples/*.npz to evaluate "
                                    f"(found: {listing}); pass the .npz itself")
        return found[0]
    return path


def default_output_path(samples_path: Path, ref_path: Path | None) -> Path:
    ref_tag = f".vs-{ref_path.stem}" if ref_path else ""
    if samples_path.parent.name == "samples" and (samples_path.parent.parent / "config.json").is_file():
        return samples_path.parent.parent / "eval" / f"{samples_path.stem}{ref_tag}.json"
    return samples_path.with_name(samples_path.name + f"{ref_tag}.eval.json")


def library_versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("varscale", "torch", "torch-fidelity", "clean-fid", "numpy", "scipy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _class_sorted_warning(source: ImageSource, splits: int) -> str | None:
    if source.labels is None or source.num_images < splits * 2:
        return None
    labels = source.labels
    per_split = [len(np.unique(part)) for part in np.array_split(labels, splits)]
    if max(per_split) <= 0.5 * len(np.unique(labels)):
        return (f"{source.path}: rows look class-sorted (each of the {splits} consecutive IS splits holds at most "
                f"{max(per_split)} of {len(np.unique(labels))} classes); IS is then far too low. Store the rows in "
                f"a random permutation (varscale sample does)")
    return None


def _stats(features: np.ndarray) -> dict:
    mu, sigma = fid.feature_statistics(features)
    return {"mu": mu, "sigma": sigma}


def _fid(sample_feats, sample_stats, ref_feats, ref_stats, method):
    method_used = method if (method != "gram" or sample_feats is not None or ref_feats is not None) else "sqrtm"
    value = fid.frechet_distance(sample_stats["mu"], sample_stats["sigma"], ref_stats["mu"], ref_stats["sigma"],
                                method_used, sample_feats, ref_feats)
    return value, method_used


def evaluate(cfg: EvalConfig) -> dict:
    from harness.evaluation.feature_cache import (
        FEATURE_PROTOCOL,
        default_cache_dir,
        features_for,
    )
    from harness.evaluation.inception import InceptionExtractor

    started = time.time()
    warnings: list[str] = []
    samples_path = resolve_samples_path(cfg.samples)
    samples = open_images(samples_path)
    if samples.num_images == 0:
        raise SampleFormatError(f"{samples_path}: holds statistics but no images ('arr_0'); nothing to score")
    if cfg.resolution and (samples.height, samples.width) != (cfg.resolution, cfg.resolution):
        raise SampleFormatError(f"{samples_path}: images are {samples.height}x{samples.width}; "
                                f"expected {cfg.resolution}x{cfg.resolution} (--resolution)")
    if samples.num_images < cfg.expected_samples:
        warnings.append(f"{samples_path}: {samples.num_images} samples, fewer than the protocol's "
                        f"{cfg.expected_samples}; FID/sFID are biased upwards at small N and not comparable")
    warnings += samples.warnings
    if (w := _class_sorted_warning(samples, cfg.is_splits)) is not None:
        warnings.append(w)
    ref = open_images(cfg.ref) if cfg.ref else None
    if ref is None:
        warnings.append("no reference batch (--ref): only IS is computed")
    else:
        warnings += ref.warnings
        if ref.num_images and (ref.height, ref.width) != (samples.height, samples.width):
            warnings.append(f"resolution differs: samples {samples.height}x{samples.width}, reference "
                            f"{ref.height}x{ref.width} ({ref.path})")

    extractor = InceptionExtractor(cfg.inception_weights, cfg.device, cfg.dtype)
    weights_sha = sha256_file(extractor.weights_path)
    cache_dir = None if cfg.no_cache else Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    samples_sha = sha256_source(samples)
    sample_feats, sample_cache = features_for(samples, extractor, weights_sha, cfg.dtype, cfg.batch_size,
                                              cache_dir if cfg.cache_samples else None, "samples", samples_sha)
    metrics: dict = {}
    is_splits = cfg.is_splits
    if samples.num_images < 2 * is_splits:
        is_splits = 1
        warnings.append(f"{samples.num_images} samples are too few for {cfg.is_splits} IS splits; IS uses 1 split")
    is_mean, is_std, is_scores = inception_score(sample_feats.logits, is_splits)
    metrics.update(is_mean=is_mean, is_std=is_std, is_splits=is_scores)

    inputs = {"samples": _describe(samples, samples_sha) | {"feature_cache": sample_cache}}
    fid_method_used = None
    cleanfid_result = None
    if ref is not None:
        ref_sha = sha256_source(ref)
        ref_feats, ref_cache = (features_for(ref, extractor, weights_sha, cfg.dtype, cfg.batch_size, cache_dir,
                                             "reference", ref_sha) if ref.num_images else (None, None))
        fid_method_used = _reference_metrics(cfg, samples, sample_feats, ref, ref_feats, extractor.device, metrics,
                                             warnings)
        inputs["reference"] = _describe(ref, ref_sha) | {
            "feature_cache": ref_cache,
            "statistics": "stored mu/sigma" if "mu" in ref.stats else "computed from its images"}
        if cfg.cleanfid_modes:
            from harness.evaluation.cleanfid_check import evaluate_cleanfid

            cleanfid_result = evaluate_cleanfid(samples, ref, cfg.cleanfid_modes, cfg.cleanfid_weights_dir,
                                                extractor.device, kid_seed=cfg.kid_seed, fid_method=cfg.fid_method)

    return {
        "metrics": metrics,
        "cleanfid": cleanfid_result,
        "summary": summary_line(metrics, samples, ref),
        "warnings": warnings,
        "inputs": inputs,
        "protocol": {
            "evaluator": "ADM evaluator protocol (guided-diffusion evaluations/evaluator.py) on torch-fidelity's "
                         "TF-ported Inception (inception-v3-compat)",
            "features": FEATURE_PROTOCOL,
            "fid_trace_sqrt": fid_method_used or cfg.fid_method,
            "inception_score": f"{is_splits} consecutive splits in file order, no shuffling, float64",
            "precision_recall": f"k={cfg.pr_k} nearest neighbour radii, squared euclidean distances in float32, "
                                f"blocks of {cfg.pr_chunk}x{cfg.pr_chunk}; samples vs the reference's images",
            "config": dataclasses.asdict(cfg),
        },
        "weights": {"inception": {"path": str(Path(extractor.weights_path).resolve()), "sha256": weights_sha}},
        "versions": library_versions(),
        "device": str(extractor.device),
        "wall_time_s": round(time.time() - started, 3),
        "created": utc_now_iso(),
    }


def _pair(source: ImageSource, features, mu_key: str, sigma_key: str, which: str):
    """(raw features or None, statistics) of one side: the file's stored statistics win, as in ADM."""
    if mu_key in source.stats:
        return None, {"mu": source.stats[mu_key], "sigma": source.stats[sigma_key]}
    raw = getattr(features, which)
    return raw, _stats(raw)


def _reference_metrics(cfg: EvalConfig, samples: ImageSource, sample_feats, ref: ImageSource, ref_feats,
                       device: str, metrics: dict, warnings: list[str]) -> str:
    """FID, sFID, precision and recall against the reference; returns the trace method actually used."""
    if "mu" not in ref.stats:
        warnings.append(f"{ref.path}: no stored mu/sigma; reference statistics computed from its "
                        f"{ref.num_images} images (ADM reference batches store full-dataset statistics)")
    if "mu" in samples.stats:
        warnings.append(f"{samples.path}: carries its own mu/sigma; FID uses them (as ADM does), not its images")
    s_raw, s_stats = _pair(samples, sample_feats, "mu", "sigma", "pool")
    r_raw, r_stats = _pair(ref, ref_feats, "mu", "sigma", "pool")
    metrics["fid"], method_used = _fid(s_raw, s_stats, r_raw, r_stats, cfg.fid_method)
    if "mu_s" in ref.stats or ref_feats is not None:
        s_raw, s_stats = _pair(samples, sample_feats, "mu_s", "sigma_s", "spatial")
        r_raw, r_stats = _pair(ref, ref_feats, "mu_s", "sigma_s", "spatial")
        metrics["sfid"], _ = _fid(s_raw, s_stats, r_raw, r_stats, cfg.fid_method)
    else:
        warnings.append(f"{ref.path}: no mu_s/sigma_s and no images; sFID not computed")
    if ref_feats is None:
        warnings.append(f"{ref.path}: no images ('arr_0'); precision/recall not computed")
    elif min(len(ref_feats), len(sample_feats)) <= cfg.pr_k:
        warnings.append(f"precision/recall need more than k={cfg.pr_k} images on each side; not computed")
    else:
        metrics["precision"], metrics["recall"] = precision_recall(
            sample_feats.pool, ref_feats.pool, cfg.pr_k, cfg.pr_chunk, cfg.pr_chunk, device)
    return method_used


def _describe(source: ImageSource, sha: str) -> dict:
    out = {"path": str(Path(source.path).resolve()), "kind": source.kind, "sha256": sha,
           "num_images": source.num_images,
           "resolution": [source.height, source.width], "labels": source.labels is not None,
           "stored_statistics": sorted(source.stats)}
    sidecar = Path(str(source.path) + ".json")
    if source.kind == "npz" and sidecar.is_file():
        import json

        out["sampling_protocol"] = json.loads(sidecar.read_text())
    return out


def summary_line(metrics: dict, samples: ImageSource, ref: ImageSource | None) -> str:
    parts = []
    for key, label in (("fid", "FID"), ("sfid", "sFID")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]:.4f}")
    parts.append(f"IS {metrics['is_mean']:.2f}±{metrics['is_std']:.2f}")
    for key, label in (("precision", "P"), ("recall", "R")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]:.4f}")
    against = f" vs {ref.path.name}" if ref is not None else ""
    return " | ".join(parts) + f" | N={samples.num_images} {samples.path.name}{against}"
