"""E's interval of the Chinchilla form L = E + A/N^a + B/D^b: the values that a parametric-bootstrap test of
E = v does not reject (test inversion).

The statistic is the profile's signed root r(v) = sign(v - E_hat) * sqrt((SSR(v) - SSR_min) / s^2) of the
least-squares fit of log L (SSR(v): the best fit with E held at v; s^2 = SSR_min / (n - 5); analysis/
joint_profile.py). Its null distribution at v is simulated, not taken from t: the fit with E held at v (the
other parameters at their constrained least-squares values) plus normal noise of sd s on log L, each simulated
sweep refitted with E held at v and free, giving r*(v). v is accepted when r(v) lies between r*(v)'s
(1 - level)/2 and (1 + level)/2 quantiles. Why not t: at 5 model sizes E's truth (1.8 among losses of 7-15)
sits near the boundary E = 0, r is under-dispersed there (2.5/97.5 percentiles -1.67/1.87 against
t_15 = 2.13) and the t-calibrated profile covered 0.978 (benchmarks/RESULTS.md).
Each end solves r(v) = quantile of r*(v) by fixed-point steps: v_next is where the observed profile reaches
the critical value simulated at v (the profile is cheap, the simulation is not), starting from the t end;
every step uses the same standard-normal draws, so the critical value is a smooth function of v. When E's
search-box floor (E ~ 0) is accepted the lower end is not identified and runs to 0; likewise the top of the
box (E just above the largest loss) for the upper end, which then runs to infinity.
"""
from __future__ import annotations

import numpy as np

from analysis.batched import LEAST_SQUARES_DELTA, Model, huber_lm
from analysis.intervals import t_quantile
from analysis.joint_profile import E_INDEX, held_fit, natural_ends, profile_end, sum_of_squares

N_NULL = 200          # simulated sweeps per tested value of E
MAX_STEPS = 8         # fixed-point steps per end
STEP_TOLERANCE = 1e-3  # log units of E: the end is placed to well within the simulation's own scatter


def e_interval(model: Model, theta_ls: np.ndarray, log_y: np.ndarray, lower: np.ndarray, upper: np.ndarray,
               level: float, rng: np.random.Generator) -> tuple[float, float]:
    """E's interval (natural units) around the least-squares fit theta_ls of log_y (scaled model)."""
    dof = log_y.size - 5
    ssr_min = float(sum_of_squares(model, theta_ls[None, :], log_y)[0])
    s2 = ssr_min / dof
    draws = rng.standard_normal((N_NULL, log_y.size))
    tail = (1 - level) / 2
    ends = []
    for direction, bound, quantile in ((-1, lower[E_INDEX], tail), (1, upper[E_INDEX], 1 - tail)):
        critical = t_quantile(level, dof)
        end = profile_end(model, theta_ls, E_INDEX, log_y, critical ** 2 * s2, direction, bound, lower, upper)
        for _ in range(MAX_STEPS):
            tested = bound if end is None else end
            observed = _signed_roots(model, tested, theta_ls, log_y, lower, upper, dof, theta_ls, ssr_min)
            null = _null_roots(model, tested, theta_ls, log_y, lower, upper, dof, np.sqrt(s2) * draws)
            critical = float(np.quantile(null, quantile))
            if direction * critical <= 0:  # every value on this side is rejected
                end = float(theta_ls[E_INDEX])
                break
            if end is None and direction * observed[0] <= direction * critical:
                break  # the box edge is accepted: this end is not identified
            moved = profile_end(model, theta_ls, E_INDEX, log_y, critical ** 2 * s2, direction, bound, lower,
                                upper)
            converged = moved is not None and end is not None and abs(moved - end) <= STEP_TOLERANCE
            end = moved
            if converged:
                break
        ends.append(end)
    return natural_ends(*ends)


def _signed_roots(model, value, starts, log_y, lower, upper, dof, free_theta, free_ssr) -> np.ndarray:
    """r at E = value for each row of log_y, given each row's free fit (theta (m, p) or (p,), SSR)."""
    log_y = np.atleast_2d(log_y)
    starts = np.broadcast_to(starts, (log_y.shape[0], np.shape(starts)[-1]))
    _, held_ssr = held_fit(model, E_INDEX, np.full(log_y.shape[0], value), starts, log_y, lower, upper)
    free_ssr = np.minimum(free_ssr, held_ssr)  # a held fit below the free one means the free one stopped early
    free_e = np.atleast_2d(free_theta)[:, E_INDEX]
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.maximum(held_ssr - free_ssr, 0.0) / (free_ssr / dof))
    return np.sign(value - free_e) * np.nan_to_num(root)


def _null_roots(model, value, theta_ls, log_y, lower, upper, dof, noise) -> np.ndarray:
    """r*(value): sweeps simulated from the fit with E held at value, plus `noise` (N_NULL, n) on log L."""
    held, _ = held_fit(model, E_INDEX, np.array([value]), theta_ls[None, :], log_y, lower, upper)
    simulated = model(held)[0] + noise
    rows = simulated.shape[0]
    # the free fit from two starts: the null's own parameters, and the observed estimate (E's gradient
    # vanishes near E = 0, so a start there alone never finds an optimum with E > 0)
    fits = [huber_lm(model, np.tile(start, (rows, 1)), simulated, np.ones(simulated.shape), LEAST_SQUARES_DELTA,
                     lower, upper) for start in (held[0], theta_ls)]
    ssrs = np.stack([sum_of_squares(model, theta, simulated) for theta in fits])
    best = np.argmin(ssrs, axis=0)
    free = np.where((best == 0)[:, None], fits[0], fits[1])
    return _signed_roots(model, value, np.tile(held[0], (rows, 1)), simulated, lower, upper, dof, free,
                         ssrs.min(axis=0))
