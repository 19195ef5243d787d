"""The metrics that compare the samples with the reference: FID, sFID, precision, recall, KID, with intervals.

The reference's stored statistics win over its images for FID/sFID, and a sample file's stored ``mu``/``sigma``
over its images, as in the ADM evaluator; precision/recall and KID need the reference's images.
"""
from __future__ import annotations

import numpy as np

from harness.evaluation import fid, intervals
from harness.evaluation.precision_recall import precision_recall_full
from harness.sampling.npz import ImageSource


def _raw(source: ImageSource, features, mu_key: str, which: str):
    """The side's raw features, or None when the file stores its statistics: those win, as in ADM."""
    return None if mu_key in source.stats else getattr(features, which)


def _statistics(source: ImageSource, raw, mu_key: str, sigma_key: str):
    return (source.stats[mu_key], source.stats[sigma_key]) if raw is None else fid.feature_statistics(raw)


def _frechet(cfg, samples, sample_feats, ref, ref_feats, mu_key, sigma_key, which, metrics, intervals_out, strata):
    s_raw = _raw(samples, sample_feats, mu_key, which)
    r_raw = _raw(ref, ref_feats, mu_key, which)
    r_mu, r_sigma = _statistics(ref, r_raw, mu_key, sigma_key)
    method = fid.resolve_method(cfg.fid_method, s_raw, r_raw)
    if method == "gram" and s_raw is None and r_raw is None:
        method = "eigh"   # gram needs raw features of one side
    name = "fid" if mu_key == "mu" else "sfid"
    delta = None
    if s_raw is not None and cfg.fid_interval == "delta" and len(s_raw) > np.shape(s_raw)[1]:
        delta = intervals.fid_delta_interval(s_raw, r_mu, r_sigma, strata)
        intervals_out[name] = {k: v for k, v in delta.items() if k != "value"}
    if delta is not None and method == "eigh":
        metrics[name] = delta["value"]   # the eigh route on the samples' own statistics, already done there
    else:
        s_mu, s_sigma = _statistics(samples, s_raw, mu_key, sigma_key)
        metrics[name] = fid.frechet_distance(s_mu, s_sigma, r_mu, r_sigma, method, s_raw, r_raw)
    if s_raw is not None and cfg.fid_interval == "bootstrap":
        intervals_out[name] = intervals.fid_bootstrap_interval(s_raw, r_mu, r_sigma, cfg.fid_bootstrap_rounds,
                                                               cfg.bootstrap_seed, strata)
    return method


def reference_metrics(cfg, samples: ImageSource, sample_feats, ref: ImageSource, ref_feats, device: str,
                      metrics: dict, intervals_out: dict, warnings: list[str]) -> dict:
    """Fills ``metrics`` and ``intervals_out``; returns the protocol facts of what was actually done."""
    if "mu" not in ref.stats:
        warnings.append(f"{ref.path}: no stored mu/sigma; reference statistics computed from its "
                        f"{ref.num_images} images (ADM reference batches store full-dataset statistics)")
    if "mu" in samples.stats:
        warnings.append(f"{samples.path}: carries its own mu/sigma; FID uses them (as ADM does), not its images")
    strata = intervals.balanced_strata(samples.labels)   # every interval below resamples alike
    done = {"fid_trace_sqrt": _frechet(cfg, samples, sample_feats, ref, ref_feats, "mu", "sigma", "pool",
                                       metrics, intervals_out, strata)}
    if "mu_s" in ref.stats or ref_feats is not None:
        _frechet(cfg, samples, sample_feats, ref, ref_feats, "mu_s", "sigma_s", "spatial", metrics, intervals_out,
                 strata)
    else:
        warnings.append(f"{ref.path}: no mu_s/sigma_s and no images; sFID not computed")
    if ref_feats is None:
        warnings.append(f"{ref.path}: no images ('arr_0'); precision/recall and KID not computed")
        return done
    if min(len(ref_feats), len(sample_feats)) <= cfg.pr_k:
        warnings.append(f"precision/recall need more than k={cfg.pr_k} images on each side; not computed")
    else:
        pr = precision_recall_full(sample_feats.pool, ref_feats.pool, cfg.pr_k, cfg.pr_chunk, cfg.pr_chunk, device,
                                   cfg.pr_distances)
        metrics["precision"], metrics["recall"] = pr.precision, pr.recall
        done["pr_float32_fallback_blocks"] = pr.float32_fallback_blocks
        if cfg.bootstrap_rounds > 1:
            intervals_out.update(intervals.precision_recall_interval(pr, cfg.bootstrap_rounds, cfg.bootstrap_seed,
                                                                     strata))
    if cfg.kid_subsets > 0 and min(len(ref_feats), len(sample_feats)) >= 2:
        kid = intervals.kid(sample_feats.pool, ref_feats.pool, cfg.kid_subsets, seed=cfg.kid_seed)
        metrics["kid"], metrics["kid_std"] = kid["kid"], kid["kid_std"]
        done["kid"] = kid["method"] + f"; on the reference's {ref.num_images} images"
    return done


def finite_or_error(metrics: dict, where: str) -> None:
    """A metric that came out non-finite despite finite inputs is a bug to report, never a number to store."""
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not np.isfinite(v)}
    if bad:
        raise ValueError(f"{where}: non-finite metric(s) {bad} from finite inputs; please report this")
