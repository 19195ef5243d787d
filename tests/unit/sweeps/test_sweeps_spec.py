"""Sweep specs: validation errors, grid expansion, stable point ids, dry runs (no jobs run here)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from sweeps_testlib import write_spec

from harness.cli.main import main
from sweeps.launch import submit
from sweeps.points import expand
from sweeps.resources import SpecError, parse_time_limit
from sweeps.spec import load_spec

REPO = Path(__file__).resolve().parents[3]


def _edit(path: Path, **changes) -> Path:
    spec = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = spec
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("changes, expected", [
    ({"colour": "blue"}, ["unknown field colour", "allowed fields:", "grid"]),
    ({"grid__depth": [2, 0]}, ["grid.depth", ">= 1", "0"]),
    ({"resources__time_limit": "ten minutes"}, ["resources.time_limit", "'ten minutes'", "HH:MM:SS"]),
    ({"executor": "kubernetes"}, ["executor='kubernetes'", "slurm, local"]),
    ({"model_family": "GPT"}, ["model_family='GPT'", "VAR, VAR-mini"]),
    ({"resources__gpu": 1}, ["resources.gpu", "gpus_per_node"]),
    ({"grid__colour": ["red"]}, ["grid axis 'colour'", "depth", "dotted"]),
    ({"train__learning_rate": 0.1}, ["unknown option learning_rate", "base_lr"]),
    ({"train__precision": "fp8"}, ["precision='fp8'", "'bf16'"]),
    ({"resources__nodes": 2}, ["nodes=2", "local"]),
    ({"resources__signal_delay_s": 4000}, ["signal_delay_s", "shorter than the time limit"]),
])
def test_bad_specs_name_file_field_and_allowed_values(tmp_path, changes, expected):
    path = _edit(write_spec(tmp_path, "bad"), **changes)
    with pytest.raises(SpecError) as info:
        expand(load_spec(path))
    message = str(info.value)
    assert message.startswith(str(path))
    for fragment in expected:
        assert fragment in message, message


def test_missing_dataset_path_refused_before_submission(tmp_path):
    path = _edit(write_spec(tmp_path, "nodata"), train__data={"source": "imagefolder", "root": str(tmp_path / "no"),
                                                               "resolution": 32, "num_classes": 4})
    spec = load_spec(path)
    with pytest.raises(SpecError, match=r"data.root .*no is not a directory"):
        submit(spec)
    assert not (spec.sweep_dir / "jobs").exists() and not (spec.sweep_dir / "points").exists()


def test_time_limits():
    assert parse_time_limit(90, "t") == 90
    assert parse_time_limit("2:00:00", "t") == 120
    assert parse_time_limit("1-12:00:00", "t") == 2160
    assert parse_time_limit("1-06", "t") == 1800
    assert parse_time_limit("45", "t") == 45
    for bad in ("", "1h", "-5", 0, True):
        with pytest.raises(SpecError):
            parse_time_limit(bad, "t")


def test_point_ids_stable_and_sensitive_to_training_only(tmp_path):
    path = write_spec(tmp_path, "ids", depths=(2, 3), extra={"grid": {"depth": [2, 3], "lr": [1e-4, 3e-4]}})
    first = [p.id for p in expand(load_spec(path))]
    assert len(first) == 4 and len(set(first)) == 4
    assert first == [p.id for p in expand(load_spec(path))]
    assert all(pid.startswith(("d2-", "d3-")) for pid in first)
    _edit(path, resources__partition="gpu", array_parallelism=1)  # where it runs: same points
    assert first == [p.id for p in expand(load_spec(path))]
    _edit(path, train__batch_size=16)  # what it trains: new points
    assert set(first).isdisjoint(p.id for p in expand(load_spec(path)))


def test_grid_axes_overrides_and_length_conversion(tmp_path):
    path = write_spec(tmp_path, "axes", extra={
        "grid": {"depth": [2, 4], "width": [64], "seed": [0, 1], "dataset": ["synthetic"]},
        "overrides": [{"when": {"depth": [4]}, "train": {"base_lr": 5e-5}, "resources": {"cpus_per_task": 2}}]})
    _edit(path, train__epochs=2, train__total_steps=None)
    raw = yaml.safe_load(path.read_text())
    raw["train"].pop("total_steps")
    path.write_text(yaml.safe_dump(raw))
    points = expand(load_spec(path))
    assert [(p.axes["depth"], p.axes["seed"]) for p in points] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    by_depth = {p.axes["depth"]: p for p in points}
    assert by_depth[2].train["model_preset"] == "VAR-mini-d2" and by_depth[2].train["width_per_depth"] == 32
    assert by_depth[4].train["width_per_depth"] == 16 and by_depth[4].train["base_lr"] == 5e-5
    assert by_depth[2].train["base_lr"] == 1e-4
    assert by_depth[4].resources.cpus_per_task == 2 and by_depth[2].resources.cpus_per_task == 1
    assert by_depth[2].train["total_steps"] == 2 * 64 // 8  # 2 epochs of 64 synthetic images at batch 8


def test_shipped_specs_parse(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    paper = expand(load_spec(REPO / "sweeps/specs/var-paper.yaml"))
    depths = [p.axes["depth"] for p in paper]
    assert depths == list(range(6, 31, 2))  # the paper's d6 ... d30 study
    d16 = next(p for p in paper if p.axes["depth"] == 16)
    assert d16.train["batch_size"] == 768 and d16.train["total_steps"] == -(-200 * 1281167 // 768)
    assert d16.resources.gpus_per_node == 8
    d30 = next(p for p in paper if p.axes["depth"] == 30)
    assert d30.train["base_lr"] == 8e-5 and d30.train["weight_decay_end"] == 0.08 and d30.resources.nodes == 8
    demo = expand(load_spec(REPO / "sweeps/specs/demo-cpu.yaml"))
    assert len(demo) >= 5 and load_spec(REPO / "sweeps/specs/demo-cpu.yaml").executor == "local"


def test_dry_run_prints_points_and_sbatch_lines_and_submits_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGENET_DIR", str(tmp_path / "imagenet"))
    rc = main(["sweep", "submit", str(REPO / "sweeps/specs/var-paper.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "13 points" in out and "d30-" in out
    assert "#SBATCH --array=0-8%4" in out  # 9 depths share 2-node resources, 4 at a time
    assert "#SBATCH --gpus-per-node=8" in out and "#SBATCH --signal=USR2@300" in out
    assert "#SBATCH --nodes=8" in out
    assert f"data.root {tmp_path / 'imagenet'} is not a directory" in out
    assert "nothing submitted" in out
    assert not (tmp_path / "runs").exists()


def test_cli_reports_bad_spec_as_usage_error(tmp_path, capsys):
    path = _edit(write_spec(tmp_path, "cli"), grid__depth=[0])
    assert main(["sweep", "submit", str(path)]) == 2
    assert "grid.depth" in capsys.readouterr().err
    assert main(["sweep", "status", str(tmp_path / "missing.yaml")]) == 2
    assert "sweep spec not found" in capsys.readouterr().err
    os.makedirs(tmp_path / "emptydir")
    assert main(["sweep", "status", str(tmp_path / "emptydir")]) == 2
