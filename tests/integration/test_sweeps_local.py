"""Sweeps through submitit's local executor on this machine: end to end, re-submission, collect, the real trainer."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pandas as pd
import pytest
from sweeps_testlib import use_fixture_trainer, wait_until, write_spec

from harness.cli.main import main
from sweeps.launch import submit
from sweeps.spec import load_spec
from sweeps.state import SweepState
from sweeps.status import format_table, sweep_status


def test_local_sweep_end_to_end_resubmit_and_collect(monkeypatch, tmp_path, capsys):
    use_fixture_trainer(monkeypatch)
    spec = load_spec(write_spec(tmp_path, "local3", depths=(2, 3, 4), extra={"array_parallelism": 2}))
    report = submit(spec, poll_s=0.2)
    assert len(report.submitted) == 3
    assert [st.state for st in report.final] == ["COMPLETED"] * 3
    assert all(st.job_state == "COMPLETED" and st.step == st.total_steps == 20 for st in report.final)
    for st in report.final:  # the run directory holds its config, and links to the job's logs
        run_dir = spec.sweep_dir / "points" / st.point_id
        assert json.loads((run_dir / "config.json").read_text())["total_steps"] == 20
        assert (run_dir / "logs" / f"{st.job_id}.out").resolve() == (spec.sweep_dir / "jobs" /
                                                                     f"{st.job_id}_0_log.out")

    again = submit(spec)
    assert again.submitted == [] and set(again.skipped.values()) == {"COMPLETED"}

    lost = report.final[1].point_id  # deleting a result brings back exactly that point
    shutil.rmtree(spec.sweep_dir / "points" / lost)
    third = submit(spec, poll_s=0.2)
    assert third.submitted == [lost] and third.final[0].state == "COMPLETED"
    state = SweepState.load(spec.sweep_dir)
    assert state.points[lost]["previous_job_ids"] == [report.job_ids[lost]]

    capsys.readouterr()
    assert main(["sweep", "collect", str(spec.path), "-o", str(tmp_path / "table.csv")]) == 0
    assert "wrote 24 records of 3 point(s)" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "table.csv")
    assert len(table) == 3 * 4 * 2  # 3 points x 4 evaluations x (train, val)
    for column in ("sweep", "point_id", "run_dir", "depth", "width", "params_total", "params_wo_emb",
                   "flops_fwd_per_image", "flops_train_per_image", "lr", "seed", "dataset", "state", "split",
                   "step", "loss_mean", "loss_last", "err_mean", "err_last", "loss_s0", "loss_s2", "err_s2"):
        assert column in table.columns, column
    final = table[(table.split == "val") & (table.step == 20)].sort_values("depth")
    assert list(final.depth) == [2, 3, 4] and final.loss_mean.is_monotonic_decreasing
    assert set(table.state) == {"COMPLETED"} and set(table.dataset) == {"synthetic"}
    assert list(final.params_total) == [8000, 27000, 64000]

    assert main(["sweep", "status", str(spec.sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 COMPLETED" in out and "20/20" in out and "step/total" in out


def test_collect_parquet_needs_pyarrow(monkeypatch, tmp_path, capsys):
    use_fixture_trainer(monkeypatch)
    spec = load_spec(write_spec(tmp_path, "pq", depths=(2,)))
    submit(spec, poll_s=0.2)
    rc = main(["sweep", "collect", str(spec.sweep_dir), "-o", str(tmp_path / "t.parquet")])
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert rc == 2 and "needs pyarrow" in capsys.readouterr().err
    else:
        assert rc == 0 and len(pd.read_parquet(tmp_path / "t.parquet")) == 8


def test_local_failure_is_marked_failed_with_error_and_log(monkeypatch, tmp_path):
    use_fixture_trainer(monkeypatch)
    empty = tmp_path / "empty_imagenet"
    (empty / "train").mkdir(parents=True)
    spec = load_spec(write_spec(tmp_path, "fail", depths=(2,), train={
        "data": {"source": "imagefolder", "root": str(empty), "resolution": 32, "num_classes": 4}}))
    report = submit(spec, poll_s=0.2)
    st = report.final[0]
    assert st.state == "FAILED" and "no class folders" in st.error
    assert st.log.endswith(f"{st.job_id}_0_log.out")
    assert "no class folders" in (spec.sweep_dir / "jobs" / f"{st.job_id}_0_log.err").read_text()
    shown = format_table([st]).split(f"last lines of {st.err_log}:")  # the traceback is in .err, not .out
    assert len(shown) == 2 and "no class folders" in shown[1]
    assert submit(spec).submitted == []  # failed points wait for --retry-failed
    assert submit(spec, retry_failed=True, poll_s=0.2).submitted == [st.point_id]


@pytest.mark.slow
def test_real_trainer_point_through_local_executor(tmp_path):
    spec = load_spec(write_spec(tmp_path, "real", depths=(1,), trainer="harness.training.loop:train_run",
                                train={"total_steps": 8, "eval_every": 4}))
    report = submit(spec, poll_s=0.2)
    st = report.final[0]
    assert st.state == "COMPLETED", st.error
    run_dir = spec.sweep_dir / "points" / st.point_id
    assert (run_dir / "final" / "model.safetensors").is_file()
    status = sweep_status(SweepState.load(spec.sweep_dir))[0]
    assert status.params and status.params > 0 and status.last_val_loss is not None
    from sweeps.collect import collect_table

    table = collect_table(SweepState.load(spec.sweep_dir))
    val = table[table.split == "val"]
    assert list(val.step) == [4, 8] and (val.params_total == status.params).all()
    assert val.flops_train_per_image.iloc[0] > 0 and val.depth.iloc[0] == 1
    train = table[table.split == "train"]
    assert (table.lr == 1e-4).all() and (train.lr_at_step < 1e-4).all()  # base lr vs the warmup lr of the record


def test_ctrl_c_of_a_local_sweep_resumes_on_the_next_submit(monkeypatch, tmp_path):
    use_fixture_trainer(monkeypatch, step_s=0.05)
    spec = load_spec(write_spec(tmp_path, "ctrlc", depths=(2,), train={"total_steps": 120, "eval_every": 20,
                                                                        "checkpoint_every_steps": 10}))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", "submit", str(spec.path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def point_dir():
            points = list((spec.sweep_dir / "points").glob("d2-*")) if (spec.sweep_dir / "points").exists() else []
            return points[0] if points and (points[0] / "checkpoints" / "last.pt").exists() else None
        run_dir = wait_until(point_dir, 60, "the first checkpoint")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "run the same command again" in err
    st = sweep_status(SweepState.load(spec.sweep_dir))[0]
    assert st.state == "INTERRUPTED" and st.step < 120

    report = submit(spec, poll_s=0.2)
    assert report.submitted == [st.point_id] and report.final[0].state == "COMPLETED"
    starts = [int(s) for s in (run_dir / "starts.log").read_text().split()]
    assert starts[0] == 0 and 10 <= starts[1] < 120
    import sweeps_fixture_trainer

    reference = tmp_path / "reference"
    reference.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    (reference / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "model"}))
    monkeypatch.setenv("VARSCALE_FIXTURE_STEP_S", "0")
    sweeps_fixture_trainer.train_run(reference)
    assert _metrics_without_timing(run_dir) == _metrics_without_timing(reference)


def _metrics_without_timing(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("wall_time_s", "throughput_img_s")} for r in records]
