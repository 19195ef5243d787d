"""Bootstrap helpers: a generator per fit, percentile intervals, resample counts, the parametric noise sd.

The Chinchilla form's intervals of A, a and b are a parametric bootstrap (analysis/joint.py): refits, all
resamples at once (analysis/batched.py), to the fitted law plus normal noise of the residual sd (E's interval
inverts a parametric-bootstrap test instead, analysis/joint_e_test.py). Resamples whose refit is not
finite are dropped and more are drawn, up to MAX_DRAW_FACTOR times the requested number; the count of usable
resamples is reported with every fit. The laws against N have exact or profile-likelihood intervals
(analysis/intervals.py), those against compute a residual bootstrap of their own (analysis/frontier_fit.py).
"""
from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

from analysis.powerlaw import FitError

MAX_DRAW_FACTOR = 3


def fit_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator of its own for each fit (seed + the fit's name), so that a fit's intervals do not depend on
    which other laws were fitted in the same call."""
    return np.random.default_rng([seed, zlib.crc32("|".join(names).encode())])


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval along axis 0."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    tail = (1 - level) / 2
    return np.quantile(samples, tail, axis=0), np.quantile(samples, 1 - tail, axis=0)


def residual_sd(log_residuals: np.ndarray, n_params: int) -> float:
    """The noise sd of a parametric bootstrap: the residual sd on n - p degrees of freedom (unbiased variance
    for least squares). Scaling it further by t_{n-p}/z, exact for a linear least-squares fit, made the
    Chinchilla form's Huber intervals over-cover (0.97-0.99 in simulation), so it is not applied."""
    dof = log_residuals.size - n_params
    if dof < 1:
        raise FitError(f"{log_residuals.size} points for {n_params} parameters leave no degree of freedom for "
                       "an interval")
    return float(np.sqrt((log_residuals ** 2).sum() / dof))


def resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) counts of each of n items in n draws with replacement."""
    drawn = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n), dtype=np.int64)
    np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1)
    return counts


def distinct_present(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row of weights, how many distinct `values` (rows of a 2-D array) carry positive weight."""
    _, codes = np.unique(values, axis=0, return_inverse=True)
    codes = codes.ravel()
    onehot = np.zeros((codes.size, codes.max() + 1))
    onehot[np.arange(codes.size), codes] = 1
    return ((weights > 0).astype(float) @ onehot > 0).sum(axis=1)


def draw_until(n_boot: int, draw: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Collect `n_boot` usable parameter rows from `draw(batch) -> (params (batch, p), usable (batch,))`."""
    kept: list[np.ndarray] = []
    total, drawn = 0, 0
    while total < n_boot and drawn < MAX_DRAW_FACTOR * n_boot:
        batch = max(n_boot - total, 64) if drawn else n_boot
        params, usable = draw(batch)
        drawn += batch
        usable = usable & np.all(np.isfinite(params), axis=1)
        kept.append(params[usable])
        total += int(usable.sum())
    if n_boot and total == 0:
        raise FitError("no bootstrap resample could be fitted (too few distinct points)")
    return np.concatenate(kept)[:n_boot]
