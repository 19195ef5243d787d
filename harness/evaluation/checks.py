"""Every input of ``varscale eval`` checked before it can turn into a wrong number.

Each failure is an ``EvalInputError``: one line naming the file, the field and what was expected, which the CLI
prints with exit code 2. The checks run in the order the data appears -- images and stored statistics, then the
output path, and only then the Inception pass -- so a bad input writes nothing: no result, no feature cache.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from harness.sampling.npz import ImageSource, SampleFormatError

POOL_DIM, SPATIAL_DIM = 2048, 2023
STAT_SHAPES = {"mu": (POOL_DIM,), "sigma": (POOL_DIM, POOL_DIM),
               "mu_s": (SPATIAL_DIM,), "sigma_s": (SPATIAL_DIM, SPATIAL_DIM)}


class EvalInputError(SampleFormatError):
    """A bad input to the evaluator (usage error: exit 2, nothing written)."""


def _first_bad(array: np.ndarray) -> str:
    bad = np.argwhere(~np.isfinite(array))[0]
    value = array[tuple(bad)]
    return f"{value} at index {tuple(int(i) for i in bad)}"


def check_samples(source: ImageSource) -> None:
    if source.num_images == 0:
        what = " (it holds only statistics)" if source.stats else ""
        raise EvalInputError(f"{source.path}: no sample images ('arr_0' has 0 rows){what}; the samples must be "
                             f"images to score -- pass the .npz written by varscale sample")


def check_reference(source: ImageSource) -> None:
    if source.num_images == 0 and "mu" not in source.stats:
        raise EvalInputError(f"{source.path}: no reference images ('arr_0' has 0 rows) and no stored 'mu'/'sigma'; "
                             f"pass a reference batch with images or statistics (e.g. "
                             f"VIRTUAL_imagenet256_labeled.npz)")


def check_stored_statistics(source: ImageSource) -> None:
    """Stored mu/sigma (and mu_s/sigma_s): finite, of the protocol's sizes, in pairs, sigma symmetric."""
    stats = source.stats
    for mu_key, sigma_key in (("mu", "sigma"), ("mu_s", "sigma_s")):
        if (mu_key in stats) != (sigma_key in stats):
            have, missing = (mu_key, sigma_key) if mu_key in stats else (sigma_key, mu_key)
            raise EvalInputError(f"{source.path}: has '{have}' but no '{missing}'; store both or neither")
    for key, array in stats.items():
        if key not in STAT_SHAPES:
            continue
        if array.shape != STAT_SHAPES[key]:
            raise EvalInputError(f"{source.path}: '{key}' has shape {array.shape}; expected {STAT_SHAPES[key]} "
                                 f"(statistics of {'pool_3' if key in ('mu', 'sigma') else 'mixed_6/conv[:7]'} "
                                 f"Inception features, as the ADM evaluator stores them)")
        if not np.isfinite(array).all():
            raise EvalInputError(f"{source.path}: '{key}' holds a non-finite value ({_first_bad(array)}); "
                                 f"recompute the statistics from finite features")
    for key in ("sigma", "sigma_s"):
        if key in stats:
            sigma = stats[key]
            asymmetry = float(np.max(np.abs(sigma - sigma.T)))
            if asymmetry > 1e-6 * max(1.0, float(np.max(np.abs(sigma)))):
                raise EvalInputError(f"{source.path}: '{key}' is not symmetric (max |S - S^T| = {asymmetry:.3g}); "
                                     f"expected a covariance matrix (np.cov of the features)")


def check_features(name: str, path, array: np.ndarray, dim: int | None = None) -> None:
    """Features from the Inception pass or the cache: non-empty, finite, of the expected width."""
    if array.ndim != 2 or len(array) == 0:
        raise EvalInputError(f"{path}: {name} features have shape {array.shape}; expected (N >= 1, D)")
    if dim is not None and array.shape[1] != dim:
        raise EvalInputError(f"{path}: {name} features are {array.shape[1]}-d; expected {dim}-d")
    if not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise EvalInputError(f"{path}: {name} features of image {row} are not finite ({_first_bad(array)}); "
                             f"check the Inception weights (--inception-weights) and --inception-dtype")


def check_output_path(out: Path, overwrite: bool) -> None:
    """The result file can be written, and does not replace an earlier result unless asked to; before any work."""
    out = Path(out)
    if out.is_dir():
        raise EvalInputError(f"--out {out}: is a folder; expected a .json file path")
    if out.exists() and not overwrite:
        raise EvalInputError(f"--out {out}: an earlier result is there; pass --overwrite to replace it or choose "
                             f"another --out")
    folder = out.parent
    while not folder.exists():   # the writer creates missing folders: the nearest existing one must take them
        folder = folder.parent
    if not folder.is_dir():
        raise EvalInputError(f"--out {out}: {folder} is a file, not a folder; choose another --out")
    try:   # os.access says yes to root on read-only mounts; only a real file tells
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise EvalInputError(f"--out {out}: cannot write in {folder} ({reason}); choose a writable --out") from None
    if out.exists() and not os.access(out, os.W_OK):
        raise EvalInputError(f"--out {out}: the existing file is not writable; choose another --out")
