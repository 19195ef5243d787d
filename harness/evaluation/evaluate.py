"""``varscale eval``: score a sample batch against a reference batch under the ADM protocol, plus clean-fid.

Protocol (openai/guided-diffusion ``evaluations/evaluator.py``; formulas in ``fid.py``, ``inception_score.py``
and ``precision_recall.py``): torch-fidelity's TF-ported Inception on uint8 images (TF1 bilinear resize to 299
inside); FID on pool_3 and sFID on mixed_6/conv[:7] against the reference's stored ``mu``/``sigma``/``mu_s``/
``sigma_s`` when it has them (as ADM; otherwise computed from its images, with a warning); IS on the samples in
consecutive chunks of 5000 rows in file order; precision/recall with k = 3 and ADM's float16 distances between
the samples and the reference's images. A sample batch that carries ``mu``/``sigma`` itself is scored from those
for FID, as ADM does (warned). Beyond ADM: KID, and a bootstrap interval for each headline metric
(``intervals.py``).

Every input is checked before the Inception pass (``checks.py``); the result JSON holds every metric, the
protocol actually followed, library versions and the sha256 of the weights and of both inputs.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.evaluation import checks, intervals
from harness.evaluation.fid import DEFAULT_FID_METHOD
from harness.evaluation.inception_score import (
    ADM_SPLIT_SIZE,
    describe_rule,
    inception_score,
    split_bounds,
)
from harness.evaluation.reference_metrics import finite_or_error, reference_metrics
from harness.sampling.npz import ImageSource, open_images, sha256_source
from models.files import save_json, sha256_file, utc_now_iso

PROTOCOL_SAMPLES = 50_000


@dataclass
class EvalConfig:
    samples: str
    ref: str | None = None
    out: str | None = None                  # result JSON; default next to the samples
    overwrite: bool = False                 # replace an existing result file
    inception_weights: str | None = None    # default: $VARSCALE_INCEPTION_WEIGHTS, varscale cache, torch hub
    device: str | None = None               # default: cuda when available
    dtype: str = "float32"                  # Inception internal dtype (torch-fidelity allows float64)
    batch_size: int = 64                    # ADM's batch size
    is_split_rule: str = "adm"              # adm: consecutive chunks of is_split_size | equal: is_splits splits
    is_split_size: int = ADM_SPLIT_SIZE
    is_splits: int = 10
    pr_k: int = 3
    pr_chunk: int = 10_000
    pr_distances: str = "adm-float16"       # adm-float16 (ADM exact) | float32 | float64
    fid_method: str = DEFAULT_FID_METHOD    # auto (gram or eigh) | eigh | sqrtm (ADM's code) | eigvals | gram
    bootstrap_rounds: int = 200             # IS, precision, recall intervals (0: none)
    fid_interval: str = "delta"             # FID, sFID intervals: delta (influence function) | bootstrap | none
    fid_bootstrap_rounds: int = 50          # rounds when fid_interval is bootstrap (seconds per round on a CPU)
    bootstrap_seed: int = 0
    kid_subsets: int = 100                  # 0: no KID
    expected_samples: int = PROTOCOL_SAMPLES
    resolution: int | None = None           # required sample resolution, when given
    cache_dir: str | None = None            # feature cache; default ~/.cache/varscale/features
    no_cache: bool = False                  # neither read nor write the cache
    cache_samples: bool = False             # also cache the samples' features (~1 GB per 50k batch)
    cleanfid_modes: tuple[str, ...] = ()    # e.g. ("clean", "legacy_tensorflow")
    cleanfid_weights_dir: str | None = None
    cleanfid_against: str = "images"        # images | stored-statistics (legacy_tensorflow FID only)
    kid_seed: int = 0


def resolve_samples_path(path: str | Path) -> Path:
    """A run directory stands for its single ``samples/*.npz``."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        found = sorted((path / "samples").glob("*.npz")) if (path / "samples").is_dir() else []
        if len(found) != 1:
            listing = ", ".join(p.name for p in found) or "none"
            raise checks.EvalInputError(f"{path}: a run directory needs exactly one samples/*.npz to evaluate "
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


def _class_sorted_warning(source: ImageSource, bounds: list[tuple[int, int]]) -> str | None:
    if source.labels is None or len(bounds) < 2:
        return None
    labels = source.labels
    per_split = [len(np.unique(labels[start:end])) for start, end in bounds]
    if max(per_split) <= 0.5 * len(np.unique(labels)):
        return (f"{source.path}: rows look class-sorted (each of the {len(bounds)} consecutive IS splits holds at "
                f"most {max(per_split)} of {len(np.unique(labels))} classes); IS is then far too low. Store the "
                f"rows in a random permutation (varscale sample does)")
    return None



def _open_checked(cfg: EvalConfig, warnings: list[str]) -> tuple[Path, ImageSource, ImageSource | None]:
    samples_path = resolve_samples_path(cfg.samples)
    samples = open_images(samples_path)
    checks.check_samples(samples)
    checks.check_stored_statistics(samples)
    if cfg.resolution and (samples.height, samples.width) != (cfg.resolution, cfg.resolution):
        raise checks.EvalInputError(f"{samples_path}: images are {samples.height}x{samples.width}; "
                                    f"expected {cfg.resolution}x{cfg.resolution} (--resolution)")
    warnings += samples.warnings
    ref = open_images(cfg.ref) if cfg.ref else None
    if ref is None:
        warnings.append("no reference batch (--ref): only IS is computed")
        return samples_path, samples, None
    checks.check_reference(ref)
    checks.check_stored_statistics(ref)
    warnings += ref.warnings
    if ref.num_images and (ref.height, ref.width) != (samples.height, samples.width):
        warnings.append(f"resolution differs: samples {samples.height}x{samples.width}, reference "
                        f"{ref.height}x{ref.width} ({ref.path})")
    if cfg.cleanfid_modes and ref.num_images == 0:
        raise checks.EvalInputError(f"{ref.path}: clean-fid (--cleanfid) needs reference images ('arr_0'), "
                                    f"not only statistics; drop --cleanfid or pass a reference with images")
    if cfg.cleanfid_against == "stored-statistics" and "mu" not in ref.stats:
        raise checks.EvalInputError(f"{ref.path}: --cleanfid-against stored-statistics needs stored 'mu'/'sigma' "
                                    f"in the reference; this one has none")
    return samples_path, samples, ref


def evaluate(cfg: EvalConfig, out_path: Path | None = None) -> dict:
    """All metrics of ``cfg``; ``out_path``, when given, is checked writable before any feature is computed."""
    from harness.evaluation.feature_cache import (
        FEATURE_PROTOCOL,
        default_cache_dir,
        features_for,
    )
    from harness.evaluation.inception import InceptionExtractor

    started = time.time()
    warnings: list[str] = []
    samples_path, samples, ref = _open_checked(cfg, warnings)
    if out_path is not None:
        checks.check_output_path(out_path, cfg.overwrite)
    n = samples.num_images
    if n < cfg.expected_samples:
        warnings.append(f"{samples_path}: {n} samples, fewer than the protocol's {cfg.expected_samples}; "
                        f"FID/sFID are biased upwards at small N and not comparable")
    is_rule = describe_rule(n, cfg.is_split_rule, cfg.is_split_size, cfg.is_splits)
    if n != PROTOCOL_SAMPLES:
        warnings.append(f"IS at N={n} is not comparable to published 50k figures (IS depends on the split size; "
                        f"split rule: {is_rule})")
    if (w := _class_sorted_warning(samples, split_bounds(n, cfg.is_split_rule, cfg.is_split_size,
                                                         cfg.is_splits))) is not None:
        warnings.append(w)

    extractor = InceptionExtractor(cfg.inception_weights, cfg.device, cfg.dtype)
    weights_sha = sha256_file(extractor.weights_path)
    cache_dir = None if cfg.no_cache else Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    samples_sha = sha256_source(samples)
    ref_sha = sha256_source(ref) if ref is not None else None
    ref_feats, ref_cache = None, None
    if ref is not None and ref.num_images:   # the reference first: it is cached, so a bad one fails fast
        ref_feats, ref_cache = features_for(ref, extractor, weights_sha, cfg.dtype, cfg.batch_size, cache_dir,
                                            "reference", ref_sha)
    sample_feats, sample_cache = features_for(samples, extractor, weights_sha, cfg.dtype, cfg.batch_size,
                                              cache_dir if cfg.cache_samples else None, "samples", samples_sha)
    metrics: dict = {}
    interval: dict = {}
    is_mean, is_std, is_scores = inception_score(sample_feats.logits, cfg.is_split_rule, cfg.is_split_size,
                                                 cfg.is_splits)
    metrics.update(is_mean=is_mean, is_std=is_std, is_splits=is_scores)
    if cfg.bootstrap_rounds > 1:
        interval["is_mean"] = intervals.is_interval(sample_feats.logits, cfg.bootstrap_rounds, cfg.bootstrap_seed,
                                                    cfg.is_split_rule, cfg.is_split_size, cfg.is_splits,
                                                    intervals.balanced_strata(samples.labels))

    inputs = {"samples": _describe(samples, samples_sha) | {"feature_cache": sample_cache}}
    done: dict = {}
    cleanfid_result = None
    if ref is not None:
        done = reference_metrics(cfg, samples, sample_feats, ref, ref_feats, extractor.device, metrics, interval,
                                 warnings)
        inputs["reference"] = _describe(ref, ref_sha) | {
            "feature_cache": ref_cache,
            "statistics": "stored mu/sigma" if "mu" in ref.stats else "computed from its images"}
        if cfg.cleanfid_modes:
            from harness.evaluation.cleanfid_check import evaluate_cleanfid

            cleanfid_result = evaluate_cleanfid(samples, ref, cfg.cleanfid_modes, cfg.cleanfid_weights_dir,
                                                extractor.device, kid_seed=cfg.kid_seed, fid_method=cfg.fid_method,
                                                against=cfg.cleanfid_against)
    finite_or_error(metrics, str(samples_path))
    if ref is not None and "fid" in metrics and "fid" not in interval:
        why = ("--fid-interval none" if cfg.fid_interval == "none" else
               "it needs the samples' features and more samples than feature dimensions")
        warnings.append(f"FID/sFID carry no interval ({why})")

    return {
        "metrics": metrics,
        "intervals": interval,
        "cleanfid": cleanfid_result,
        "summary": summary_line(metrics, samples, ref, interval),
        "warnings": warnings,
        "inputs": inputs,
        "input_sha256": {"samples": samples_sha, "reference": ref_sha},
        "protocol": {
            "evaluator": "ADM evaluator protocol (guided-diffusion evaluations/evaluator.py) on torch-fidelity's "
                         "TF-ported Inception (inception-v3-compat)",
            "features": FEATURE_PROTOCOL,
            "fid_trace_sqrt": done.get("fid_trace_sqrt", cfg.fid_method),
            "inception_score": is_rule,
            "inception_score_split_rule": cfg.is_split_rule,
            "precision_recall": f"k={cfg.pr_k} nearest neighbour radii, squared euclidean distances "
                                f"({cfg.pr_distances}), blocks of {cfg.pr_chunk}x{cfg.pr_chunk}, '<=' on the "
                                f"radius; samples vs the reference's images"
                                + (f"; {done['pr_float32_fallback_blocks']} block(s) overflowed float16 and were "
                                   f"done in float32 (as ADM)" if done.get("pr_float32_fallback_blocks") else ""),
            "kid": done.get("kid"),
            "intervals": {k: v["method"] for k, v in interval.items()},
            "config": dataclasses.asdict(cfg),
        },
        "weights": {"inception": {"path": str(Path(extractor.weights_path).resolve()), "sha256": weights_sha}},
        "versions": library_versions(),
        "device": str(extractor.device),
        "wall_time_s": round(time.time() - started, 3),
        "created": utc_now_iso(),
    }


def evaluate_and_save(cfg: EvalConfig) -> tuple[Path, dict]:
    """``varscale eval``: the output path is checked first, the result written atomically at the end."""
    out = Path(cfg.out) if cfg.out else default_output_path(resolve_samples_path(cfg.samples),
                                                            Path(cfg.ref) if cfg.ref else None)
    result = evaluate(cfg, out)
    checks.check_output_path(out, cfg.overwrite)   # again: another run may have written it meanwhile
    save_json(out, result)
    return out, result


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


def summary_line(metrics: dict, samples: ImageSource, ref: ImageSource | None, interval: dict | None = None) -> str:
    interval = interval or {}

    def show(key, label, fmt):
        text = f"{label} {format(metrics[key], fmt)}"
        if key in interval:
            text += f" [{format(interval[key]['low'], fmt)}, {format(interval[key]['high'], fmt)}]"
        return text

    parts = [show(key, label, ".4f") for key, label in (("fid", "FID"), ("sfid", "sFID")) if key in metrics]
    parts.append(show("is_mean", "IS", ".2f"))
    parts += [show(key, label, ".4f") for key, label in (("precision", "P"), ("recall", "R")) if key in metrics]
    if "kid" in metrics:
        parts.append(f"KID {metrics['kid']:.5f}±{metrics['kid_std']:.5f}")
    against = f" vs {ref.path.name}" if ref is not None else ""
    note = " ([..]: 95% interval)" if interval else ""
    return " | ".join(parts) + f" | N={samples.num_images} {samples.path.name}{against}{note}"
