"""The look of every varscale figure: sizes for a two-column paper (FULL_WIDTH inches wide, 8 pt text), the
seaborn theme, and the one way figures are written (atomically, PNG at 200 dpi and PDF)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402

from models.files import atomic_target  # noqa: E402

FULL_WIDTH = 6.75   # inches, text width of a two-column paper
COLUMN_WIDTH = 3.25


def apply_style() -> None:
    sns.set_theme(context="paper", style="ticks", palette="colorblind", font_scale=1.0,
                  rc={"font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8.5, "legend.fontsize": 6.5,
                      "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.grid": True, "grid.alpha": 0.3,
                      "figure.dpi": 100, "savefig.dpi": 200, "legend.framealpha": 0.85})


def plain_log_x_ticks(ax) -> None:
    """On a log x axis spanning under two decades, matplotlib labels minor ticks in scientific notation, and
    neighbours such as "3 x 10^3" and "4 x 10^3" run into each other: plain 1-2-5 steps instead."""
    left, right = ax.get_xlim()
    if right / left < 100:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())


def save_figure(fig: plt.Figure, out_dir: Path | str, stem: str, formats=("png", "pdf")) -> list[Path]:
    """Write fig as out_dir/stem.<format> for each format, atomically; closes the figure."""
    written = []
    for fmt in formats:
        target = Path(out_dir) / f"{stem}.{fmt}"
        with atomic_target(target) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written
