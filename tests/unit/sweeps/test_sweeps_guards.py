"""Sweep submissions refused before anything is written: output_root in the way or read-only, a broken YAML file, another
spec of the same name; whole-node memory; a second local submit of a running sweep names the first."""
from __future__ import annotations

import signal
import subprocess

from harness_helpers import VARSCALE, subprocess_env
from sweeps_testlib import use_fixture_trainer, wait_until, write_spec

from harness.cli.main import main
from sweeps.dryrun import sbatch_lines
from sweeps.points import expand
from sweeps.spec import load_spec


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_output_root_that_is_a_file_and_broken_yaml_are_one_line(tmp_path, capsys):
    path = write_spec(tmp_path, "blocked")
    (tmp_path / "runs").write_text("a file where the sweeps should go")
    for extra in ([], ["--dry-run"]):
        assert main(["sweep", "submit", str(path), *extra]) == 2
        assert _one_error_line(capsys) == (f"varscale sweep: error: {path}: output_root: {tmp_path / 'runs'} is a "
                                           "file, not a directory; point output_root at a directory")
    path.write_text("name: x\ngrid: [1, 2\nexecutor: local\n")
    assert main(["sweep", "submit", str(path)]) == 2
    assert _one_error_line(capsys).startswith(f"varscale sweep: error: {path}: not valid YAML at line 3, column")


def test_whole_node_memory(tmp_path):
    spec = load_spec(write_spec(tmp_path, "mem", executor="slurm", resources={"mem_gb": 0}))
    resources = expand(spec)[0].resources
    assert resources.sbatch_parameters()["slurm_mem"] == "0"
    assert "#SBATCH --mem=0" in sbatch_lines(spec, resources, 1)


def test_a_second_spec_of_the_same_name_is_refused(tmp_path, monkeypatch, capsys):
    use_fixture_trainer(monkeypatch)
    first = write_spec(tmp_path, "shared", depths=(2,), train={"total_steps": 4})
    assert main(["sweep", "submit", str(first)]) == 0
    capsys.readouterr()
    other = tmp_path / "elsewhere"
    other.mkdir()
    second = write_spec(other, "shared", depths=(3,), train={"total_steps": 4})
    second.write_text(second.read_text().replace(str(other / "runs"), str(tmp_path / "runs")))
    stored = (tmp_path / "runs" / "shared" / "spec.yaml").read_bytes()
    assert main(["sweep", "submit", str(second)]) == 2
    assert _one_error_line(capsys) == (
        f"varscale sweep: error: {second}: sweep name 'shared' is already used in {tmp_path / 'runs' / 'shared'} by "
        f"another spec ({first}, other content); give this sweep another name or output_root")
    assert (tmp_path / "runs" / "shared" / "spec.yaml").read_bytes() == stored


def test_a_second_local_submit_names_the_running_one(tmp_path, monkeypatch):
    use_fixture_trainer(monkeypatch, step_s=0.5)  # slow steps: the first submit is still running
    path = write_spec(tmp_path, "busy", depths=(2,), train={"total_steps": 40})
    first = subprocess.Popen([*VARSCALE, "sweep", "submit", str(path)], env=subprocess_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_until(lambda: (tmp_path / "runs" / "busy" / "state.json").exists(), 60, "the first submit")
        second = subprocess.run([*VARSCALE, "sweep", "submit", str(path)], env=subprocess_env(),
                                capture_output=True, text=True, timeout=60)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1 and len(lines) == 1, second.stderr
        assert "sweep busy (another submit) is in use by host" in lines[0] and f"pid {first.pid}" in lines[0]
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C: the local sweep stops its job
        try:
            first.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            first.kill()


def test_requeue_signal_before_the_first_step_records_requeued(tmp_path):
    """submitit calls ``checkpoint`` from its USR2 handler; before the trainer thread exists there is nothing to
    save, and the status must say what happens next (not "running", and not "failed" from submitit's exit)."""
    import json

    from sweeps.job import PointJob

    run_dir = tmp_path / "point"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "step": 5, "total_steps": 20}))
    delayed = PointJob(run_dir, "harness.training.loop:train_run").checkpoint()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "requeued" and status["step"] == 5 and status["error"] is None
    assert isinstance(delayed.function, PointJob) and delayed.function.run_dir == str(run_dir)


def test_read_only_output_root_is_one_line_and_writes_nothing(tmp_path, read_only_dir, capsys):
    read_only_dir.seal()
    path = write_spec(tmp_path, "readonly")
    spec_text = path.read_text()
    before = sorted(p for p in tmp_path.rglob("*") if read_only_dir.path not in p.parents)
    for output_root in (read_only_dir.path, read_only_dir.path / "runs"):  # the root itself, or a folder to create
        path.write_text(spec_text.replace(str(tmp_path / "runs"), str(output_root)))
        for extra in ([], ["--dry-run"]):
            assert main(["sweep", "submit", str(path), *extra]) == 2
            assert _one_error_line(capsys) == (
                f"varscale sweep: error: {path}: output_root: {read_only_dir.path} is not writable "
                f"({read_only_dir.reason}); choose a writable output_root")
    assert read_only_dir.files() == {} and not list(read_only_dir.path.iterdir())
    assert sorted(p for p in tmp_path.rglob("*") if read_only_dir.path not in p.parents) == before
