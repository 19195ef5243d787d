"""The demo's code path at reduced size: interrupted, continued, and its outputs consistent with the sweep table."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-m", "harness.cli", "demo", "--size", "quick"]


def run_demo(out: Path, timeout: float = 600) -> str:
    proc = subprocess.run(DEMO + ["--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def interrupt_during_sweep(out: Path, deadline_s: float = 300) -> None:
    """Start the demo in its own process group and press Ctrl-C once the sweep has started training."""
    proc = subprocess.Popen(DEMO + ["--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list(out.glob("sweeps/*/points/*/metrics.jsonl")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the demo finished before it could be interrupted:\n" + proc.stdout.read()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0


@pytest.mark.slow
def test_demo_interrupted_then_continued(tmp_path):
    out = tmp_path / "demo"
    interrupt_during_sweep(out)
    tokenizer_files = list(out.glob("tokenizer-*/tokenizer.safetensors"))
    assert len(tokenizer_files) == 1
    mtime = tokenizer_files[0].stat().st_mtime_ns

    log = run_demo(out)
    assert "reusing" in log and tokenizer_files[0].stat().st_mtime_ns == mtime, "the tokenizer was trained again"
    assert "report:" in log and "FID skipped" in log

    sweep = next(out.glob("sweeps/*/"))
    analysis = sweep / "analysis"
    assert (analysis / "report.html").stat().st_size > 10_000
    report = (analysis / "report.html").read_text()
    assert "data:image/png;base64," in report and "Scaling-law fits" in report
    for name in ("fig5_scaling_vs_params", "fig6_scaling_vs_compute", "samples_grid"):
        assert (analysis / "figures" / f"{name}.png").stat().st_size > 5_000, name

    # the fits use exactly the final held-out record of every point of the collected table
    table = pd.read_csv(sweep / "table.csv")
    assert sorted(table["depth"].unique()) == [1, 2, 3]
    final = table[table["split"] == "val"].sort_values("step").groupby("point_id").tail(1)
    assert (final["step"] == table["total_steps"].iloc[0]).all()
    fits = json.loads((analysis / "fits.json").read_text())
    fit = next(f for f in fits["fits"] if f["metric"] == "loss_mean" and f["x"] == "N" and f["form"] == "paper")
    expected = final.sort_values("params_total")["loss_mean"].tolist()
    assert fit["y_values"] == pytest.approx(expected, rel=1e-9)
    assert fit["x_values"] == pytest.approx((final.sort_values("params_total")["params_total"] / 1e9).tolist())

    # a third run has nothing left to train
    log = run_demo(out)
    assert log.count("skip ") == 3 and "nothing to submit" in log
