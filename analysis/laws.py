"""The functional forms of the scaling laws and the VAR paper's published fits (Eqs. 11-16).

Units follow the paper: N in billions of parameters, C in PFLOPs (1e15 FLOPs of training compute), token
error as a fraction. The paper's L is the reducible loss normalised by an irreducible L_inf that it does not
publish: its loss laws compare with (L - E) / E of our runs, E our fitted irreducible loss, never with raw
cross-entropy (analysis/figures.py draws them that way); its error laws are on the raw error fraction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The x variables a law can be written against, with the unit the fit uses and an axis label.
X_UNITS = {
    "N": (1e9, "Model parameters N (billions)"),
    "C": (1e15, "Training compute C (PFLOPs)"),
}

METRIC_LABELS = {
    "loss_last": "Test loss, last scale",
    "loss_mean": "Test loss, all scales",
    "err_last": "Token error rate, last scale",
    "err_mean": "Token error rate, all scales",
}

@dataclass(frozen=True)
class PaperLaw:
    """One published pure power law L = (beta * X)^alpha, X in the paper's unit for `x`."""

    equation_number: int
    metric: str
    x: str
    beta: float
    alpha: float

    def __call__(self, x_in_unit: np.ndarray | float) -> np.ndarray:
        return pure_power_law(np.asarray(x_in_unit, dtype=float), self.beta, self.alpha)

    @property
    def label(self) -> str:
        y = "Err" if self.metric.startswith("err") else "L"
        return f"VAR paper Eq. {self.equation_number}: {format_pure_power(self.beta, self.alpha, self.x, y)}"


# Eqs. 11-16 of the NeurIPS text (docs/references.md §1.2).
PAPER_LAWS: tuple[PaperLaw, ...] = (
    PaperLaw(11, "loss_last", "N", 2.0, -0.23),
    PaperLaw(11, "loss_mean", "N", 2.5, -0.20),
    PaperLaw(12, "err_last", "N", 4.9e2, -0.016),
    PaperLaw(12, "err_mean", "N", 6.5e2, -0.010),
    PaperLaw(13, "loss_last", "C", 2.2e-5, -0.13),
    PaperLaw(14, "loss_mean", "C", 1.5e-5, -0.16),
    PaperLaw(15, "err_last", "C", 8.1e-2, -0.0067),
    PaperLaw(16, "err_mean", "C", 4.4e-2, -0.011),
)


def paper_law(metric: str, x: str) -> PaperLaw:
    for law in PAPER_LAWS:
        if law.metric == metric and law.x == x:
            return law
    known = sorted({(law.metric, law.x) for law in PAPER_LAWS})
    raise KeyError(f"the VAR paper publishes no law for metric {metric!r} against {x!r}; known: {known}")


def pure_power_law(x: np.ndarray, beta: float, alpha: float) -> np.ndarray:
    """The paper's form L = (beta * x)^alpha."""
    return (beta * x) ** alpha


def saturating_power_law(x: np.ndarray, e_inf: float, x0: float, alpha: float) -> np.ndarray:
    """Power law plus constant (Henighan et al. 2020): L = E + (x0 / x)^alpha."""
    return e_inf + (x0 / x) ** alpha


def chinchilla_law(n: np.ndarray, d: np.ndarray, e_inf: float, a_coef: float, a_exp: float,
                   b_coef: float, b_exp: float) -> np.ndarray:
    """Hoffmann et al. 2022: L = E + A / N^a + B / D^b."""
    return e_inf + a_coef / n ** a_exp + b_coef / d ** b_exp


def format_number(value: float, digits: int = 2) -> str:
    """Compact mathtext for a coefficient: 2.0, 0.013, 4.9\\times10^{2}."""
    if value == 0 or not np.isfinite(value):
        return f"{value:g}"
    exponent = int(np.floor(np.log10(abs(value))))
    if -2 <= exponent <= 2:
        return f"{value:.{max(digits - 1 - exponent, 0)}f}"
    mantissa = value / 10 ** exponent
    return rf"{mantissa:.{digits - 1}f}\times10^{{{exponent}}}"


def format_coefficient_power(coefficient: float, alpha: float, x: str, y: str = "L") -> str:
    """The readable form of (beta*X)^alpha: C*X^alpha with C = beta^alpha, the value at X = 1 unit."""
    return rf"${y}={format_number(coefficient, 3)}\cdot {x}^{{{alpha:.3g}}}$"


def format_pure_power(beta: float, alpha: float, x: str, y: str = "L") -> str:
    return rf"${y}=({format_number(beta)}\cdot {x})^{{{alpha:.3g}}}$"


def format_saturating(e_inf: float, x0: float, alpha: float, x: str, y: str = "L") -> str:
    """E + (X0/X)^alpha written as E + C*X^-alpha with C = X0^alpha (readable where X0 is 1e-9 or 1e12)."""
    return rf"${y}={format_number(e_inf, 3)}+{format_number(x0 ** alpha, 3)}\cdot {x}^{{{-alpha:.3g}}}$"
