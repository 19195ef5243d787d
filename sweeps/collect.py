"""``varscale sweep collect``: every metrics record of every point as one tidy table for the analysis.

One row per record of ``metrics.jsonl`` (docs/contracts.md), per-scale lists flattened to ``loss_s0``, ...,
``err_s0``, ..., plus the point's columns (sweep, point_id, run_dir, depth, width, params, FLOPs per image, lr,
seed, dataset, state). Model size and FLOPs come from the ``model`` block the trainer writes into config.json.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from models.files import atomic_target
from sweeps.state import SweepState
from sweeps.status import sweep_status

POINT_COLUMNS = ("sweep", "point_id", "run_dir", "depth", "width", "params_total", "params_wo_emb",
                 "flops_fwd_per_image", "flops_train_per_image", "lr", "seed", "dataset", "state", "batch_size",
                 "total_steps")


class CollectError(ValueError):
    pass


def _point_columns(sweep: str, point_id: str, run_dir: Path, state: str) -> dict[str, Any]:
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except FileNotFoundError:
        config = {}
    model = config.get("model") or {}
    data = config.get("data") or {}
    depth = model.get("depth", config.get("depth"))
    width = model.get("width") or config.get("width") or (64 * depth if depth else None)  # official w = 64 d
    dataset = "synthetic" if data.get("source", "synthetic") == "synthetic" else data.get("root")
    return {"sweep": sweep, "point_id": point_id, "run_dir": str(run_dir), "depth": depth, "width": width,
            "params_total": model.get("params_total"), "params_wo_emb": model.get("params_wo_emb"),
            "flops_fwd_per_image": model.get("flops_fwd_per_image"),
            "flops_train_per_image": model.get("flops_train_per_image"), "lr": config.get("base_lr"),
            "seed": config.get("seed"), "dataset": dataset, "state": state,
            "batch_size": config.get("batch_size"), "total_steps": config.get("total_steps")}


def _records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                continue  # the trainer is appending this line right now
            raise CollectError(f"{path}:{number}: not a JSON record") from None
    return records


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    # a record field named like a point column (the trainer logs the current "lr") keeps its value under
    # NAME_at_step, so the point's configured value (base lr) stays in NAME as the contract says
    row = {(f"{k}_at_step" if k in POINT_COLUMNS else k): v for k, v in record.items()
           if k not in ("loss_per_scale", "err_per_scale")}
    for i, value in enumerate(record.get("loss_per_scale") or []):
        row[f"loss_s{i}"] = value
    for i, value in enumerate(record.get("err_per_scale") or []):
        row[f"err_s{i}"] = value
    return row


def collect_table(state: SweepState, point_ids: list[str] | None = None):
    """A pandas DataFrame with one row per metrics record; point columns first."""
    import pandas as pd

    sweep = state.data.get("sweep", state.sweep_dir.name)
    rows = []
    for st in sweep_status(state, point_ids):
        run_dir = Path(st.run_dir)
        point = _point_columns(sweep, st.point_id, run_dir, st.state)
        rows += [{**point, **_flatten(rec)} for rec in _records(run_dir)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(POINT_COLUMNS))
    scale_cols = sorted((c for c in frame.columns
                         if c.startswith(("loss_s", "err_s")) and c.rsplit("_s", 1)[1].isdigit()),
                        key=lambda c: (not c.startswith("loss"), int(c.rsplit("_s", 1)[1])))
    other = [c for c in frame.columns if c not in POINT_COLUMNS and c not in scale_cols]
    return frame[list(POINT_COLUMNS) + other + scale_cols]


def write_table(frame, path: Path) -> Path:
    path = Path(path)
    if path.suffix == ".parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise CollectError(f"{path}: writing Parquet needs pyarrow, which is not installed "
                               "(pip install pyarrow), or write CSV: -o table.csv")
    elif path.suffix != ".csv":
        raise CollectError(f"{path}: unknown table format {path.suffix!r}; use .csv or .parquet")
    with atomic_target(path) as tmp:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return path
