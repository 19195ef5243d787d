"""Confidence intervals whose coverage is the stated one, and the flags that say when a fit cannot be trusted.

- The paper's law log L = c + alpha*log X (c = alpha*log beta) is a straight line in log-log space: under
  log-normal noise the t-interval of the slope is exact, and so is Fieller's interval for the ratio
  log beta = c / alpha (the set of ratios a t-test of c - rho*alpha = 0 does not reject). When that set is
  not bounded (the slope is not distinguishable from 0) beta is reported as not identified.
- The power law plus constant, log L = logaddexp(e, alpha*(l0 - log x)) with E = exp(e), X0 = exp(l0)*scale,
  is fitted by least squares on log L (the likelihood of log-normal noise) and each parameter gets its
  profile-likelihood interval calibrated with the t distribution on n - 3 degrees of freedom: the values v for
  which the best fit with the parameter held at v raises the residual sum of squares by at most
  t^2 * s^2. An end that the profile never reaches inside the parameter's box is "not identified" (the
  interval runs to the natural bound: E down to 0, alpha or X0 to infinity) and flagged.
The benchmark benchmarks/bench_coverage.py measures the coverage of both on simulated sweeps.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.optimize import brentq, least_squares

from analysis.powerlaw import FitError, check_positive_points

ALPHA_MAX = 20.0     # the box of the law with a constant: alpha in (0, ALPHA_MAX] ...
E_FLOOR_NATS = 30.0  # ... and log E down to log(min L) - 30, i.e. E ~ 1e-13 min L, which is E = 0
N_STARTS = 4         # local least-squares searches from the best points of the start grid
EXACT_SSR = 1e-24    # residual sum of squares per point below which the data are taken as exact


def t_quantile(level: float, dof: int) -> float:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return float(stats.t.ppf(0.5 + level / 2, dof))


@dataclass
class Interval:
    low: float
    high: float
    flags: list[str] = field(default_factory=list)


def loglog_intervals(log_x: np.ndarray, log_y: np.ndarray, level: float) -> dict[str, Interval]:
    """Exact intervals of alpha (t) and beta (Fieller) of log y = c + alpha*log x, least squares."""
    n = log_x.size
    dof = n - 2
    if dof < 1:
        return {name: Interval(np.nan, np.nan, [f"{name}: {n} points leave no degree of freedom for an interval"])
                for name in ("alpha", "beta")}
    mean_x = log_x.mean()
    sxx = ((log_x - mean_x) ** 2).sum()
    alpha = ((log_x - mean_x) * (log_y - log_y.mean())).sum() / sxx
    c = log_y.mean() - alpha * mean_x
    s2 = ((log_y - c - alpha * log_x) ** 2).sum() / dof
    t = t_quantile(level, dof)
    half = t * np.sqrt(s2 / sxx)
    out = {"alpha": Interval(alpha - half, alpha + half)}
    # Var(c_hat - rho*alpha_hat) / s2 = v_cc - 2 rho v_ca + rho^2 v_aa
    v_cc, v_ca, v_aa = 1 / n + mean_x ** 2 / sxx, -mean_x / sxx, 1 / sxx
    q = t * t * s2
    a2, b, c2 = alpha * alpha - q * v_aa, c * alpha - q * v_ca, c * c - q * v_cc
    disc = b * b - a2 * c2
    if a2 > 0 and disc >= 0:
        root = np.sqrt(disc)
        out["beta"] = Interval(float(np.exp((b - root) / a2)), float(np.exp((b + root) / a2)))
    else:
        out["beta"] = Interval(0.0, np.inf, ["beta not identified: the slope is not distinguishable from 0 at "
                                             f"{level:.0%}, so no finite interval holds beta"])
    return out


@dataclass
class SaturatingLSFit:
    """L = E + (X0/x)^alpha by least squares on log L, with profile-likelihood intervals."""

    e_inf: float
    x0: float
    alpha: float
    ssr: float
    n_points: int
    converged: bool
    theta: np.ndarray = field(repr=False)  # (e, l0, alpha) on x / x_scale
    x_scale: float = field(repr=False)
    flags: list[str] = field(default_factory=list)

    def predict(self, x):
        return self.e_inf + (self.x0 / np.asarray(x, dtype=float)) ** self.alpha

    def params(self) -> dict[str, float]:
        return {"E": self.e_inf, "X0": self.x0, "alpha": self.alpha}


def _log_prediction(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    e, l0, alpha = theta
    return np.logaddexp(e, alpha * (l0 - log_x))


def saturating_box(log_x: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lower = np.array([log_y.min() - E_FLOOR_NATS, log_x.min() - 60.0, 1e-6])
    upper = np.array([log_y.max() + 1.0, log_x.max() + 60.0, ALPHA_MAX])
    return lower, upper


def _least_squares(log_x, log_y, start, lower, upper, fixed: int | None = None, value: float = 0.0):
    """Least squares over the free coordinates of theta (one may be held at `value`); (theta, ssr, ok)."""
    free = [i for i in range(3) if i != fixed]

    def full(sub):
        theta = np.empty(3)
        theta[free] = sub
        if fixed is not None:
            theta[fixed] = value
        return theta

    def residuals(sub):
        return _log_prediction(full(sub), log_x) - log_y

    def jacobian(sub):
        e, l0, alpha = full(sub)
        power = alpha * (l0 - log_x)
        w = np.exp(power - np.logaddexp(e, power))
        return np.column_stack([1 - w, w * alpha, w * (l0 - log_x)])[:, free]

    x0 = np.clip(np.asarray(start, float)[free], lower[free] + 1e-12, upper[free] - 1e-12)
    res = least_squares(residuals, x0, jac=jacobian, bounds=(lower[free], upper[free]), method="trf",
                        xtol=1e-13, ftol=1e-13, gtol=1e-13, max_nfev=400)
    return full(res.x), float(2 * res.cost), res.status > 0


def fit_saturating_ls(x: np.ndarray, y: np.ndarray) -> SaturatingLSFit:
    x, y = check_positive_points("saturating power-law fit E + (X0/X)^alpha", 4, x=x, y=y)
    if np.unique(x).size < 3:
        raise FitError("saturating power-law fit: needs at least 3 distinct x values for 3 parameters")
    scale = float(np.exp(np.log(x).mean()))
    log_x, log_y = np.log(x / scale), np.log(y)
    lower, upper = saturating_box(log_x, log_y)
    floor = np.log(y.min())
    grid = np.array([[floor + e_off, l0, alpha] for e_off, l0, alpha in itertools.product(
        (-5.0, -2.0, -0.7, -0.2, -0.05, -0.01), np.linspace(-6.0, 6.0, 9), (0.05, 0.15, 0.4, 1.0, 2.5))])
    grid_ssr = np.array([((_log_prediction(g, log_x) - log_y) ** 2).sum() for g in grid])
    best = None
    for start in grid[np.argsort(grid_ssr)[:N_STARTS]]:  # local searches from the best grid points
        theta, ssr, ok = _least_squares(log_x, log_y, start, lower, upper)
        if best is None or ssr < best[1]:
            best = (theta, ssr, ok)
    theta, ssr, ok = best
    flags = [] if ok else ["the least-squares solver did not report convergence"]
    e, l0, alpha = theta
    return SaturatingLSFit(e_inf=float(np.exp(e)), x0=float(scale * np.exp(l0)), alpha=float(alpha), ssr=ssr,
                           n_points=y.size, converged=ok, theta=theta, x_scale=scale, flags=flags)


PARAM_NAMES = ("E", "X0", "alpha")


def _natural(index: int, value: float, scale: float) -> float:
    return float(np.exp(value)) if index == 0 else float(scale * np.exp(value)) if index == 1 else float(value)


def saturating_intervals(fit: SaturatingLSFit, x: np.ndarray, y: np.ndarray, level: float) -> dict[str, Interval]:
    """Profile-likelihood t-intervals of E, X0 and alpha (see the module docstring)."""
    log_x, log_y = np.log(np.asarray(x, float) / fit.x_scale), np.log(np.asarray(y, float))
    n = log_y.size
    dof = n - 3
    if dof < 1:
        return {name: Interval(np.nan, np.nan, [f"{name}: {n} points for 3 parameters leave no degree of freedom "
                                                "for an interval"]) for name in PARAM_NAMES}
    lower, upper = saturating_box(log_x, log_y)
    if fit.ssr <= EXACT_SSR * n:  # no residual scatter to calibrate with: the interval is the point
        return {name: Interval(value, value, [f"{name}: the law passes through every point (exact data); its "
                                              "interval has zero width"]) for name, value in fit.params().items()}
    threshold = t_quantile(level, dof) ** 2 * fit.ssr / dof
    out = {}
    for index, name in enumerate(PARAM_NAMES):
        out[name] = _profile_one(fit, index, name, log_x, log_y, lower, upper, threshold)
    return out


def _profile_one(fit, index, name, log_x, log_y, lower, upper, threshold) -> Interval:
    centre = fit.theta[index]
    flags: list[str] = []
    warm = {}
    known = {float(centre): -threshold}  # brentq re-evaluates the bracket's ends: give it the values seen

    def excess(value: float) -> float:
        if float(value) in known:
            return known[float(value)]
        side = value > centre
        theta, ssr, _ = _least_squares(log_x, log_y, warm.get(side, fit.theta), lower, upper, index, value)
        warm[side] = theta
        if ssr < fit.ssr - max(1e-9 * fit.ssr, EXACT_SSR):
            flags.append(f"{name}: the profile found a better optimum than the reported fit (SSR {ssr:.3g} < "
                         f"{fit.ssr:.3g}); the estimate is not the minimum")
        known[float(value)] = ssr - fit.ssr - threshold
        return known[float(value)]

    ends = []
    for direction, bound in ((-1, lower[index]), (1, upper[index])):
        inner, step = centre, max(1e-3, 1e-3 * abs(centre))
        found = None
        while True:
            outer = centre + direction * step
            if direction * (outer - bound) >= 0:
                outer = bound
            if excess(outer) > 0:
                found = brentq(excess, min(inner, outer), max(inner, outer), xtol=1e-10, rtol=1e-10)
                break
            if outer == bound:
                break
            inner, step = outer, step * 2.5
        if found is None:
            flags.append(f"{name}: the data do not bound its {'upper' if direction > 0 else 'lower'} end "
                         "(not identified)")
        ends.append(found)
    # an end the data do not bound runs to the parameter's natural limit: 0 below, infinity above
    low = 0.0 if ends[0] is None else _natural(index, ends[0], fit.x_scale)
    high = np.inf if ends[1] is None else _natural(index, ends[1], fit.x_scale)
    return Interval(low, high, flags)


def loglog_band(x: np.ndarray, y: np.ndarray, x_grid: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise t confidence band of the fitted line exp(c + alpha*log x) at x_grid (exact, like the intervals)."""
    log_x, log_y, log_grid = np.log(x), np.log(y), np.log(x_grid)
    dof = log_x.size - 2
    mean_x = log_x.mean()
    sxx = ((log_x - mean_x) ** 2).sum()
    alpha = ((log_x - mean_x) * (log_y - log_y.mean())).sum() / sxx
    c = log_y.mean() - alpha * mean_x
    s = np.sqrt(((log_y - c - alpha * log_x) ** 2).sum() / dof)
    half = t_quantile(level, dof) * s * np.sqrt(1 / log_x.size + (log_grid - mean_x) ** 2 / sxx)
    centre = c + alpha * log_grid
    return np.exp(centre - half), np.exp(centre + half)
