"""The report builds from a collected sweep table and contains its tables and figures; CLI entry points."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis.results import FitResults
from analysis.synthetic import synthetic_sweep_table
from harness.cli.main import main
from models.flops import model_block
from models.registry import var_spec
from reports import build_report

DEPTHS = (6, 8, 10, 12, 16)
SPEC_TEXT = "name: tiny-demo\ngrid:\n  depth: [6, 8, 10, 12, 16]\n"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec = root.parent / "tiny-demo.yaml"
    spec.write_text(SPEC_TEXT)
    (root / "state.json").write_text(json.dumps({"sweep": "tiny-demo", "spec": str(spec), "executor": "local"}))
    (root / "tiny-demo.yaml").write_text(SPEC_TEXT)  # a copy next to the sweep, as `varscale sweep` leaves one
    table = synthetic_sweep_table(depths=DEPTHS, evals_per_run=6, noise=0.003, seed=2, sweep="tiny-demo")
    table["state"] = "COMPLETED"  # as `varscale sweep collect` writes it
    for point_id, rows in table.groupby("point_id"):
        run_dir = root / "runs" / point_id
        run_dir.mkdir(parents=True)
        table.loc[rows.index, "run_dir"] = str(run_dir)
        model = {"name": f"VAR-d{rows['depth'].iloc[0]}", "params_total": int(rows["params_total"].iloc[0])}
        (run_dir / "config.json").write_text(json.dumps({"model": model, "base_lr": 1e-4, "seed": 2}))
    table.to_csv(root / "collected.csv", index=False)
    largest = root / "runs" / "d16-i1000000"
    images = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    (largest / "samples").mkdir()
    np.savez(largest / "samples" / "cls8.npz", arr_0=images, arr_1=np.arange(8))
    (largest / "eval").mkdir()
    (largest / "eval" / "cls8.json").write_text(json.dumps({
        "metrics": {"fid": 87.5, "is_mean": 3.2, "is_std": 0.1, "precision": 0.1, "recall": 0.05},
        "inputs": {"samples": {"num_images": 8, "resolution": [256, 256]},
                   "reference": {"path": "/refs/VIRTUAL_imagenet256_labeled.npz"}}}))
    return root


@pytest.fixture(scope="module")
def report(sweep_dir):
    return build_report(sweep_dir, n_boot=100, formats=("png",))


def test_report_html_is_self_contained_with_tables_and_figures(sweep_dir, report):
    assert report == sweep_dir / "analysis" / "report.html"
    page = report.read_text()
    # results first (summary, figures, fits, runs), then what produced them, folded: nothing before the figures
    # but the summary, and every section once
    titles = re.findall(r"<h2>(.*?)</h2>", page)
    assert titles == ["Summary", "Figures", "Scaling-law fits", "Runs", "Evaluation against published baselines",
                      "Compute accounting and fit options", "Sweep configuration", "Environment"]
    for title in titles[-3:]:
        assert f"<details><summary><h2>{title}</h2></summary>" in page
    assert page.count("name: tiny-demo") == 1  # the spec once, even where a copy sits next to the sweep
    assert "name: tiny-demo" in page  # the sweep spec, verbatim
    for depth in DEPTHS:
        assert f"d{depth}-i1000000" in page
    fits = FitResults.load(sweep_dir / "analysis" / "fits.json")
    alpha = fits.get("loss_last", "N", "paper").params["alpha"]
    assert f"alpha={alpha:.4g}" in page and "·N^" in page and "Pearson r" in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    pngs = sorted((sweep_dir / "analysis" / "figures").glob("*.png"))
    assert {p.stem for p in pngs} == {"fig5_scaling_vs_params", "fig6_scaling_vs_compute", "per_scale_metrics",
                                      "per_scale_curves", "samples_grid", "fig5_6_paper_laws_normalised",
                                      "baselines_fid_vs_params", "baselines_fid_vs_time"}
    assert len(images) == len(pngs)
    assert sorted(base64.b64decode(data) for data in images) == sorted(p.read_bytes() for p in pngs)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # base64 may spell "http" by chance
    assert "src='figures/" not in page and "http" not in text.split("<body>")[1].split("Environment")[0]
    ours = re.findall(r'<tr class="ours">(.*?)</tr>', page)
    assert len(ours) == 2 and "VAR-d16" in ours[0] and "87.5" in ours[0]  # its own table and the comparison
    assert re.search(r"git commit ([0-9a-f]{40}|unknown)", page)
    assert "scipy" in page and "cpu_count" in page


def test_report_markdown_links_existing_figures(sweep_dir, report):
    text = (sweep_dir / "analysis" / "report.md").read_text()
    assert text.startswith("# varscale report")
    assert "| point_id |" in text and "| metric | against | form | law |" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 8 and all((sweep_dir / "analysis" / link).is_file() for link in links)
    assert "**VAR-d16**" in text


def test_fit_files_agree_with_each_other(sweep_dir, report):
    out = sweep_dir / "analysis"
    fits = FitResults.load(out / "fits.json")
    flat = pd.read_csv(out / "fits.csv")
    for fit in fits.fits:
        rows = flat[(flat["metric"] == fit.metric) & (flat["x"] == fit.x) & (flat["form"] == fit.form)]
        assert dict(zip(rows["param"], rows["value"])) == pytest.approx(fit.params)
        # the Chinchilla form and the laws against C resample; the exact and profile intervals do not
        assert fit.n_boot == (100 if fit.form == "chinchilla" or fit.x == "C" else 0)
        assert list(rows["flags"].fillna("")) == [" | ".join(fit.flags)] * len(rows)
    assert len(pd.read_csv(out / "points.csv")) == len(DEPTHS)
    comparison = pd.read_csv(out / "comparison.csv")
    assert (comparison["origin"] == "varscale (ours)").sum() == 1


def test_cli_fit_and_report_errors(sweep_dir, tmp_path, capsys):
    out = tmp_path / "fit-out"
    assert main(["fit", str(sweep_dir / "collected.csv"), "-o", str(out), "--n-boot", "100", "--against", "N",
                 "--forms", "paper", "--metrics", "loss_last,err_last"]) == 0
    printed = capsys.readouterr().out
    assert "loss_last  N    paper" in printed and (out / "fits.json").is_file()
    assert set(pd.read_csv(out / "fits.csv")["metric"]) == {"loss_last", "err_last"}
    assert main(["report", str(tmp_path / "no-such-sweep")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["fit", str(sweep_dir), "--n-boot", "10"]) == 2
    assert "at least 100" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's own check of choices
        main(["figures", str(sweep_dir), "--aggregate", "median"])
    assert exited.value.code == 2


def test_report_of_a_single_run_says_why_nothing_is_fitted(tmp_path):
    run_dir = tmp_path / "d6"
    run_dir.mkdir()
    model = model_block(var_spec("VAR-d6"))  # the analytic counts analysis/validate.py checks
    (run_dir / "config.json").write_text(json.dumps({"model": model, "base_lr": 1e-4}))
    (run_dir / "status.json").write_text(json.dumps({"state": "finished", "step": 30, "total_steps": 30}))
    records = [{"split": "val", "step": s, "images_seen": 64 * s, "tokens_seen": 64 * 680 * s,
                "train_flops": model["flops_train_per_image"] * 64 * s,
                "loss_mean": 8.0 - s / 10, "loss_last": 8.3 - s / 10,
                "err_mean": 0.99 - s / 1000, "err_last": 0.995 - s / 1000,
                "loss_per_scale": [7.0 - s / 10, 8.0 - s / 10], "err_per_scale": [0.98, 0.99]} for s in (10, 20, 30)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    page = build_report(run_dir, n_boot=100, formats=("png",)).read_text()
    assert "No law was fitted." in page and "Not fitted: no law could be fitted" in page
    assert page.count("data:image/png;base64,") == 4  # per-scale final, per-scale curves, 2 baseline plots
    assert "&quot;base_lr&quot;: 0.0001" in page  # the run's configuration, HTML-escaped
    assert main(["fit", str(run_dir)]) == 2  # the fit command alone does fail


def test_nothing_to_compare_is_said_once_without_empty_tables_or_axes(sweep_dir, tmp_path):
    # at 32 px nothing is published, and this copy of the sweep has no evaluation: the demo's situation
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy, ignore=shutil.ignore_patterns("analysis", "eval"))
    page = build_report(copy, n_boot=20, formats=("png",), resolution=32).read_text()
    section = page.split("<h2>Evaluation against published baselines</h2>")[1].split("<h2>")[0]
    assert "Nothing to compare" in section and "32x32" in section
    assert "<table" not in section and "<img" not in section
    assert not list((copy / "analysis" / "figures").glob("baselines_*"))


def test_laws_in_the_fits_table_can_wrap_between_their_terms():
    from reports.build import plain_equation

    three_terms = plain_equation(r"$L=4.80\times10^{-11}+4.6/N^{0.0573}+7.6\times10^{39}/D^{10.2}$")
    assert three_terms == "L=4.80×10^-11 + 4.6/N^0.0573 + 7.6×10^39/D^10.2"
    assert max(len(part) for part in three_terms.split()) <= 16  # no unbreakable run as wide as the whole law
    assert plain_equation(r"$L=1.57\cdot N^{-0.0603}$") == "L=1.57·N^-0.0603"
