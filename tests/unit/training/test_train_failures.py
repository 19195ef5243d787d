"""A run directory under stress, with real processes and signals: a second trainer is refused by the lock,
SIGTERM (sent to the whole process group, DataLoader workers included) saves and records "interrupted", SIGINT
records "interrupted", DataLoader workers outlive a job's signals and end on their parent's SIGTERM, an
environment error (a file in the way, a full or read-only disk) is one line and a "failed" status."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from harness_helpers import (
    VARSCALE,
    run_cli,
    subprocess_env,
    tiny_run_config,
    write_run,
)

from harness.cli.main import main
from harness.training.control import ForkSafeLoader, ignore_job_signals


def _status(run_dir):
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _start(run_dir):
    """`varscale train` in its own process group, as a scheduler starts a job step or a terminal a foreground job
    (SIGINT handled as usual even when this test itself runs in the background, where it is ignored)."""
    return subprocess.Popen([*VARSCALE, "train", "--run-dir", str(run_dir)], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_running(proc, run_dir, min_step=0, timeout_s=300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = _status(run_dir)
        if st.get("state") == "running" and st.get("step", 0) >= min_step:
            return st
        assert proc.poll() is None, f"trainer ended early: {proc.stderr.read()}"
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} never reported running at step >= {min_step}")


def _finish(proc, run_dir, timeout_s=300):
    """Output of a signalled trainer; generous time: the shared 2-core CI machine can be very slow (at load 20 a
    trainer here took 30 s to start and 10 s to exit)."""
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"trainer still running {timeout_s} s after the signal; status {_status(run_dir)}") from None


def test_lock_sigterm_with_workers_and_sigint(tmp_path, tokenizer):
    # long enough never to finish during the test; steps and metrics records every 5 steps show progress
    run = write_run(tmp_path / "run", tiny_run_config(tokenizer, total_steps=100000, eval_every=0,
                                                       checkpoint_every_steps=5, data={"workers": 2}))
    first = _start(run)
    try:
        _wait_running(first, run, min_step=5)
        second = run_cli("train", "--run-dir", str(run), timeout=300)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1 and len(lines) == 1, second.stderr
        assert f"run directory {run} is in use by host" in lines[0] and f"pid {first.pid}" in lines[0]

        os.killpg(first.pid, signal.SIGTERM)  # workers get it too, as from `kill -- -PGID` or a scheduler
        _, err = _finish(first, run)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    status = _status(run)
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert status["state"] == "interrupted" and status["step"] == saved["step"] > 5  # saved at the signal step

    again = _start(run)  # resumes from that checkpoint; Ctrl-C records "interrupted" without a new checkpoint
    try:
        _wait_running(again, run)
        os.killpg(again.pid, signal.SIGINT)
        _, err = _finish(again, run)
    finally:
        if again.poll() is None:
            os.killpg(again.pid, signal.SIGKILL)
    assert again.returncode == 130, err
    after = _status(run)
    resumed = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert after["state"] == "interrupted" and after["step"] == resumed >= saved["step"]


def _children() -> set[int]:
    tasks = Path(f"/proc/{os.getpid()}/task")
    return {int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_dataloader_workers_outlive_job_signals_and_end_on_their_parents_sigterm():
    """A scheduler or `kill -- -PGID` signals every process of a job. A worker must keep serving batches (the
    main process may need some to reach the step it saves at) and leave the decision to the main process; a
    SIGTERM from its parent (the DataLoader ending a worker that did not end by itself) ends it at once."""
    before = _children()
    loader = torch.utils.data.DataLoader(range(100_000), batch_size=4, num_workers=2,
                                         worker_init_fn=ignore_job_signals)
    batches = iter(ForkSafeLoader(loader))
    next(batches)
    workers = sorted(_children() - before)
    assert len(workers) == 2
    for name in ("TERM", "USR2", "INT"):  # sent by another process, as SLURM's step daemon or a terminal does
        subprocess.run(["kill", "-s", name, *map(str, workers)], check=True)
    time.sleep(0.5)
    assert [len(next(batches)) for _ in range(40)] == [4] * 40  # far beyond what was fetched ahead
    assert all(_alive(pid) for pid in workers)

    os.kill(workers[0], signal.SIGTERM)  # from the parent
    deadline = time.monotonic() + 60
    while _alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    took = 60 - (deadline - time.monotonic())
    assert not _alive(workers[0]) and took < 10, f"worker still alive {took:.1f} s after its parent's SIGTERM"
    del batches  # shuts the other worker down


def test_environment_error_is_one_line_and_a_failed_status(tmp_path, tokenizer, monkeypatch, capsys):
    run = write_run(tmp_path / "run", tiny_run_config(tokenizer, total_steps=8, eval_every=0,
                                                       checkpoint_every_steps=4))
    (run / "checkpoints").write_text("not a directory")  # the first checkpoint save cannot create its folder
    done = run_cli("train", "--run-dir", str(run))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"varscale train: error: {run / 'checkpoints'}: already exists as a file; remove it or choose another path"]
    status = _status(run)
    assert status["state"] == "failed" and status["error"] == done.stderr.strip().split("error: ", 1)[1]

    torch.set_num_threads(1)
    monkeypatch.setenv("VARSCALE_DEBUG", "1")  # the traceback is there when asked for
    with pytest.raises(FileExistsError):
        main(["train", "--run-dir", str(run)])


@pytest.fixture
def small_disk(tmp_path):
    """A real 200 kB file system (tmpfs): room for a run's config and status, not for its checkpoint."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_full_and_read_only_disks_are_one_line(small_disk, tokenizer):
    run = write_run(small_disk / "run", tiny_run_config(tokenizer, total_steps=4, eval_every=0,
                                                        checkpoint_every_steps=2))
    full = run_cli("train", "--run-dir", str(run))
    line = (f"{run / 'checkpoints'}: no space left on the device; free space (or point the output elsewhere) and run "
            "the same command again: it continues from the last checkpoint")
    assert full.returncode == 1 and full.stderr.strip().splitlines() == [f"varscale train: error: {line}"]
    assert _status(run)["state"] == "failed" and _status(run)["error"] == line
    assert not list(run.rglob("*.tmp"))

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    read_only = run_cli("train", "--run-dir", str(run))
    assert read_only.returncode == 1 and read_only.stderr.strip().splitlines() == [
        f"varscale train: error: {run / '.lock'}: read-only file system; choose a writable location"]


def test_a_run_dir_on_a_read_only_file_system_is_one_line_and_writes_nothing(tmp_path, tokenizer, read_only_dir,
                                                                               capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_run_config(tokenizer, total_steps=4)))
    existing = write_run(read_only_dir.path / "old", tiny_run_config(tokenizer, total_steps=4))
    (existing / "status.json").write_text(json.dumps({"state": "requeued", "step": 2, "total_steps": 4}))
    read_only_dir.seal()
    files = read_only_dir.files()
    cases = [(read_only_dir.path / "new", ["--config", str(config)], read_only_dir.path / "new"),  # a new run
             (read_only_dir.path / "a" / "b", ["--config", str(config)], read_only_dir.path / "a"),  # and its parent
             (existing, [], existing / ".lock")]  # resuming one (its status must stay as it was)
    for run_dir, options, named in cases:
        assert main(["train", "--run-dir", str(run_dir), *options]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [
            f"varscale train: error: {named}: {read_only_dir.advice}"]
    assert read_only_dir.files() == files
