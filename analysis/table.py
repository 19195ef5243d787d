"""Reading the collected sweep table (docs/contracts.md), or building the same table from run directories.

`load_table(path)` accepts a table file (.csv, .parquet), a sweep directory (its collected table when there
is one, else every run directory below it) or a single run directory (config.json + metrics.jsonl).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("point_id", "split", "step", "params_total", "loss_mean", "loss_last", "err_mean", "err_last")
METRIC_COLUMNS = ("loss_last", "loss_mean", "err_last", "err_mean")
# Names a collected table may have inside a sweep directory, most specific first.
TABLE_FILE_NAMES = ("table.parquet", "table.csv", "collected.parquet", "collected.csv", "metrics.parquet",
                    "metrics.csv", "sweep_table.parquet", "sweep_table.csv")
# A run's state as the run directory (status.json) or the sweep layer (SLURM-like) writes it.
FINISHED_STATES = ("finished", "completed")
POINT_COLUMNS_FROM_MODEL = ("depth", "width", "params_total", "params_wo_emb", "flops_fwd_per_image",
                            "flops_train_per_image")


class TableError(ValueError):
    """A table or run directory that does not follow docs/contracts.md."""


def is_finished(states: pd.Series) -> pd.Series:
    return states.astype(str).str.lower().isin(FINISHED_STATES)


def read_table_file(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: no such table file")
    if path.suffix == ".csv":
        if path.stat().st_size == 0:
            raise TableError(f"{path}: empty file (0 bytes); expected a CSV with a header row naming at least "
                             f"{', '.join(REQUIRED_COLUMNS)}: collect the sweep again (`varscale sweep collect`)")
        try:
            table = pd.read_csv(path)
        except pd.errors.EmptyDataError as exc:
            raise TableError(f"{path}: no columns ({exc}); expected a CSV with a header row naming at least "
                             f"{', '.join(REQUIRED_COLUMNS)}") from exc
        except pd.errors.ParserError as exc:
            raise TableError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from exc
    elif path.suffix in (".parquet", ".pq"):
        try:
            table = pd.read_parquet(path)
        except ImportError as exc:
            raise TableError(f"{path}: reading Parquet needs pyarrow or fastparquet ({exc}); "
                             "collect the sweep as CSV instead") from exc
    else:
        raise TableError(f"{path}: unknown table format {path.suffix!r}; expected .csv or .parquet")
    return validate_table(table, str(path))


def validate_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing and any(_looks_like_a_value(c) for c in table.columns):
        raise TableError(f"{source}: no header row (the first line holds values such as "
                         f"{list(table.columns)[:3]}); the first line must name the columns, at least "
                         f"{', '.join(REQUIRED_COLUMNS)} (docs/contracts.md)")
    if missing:
        raise TableError(f"{source}: missing column(s) {missing}; a collected sweep table needs "
                         f"{list(REQUIRED_COLUMNS)} (docs/contracts.md)")
    if table.empty:
        raise TableError(f"{source}: the table has no rows")
    for column in ("step", "params_total", *METRIC_COLUMNS):
        if not pd.api.types.is_numeric_dtype(table[column]):
            raise TableError(f"{source}: column {column!r} must be numeric, got dtype {table[column].dtype}")
    for column in ("err_last", "err_mean"):
        values = table[column].dropna()
        if ((values < 0) | (values > 1)).any():
            raise TableError(f"{source}: {column} must be a fraction in [0, 1] (1 - top-1 accuracy), got "
                             f"values from {values.min():g} to {values.max():g}; percentages are not accepted")
    table = table.copy()
    table["point_id"] = table["point_id"].astype(str)
    return table


def _looks_like_a_value(name) -> bool:
    try:
        float(str(name).split(".")[0] if str(name).count(".") > 1 else name)
    except ValueError:
        return str(name).startswith("Unnamed")
    return True


def read_metrics_jsonl(path: Path) -> list[dict]:
    """Records of a metrics.jsonl; a cut-off last line (a crash mid-append) is skipped with a warning."""
    lines = Path(path).read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: ignoring an incomplete last line ({exc.msg})", stacklevel=2)
                continue
            raise TableError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    return records


def _flatten_record(record: dict) -> dict:
    row = {k: v for k, v in record.items() if k not in ("loss_per_scale", "err_per_scale")}
    for key, prefix in (("loss_per_scale", "loss_s"), ("err_per_scale", "err_s")):
        for index, value in enumerate(record.get(key) or []):
            row[f"{prefix}{index}"] = value
    return row


def table_from_run_dir(run_dir: Path) -> pd.DataFrame:
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.json", run_dir / "metrics.jsonl"
    for needed in (config_path, metrics_path):
        if not needed.is_file():
            raise TableError(f"{run_dir}: not a run directory, {needed.name} is missing")
    config = json.loads(config_path.read_text())
    model = config.get("model")
    if not isinstance(model, dict):
        raise TableError(f"{config_path}: no 'model' block (docs/contracts.md)")
    point = {"sweep": run_dir.parent.name, "point_id": run_dir.name, "run_dir": str(run_dir)}
    for key in POINT_COLUMNS_FROM_MODEL:
        point[key] = model.get(key, np.nan)
    point["model_name"] = model.get("name")
    point["lr"] = config.get("base_lr", config.get("lr", np.nan))
    point["seed"] = config.get("seed", np.nan)
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    point["dataset"] = data.get("root") or data.get("source") or config.get("dataset")
    status_path = run_dir / "status.json"
    point["state"] = json.loads(status_path.read_text()).get("state") if status_path.is_file() else "unknown"
    rows = [{**_flatten_record(record), **point} for record in read_metrics_jsonl(metrics_path)]
    if not rows:
        raise TableError(f"{metrics_path}: no metrics records yet")
    return pd.DataFrame(rows)


def find_run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in Path(root).rglob("metrics.jsonl") if (p.parent / "config.json").is_file())


def find_table_file(sweep_dir: Path) -> Path | None:
    for name in TABLE_FILE_NAMES:
        if (Path(sweep_dir) / name).is_file():
            return Path(sweep_dir) / name
    return None


def load_table(path: Path | str) -> tuple[pd.DataFrame, str]:
    """The sweep table and a description of where it came from."""
    path = Path(path)
    if path.is_file():
        return read_table_file(path), str(path)
    if not path.is_dir():
        raise TableError(f"{path}: no such file or directory")
    if (path / "metrics.jsonl").is_file() and (path / "config.json").is_file():
        return validate_table(table_from_run_dir(path), str(path)), f"run directory {path}"
    table_file = find_table_file(path)
    if table_file is not None:
        return read_table_file(table_file), str(table_file)
    run_dirs = find_run_dirs(path)
    if not run_dirs:
        raise TableError(f"{path}: no collected table ({', '.join(TABLE_FILE_NAMES)}) and no run directories "
                         "(config.json + metrics.jsonl) below it; run `varscale sweep collect` first")
    frames = []
    for run_dir in run_dirs:
        try:
            frames.append(table_from_run_dir(run_dir))
        except TableError as exc:
            warnings.warn(f"skipping {run_dir}: {exc}", stacklevel=2)
    if not frames:
        raise TableError(f"{path}: none of the {len(run_dirs)} run directories has metrics records")
    return validate_table(pd.concat(frames, ignore_index=True), str(path)), \
        f"{len(frames)} run directories under {path}"
