"""Point estimates of the three law forms on plain arrays (no tables, no bootstrap; see analysis/fits.py).

- `fit_loglog`: the VAR paper's L = (beta*X)^alpha by ordinary least squares of log L on log X, with the
  Pearson r of the log-log points (the paper's Eq. 10).
- `fit_chinchilla`: L = E + A/N^a + B/D^b, Huber loss on log L (Hoffmann et al.'s objective), multi-start
  L-BFGS. (The law with a constant, E + (X0/X)^alpha, is fitted by least squares in analysis/intervals.py,
  where its profile-likelihood intervals need that objective.)

The robust fit uses the log-sum-exp parameterisation of Hoffmann et al. (log L = LSE(e, a - alpha*log x)),
with x divided by its geometric mean so that the starting grid does not depend on the unit of x. Starts: the
objective is evaluated on a coarse grid at once and L-BFGS-B runs from the best few grid points; a caller that
already has a good estimate (a bootstrap refit) passes `start` and skips the grid.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize


class FitError(ValueError):
    """The data cannot be fitted: too few points, non-positive or non-finite values, no spread in x."""


def check_positive_points(what: str, min_points: int, **arrays: np.ndarray) -> list[np.ndarray]:
    """Validate same-length 1-D arrays of positive finite values; return them as float arrays."""
    out = [np.asarray(a, dtype=float).ravel() for a in arrays.values()]
    lengths = {name: a.size for name, a in zip(arrays, out)}
    if len(set(lengths.values())) != 1:
        raise FitError(f"{what}: arrays of different lengths {lengths}")
    n = out[0].size
    if n < min_points:
        raise FitError(f"{what}: {n} points, at least {min_points} are needed")
    for name, a in zip(arrays, out):
        bad = ~np.isfinite(a) | (a <= 0)
        if bad.any():
            raise FitError(f"{what}: {name} must be positive and finite for a log fit, "
                           f"got {a[bad][:5].tolist()} at positions {np.flatnonzero(bad)[:5].tolist()}")
    return out


def loglog_coefficients(log_x: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope, intercept and Pearson r of log_y on log_x along the last axis (batched for the bootstrap)."""
    dx = log_x - log_x.mean(axis=-1, keepdims=True)
    dy = log_y - log_y.mean(axis=-1, keepdims=True)
    sxx, syy, sxy = (dx * dx).sum(-1), (dy * dy).sum(-1), (dx * dy).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = sxy / sxx
        r = sxy / np.sqrt(sxx * syy)
    intercept = log_y.mean(axis=-1) - slope * log_x.mean(axis=-1)
    return slope, intercept, r


@dataclass
class LogLogFit:
    """L = (beta * x)^alpha; log L = alpha*log x + alpha*log beta."""

    alpha: float
    beta: float
    intercept: float  # alpha * log(beta), the natural-log intercept
    r: float          # Pearson correlation of (log x, log L)
    n_points: int

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        return np.exp(self.intercept + self.alpha * np.log(np.asarray(x, dtype=float)))

    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta}


def fit_loglog(x: np.ndarray, y: np.ndarray) -> LogLogFit:
    x, y = check_positive_points("log-log power-law fit", 3, x=x, y=y)
    if np.unique(x).size < 2:
        raise FitError("log-log power-law fit: all x values are equal; nothing to fit a slope to")
    slope, intercept, r = loglog_coefficients(np.log(x), np.log(y))
    if slope == 0:
        raise FitError("log-log power-law fit: the fitted slope is exactly 0, so beta is undefined")
    return LogLogFit(alpha=float(slope), beta=float(np.exp(intercept / slope)), intercept=float(intercept),
                     r=float(r), n_points=x.size)


def huber(residual: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss divided by delta (so that its gradient is O(1) for L-BFGS) and its derivative."""
    small = np.abs(residual) <= delta
    value = np.where(small, 0.5 * residual ** 2 / delta, np.abs(residual) - 0.5 * delta)
    grad = np.where(small, residual / delta, np.sign(residual))
    return value, grad


def _log_sum_exp_terms(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(sum(exp(terms))) over axis 0 and the softmax weights (d LSE / d term)."""
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    return top + np.log(total), weights / total


def _run_lbfgs(objective, starts: np.ndarray, bounds: list[tuple[float, float]]):
    best = None
    for start in starts:
        res = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-8})
        if best is None or res.fun < best.fun:
            best = res
    return best


def _grid_starts(objective_on_grid, grid: np.ndarray, keep: int) -> np.ndarray:
    values = objective_on_grid(grid)
    order = np.argsort(np.where(np.isfinite(values), values, np.inf))
    return grid[order[:keep]]


def chinchilla_bounds(y: np.ndarray) -> list[tuple[float, float]]:
    """Box for (e, a, a_exp, b, b_exp): E between far below and just above the data, decreasing powers."""
    return [(np.log(np.min(y)) - 30, np.log(np.max(y)) + 1), (-60.0, 60.0), (1e-6, 20.0), (-60.0, 60.0),
            (1e-6, 20.0)]


@dataclass
class ChinchillaFit:
    """L = e_inf + a_coef / N^a_exp + b_coef / D^b_exp, with N and D in the caller's units."""

    e_inf: float
    a_coef: float
    a_exp: float
    b_coef: float
    b_exp: float
    objective: float
    n_points: int
    converged: bool
    theta: np.ndarray = field(repr=False)
    scales: tuple[float, float] = field(repr=False)

    def predict(self, n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.e_inf + self.a_coef / n ** self.a_exp + self.b_coef / d ** self.b_exp

    def params(self) -> dict[str, float]:
        return {"E": self.e_inf, "A": self.a_coef, "a": self.a_exp, "B": self.b_coef, "b": self.b_exp}


def fit_chinchilla(n: np.ndarray, d: np.ndarray, y: np.ndarray, delta: float = 1e-3,
                   start: np.ndarray | None = None, n_starts: int = 8,
                   scales: tuple[float, float] | None = None) -> ChinchillaFit:
    n, d, y = check_positive_points("Chinchilla fit E + A/N^a + B/D^b", 6, n=n, d=d, y=y)
    if np.unique(n).size < 3 or np.unique(d).size < 3:
        raise FitError("Chinchilla fit: N and D must each take at least 3 distinct values "
                       f"(got {np.unique(n).size} and {np.unique(d).size}); with 2 the exponent and the "
                       "constant of that term cannot be told apart")
    if scales is None:
        scales = (float(np.exp(np.log(n).mean())), float(np.exp(np.log(d).mean())))
    log_n, log_d, log_y = np.log(n / scales[0]), np.log(d / scales[1]), np.log(y)

    def objective(theta: np.ndarray):
        e, a, a_exp, b, b_exp = theta
        terms = np.stack([np.full_like(log_n, e), a - a_exp * log_n, b - b_exp * log_d])
        log_pred, w = _log_sum_exp_terms(terms)
        value, dres = huber(log_pred - log_y, delta)
        grad = np.array([(dres * w[0]).sum(), (dres * w[1]).sum(), -(dres * w[1] * log_n).sum(),
                         (dres * w[2]).sum(), -(dres * w[2] * log_d).sum()])
        return value.sum() / y.size, grad / y.size

    def objective_on_grid(grid: np.ndarray) -> np.ndarray:
        e, a, a_exp, b, b_exp = (grid[:, i:i + 1] for i in range(5))
        terms = np.stack([np.broadcast_to(e, (grid.shape[0], y.size)), a - a_exp * log_n, b - b_exp * log_d])
        log_pred, _ = _log_sum_exp_terms(terms)
        return huber(log_pred - log_y[None, :], delta)[0].mean(axis=1)

    if start is None:
        floor, middle = np.log(y.min()), np.log(np.median(y))
        coefs = middle + np.log([0.01, 0.1, 0.5])
        exps = [0.05, 0.2, 0.5, 1.0]
        grid = np.array(list(itertools.product(floor + np.log([0.3, 0.7, 0.95]), coefs, exps, coefs, exps)))
        starts = _grid_starts(objective_on_grid, grid, n_starts)
    else:
        starts = np.asarray(start, dtype=float)[None, :]
    bounds = chinchilla_bounds(y)
    res = _run_lbfgs(objective, starts, bounds)
    e, a, a_exp, b, b_exp = res.x
    # A / N^a on the scaled axis equals A * scale^a / N^a on the caller's axis.
    return ChinchillaFit(e_inf=float(np.exp(e)), a_coef=float(np.exp(a) * scales[0] ** a_exp), a_exp=float(a_exp),
                         b_coef=float(np.exp(b) * scales[1] ** b_exp), b_exp=float(b_exp),
                         objective=float(res.fun), n_points=y.size, converged=bool(res.success),
                         theta=res.x.copy(), scales=scales)
