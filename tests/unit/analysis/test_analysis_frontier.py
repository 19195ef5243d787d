"""Pareto frontier on hand-made training curves; compute accounting and table loading from run directories."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.compute import (
    COMPUTE_CONVENTION,
    add_compute_columns,
    final_records,
    run_summary,
)
from analysis.fits import fit_sweep
from analysis.frontier import frontier_value, pareto_frontier
from analysis.synthetic import synthetic_sweep_table
from analysis.table import TableError, load_table


def curves(points: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    return pd.DataFrame([{"point_id": run, "C_flops": c, "loss_last": loss}
                         for run, pts in points.items() for c, loss in pts])


def test_frontier_of_hand_made_curves():
    # small: fast start, flattens at 3.0; big: slow start, goes below small after C = 8
    table = curves({
        "small": [(1, 5.0), (2, 4.0), (4, 3.5), (8, 3.2), (16, 3.0), (32, 3.0)],
        "big": [(4, 6.0), (8, 3.6), (16, 2.9), (32, 2.5), (64, 2.2)],
        "bad": [(2, 7.0), (64, 2.4), (100, 2.3)],  # never the best: dominated everywhere
    })
    front = pareto_frontier(table)
    assert list(zip(front["point_id"], front["C_flops"], front["loss_last"])) == [
        ("small", 1, 5.0), ("small", 2, 4.0), ("small", 4, 3.5), ("small", 8, 3.2),
        ("big", 16, 2.9), ("big", 32, 2.5), ("big", 64, 2.2)]
    # step function: the best loss reached with at most C
    np.testing.assert_array_equal(frontier_value(front, [0.5, 1, 3, 8, 12, 16, 1000]),
                                  [np.nan, 5.0, 4.0, 3.2, 3.2, 2.9, 2.2])


def test_frontier_ties_and_non_monotone_curves():
    table = curves({"a": [(1, 3.0), (2, 2.0), (3, 2.5), (4, 1.9)], "b": [(2, 1.95), (4, 1.9)]})
    front = pareto_frontier(table)
    # at C=2 the lower loss of the tie wins; a's bump at C=3 and the equal loss at C=4 are not improvements
    assert list(zip(front["point_id"], front["C_flops"], front["loss_last"])) == [
        ("a", 1, 3.0), ("b", 2, 1.95), ("a", 4, 1.9)]


def test_frontier_is_brute_force_lower_envelope_on_random_curves():
    rng = np.random.default_rng(0)
    table = curves({f"r{i}": list(zip(rng.uniform(0, 100, 15), rng.uniform(1, 5, 15))) for i in range(6)})
    front = pareto_frontier(table)
    for budget in rng.uniform(0, 110, 50):
        reached = table.loc[table["C_flops"] <= budget, "loss_last"]
        expected = reached.min() if len(reached) else np.nan
        np.testing.assert_equal(frontier_value(front, budget)[0], expected)
    assert np.all(np.diff(front["loss_last"]) < 0) and np.all(np.diff(front["C_flops"]) > 0)


def test_frontier_missing_column_is_named():
    with pytest.raises(KeyError, match="loss_last"):
        pareto_frontier(pd.DataFrame({"point_id": ["a"], "C_flops": [1.0]}))


def test_compute_columns_and_convention():
    table = synthetic_sweep_table(depths=(6, 8), evals_per_run=3)
    out = add_compute_columns(table)
    np.testing.assert_allclose(out["C_flops"], table["train_flops"])
    np.testing.assert_allclose(out["C_pflops"], table["train_flops"] / 1e15)
    np.testing.assert_allclose(out["N_billion"], table["params_total"] / 1e9)
    # without the cumulative counter the same compute comes from images x FLOPs per image
    again = add_compute_columns(table.drop(columns=["train_flops"]))
    np.testing.assert_allclose(again["C_flops"], out["C_flops"], rtol=1e-12)
    with pytest.raises(TableError, match="train_flops"):
        add_compute_columns(table.drop(columns=["train_flops", "images_seen"]))
    assert "3 x analytic forward" in COMPUTE_CONVENTION["C"] and "VQVAE" in COMPUTE_CONVENTION["forward_flops_exclude"]
    summary = run_summary(table)
    assert list(summary["point_id"]) == ["d6-i1000000", "d8-i1000000"]


def test_unfinished_runs_are_left_out_unless_asked(tmp_path):
    table = synthetic_sweep_table(depths=(6, 8, 10, 12), evals_per_run=3)
    table.loc[table["depth"] == 12, "state"] = "running"
    assert len(final_records(table)) == 3
    assert len(final_records(table, finished_only=False)) == 4
    results = fit_sweep(table, metrics=("loss_last",), forms=("paper",), n_boot=20, include_unfinished=True)
    assert results.get("loss_last", "N").n_points == 4


def write_run(run_dir, depth, records, state="finished"):
    run_dir.mkdir(parents=True)
    model = {"name": f"VAR-d{depth}", "depth": depth, "width": 64 * depth, "params_total": 1000 * depth ** 3,
             "params_wo_emb": 900 * depth ** 3, "flops_fwd_per_image": 2e6 * depth ** 3,
             "flops_train_per_image": 6e6 * depth ** 3}
    (run_dir / "config.json").write_text(json.dumps({"model": model, "lr": 1e-4, "seed": 0}))
    (run_dir / "status.json").write_text(json.dumps({"state": state, "step": 2, "total_steps": 2}))
    lines = [json.dumps(r) for r in records]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def record(step, loss):
    return {"split": "val", "step": step, "images_seen": 10 * step, "tokens_seen": 6800 * step,
            "train_flops": 1e9 * step, "loss_mean": loss, "loss_last": loss + 0.5, "err_mean": 0.8,
            "err_last": 0.9, "loss_per_scale": [loss - 1, loss, loss + 1], "err_per_scale": [0.5, 0.8, 0.9]}


def test_table_from_run_directories(tmp_path):
    write_run(tmp_path / "sweep" / "d6", 6, [record(1, 5.0), record(2, 4.5)])
    write_run(tmp_path / "sweep" / "d8", 8, [record(1, 4.8), record(2, 4.2)], state="running")
    table, source = load_table(tmp_path / "sweep")
    assert "2 run directories" in source
    assert set(table["point_id"]) == {"d6", "d8"}
    assert list(table.filter(like="loss_s").columns) == ["loss_s0", "loss_s1", "loss_s2"]
    assert table.loc[table["point_id"] == "d8", "state"].iloc[0] == "running"
    single, _ = load_table(tmp_path / "sweep" / "d6")
    assert len(single) == 2 and single["params_total"].iloc[0] == 216000
    # a collected table file in the sweep directory wins over the run directories
    table.iloc[:1].to_csv(tmp_path / "sweep" / "table.csv", index=False)
    assert len(load_table(tmp_path / "sweep")[0]) == 1


def test_cut_off_last_metrics_line_is_skipped_and_bad_lines_named(tmp_path):
    write_run(tmp_path / "d6", 6, [record(1, 5.0), record(2, 4.5)])
    with open(tmp_path / "d6" / "metrics.jsonl", "a") as handle:
        handle.write('{"split": "val", "st')
    with pytest.warns(UserWarning, match="incomplete last line"):
        table, _ = load_table(tmp_path / "d6")
    assert len(table) == 2
    (tmp_path / "d6" / "metrics.jsonl").write_text('{"split": \n' + json.dumps(record(1, 5.0)) + "\n")
    with pytest.raises(TableError, match=r"metrics.jsonl:1: not valid JSON"):
        load_table(tmp_path / "d6")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TableError, match="no collected table"):
        load_table(tmp_path / "empty")
    with pytest.raises(TableError, match="no such file or directory"):
        load_table(tmp_path / "missing")
