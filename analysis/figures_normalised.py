"""The VAR paper's loss laws (Eqs. 11, 13, 14) on the quantity they describe: reducible over irreducible loss.

The paper fits L = (beta X)^alpha to "the reducible loss normalized by irreducible loss L_inf" and does not
publish L_inf. Our runs give that quantity as (L - E) / E with E the irreducible loss of our own fit
E + (X0/X)^alpha, so each panel shows our points on that scale, our law in the same form, and the published
law as printed. Where our E is not identified (a flag says so) the normalisation is meaningless and the panel
says so instead of drawing.
"""
from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

from analysis.laws import METRIC_LABELS, X_UNITS, paper_law  # noqa: E402
from analysis.results import FitResults  # noqa: E402
from analysis.style import FULL_WIDTH, apply_style  # noqa: E402

PANELS = (("loss_last", "N"), ("loss_mean", "N"), ("loss_last", "C"), ("loss_mean", "C"))


def _unusable(fit) -> str | None:
    if fit is None:
        return "no fit E + (X0/X)^α (too few sizes or failed: see the fits' skipped list)"
    bad = [flag for flag in fit.flags if flag.startswith("E") and ("boundary" in flag or "not identified" in flag)]
    return "E not identified: " + bad[0].split(":", 1)[-1].strip()[:60] if bad else None


def figure_paper_normalised(results: FitResults) -> plt.Figure:
    apply_style()
    panels = [(m, x) for m, x in PANELS if any(f.metric == m and f.x == x for f in results.fits)]
    rows = 2 if any(x == "C" for _, x in panels) else 1
    fig, axes = plt.subplots(rows, 2, figsize=(FULL_WIDTH, 2.6 * rows), squeeze=False)
    for ax, (metric, x_name) in zip(axes.ravel(), [p for p in PANELS if rows == 2 or p[1] == "N"]):
        ax.set_title(f"{METRIC_LABELS[metric]}: (L − E) / E against {x_name}")
        fit = results.get(metric, x_name, "saturating")
        reason = _unusable(fit)
        if reason:
            # wrapped to the panel's width: one long line ran past both edges of the axes
            ax.text(0.5, 0.5, "not comparable:\n" + textwrap.fill(reason, 38), ha="center", va="center",
                    transform=ax.transAxes, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        x, y = np.array(fit.x_values), np.array(fit.y_values)
        e_inf = fit.params["E"]
        reducible = (y - e_inf) / e_inf
        keep = reducible > 0
        grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, 200)
        ax.plot(x[keep], reducible[keep], "o", color="k", markersize=3.5, linestyle="none",
                label=f"our runs, E={e_inf:.3g} from our fit" + ("" if keep.all() else f" ({(~keep).sum()} below E)"))
        ours = (fit.predict(grid) - e_inf) / e_inf
        ax.plot(grid, ours, color="C3", linestyle="--", linewidth=1.3,
                label=f"our law: α={-fit.params['alpha']:.3g}")
        law = paper_law(metric, x_name)
        ax.plot(grid, law(grid), color="0.45", linestyle=":", linewidth=1.4,
                label=f"VAR paper Eq. {law.equation_number}: α={law.alpha:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(X_UNITS[x_name][1])
        ax.set_ylabel("(L − E) / E")
        ax.legend(loc="lower left", fontsize=5.5)
    for ax in axes.ravel()[len(panels):]:
        if not ax.get_title():
            ax.set_visible(False)
    fig.tight_layout()
    return fig
