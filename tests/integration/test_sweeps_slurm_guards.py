"""Nothing is submitted twice and a broken SLURM is one line, on the real local cluster (scripts/local-slurm start).

"Controller down" and "accounting down" are the real SLURM clients pointed at ports where nothing answers
(a copy of slurm.conf given through SLURM_CONF), so the cluster itself is never stopped: others use it.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from harness_helpers import VARSCALE, subprocess_env
from sweeps_testlib import write_spec

from sweeps.spec import load_spec
from sweeps.state import SweepState, locked_state

pytestmark = pytest.mark.slurm


def _conf_with(tmp_path: Path, name: str, line: str) -> str:
    conf = tmp_path / name / "slurm.conf"
    conf.parent.mkdir()
    conf.write_text(Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text() + f"\n{line}\n")
    return str(conf)


def _cli(*args: str, slurm_conf: str | None = None, **popen) -> subprocess.Popen:
    env = subprocess_env(**({"SLURM_CONF": slurm_conf} if slurm_conf else {}))
    return subprocess.Popen([*VARSCALE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def _run(*args: str, slurm_conf: str | None = None) -> tuple[int, str, str]:
    out, err = (proc := _cli(*args, slurm_conf=slurm_conf)).communicate(timeout=120)
    return proc.returncode, out, err


def _queued(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


def test_double_submit_and_a_broken_scheduler(tmp_path):
    name = f"guard{os.getpid()}"
    spec_path = write_spec(tmp_path, name, depths=(1, 2), executor="slurm",
                           resources={"sbatch_extra": {"hold": True}})  # held: the jobs stay queued meanwhile
    spec = load_spec(spec_path)
    try:
        # both start at once; holding the state file back lets both get as far as they can before either has
        # recorded a job, so without the submit lock both would find the points NEW and both would submit
        with locked_state(spec.sweep_dir):
            procs = [_cli("sweep", "submit", str(spec_path)) for _ in range(2)]
            time.sleep(12)
        outs = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        stdout = "".join(out for out, _ in outs)
        assert stdout.count("submitted 2 point(s)") == 1 and stdout.count(": PENDING") == 2, stdout
        points = SweepState.load(spec.sweep_dir).points
        assert len(_queued(name)) == 2 and sorted(rec["job_id"] for rec in points.values()) == _queued(name)
        assert not any(rec.get("previous_job_ids") for rec in points.values())

        # accounting down, and the jobs older than any accounting lag: the queue alone says they are pending
        no_acct = _conf_with(tmp_path, "no-acct", "AccountingStoragePort=6998")
        with locked_state(spec.sweep_dir) as state:
            for rec in state.points.values():
                rec["submitted_at"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()
        code, out, err = _run("sweep", "submit", str(spec_path), slurm_conf=no_acct)
        assert code == 0 and out.count(": PENDING") == 2 and "nothing to submit" in out, (out, err)
        assert len(_queued(name)) == 2

        # controller down: one line, exit 1, nothing recorded as cancelled
        no_ctl = _conf_with(tmp_path, "no-ctl", "SlurmctldPort=6999")
        commands = (("sweep", "status", str(spec_path)), ("sweep", "cancel", str(spec_path)),
                    ("sweep", "submit", "--dry-run", str(spec_path)))
        procs = [_cli(*command, slurm_conf=no_ctl) for command in commands]  # at once: each waits ~9 s for SLURM
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            lines = err.strip().splitlines()
            assert proc.returncode == 1 and len(lines) == 1, err
            assert "controller (squeue) is not answering" in lines[0], err
        assert not any(rec.get("cancelled") for rec in SweepState.load(spec.sweep_dir).points.values())

        code, out, err = _run("sweep", "cancel", str(spec_path))
        assert code == 0 and out.count("cancelled ") == 2, (out, err)
        # the jobs left the queue: only accounting can tell how they ended, and it is down
        for command in (("sweep", "status", str(spec_path)), ("sweep", "submit", str(spec_path))):
            code, out, err = _run(*command, slurm_conf=no_acct)
            lines = err.strip().splitlines()
            assert code == 1 and len(lines) == 1 and "accounting (sacct) is not answering" in lines[0], err
        assert _queued(name) == []
        code, out, err = _run("sweep", "status", "--json", str(spec_path))
        assert code == 0 and {row["state"] for row in json.loads(out)} == {"CANCELLED"}, (out, err)
    finally:
        subprocess.run(["scancel", "-n", name], check=False)
