"""The profile of the least-squares fit of the Chinchilla form L = E + A/N^a + B/D^b, and B's interval from it.

The profile of a parameter at v is the least-squares fit of log L with that parameter held at v; its rise
above the unconstrained minimum, in units of the residual variance s^2 (n - 5 degrees of freedom), is the
squared signed root r(v)^2. B's interval is the set of v with r(v)^2 <= t^2 (t on n - 5 degrees of freedom),
the rule of the law with a constant (analysis/intervals.py); E's interval uses the same profile with critical
values simulated under each tested value instead of t (analysis/joint_e_test.py). An end the profile never
reaches within 30 log units (or E's search box) is not identified and runs to 0 or infinity.
All profile points are solved at once with the batched solver: a geometric scan outwards from the estimate
brackets each end, linear grids narrow the bracket to 1e-3 and linear interpolation places it.
"""
from __future__ import annotations

import numpy as np

from analysis.batched import LEAST_SQUARES_DELTA, Model, chinchilla_model, huber_lm
from analysis.intervals import t_quantile

E_INDEX, B_INDEX = 0, 3                       # coordinates of theta = (e, a, a_exp, b, b_exp)
SCAN_OFFSETS = 1e-3 * 2.0 ** np.arange(16)    # log units outwards from the estimate, up to ~33
REFINE_POINTS = 16
BRACKET_WIDTH = 1e-3                          # log units: the bracket linear interpolation works in


def sum_of_squares(model: Model, theta: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """Residual sum of squares of log L per row of theta (B, p) against log_y (n,) or (B, n)."""
    return ((model(theta)[0] - log_y) ** 2).sum(axis=1)


def held_fit(model: Model, index: int, values: np.ndarray, starts: np.ndarray, log_y: np.ndarray,
             lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fits with coordinate `index` held at `values` (one per row): (theta (m, p), SSR (m,))."""
    theta0 = np.array(starts, dtype=float)
    theta0[:, index] = values
    box_low, box_high = lower.copy(), upper.copy()
    box_low[index], box_high[index] = -np.inf, np.inf  # the held coordinate is never clipped
    log_y = np.broadcast_to(log_y, (theta0.shape[0], np.shape(log_y)[-1]))
    theta = huber_lm(model, theta0, log_y, np.ones(log_y.shape), LEAST_SQUARES_DELTA, box_low, box_high,
                     fixed=index)
    return theta, sum_of_squares(model, theta, log_y)


def profile_end(model: Model, base: np.ndarray, index: int, log_y: np.ndarray, rise: float, direction: int,
                bound: float, lower: np.ndarray, upper: np.ndarray) -> float | None:
    """The value v on one side (direction -1 or 1) of the least-squares estimate `base` where the profile's SSR
    has risen by `rise` above SSR(base); None when it does not within `bound`."""
    ssr_min = float(sum_of_squares(model, base[None, :], log_y)[0])

    def excess(values, starts):
        theta, ssr = held_fit(model, index, values, starts, log_y, lower, upper)
        return ssr - ssr_min - rise, theta

    centre = base[index]
    values = np.unique(np.clip(centre + direction * SCAN_OFFSETS, min(bound, centre), max(bound, centre)))
    values = values[values != centre][::direction]
    if values.size == 0:
        return None
    scan, thetas = excess(values, np.tile(base, (values.size, 1)))
    above = np.flatnonzero(scan > 0)
    if above.size == 0:
        return None
    first = above[0]
    inner, f_inner = (centre, -rise) if first == 0 else (values[first - 1], scan[first - 1])
    start = base if first == 0 else thetas[first - 1]
    outer, f_outer = values[first], scan[first]
    # narrow the bracket by linear grids until linear interpolation inside it is exact enough (the scan's
    # last steps are 16 log units wide when the estimate sits at E's floor)
    while abs(outer - inner) > BRACKET_WIDTH:
        grid = np.linspace(inner, outer, REFINE_POINTS + 1)[1:]
        fine, thetas = excess(grid, np.tile(start, (grid.size, 1)))
        crossing = np.flatnonzero(fine > 0)
        if crossing.size == 0:  # the warmer start found a lower profile at the scan's point: take that point
            return float(outer)
        k = crossing[0]
        if k > 0:
            inner, f_inner, start = grid[k - 1], fine[k - 1], thetas[k - 1]
        outer, f_outer = grid[k], fine[k]
    f_inner = min(f_inner, 0.0)
    return float(inner + (outer - inner) * (-f_inner) / (f_outer - f_inner))


def b_interval(log_n: np.ndarray, log_d: np.ndarray, log_d_scale: float, log_y: np.ndarray, theta_ls: np.ndarray,
               lower: np.ndarray, upper: np.ndarray, level: float) -> tuple[float, float]:
    """B's t-calibrated profile interval (natural units) around the least-squares fit theta_ls.

    log_n and log_d are the logs of N and D in the fit's scaled units (D / exp(log_d_scale)). B's natural value
    is exp(b + b_exp * log_d_scale), so its profile runs on the law in raw log D, where b is log B itself."""
    dof = log_y.size - 5
    model = chinchilla_model(log_n, log_d + log_d_scale)
    base = theta_ls.copy()
    base[B_INDEX] += theta_ls[4] * log_d_scale
    rise = t_quantile(level, dof) ** 2 * float(sum_of_squares(model, base[None, :], log_y)[0]) / dof
    ends = [profile_end(model, base, B_INDEX, log_y, rise, direction, direction * np.inf, lower, upper)
            for direction in (-1, 1)]
    return natural_ends(*ends)


def natural_ends(low: float | None, high: float | None) -> tuple[float, float]:
    """An interval's ends from log to natural units; an end not identified (None) runs to 0 or infinity."""
    return 0.0 if low is None else float(np.exp(low)), np.inf if high is None else float(np.exp(high))
