"""Checks of a collected sweep table before any fit: each failure is one line naming the run and the fix.

A table that passes `validate_table` (columns, dtypes, error fractions) is checked here for what silently
bends a fit: non-positive or infinite metrics, duplicate (run, step, split) records, parameter counts and
FLOP totals that disagree with the analytic counts of models/ (a count in billions or FLOPs in PFLOPs moves
one point by nine or fifteen decades and flips or bends every law through it), and runs measured under
different protocols. Checks need only the columns they read; a table without them skips that check.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from analysis.table import METRIC_COLUMNS, TableError
from models.flops import train_flops_per_image
from models.params import param_counts
from models.registry import TOKENIZERS, var_spec

KEY_COLUMNS = ("point_id", "step", "split")
# columns that describe how a number was measured; one table must hold one value of each
PROTOCOL_COLUMNS = ("dataset", "resolution", "tokenizer", "patch_nums", "eval_images", "protocol")
# analytic counts agree with the trainer's to the parameter; FLOP totals are floats summed over steps
FLOPS_RTOL = 1e-3
CLASS_COUNTS = (1, 10, 100, 1000)  # the class embedding grows with num_classes; its range brackets a preset


def _runs(rows: pd.DataFrame, limit: int = 3) -> str:
    names = list(dict.fromkeys(rows["point_id"].astype(str)))
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_metric_values(table: pd.DataFrame, source: str) -> None:
    for column in METRIC_COLUMNS:
        values = table[column].to_numpy(float)
        # an error rate of exactly 0 is possible (that metric is then skipped); a loss of 0 is not
        bad = np.isinf(values) | ((values <= 0) if column.startswith("loss") else (values < 0))
        if bad.any():
            rows = table[bad]
            first = rows.iloc[0]
            raise TableError(f"{source}: run {first['point_id']} step {first['step']} has "
                             f"{column}={float(first[column]):g} ({int(bad.sum())} such record(s) in run(s) "
                             f"{_runs(rows)}); losses and error rates must be positive and finite: drop or "
                             "re-evaluate those records (a missing value may be left empty)")


def check_duplicate_keys(table: pd.DataFrame, source: str) -> None:
    duplicated = table.duplicated(subset=list(KEY_COLUMNS), keep=False)
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise TableError(f"{source}: run {first['point_id']} has {int(duplicated.sum())} records sharing (run, step, "
                         f"split) keys, first at step {first['step']} split {first['split']!r} "
                         f"(runs {_runs(table[duplicated])}); "
                         "give each run a unique point_id and collect the sweep again (`varscale sweep collect`)")


def preset_name(row: pd.Series) -> str | None:
    """The registry preset of a run: its model_name, else VAR-d<depth> / VAR-mini-d<depth> from the width."""
    name = row.get("model_name")
    if isinstance(name, str) and name.startswith("VAR-"):
        return name
    depth, width = row.get("depth"), row.get("width")
    if depth is None or width is None or pd.isna(depth) or pd.isna(width):
        return None
    depth, width = int(depth), int(width)
    if width == 64 * depth:
        return f"VAR-d{depth}"
    if width == 32 * depth:
        return f"VAR-mini-d{depth}"
    return None


def _analytic(name: str, num_classes) -> tuple[list[int], list[int]]:
    """Parameter totals and training FLOPs per image of the preset under each tokenizer (and class count)."""
    classes = CLASS_COUNTS if num_classes is None or pd.isna(num_classes) else (int(num_classes),)
    params, flops = [], []
    for tokenizer, count in itertools.product(TOKENIZERS.values(), classes):
        spec = var_spec(name, tokenizer=tokenizer, num_classes=count)
        params.append(param_counts(spec)["total"])
        flops.append(train_flops_per_image(spec))
    return params, flops


def check_against_registry(table: pd.DataFrame, source: str) -> None:
    if "params_total" not in table or not {"depth", "width"} <= set(table.columns) and "model_name" not in table:
        return
    runs = table.drop_duplicates("point_id")
    for _, run in runs.iterrows():
        name = preset_name(run)
        if name is None:
            continue
        try:
            params, flops = _analytic(name, run.get("num_classes"))
        except ValueError:
            continue
        given = float(run["params_total"])
        low, high = min(params), max(params)
        if not low * (1 - 1e-9) <= given <= high * (1 + 1e-9):
            expected = f"{low:,}" if low == high else f"{low:,}..{high:,} (by class count and tokenizer)"
            raise TableError(f"{source}: run {run['point_id']} has params_total={given:g}, but the analytic count of "
                             f"{name} is {expected}; params_total must be the raw parameter count (not millions or "
                             "billions): fix the run's config.json model block and collect again")
        per_image = run.get("flops_train_per_image")
        if per_image is not None and not pd.isna(per_image) and \
                not any(abs(float(per_image) / f - 1) <= FLOPS_RTOL for f in flops):
            raise TableError(f"{source}: run {run['point_id']} has flops_train_per_image={float(per_image):g}, but "
                             f"models.flops gives {min(flops):g} for {name} (per tokenizer: "
                             f"{', '.join(f'{f:g}' for f in sorted(set(flops)))}); write the analytic count "
                             "in raw FLOPs")


def check_flop_totals(table: pd.DataFrame, source: str) -> None:
    """train_flops = images seen x training FLOPs per image, and images seen = step x batch size."""
    if {"images_seen", "step", "batch_size"} <= set(table.columns):
        rows = table.dropna(subset=["images_seen", "step", "batch_size"])
        expected_images = rows["step"].to_numpy(float) * rows["batch_size"].to_numpy(float)
        ratio = rows["images_seen"].to_numpy(float) / expected_images
        bad = np.abs(ratio - 1) > FLOPS_RTOL
        if bad.any():
            first = rows[bad].iloc[0]
            raise TableError(f"{source}: run {first['point_id']} step {first['step']} has images_seen="
                             f"{first['images_seen']:g}, not step x batch_size = "
                             f"{first['step'] * first['batch_size']:g}; "
                             "collect the run's metrics again")
    if {"train_flops", "images_seen", "flops_train_per_image"} <= set(table.columns):
        rows = table.dropna(subset=["train_flops", "images_seen", "flops_train_per_image"])
        rows = rows[rows["images_seen"] > 0]
        expected = rows["images_seen"].to_numpy(float) * rows["flops_train_per_image"].to_numpy(float)
        ratio = rows["train_flops"].to_numpy(float) / expected
        bad = np.abs(ratio - 1) > FLOPS_RTOL
        if bad.any():
            first = rows[bad].iloc[0]
            factor = float(ratio[bad][0])
            raise TableError(f"{source}: run {first['point_id']} step {first['step']} has train_flops="
                             f"{first['train_flops']:g}, {factor:.3g} x images_seen x flops_train_per_image "
                             f"(= {expected[bad][0]:g}); train_flops must be raw FLOPs, not PFLOPs or another "
                             "unit: fix the run's records and collect again")


def check_single_protocol(table: pd.DataFrame, source: str) -> None:
    for column in PROTOCOL_COLUMNS:
        if column not in table:
            continue
        values = table[column].dropna().astype(str)
        if values.nunique() > 1:
            groups = "; ".join(f"{value!r}: {_runs(table.loc[values.index[values == value]])}"
                               for value in values.unique()[:3])
            raise TableError(f"{source}: runs measured under different {column} values ({groups}); fit one "
                             f"protocol at a time: split the table by {column!r}")


def validate_for_fit(table: pd.DataFrame, source: str) -> None:
    """Every check above, in order; raises TableError with one line at the first failure."""
    check_metric_values(table, source)
    check_duplicate_keys(table, source)
    check_against_registry(table, source)
    check_flop_totals(table, source)
    check_single_protocol(table, source)
