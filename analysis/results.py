"""Fit results as data: one `LawFit` per (metric, x, form), gathered in `FitResults`, saved as JSON and CSV.

Files written by `FitResults.save(out_dir)`:
  fits.json     everything: options, compute convention, every fit with parameters, CIs, standard errors,
                the points it was fitted to, log residuals and the hold-out test; `FitResults.load` reads it
  fits.csv      one row per fitted parameter: metric, x, form, param, value, ci_low, ci_high, se, r, n_points,
                rmse_log, holdout_max_abs_rel_error
  points.csv    the final record of every run (the points of the fits against N, before aggregation)
  frontier_<metric>.csv   the raw Pareto-optimal records (Figure 6); the fits against C use the frontier of the
                smoothed curves, stored as their x_values / y_values in fits.json
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.laws import (
    X_UNITS,
    format_coefficient_power,
    format_number,
    format_saturating,
)
from models.files import atomic_write_text


@dataclass
class LawFit:
    metric: str                # loss_last, loss_mean, err_last, err_mean
    x: str                     # "N", "C", or "N,D" for the Chinchilla form
    form: str                  # "paper" (pure power law), "saturating" or "chinchilla"
    params: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    se: dict[str, float]       # bootstrap standard deviations (Chinchilla form)
    ci_level: float
    n_boot: int                # usable bootstrap resamples (laws against C, Chinchilla form); 0 otherwise
    n_points: int
    r: float | None            # Pearson r of log-log points (paper form only)
    rmse_log: float            # root mean square of the log residuals
    x_values: list[float]      # in the fit's unit (N in billions, C in PFLOPs, D raw for Chinchilla)
    y_values: list[float]
    residuals_log: list[float]  # log(y) - log(prediction)
    holdout: dict = field(default_factory=dict)
    x_unit: float = 1.0        # raw value of one unit of x (1e9 for N, 1e15 for C)
    d_values: list[float] | None = None  # second variable of the Chinchilla form
    note: str = ""
    intercept: float | None = None  # paper form: alpha*log(beta), exact even where beta itself overflows
    interval_method: str = ""  # how ci_low/ci_high were computed, set by every fit
    flags: list[str] = field(default_factory=list)  # reasons not to trust this fit (analysis/flags.py)
    # bootstrap parameter samples (n_boot, len(params)) of this session (the band of Figure 6); not saved to JSON
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def predict(self, x_in_unit, d=None) -> np.ndarray:
        x = np.asarray(x_in_unit, dtype=float)
        p = self.params
        if self.form == "paper":
            if self.intercept is not None:
                return np.exp(self.intercept + p["alpha"] * np.log(x))
            return (p["beta"] * x) ** p["alpha"]
        if self.form == "saturating":
            return p["E"] + (p["X0"] / x) ** p["alpha"]
        if d is None:
            raise ValueError("the Chinchilla form needs D as well as N")
        return p["E"] + p["A"] / x ** p["a"] + p["B"] / np.asarray(d, float) ** p["b"]

    @property
    def equation(self) -> str:
        y = "Err" if self.metric.startswith("err") else "L"
        p = self.params
        if self.form == "paper":
            # (beta*X)^alpha written as C*X^alpha: beta is 1e-17 for nearly flat laws, C reads as the value at X=1
            coefficient = np.exp(self.intercept) if self.intercept is not None else p["beta"] ** p["alpha"]
            return format_coefficient_power(float(coefficient), p["alpha"], self.x, y)
        if self.form == "saturating":
            return format_saturating(p["E"], p["X0"], p["alpha"], self.x, y)
        return (rf"${y}={format_number(p['E'], 3)}+{format_number(p['A'])}/N^{{{p['a']:.3g}}}"
                rf"+{format_number(p['B'])}/D^{{{p['b']:.3g}}}$")

    def ci_text(self, name: str) -> str:
        low, high = self.ci_low.get(name, np.nan), self.ci_high.get(name, np.nan)
        if low is None or high is None or np.isnan(low) or np.isnan(high):
            return f"{self.params[name]:.4g} [no interval]"
        return f"{self.params[name]:.4g} [{low:.4g}, {high:.4g}]"


@dataclass
class FitResults:
    fits: list[LawFit]
    options: dict
    convention: dict
    points: pd.DataFrame
    frontiers: dict[str, pd.DataFrame]
    skipped: list[str] = field(default_factory=list)  # fits not done, with the reason
    source: str = ""
    notes: list[str] = field(default_factory=list)  # facts about the data a reader should know (runs per size)

    def flag_rows(self) -> list[dict]:
        """One row per flag of every fit: metric, x, form, flag."""
        return [{"metric": f.metric, "x": f.x, "form": f.form, "flag": flag} for f in self.fits for flag in f.flags]

    def get(self, metric: str, x: str, form: str = "paper") -> LawFit | None:
        for fit in self.fits:
            if (fit.metric, fit.x, fit.form) == (metric, x, form):
                return fit
        return None

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for fit in self.fits:
            for name, value in fit.params.items():
                rows.append({
                    "metric": fit.metric, "x": fit.x, "form": fit.form, "param": name, "value": value,
                    "ci_low": fit.ci_low.get(name), "ci_high": fit.ci_high.get(name), "se": fit.se.get(name),
                    "ci_level": fit.ci_level, "n_boot": fit.n_boot, "r": fit.r, "n_points": fit.n_points,
                    "rmse_log": fit.rmse_log,
                    "holdout_max_abs_rel_error": fit.holdout.get("max_abs_rel_error"),
                    "interval_method": fit.interval_method, "flags": " | ".join(fit.flags),
                })
        return pd.DataFrame(rows)

    def to_json_dict(self) -> dict:
        return {
            "source": self.source, "options": self.options, "convention": self.convention,
            "x_units": {k: {"unit": u, "label": label} for k, (u, label) in X_UNITS.items()},
            "fits": [_json_fit(fit) for fit in self.fits],
            "skipped": self.skipped, "notes": self.notes,
            "points": json.loads(self.points.to_json(orient="records")),
            "frontiers": {k: json.loads(v.to_json(orient="records")) for k, v in self.frontiers.items()},
        }

    def save(self, out_dir: Path | str) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [atomic_write_text(out_dir / "fits.json", json.dumps(self.to_json_dict(), indent=1, allow_nan=False,
                                                                       default=_json_default)),
                   atomic_write_text(out_dir / "fits.csv", self.to_frame().to_csv(index=False)),
                   atomic_write_text(out_dir / "points.csv", self.points.to_csv(index=False))]
        for metric, frontier in self.frontiers.items():
            written.append(atomic_write_text(out_dir / f"frontier_{metric}.csv", frontier.to_csv(index=False)))
        return written

    @classmethod
    def load(cls, path: Path | str) -> "FitResults":
        data = json.loads(Path(path).read_text())
        fits = []
        for fit in data["fits"]:
            for key in ("ci_low", "ci_high", "se"):
                fit[key] = {name: _float_or_none(value) for name, value in fit[key].items()}
            fits.append(LawFit(**fit))
        return cls(fits=fits, options=data["options"],
                   convention=data["convention"], points=pd.DataFrame(data["points"]),
                   frontiers={k: pd.DataFrame(v) for k, v in data["frontiers"].items()},
                   skipped=data.get("skipped", []), source=data.get("source", ""), notes=data.get("notes", []))


def _json_fit(fit: LawFit) -> dict:
    """The fit as JSON: an interval end the data do not bound is the string "inf" (JSON has no infinity)."""
    data = {k: v for k, v in asdict(fit).items() if k != "samples"}
    for key in ("ci_low", "ci_high", "se"):
        data[key] = {name: (value if value is None or np.isfinite(value) else str(float(value)))
                     for name, value in data[key].items()}
    return data


def _float_or_none(value):
    return None if value is None else float(value)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
