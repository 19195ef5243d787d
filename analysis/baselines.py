"""Published ImageNet results (analysis/data/baselines.csv) and our own evaluations side by side.

Our rows come from the evaluation result JSONs that `varscale eval` writes (RUN_DIR/eval/*.json or
SAMPLES.npz*.eval.json; docs/contracts.md) and are marked `origin = "varscale (ours)"`, apart from the
published numbers. Our FIDs are only comparable with the published ones under the same protocol (50,000
samples, ADM reference batch); the table keeps the sample count and reference so a reader can tell.
Inference time relative to VAR-d30 is published for some rows; for ours it is estimated in proportion to
parameters (VAR-d30 = 2.01B = 1) unless the result carries a measured `relative_time`, and the plot marks it.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402

from analysis.style import FULL_WIDTH, apply_style  # noqa: E402

BASELINES_CSV = Path(__file__).resolve().parent / "data" / "baselines.csv"
OURS = "varscale (ours)"
VAR_D30_PARAMS = 2_010_020_356
COLUMNS = ["resolution", "family", "model", "fid", "is", "precision", "recall", "params_m", "steps", "rel_time",
           "origin", "source", "note"]
# how each published number was measured and who measured it; every row must fill these (a test checks)
PROTOCOL_COLUMNS = ["gen_resolution", "labels", "guidance", "primary_source"]


def load_baselines(resolution: int | None = 256, path: Path | str | None = None) -> pd.DataFrame:
    table = pd.read_csv(path or BASELINES_CSV)
    missing = [c for c in COLUMNS + PROTOCOL_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path or BASELINES_CSV}: missing column(s) {missing}")
    return table[table["resolution"] == resolution].reset_index(drop=True) if resolution else table


def find_eval_results(root: Path | str) -> list[Path]:
    """Evaluation result JSONs under root (RUN_DIR/eval/*.json and *.eval.json)."""
    root = Path(root)
    candidates = set(root.rglob("eval/*.json")) | set(root.rglob("*.eval.json"))
    return sorted(p for p in candidates if _is_eval_result(p))


def _is_eval_result(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("metrics"), dict) and "is_mean" in data["metrics"]


def _model_info(result: dict, path: Path) -> tuple[str, float | None]:
    """(name, params) from the sampling protocol in the result, else the run directory's config.json."""
    model = (((result.get("inputs") or {}).get("samples") or {}).get("sampling_protocol") or {}).get("model") or {}
    block = model.get("config_model_block") or {}
    name = model.get("name") or block.get("name")
    params = block.get("params_total") or model.get("params_total")
    run_dir = Path(model["run_dir"]) if model.get("run_dir") else path.parent.parent
    config_path = run_dir / "config.json"
    if (params is None or name is None) and config_path.is_file():
        config_model = json.loads(config_path.read_text()).get("model") or {}
        name = name or config_model.get("name")
        params = params or config_model.get("params_total")
    return name or path.stem, params


def load_eval_result(path: Path | str) -> dict:
    path = Path(path)
    result = json.loads(path.read_text())
    metrics = result.get("metrics")
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: not an evaluation result (no 'metrics' object)")
    samples = (result.get("inputs") or {}).get("samples") or {}
    reference = (result.get("inputs") or {}).get("reference") or {}
    name, params = _model_info(result, path)
    resolution = (samples.get("resolution") or [None])[0]
    rel_time = result.get("relative_time")
    estimated = rel_time is None and params is not None
    if estimated:
        rel_time = params / VAR_D30_PARAMS
    note = [f"N={samples.get('num_images', '?')} samples"]
    if reference.get("path"):
        note.append(f"reference {Path(reference['path']).name}")
    else:
        note.append("no reference batch: FID not computed")
    if estimated:
        note.append("time estimated from parameters")
    return {"resolution": resolution, "family": "ours", "model": name, "fid": metrics.get("fid", np.nan),
            "is": metrics.get("is_mean", np.nan), "precision": metrics.get("precision", np.nan),
            "recall": metrics.get("recall", np.nan), "params_m": params / 1e6 if params else np.nan,
            "steps": np.nan, "rel_time": rel_time, "origin": OURS, "source": str(path), "note": "; ".join(note),
            "time_estimated": estimated, "gen_resolution": resolution, "primary_source": str(path),
            "labels": samples.get("label_order") or samples.get("labels") or "see the sample batch's protocol",
            "guidance": (f"cfg {samples['cfg']}" if samples.get("cfg") is not None
                         else "see the sample batch's protocol")}


def comparison_table(eval_paths: list[Path], resolution: int = 256, baselines: pd.DataFrame | None = None):
    """Published rows of `resolution` plus ours, sorted by FID (ours without FID last)."""
    published = load_baselines(resolution) if baselines is None else baselines
    published = published.assign(time_estimated=False)
    ours = pd.DataFrame([load_eval_result(p) for p in eval_paths], columns=COLUMNS + PROTOCOL_COLUMNS
                        + ["time_estimated"])
    table = pd.concat([published, ours], ignore_index=True) if len(ours) else published
    return table.sort_values("fid", na_position="last").reset_index(drop=True)


def _scatter_families(ax, table: pd.DataFrame, x: str) -> list[tuple[float, float, str, str]]:
    """Draw the points; returns (x, y, label, colour) of every drawn point for `place_labels`."""
    # The README rows repeat the VAR models with older numbers: kept in the table, left out of the plot.
    published = table[(table["origin"] != OURS) & (table["origin"] != "VAR README") & table[x].notna()
                      & table["fid"].notna()]
    points = []
    for family, rows in published.groupby("family"):
        dots = ax.scatter(rows[x], rows["fid"], s=14, label=f"{family} (published)", alpha=0.85)
        colour = dots.get_facecolor()[0]
        points += [(row[x], row["fid"], row["model"], colour) for _, row in rows.iterrows()]
    ours = table[(table["origin"] == OURS) & table[x].notna() & table["fid"].notna()]
    if len(ours):
        estimated = ours["time_estimated"].astype(bool) if x == "rel_time" else np.zeros(len(ours), bool)
        for mask, label, face in ((~estimated, "varscale (ours)", "red"),
                                  (estimated, "varscale (ours), time estimated", "none")):
            rows = ours[np.asarray(mask)]
            if len(rows):
                ax.scatter(rows[x], rows["fid"], s=60, marker="*", facecolors=face, edgecolors="red",
                           label=label, zorder=5)
                points += [(row[x], row["fid"], row["model"], "red") for _, row in rows.iterrows()]
    ax.set_xscale("log")
    ax.set_yscale("log")
    if points:  # room around the outermost points so that no marker or label is clipped
        xs, ys = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
        ax.set_xlim(xs.min() / 1.6, xs.max() * 1.6)
        ax.set_ylim(ys.min() / 1.15, ys.max() * 1.15)
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("FID, lower is better (published: 50K samples)")
    if ax.get_legend_handles_labels()[0]:  # nothing to list when no result exists at this resolution
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return points


# label offsets in points, tried in order until one overlaps no label and no marker already placed
LABEL_OFFSETS = [(3, 2, "left"), (-3, 2, "right"), (3, -7, "left"), (-3, -7, "right"), (0, 5, "center"),
                 (0, -10, "center"), (6, -2, "left"), (-6, -2, "right"), (3, 9, "left"), (-3, 9, "right"),
                 (3, -14, "left"), (-3, -14, "right"), (0, 13, "center"), (0, -18, "center")]


def place_labels(ax, points: list[tuple[float, float, str, str]]) -> list:
    """Label every point where its text overlaps no other label or marker and stays inside the axes."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    markers = [ax.transData.transform((px, py)) for px, py, _, _ in points]
    taken = [matplotlib.transforms.Bbox.from_extents(mx - 3, my - 3, mx + 3, my + 3) for mx, my in markers]
    texts = []
    for (px, py, label, colour), _ in sorted(zip(points, markers), key=lambda item: item[1][1]):
        best, best_overlap = None, None
        for dx, dy, ha in LABEL_OFFSETS:
            text = ax.annotate(label, (px, py), xytext=(dx, dy), textcoords="offset points", fontsize=5,
                               ha=ha, color="red" if isinstance(colour, str) else "0.15", annotation_clip=False)
            box = text.get_window_extent(renderer).expanded(1.02, 1.05)
            overlap = sum(_area(box, other) for other in taken if _area(box, other) > 0)
            outside = not (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1)
            score = overlap + (1e6 if outside else 0)
            if best is None or score < best_overlap:
                if best is not None:
                    best.remove()
                best, best_overlap, best_box = text, score, box
            else:
                text.remove()
            if score == 0:
                break
        taken.append(best_box)
        texts.append(best)
    return texts


def _area(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def figure_fid_vs_params(table: pd.DataFrame) -> plt.Figure:
    return _figure_fid_vs(table, "params_m", "Parameters (millions)")


def figure_fid_vs_time(table: pd.DataFrame) -> plt.Figure:
    return _figure_fid_vs(table, "rel_time", "Inference time relative to VAR-d30 (= 1)")


def _figure_fid_vs(table: pd.DataFrame, column: str, xlabel: str) -> plt.Figure:
    apply_style()
    fig, ax = plt.subplots(figsize=(FULL_WIDTH, 4.2))
    points = _scatter_families(ax, table, column)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    place_labels(ax, points)
    return fig
