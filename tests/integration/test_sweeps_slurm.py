"""Sweeps against a real SLURM cluster (scripts/local-slurm start): arrays, accounting states, requeue, failure,
cancel, a 2-task gloo job. Every wait polls with a deadline.

Tests run in file order on a 2-CPU cluster. The real time-limit test needs ~90 s of wall time, so
``test_time_limit_job_is_submitted`` starts it early and ``test_time_limit_requeue_resumes`` (the last test)
checks it; the 2-task job runs first, while both CPUs are free.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import submitit
from sweeps_testlib import use_fixture_trainer, wait_until, write_spec

from harness.cli.main import main
from sweeps.collect import collect_table
from sweeps.launch import submit, wait_for
from sweeps.points import expand
from sweeps.spec import load_spec
from sweeps.state import SweepState
from sweeps.status import sweep_status

pytestmark = pytest.mark.slurm
TIME_LIMIT = {}  # the time-limit sweep, shared by the two tests that start and check it


def _status(spec, point_id):
    return sweep_status(SweepState.load(spec.sweep_dir), [point_id])[0]


def _wait_job_state(spec, point_ids, expected, timeout_s=30):
    """sacct lags the job by 1-3 s: poll the accounting state itself, not only status.json."""
    def done():
        rows = sweep_status(SweepState.load(spec.sweep_dir), point_ids)
        return rows if all(r.job_state == expected for r in rows) else None
    return wait_until(done, timeout_s, f"sacct state {expected} for {point_ids}")


def _sacct_states(job_id: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", job_id], capture_output=True,
                         text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _comparable(records):
    drop = {"wall_time_s", "throughput_img_s", "mfu"}
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def _read_metrics(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _uninterrupted_copy(run_dir: Path, dest: Path, train_fn) -> Path:
    """The same config trained in one go in this process (the reference for the resumed run)."""
    dest.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("model", "protocol")}
    (dest / "config.json").write_text(json.dumps(config))
    train_fn(dest)
    return dest


def test_two_task_job_trains_with_gloo(tmp_path):
    spec = load_spec(write_spec(tmp_path, "ddp", depths=(1,), executor="slurm", trainer="harness.training.loop:train_run",
                                train={"total_steps": 6, "eval_every": 3}, resources={"tasks_per_node": 2}))
    report = submit(spec, wait=True, wait_timeout_s=120)
    st = report.final[0]
    assert st.state == "COMPLETED", st.error
    run_dir = spec.sweep_dir / "points" / st.point_id
    config = json.loads((run_dir / "config.json").read_text())
    assert config["protocol"]["world_size"] == 2  # both SLURM tasks joined one gloo process group
    task1_log = spec.sweep_dir / "jobs" / f"{st.job_id}_1_log.out"
    assert "global_rank=1(2)" in task1_log.read_text()
    _wait_job_state(spec, [st.point_id], "COMPLETED")


def test_time_limit_job_is_submitted(tmp_path_factory, monkeypatch):
    tmp = tmp_path_factory.mktemp("timelimit")
    # 200 steps = 40 s of work; with a 1-minute limit and the signal 30 s ahead, SLURM's 30-s limit checks
    # send USR2 10-30 s into each run, so the point needs 2-4 runs
    use_fixture_trainer(monkeypatch, step_s=0.2)
    spec = load_spec(write_spec(tmp, "timelimit", depths=(2,), executor="slurm",
                                train={"total_steps": 200, "eval_every": 50},
                                resources={"time_limit": 1, "signal_delay_s": 30}, extra={"max_requeues": 8}))
    report = submit(spec)
    assert len(report.submitted) == 1
    TIME_LIMIT["spec"], TIME_LIMIT["point"] = spec, report.submitted[0]
    assert _status(spec, report.submitted[0]).state in ("PENDING", "RUNNING")


def test_array_completes_then_resubmit_skips_and_lost_result_reruns(monkeypatch, tmp_path):
    use_fixture_trainer(monkeypatch)
    spec = load_spec(write_spec(tmp_path, "array", depths=(2, 3, 4), executor="slurm"))
    report = submit(spec)
    array_id = report.job_ids[report.submitted[0]].split("_")[0]
    assert [report.job_ids[p] for p in report.submitted] == [f"{array_id}_{i}" for i in range(3)]  # one array
    assert submit(spec).submitted == []  # queued or running points are not submitted twice
    wait_for(spec, report.submitted, timeout_s=120)
    rows = _wait_job_state(spec, report.submitted, "COMPLETED")
    assert [r.state for r in rows] == ["COMPLETED"] * 3
    table = collect_table(SweepState.load(spec.sweep_dir))
    assert sorted(table.point_id.unique()) == sorted(report.submitted)
    assert {"loss_s0", "loss_s1", "loss_s2", "err_s2"} <= set(table.columns)
    assert (table.groupby("point_id").size() == 8).all()

    assert submit(spec).submitted == []
    lost = report.submitted[0]
    shutil.rmtree(spec.sweep_dir / "points" / lost)
    again = submit(spec)
    assert again.submitted == [lost]
    wait_for(spec, [lost], timeout_s=60)
    assert _wait_job_state(spec, [lost], "COMPLETED")[0].state == "COMPLETED"


def test_preemption_requeues_and_resumes_without_losing_steps(monkeypatch, tmp_path):
    use_fixture_trainer(monkeypatch, step_s=0.1)
    spec = load_spec(write_spec(tmp_path, "preempt", depths=(3,), executor="slurm",
                                train={"total_steps": 80, "eval_every": 10}, resources={"time_limit": 60}))
    point = submit(spec).submitted[0]
    run_dir = spec.sweep_dir / "points" / point
    wait_until(lambda: (run_dir / "metrics.jsonl").exists(), 60, "the first metrics record (step 10)")
    job_id = SweepState.load(spec.sweep_dir).points[point]["job_id"]
    submitit.SlurmJob(folder=spec.sweep_dir / "jobs", job_id=job_id)._interrupt()  # preemption: TERM + USR2
    wait_until(lambda: len((run_dir / "starts.log").read_text().split()) == 2, 90, "the requeued job to start")
    wait_for(spec, [point], timeout_s=90)
    assert _status(spec, point).state == "COMPLETED"
    starts = [int(s) for s in (run_dir / "starts.log").read_text().split()]
    assert starts[0] == 0 and 10 <= starts[1] < 80  # resumed from its checkpoint, not from step 0
    assert "REQUEUED" in _sacct_states(job_id)
    import sweeps_fixture_trainer

    monkeypatch.setenv("VARSCALE_FIXTURE_STEP_S", "0")
    reference = _uninterrupted_copy(run_dir, tmp_path / "reference", sweeps_fixture_trainer.train_run)
    assert _comparable(_read_metrics(run_dir)) == _comparable(_read_metrics(reference))


def test_failing_point_shows_failed_with_error_and_log(tmp_path, capsys):
    empty = tmp_path / "empty_imagenet"
    (empty / "train").mkdir(parents=True)
    spec = load_spec(write_spec(tmp_path, "bad", depths=(1,), executor="slurm", trainer="harness.training.loop:train_run",
                                train={"data": {"source": "imagefolder", "root": str(empty), "resolution": 32,
                                                "num_classes": 4}}))
    point = submit(spec).submitted[0]
    wait_for(spec, [point], timeout_s=90)
    st = _wait_job_state(spec, [point], "FAILED")[0]
    assert st.state == "FAILED" and "no class sub-folders" in st.error
    capsys.readouterr()
    assert main(["sweep", "status", str(spec.path)]) == 0
    out = capsys.readouterr().out
    assert f"{point} FAILED: DatasetError:" in out and st.log in out and st.log.endswith("_0_log.out")
    assert "no class sub-folders" in Path(st.log.replace(".out", ".err")).read_text()


def test_impossible_request_is_refused_at_submit(tmp_path, capsys):
    spec_path = write_spec(tmp_path, "toobig", depths=(2,), executor="slurm", resources={"cpus_per_task": 512})
    assert main(["sweep", "submit", str(spec_path)]) == 1
    err = capsys.readouterr().err
    assert "sbatch refused 1 point(s)" in err and "cpus_per_task=512" in err
    assert "More processors requested than permitted" in err  # the cluster's reason (EnforcePartLimits=ALL)
    spec = load_spec(spec_path)
    assert not SweepState.load(spec.sweep_dir).points[expand(spec)[0].id].get("job_id")


def test_cancel_shows_cancelled_and_queued_points_are_not_resubmitted(monkeypatch, tmp_path, capsys):
    use_fixture_trainer(monkeypatch, step_s=0.5)
    spec = load_spec(write_spec(tmp_path, "cancel", depths=(2,), executor="slurm",
                                train={"total_steps": 1000}, resources={"time_limit": 60}))
    point = submit(spec).submitted[0]
    skipped = submit(spec)
    assert skipped.submitted == [] and skipped.skipped[point] in ("PENDING", "RUNNING")
    assert main(["sweep", "cancel", str(spec.sweep_dir)]) == 0
    assert f"cancelled {point}" in capsys.readouterr().out
    st = _wait_job_state(spec, [point], "CANCELLED")[0]
    assert st.state == "CANCELLED"
    assert main(["sweep", "status", str(spec.sweep_dir)]) == 0
    assert "CANCELLED" in capsys.readouterr().out


def _last_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines else 0


def test_real_trainer_preempted_with_workers_saves_at_the_signal_and_resumes_to_the_same_result(tmp_path):
    """A preemption as SLURM delivers it to every process of the job step, DataLoader workers included (data.workers
    = 2, as the paper spec runs with 8): SIGTERM first, then USR2. The workers must outlive the SIGTERM and keep
    feeding the trainer (PyTorch's own handler would end them, and the trainer dies within the few batches fetched
    ahead), and only the trainer's process may answer USR2; the job then saves at the signal step, not at an
    earlier checkpoint (there are no periodic ones here), and the requeued run ends as an uninterrupted one."""
    spec = load_spec(write_spec(tmp_path, "realrq", depths=(1,), executor="slurm", trainer="harness.training.loop:train_run",
                                train={"total_steps": 120, "eval_every": 10, "data": {
                                    "source": "synthetic", "resolution": 32, "num_classes": 4, "workers": 2,
                                    "synthetic_train_size": 64, "synthetic_val_size": 16}},
                                resources={"time_limit": 60}))
    point = submit(spec).submitted[0]
    run_dir = spec.sweep_dir / "points" / point
    job_id = SweepState.load(spec.sweep_dir).points[point]["job_id"]
    at_term = wait_until(lambda: _last_step(run_dir), 90, "the first metrics record")
    subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
    # 20 steps are 20 batches, far more than the 2 workers x 2 fetched ahead when the SIGTERM came
    wait_until(lambda: _last_step(run_dir) >= at_term + 20 or _status(spec, point).state == "FAILED", 90,
               f"training to go on 20 steps past step {at_term} after the SIGTERM")
    assert _status(spec, point).state != "FAILED", _status(spec, point).error
    at_usr2 = _last_step(run_dir)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for(spec, [point], timeout_s=120)
    st = _status(spec, point)
    assert st.state == "COMPLETED" and st.step == 120, st.error
    log = Path(st.log.replace(".out", ".err")).read_text()
    assert log.count("Caught signal SIGUSR2") == 1  # the trainer's process only, no worker ran the handler
    assert "no checkpoint confirmation" not in log
    assert "checkpoint saved; requeueing" in log and "continues: status.json says requeued at step" in log
    resumed_at = int(log.split("continues: status.json says requeued at step ")[1].split("/")[0])
    assert at_usr2 <= resumed_at < 120  # saved at the signal, not restarted from step 0
    assert "REQUEUED" in _sacct_states(job_id)
    import torch

    from harness.training.loop import train_run

    torch.set_num_threads(1)  # as in the job (cpus_per_task=1)
    reference = _uninterrupted_copy(run_dir, tmp_path / "reference", train_run)
    resumed, straight = _read_metrics(run_dir), _read_metrics(reference)
    assert [r["step"] for r in resumed] == [r["step"] for r in straight]
    for a, b in zip(resumed, straight):
        assert a["loss_mean"] == pytest.approx(b["loss_mean"], rel=1e-5, abs=1e-6)
        assert a["loss_per_scale"] == pytest.approx(b["loss_per_scale"], rel=1e-5, abs=1e-6)


def test_time_limit_requeue_resumes(tmp_path_factory, monkeypatch):
    if "spec" not in TIME_LIMIT:  # run alone (-k): start it here
        test_time_limit_job_is_submitted(tmp_path_factory, monkeypatch)
    spec, point = TIME_LIMIT["spec"], TIME_LIMIT["point"]
    wait_for(spec, [point], timeout_s=200)
    st = _wait_job_state(spec, [point], "COMPLETED")[0]
    assert st.state == "COMPLETED" and st.step == 200, st.error
    run_dir = spec.sweep_dir / "points" / point
    starts = [int(s) for s in (run_dir / "starts.log").read_text().split()]
    assert starts[0] == 0 and len(starts) >= 2 and all(0 < s < 200 for s in starts[1:])
    assert starts == sorted(starts)  # each run continued where the previous stopped
    err_log = Path(st.log.replace(".out", ".err")).read_text()
    assert "this job is timed-out" in err_log
    import sweeps_fixture_trainer

    monkeypatch.setenv("VARSCALE_FIXTURE_STEP_S", "0")
    reference = _uninterrupted_copy(run_dir, tmp_path_factory.mktemp("tl_reference") / "run",
                                    sweeps_fixture_trainer.train_run)
    assert _comparable(_read_metrics(run_dir)) == _comparable(_read_metrics(reference))
