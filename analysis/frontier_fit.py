"""Laws against compute: the frontier of smoothed training curves, and a bootstrap interval that repeats it.

The raw Pareto frontier (analysis/frontier.py) keeps, at every budget, the record whose noise happened to be
most favourable, and which records it keeps jumps from one noise draw to the next: a law fitted to it is biased
low and no resampling of whole runs reproduces that (a run bootstrap covered 80% at a nominal 95%). So:

1. Each run's curve is smoothed: log L is fitted by least squares with a cubic polynomial in log C, per run
   (SMOOTH_DEGREE; each run needs SMOOTH_DEGREE + 1 + MIN_DOF records).
2. The frontier is that of the smoothed curves, as a step function (the lowest smoothed loss any run reached
   with at most C: each run's running minimum, held after its last record), evaluated on GRID_POINTS
   log-spaced budgets from the smallest to the largest record compute. Unlike a set of selected records it
   moves continuously with the data.
3. The law is fitted to those grid points, as against N (log-log least squares, or least squares on log L).

Interval: a residual bootstrap of all three steps. Each run's residuals from its smoothed curve, inflated by
sqrt(n / (n - p)) for the p polynomial coefficients, are drawn with replacement within the run and added to
the smoothed curve; curves are re-smoothed, the frontier re-taken and the law re-fitted, all resamples at once
(the smoother and the grid evaluation are one fixed linear map, the frontier a running minimum, the pure power
law a closed-form regression, the law with a constant a batched Levenberg-Marquardt). The reported interval is
the basic bootstrap interval 2 estimate - (upper, lower percentile), which removes the bias the resamples
reproduce (what remains of the minimum's selection of favourable noise). Its coverage of the law fitted to the
noise-free frontier of simulated curves is measured by benchmarks/bench_coverage.py (benchmarks/RESULTS.md).
Runs are treated as independent curves with independent record noise: a seed effect shared by all records of
a run is not in the interval.
"""
from __future__ import annotations

import numpy as np

from analysis.batched import LEAST_SQUARES_DELTA, huber_lm
from analysis.intervals import Interval, saturating_box

SMOOTH_DEGREE = 3
MIN_DOF = 2
GRID_POINTS = 60


def too_few_records(run_code: np.ndarray) -> str:
    """'' when every run has enough records to be smoothed, else why not."""
    counts = np.bincount(run_code)
    need = SMOOTH_DEGREE + 1 + MIN_DOF
    if counts.min() < need:
        return (f"a run has {counts.min()} records above the compute floor; smoothing its curve needs {need} "
                f"(a degree-{SMOOTH_DEGREE} polynomial in log C plus {MIN_DOF} degrees of freedom for its noise)")
    return ""


def _design(log_c: np.ndarray, centre: float, spread: float) -> np.ndarray:
    return np.vander((log_c - centre) / spread, SMOOTH_DEGREE + 1)


class SmoothedFrontier:
    """The smoothing and grid-evaluation map of one table's records (log C, run) and its frontier."""

    def __init__(self, log_c: np.ndarray, run_code: np.ndarray, grid_points: int = GRID_POINTS):
        self.log_c, self.run_code = np.asarray(log_c, float), np.asarray(run_code)
        self.n_runs = int(self.run_code.max()) + 1
        self.grid = np.linspace(self.log_c.min(), self.log_c.max(), grid_points)
        m = self.log_c.size
        self.hat = np.zeros((m, m))                                   # records -> smoothed records
        self.to_grid = np.zeros((self.n_runs, grid_points, m))        # records -> each run's curve on the grid
        self.started = np.zeros((self.n_runs, grid_points), dtype=bool)
        for run in range(self.n_runs):
            rows = np.flatnonzero(self.run_code == run)
            own = self.log_c[rows]
            centre, spread = own.mean(), max(np.ptp(own), 1e-12)
            solve = np.linalg.pinv(_design(own, centre, spread))
            self.hat[np.ix_(rows, rows)] = _design(own, centre, spread) @ solve
            # after its last record a run's best value is held: clamp the budget to the run's range
            clamped = np.clip(self.grid, own.min(), own.max())
            self.to_grid[run][:, rows] = _design(clamped, centre, spread) @ solve
            self.started[run] = self.grid >= own.min() - 1e-12 * max(1.0, abs(own.min()))

    def frontier(self, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log frontier values (B, G), index of the run that reaches each) for rows of log values (B, M)."""
        curves = np.einsum("rgm,bm->brg", self.to_grid, np.atleast_2d(log_y))
        curves = np.minimum.accumulate(np.where(self.started[None], curves, np.inf), axis=2)
        return curves.min(axis=1), curves.argmin(axis=1)

    def resample(self, log_y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
        """Log frontier values (n_boot, G) of residual-bootstrap resamples of the records log_y (M,)."""
        smoothed = self.hat @ log_y
        residuals = log_y - smoothed
        drawn = np.empty((n_boot, log_y.size))
        for run in range(self.n_runs):
            rows = np.flatnonzero(self.run_code == run)
            inflated = residuals[rows] * np.sqrt(rows.size / (rows.size - SMOOTH_DEGREE - 1))
            drawn[:, rows] = inflated[rng.integers(0, rows.size, size=(n_boot, rows.size))]
        return self.frontier(smoothed[None, :] + drawn)[0]


def basic_interval(estimate: np.ndarray, samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The basic bootstrap interval (2 estimate - upper percentile, 2 estimate - lower percentile)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail], axis=0)
    return 2 * np.asarray(estimate) - high, 2 * np.asarray(estimate) - low


def paper_resamples(log_x: np.ndarray, log_frontier: np.ndarray) -> np.ndarray:
    """(alpha, intercept) of log L = intercept + alpha log C per resample row (closed-form least squares)."""
    mean_x, mean_y = log_x.mean(), log_frontier.mean(axis=1)
    dx = log_x - mean_x
    slope = (log_frontier - mean_y[:, None]) @ dx / (dx @ dx)
    return np.column_stack([slope, mean_y - slope * mean_x])


def frontier_paper_intervals(fit, log_frontier: np.ndarray, log_x: np.ndarray, level: float):
    """Basic intervals of alpha and beta = exp(intercept / alpha); samples (B, 2) of (alpha, beta)."""
    samples = paper_resamples(log_x, log_frontier)
    alpha, intercept = fit.params()["alpha"], fit.intercept
    low, high = basic_interval(alpha, samples[:, 0], level)
    out = {"alpha": Interval(float(low), float(high))}
    if low <= 0 <= high:
        out["beta"] = Interval(0.0, np.inf, [f"beta not identified: the exponent's {level:.0%} interval holds 0, "
                                             "so no finite interval holds beta"])
    else:
        log_beta_low, log_beta_high = basic_interval(intercept / alpha, samples[:, 1] / samples[:, 0], level)
        out["beta"] = Interval(float(np.exp(log_beta_low)), float(np.exp(log_beta_high)))
    return out, np.column_stack([samples[:, 0], np.exp(samples[:, 1] / samples[:, 0])])


def saturating_model(log_x: np.ndarray):
    """log L = logaddexp(e, alpha (l0 - log x)) for rows of theta = (e, l0, alpha), with its Jacobian."""
    def model(theta: np.ndarray):
        e, l0, alpha = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        power = alpha * (l0 - log_x[None, :])
        pred = np.logaddexp(e, power)
        w = np.exp(power - pred)
        return pred, np.stack([1 - w, w * alpha, w * (l0 - log_x[None, :])], axis=-1)
    return model


def frontier_saturating_intervals(fit, log_frontier: np.ndarray, log_x: np.ndarray, level: float):
    """Basic intervals of E and X0 (on the log scale) and alpha, from batched least-squares refits."""
    scaled = log_x - np.log(fit.x_scale)
    lower, upper = saturating_box(scaled, log_frontier.mean(axis=0))
    theta = huber_lm(saturating_model(scaled), np.tile(fit.theta, (log_frontier.shape[0], 1)), log_frontier,
                     np.ones_like(log_frontier), LEAST_SQUARES_DELTA, lower, upper)
    theta = theta[np.all(np.isfinite(theta), axis=1)]
    low, high = basic_interval(fit.theta, theta, level)
    out, flags = {}, []
    for index, name in enumerate(("E", "X0", "alpha")):
        if name == "alpha" and low[index] <= 0:
            flags = [f"alpha: its {level:.0%} interval reaches 0 (not identified)"]
        natural = (np.exp, lambda v: fit.x_scale * np.exp(v), lambda v: max(v, 0.0))[index]
        out[name] = Interval(float(natural(low[index])), float(natural(high[index])), flags if name == "alpha" else [])
    samples = np.column_stack([np.exp(theta[:, 0]), fit.x_scale * np.exp(theta[:, 1]), theta[:, 2]])
    return out, samples


def paper_band(alpha: float, intercept: float, samples: np.ndarray, x_grid: np.ndarray, level: float):
    """Pointwise basic-bootstrap band of (beta x)^alpha at x_grid from resampled (alpha, beta) rows."""
    log_x = np.log(x_grid)
    resampled = samples[:, :1] * (np.log(samples[:, 1:2]) + log_x[None, :])
    low, high = basic_interval(intercept + alpha * log_x, resampled, level)
    return np.exp(low), np.exp(high)
