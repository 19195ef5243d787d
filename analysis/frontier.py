"""The compute-efficient (Pareto) frontier over training curves, as the VAR paper and Kaplan et al. use for C_min.

For every compute budget C the frontier is the lowest loss that any run had reached by the time it had spent
at most C: F(C) = min over runs r and records i with C_ri <= C of L_ri. This is a non-increasing step function;
its corners are the records that no other record beats with less or equal compute (the Pareto-optimal
records). Those corners are the points the law in C_min is fitted to.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_frontier(curves: pd.DataFrame, x: str = "C_flops", y: str = "loss_last",
                    run: str = "point_id") -> pd.DataFrame:
    """The Pareto-optimal records of `curves` (one row per evaluation of any run), sorted by `x`.

    A record is kept when its `y` is strictly lower than that of every record with smaller or equal `x`
    (ties in `x` keep only the lowest `y`). Returns columns `x`, `y`, `run` plus every other column of the
    kept rows, index reset.
    """
    missing = [c for c in (x, y, run) if c not in curves.columns]
    if missing:
        raise KeyError(f"Pareto frontier: missing column(s) {missing}; have {sorted(curves.columns)}")
    data = curves[np.isfinite(curves[x].to_numpy(float)) & np.isfinite(curves[y].to_numpy(float))]
    if data.empty:
        raise ValueError(f"Pareto frontier: no finite ({x}, {y}) records")
    # Sort by compute, and within equal compute by loss, so the first record of a tie is the best one.
    ordered = data.sort_values([x, y], kind="mergesort")
    values = ordered[y].to_numpy(float)
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], values[:-1]]))
    return ordered[values < best_before].reset_index(drop=True)


def frontier_value(frontier: pd.DataFrame, at: np.ndarray | float, x: str = "C_flops",
                   y: str = "loss_last") -> np.ndarray:
    """F(C) of the step function at the given budgets; NaN below the first record's compute."""
    xs = frontier[x].to_numpy(float)
    ys = frontier[y].to_numpy(float)
    at = np.atleast_1d(np.asarray(at, dtype=float))
    position = np.searchsorted(xs, at, side="right") - 1
    return np.where(position >= 0, ys[np.clip(position, 0, None)], np.nan)
