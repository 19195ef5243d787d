"""Inception features of an image batch, computed once and cached by the batch's content hash.

The key joins the input's sha256 (file bytes, or every file of a folder), the weights' sha256, the internal dtype
and the feature protocol, so a renamed copy of the same reference batch hits the cache and any change to its
bytes, to the weights or to how features are taken misses it. Entries are ``.npz`` files written atomically.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from harness.evaluation.checks import POOL_DIM, SPATIAL_DIM, check_features
from harness.evaluation.inception import (
    InceptionExtractor,
    InceptionFeatures,
    varscale_cache_dir,
)
from harness.sampling.npz import ImageSource, sha256_source, write_npz
from models.files import atomic_write_text

FEATURE_PROTOCOL = ("adm-v1: torch-fidelity inception-v3-compat; pool_3 (2048); mixed_6/conv = Mixed_6d.branch1x1 "
                    "first 7 channels flattened HWC (2023); logits_unbiased (1008)")


def default_cache_dir() -> Path:
    return varscale_cache_dir() / "features"


def cache_key(content_sha256: str, weights_sha256: str, dtype: str) -> str:
    blob = json.dumps([content_sha256, weights_sha256, dtype, FEATURE_PROTOCOL]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def load_features(cache_dir: Path, key: str) -> InceptionFeatures | None:
    path = Path(cache_dir) / f"{key}.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return InceptionFeatures(data["pool"], data["spatial"], data["logits"])


def save_features(cache_dir: Path, key: str, features: InceptionFeatures, meta: dict) -> Path:
    path = Path(cache_dir) / f"{key}.npz"
    write_npz(path, {"pool": features.pool, "spatial": features.spatial, "logits": features.logits})
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
    return path


def check_all(features: InceptionFeatures, where) -> None:
    check_features("pool_3", where, features.pool, POOL_DIM)
    check_features("spatial (sFID)", where, features.spatial, SPATIAL_DIM)
    check_features("logits (IS)", where, features.logits)


def features_for(source: ImageSource, extractor: InceptionExtractor, weights_sha256: str, dtype: str,
                 batch_size: int, cache_dir: Path | None, desc: str,
                 content_sha256: str | None = None) -> tuple[InceptionFeatures, dict]:
    """Features of every image of ``source``; ``info`` says whether the cache answered and under which key."""
    content_sha256 = content_sha256 or sha256_source(source)
    key = cache_key(content_sha256, weights_sha256, dtype)
    info = {"cache_key": key, "cache_hit": False, "cache_dir": str(cache_dir) if cache_dir else None}
    if cache_dir is not None:
        cached = load_features(cache_dir, key)
        if cached is not None and len(cached) == source.num_images:
            check_all(cached, f"{source.path} (cached in {Path(cache_dir) / key}.npz; delete it)")
            info["cache_hit"] = True
            return cached, info
    features = extractor.run(source.iter_batches(batch_size), total=source.num_images, desc=desc)
    check_all(features, source.path)   # before the cache: a bad pass must not be remembered
    if cache_dir is not None:
        save_features(cache_dir, key, features, {"source": str(source.path), "sha256": content_sha256,
                                                 "num_images": source.num_images, "protocol": FEATURE_PROTOCOL,
                                                 "weights_sha256": weights_sha256, "dtype": dtype})
    return features, info
