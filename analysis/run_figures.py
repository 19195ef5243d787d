"""Figures about single runs: per-scale metrics of every run, and a grid of generated samples."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from analysis.compute import final_records  # noqa: E402
from analysis.style import FULL_WIDTH, apply_style, plain_log_x_ticks  # noqa: E402


def patch_nums_from_runs(table: pd.DataFrame) -> tuple[int, ...] | None:
    """The token map sizes of the runs, from a run directory's config.json (model.patch_nums), if readable."""
    for run_dir in table.get("run_dir", pd.Series(dtype=str)).dropna().unique():
        config_path = Path(str(run_dir)) / "config.json"
        try:
            patch_nums = json.loads(config_path.read_text()).get("model", {}).get("patch_nums")
        except (OSError, ValueError, AttributeError):
            continue
        if patch_nums:
            return tuple(int(p) for p in patch_nums)
    return None


def _default_patch_nums(table: pd.DataFrame, n_scales: int):
    patch_nums = patch_nums_from_runs(table)
    if patch_nums is not None and len(patch_nums) == n_scales:
        return patch_nums
    from models.quant import PATCH_NUMS_256

    return PATCH_NUMS_256 if n_scales == len(PATCH_NUMS_256) else None


def _scale_columns(table: pd.DataFrame, prefix: str) -> list[str]:
    columns = [c for c in table.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    return sorted(columns, key=lambda c: int(c[len(prefix):]))


def figure_per_scale(table: pd.DataFrame, patch_nums=None, split: str = "val") -> plt.Figure:
    """Final validation loss and token error at each scale, one line per run, coloured by model size."""
    apply_style()
    finals = final_records(table, split=split, finished_only=False)
    loss_cols, err_cols = _scale_columns(finals, "loss_s"), _scale_columns(finals, "err_s")
    if not loss_cols:
        raise ValueError("the table has no per-scale columns (loss_s0, loss_s1, ...)")
    if patch_nums is None:
        patch_nums = _default_patch_nums(finals, len(loss_cols))
    ticks = [f"{p}×{p}" for p in patch_nums] if patch_nums else [str(i) for i in range(len(loss_cols))]
    norm = LogNorm(vmin=finals["N"].min() / 1e9, vmax=max(finals["N"].max(), finals["N"].min() * 1.01) / 1e9)
    cmap = plt.get_cmap("viridis")
    panels = [(loss_cols, "Test loss at scale (nats)")] + ([(err_cols, "Token error rate at scale (fraction)")]
                                                          if err_cols else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(FULL_WIDTH, 2.6), squeeze=False)
    for ax, (columns, label) in zip(axes[0], panels):
        for _, run in finals.iterrows():
            ax.plot(range(len(columns)), run[columns].to_numpy(float), marker="o", markersize=2.5, linewidth=1,
                    color=cmap(norm(run["N"] / 1e9)), label=f"{run['point_id']} ({run['N'] / 1e6:.1f}M)")
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(ticks[:len(columns)], rotation=45 if len(columns) > 6 else 0)
        ax.set_xlabel("Scale (token map size)" if patch_nums else "Scale index")
        ax.set_ylabel(label)
    if len(finals) <= 8:
        axes[0][0].legend(loc="best", fontsize=6)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=fig.add_axes((0.915, 0.2, 0.015, 0.65)),
                 label="N (billions)")
    return fig


def figure_per_scale_curves(table: pd.DataFrame, point_id: str | None = None, patch_nums=None,
                            split: str = "val") -> plt.Figure:
    """Validation loss of every scale over training for one run (default: the largest model)."""
    apply_style()
    data = table[table["split"] == split]
    if data.empty:
        raise ValueError(f"no {split!r} records in the table")
    if point_id is None:
        point_id = data.loc[data["params_total"].idxmax(), "point_id"]
    run = data[data["point_id"] == point_id].sort_values("step")
    if run.empty:
        raise ValueError(f"no {split!r} records of run {point_id!r}")
    columns = _scale_columns(run, "loss_s")
    if not columns:
        raise ValueError("the table has no per-scale columns (loss_s0, loss_s1, ...)")
    if patch_nums is None:
        patch_nums = _default_patch_nums(run, len(columns))
    x_column = "images_seen" if "images_seen" in run and run["images_seen"].notna().all() else "step"
    colors = plt.get_cmap("plasma")(np.linspace(0, 0.9, len(columns)))
    fig, ax = plt.subplots(figsize=(FULL_WIDTH * 0.6, 2.8))
    for k, (column, color) in enumerate(zip(columns, colors)):
        label = f"{patch_nums[k]}×{patch_nums[k]}" if patch_nums else f"scale {k}"
        ax.plot(run[x_column], run[column], color=color, linewidth=1.1, label=label)
    ax.set_xscale("log")
    plain_log_x_ticks(ax)
    ax.set_xlabel("Training images seen" if x_column == "images_seen" else "Training step")
    ax.set_ylabel("Validation loss at scale (nats)")
    ax.set_title(f"Per-scale loss over training, {point_id}")
    ax.legend(fontsize=6, ncol=2, loc="upper right", title="token map", title_fontsize=6)
    fig.tight_layout()
    return fig


def load_samples(samples) -> tuple[np.ndarray, np.ndarray | None]:
    """(images uint8 (N, H, W, 3), labels or None) from an ADM .npz path or an array."""
    if isinstance(samples, (str, Path)):
        path = Path(samples)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such sample batch")
        with np.load(path) as batch:
            if "arr_0" not in batch:
                raise ValueError(f"{path}: not an ADM sample batch (no arr_0; keys {list(batch.keys())})")
            images = batch["arr_0"]
            labels = batch["arr_1"] if "arr_1" in batch else None
    else:
        images, labels = np.asarray(samples), None
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"samples must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    return images, labels


def figure_sample_grid(samples, labels=None, columns: int = 8, max_images: int = 32,
                       class_names: dict[int, str] | None = None) -> plt.Figure:
    """With labels: one row per class (the first classes), up to `columns` samples each, the class on the
    left; without: the first `max_images` samples in file order."""
    apply_style()
    images, stored_labels = load_samples(samples)
    labels = stored_labels if labels is None else np.asarray(labels)
    max_rows = max(1, max_images // columns)
    if labels is not None:
        grid = [np.flatnonzero(labels == c)[:columns] for c in np.unique(labels)[:max_rows]]
        row_names = [class_names.get(int(c), str(c)) if class_names else str(c) for c in np.unique(labels)[:max_rows]]
    else:
        order = np.arange(min(len(images), max_images))
        grid = [order[i:i + columns] for i in range(0, len(order), columns)]
        row_names = None
    columns = max(len(row) for row in grid)
    fig, axes = plt.subplots(len(grid), columns, figsize=(FULL_WIDTH, FULL_WIDTH / columns * len(grid) * 1.02),
                             squeeze=False)
    for r, row in enumerate(grid):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(row):
                ax.imshow(images[row[c]], interpolation="nearest")
        if row_names:
            axes[r][0].set_ylabel(f"class {row_names[r]}", fontsize=7)
    fig.subplots_adjust(wspace=0.04, hspace=0.04, left=0.05, right=0.995, top=0.995, bottom=0.005)
    return fig
