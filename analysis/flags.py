"""Flags: what makes a fitted law untrustworthy, in words, stored with the fit (fits.json, fits.csv), printed by
`varscale fit` and listed in the report.

Kinds: the optimiser did not converge; a parameter sits on the edge of its box (E = 0 for the law with a
constant, an exponent at its limit); the data do not bound an interval's end (not identified); an estimate
lies outside its own interval (a failed optimisation); an interval that is not reported at all and why.
"""
from __future__ import annotations

import numpy as np

from analysis.intervals import ALPHA_MAX

# a parameter within this many log units (or alpha units) of its box edge is "on the boundary"
EDGE = 1e-3
E_NEGLIGIBLE = 1e-6  # E below this fraction of the smallest loss changes no prediction: it is E = 0


def unique(flags: list[str]) -> list[str]:
    return list(dict.fromkeys(flags))


def outside_interval_flags(law) -> list[str]:
    flags = []
    for name, value in law.params.items():
        low, high = law.ci_low.get(name, np.nan), law.ci_high.get(name, np.nan)
        if np.isnan(low) or np.isnan(high):
            continue
        # relative slack for rounding of an estimate that is an interval end itself (exact data)
        slack = 1e-9 * max(abs(value), 1e-300)
        if not low - slack <= value <= high + slack:
            flags.append(f"{name}={value:.4g} lies outside its own interval [{low:.4g}, {high:.4g}]")
    return flags


def saturating_boundary_flags(fit, x: np.ndarray, y: np.ndarray) -> list[str]:
    e, _, alpha = fit.theta
    flags = []
    if e <= np.log(np.min(y)) + np.log(E_NEGLIGIBLE):
        flags.append(f"E at its lower boundary (E = {np.exp(e):.3g}, under {E_NEGLIGIBLE:g} of the smallest value): "
                     "the data show no irreducible term")
    if alpha >= ALPHA_MAX - EDGE or alpha <= 1e-6 + EDGE:
        flags.append(f"alpha={alpha:.4g} at the edge of its range (0, {ALPHA_MAX:g}]")
    return flags


def chinchilla_flags(fit, bounds: list[tuple[float, float]]) -> list[str]:
    flags = [] if fit.converged else ["the L-BFGS-B optimiser did not report convergence"]
    names = ("E", "A", "a", "B", "b")
    for name, value, (low, high) in zip(names, fit.theta, bounds):
        if value <= low + EDGE or value >= high - EDGE:
            flags.append(f"{name} at the edge of its search box" + (" (E = 0)" if name == "E" and
                                                                       value <= low + EDGE else ""))
    return flags


def chinchilla_interval_flags(law, bounds: list[tuple[float, float]]) -> list[str]:
    """An interval that reaches the search box (an exponent at 1e-6 or 20, E at ~0) or runs to 0 or infinity (the
    profile of B) is not identified; so is the coefficient of a term whose exponent is not."""
    flags = []
    e_floor = np.exp(bounds[0][0] + EDGE)
    if law.ci_low.get("E", np.nan) <= e_floor:
        flags.append("E: the data do not bound its lower end (not identified; the interval reaches E = 0)")
    for name, end, value, bound in (("E", "upper", law.ci_high.get("E", np.nan), np.inf),
                                    ("B", "lower", law.ci_low.get("B", np.nan), 0.0),
                                    ("B", "upper", law.ci_high.get("B", np.nan), np.inf)):
        if value == bound:
            flags.append(f"{name}: the data do not bound its {end} end (not identified)")
    for exponent, coefficient, (low, high) in (("a", "A", bounds[2]), ("b", "B", bounds[4])):
        if law.ci_low.get(exponent, np.nan) <= low + EDGE or law.ci_high.get(exponent, np.nan) >= high - EDGE:
            flags.append(f"{exponent}, {coefficient}: the resamples reach the edge of the exponent's search box "
                         f"[{low:g}, {high:g}] (not identified)")
    return flags
