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
    assert "report:" in log and "Inception FID skipped" in log

    sweep = next(out.glob("sweeps/*/"))
    analysis = sweep / "analysis"
    assert (analysis / "report.html").stat().st_size > 10_000
    report = (analysis / "report.html").read_text()
    assert "data:image/png;base64," in report and "Scaling-law fits" in report
    for name in ("fig5_scaling_vs_params", "fig6_scaling_vs_compute", "samples_grid", "quality_vs_params",
                 "samples_per_size"):
        assert (analysis / "figures" / f"{name}.png").stat().st_size > 5_000, name
    # the reader's order: summary and figures first, configuration last, folded, and the spec shown once
    headings = [h for h in report.split("<h2>")[1:]]
    titles = [h.split("</h2>")[0] for h in headings]
    assert titles[:2] == ["Summary", "Figures"] and titles[-1] == "Environment", titles
    assert "<details><summary><h2>Sweep configuration</h2></summary>" in report
    assert report.count("Sweep spec ") == 1
    order = [report.index(text) for text in ("Figure 5 of the VAR paper", "Figure 6 of the VAR paper",
                                             "Sample quality against parameters", "Samples of every model size",
                                             "<h2>Scaling-law fits</h2>")]
    assert order == sorted(order), order
    # the fits use exactly the final held-out record of every point of the collected table
    table = pd.read_csv(sweep / "table.csv")
    assert sorted(table["depth"].unique()) == [1, 2, 3]
    final = table[table["split"] == "val"].sort_values("step").groupby("point_id").tail(1)
    assert (final["step"] == final["total_steps"]).all()
    fits = json.loads((analysis / "fits.json").read_text())
    fit = next(f for f in fits["fits"] if f["metric"] == "loss_mean" and f["x"] == "N" and f["form"] == "paper")
    expected = final.sort_values("params_total")["loss_mean"].tolist()
    assert fit["y_values"] == pytest.approx(expected, rel=1e-9)
    assert fit["x_values"] == pytest.approx((final.sort_values("params_total")["params_total"] / 1e9).tolist())

    # summary.json: every size with its budget and results, both fits per target, tokenizer, quality, wall times
    summary = json.loads((out / "summary.json").read_text())
    assert [s["depth"] for s in summary["sizes"]] == [1, 2, 3]
    for size in summary["sizes"]:
        assert size["steps"] == 12 and size["tokens_seen"] == 12 * 32 * 30 and size["train_flops"] > 0
        assert {"params_total", "params_wo_emb", "loss_last", "loss_mean", "err_last", "err_mean"} <= set(size)
    fitted = {(f["form"], f["target"], f["against"]) for f in summary["fits"]}
    assert {("paper", "loss_last", "N"), ("paper", "loss_mean", "N")} <= fitted
    for fit in summary["fits"]:
        assert {"exponent", "interval", "r", "holdout_max_abs_rel_error"} <= set(fit) and len(fit["interval"]) == 2
    # what three quick sizes cannot support (the saturating form has three parameters) is said, not dropped
    if ("saturating", "loss_last", "N") not in fitted:
        assert any("loss_last vs N, saturating" in reason for reason in summary["fits_skipped"])
    assert summary["tokenizer"]["psnr_db"] > 0 and len(summary["tokenizer"]["codebook_use_per_scale"]) == 4
    quality = summary["quality"]
    assert quality["metric"] == "synthetic-feature FD" and len(quality["sizes"]) == 3
    assert all(q["fd"] > 0 and 0 <= q["precision"] <= 1 and q["num_samples"] == 30 for q in quality["sizes"])
    assert set(summary["wall_time_s"]) >= {"tokenizer", "sweep", "quality", "report", "total"}

    # a third run has nothing left to train, and reuses every quality result
    log = run_demo(out)
    assert log.count("skip ") == 3 and "nothing to submit" in log
    assert json.loads((out / "summary.json").read_text())["quality"]["sizes"] == quality["sizes"]
