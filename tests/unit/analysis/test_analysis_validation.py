"""Bad sweep tables: one line on stderr naming the run and the fix, exit 2, earlier results untouched."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from analysis.synthetic import synthetic_sweep_table
from harness.cli.main import main

FAST = ["--against", "N", "--forms", "paper", "--no-chinchilla", "--metrics", "loss_last,err_last"]


def digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def good(tmp_path, capsys):
    """A table file and the good fit results already written beside it."""
    table = synthetic_sweep_table(depths=(6, 8, 10, 12), evals_per_run=3, noise=0.003, seed=2)
    path = tmp_path / "collected.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "analysis"
    assert main(["fit", str(path), "-o", str(out), *FAST]) == 0
    capsys.readouterr()
    return table, path, out, digest(out)


def one_run(table, point_id="d8-i1000000"):
    return table["point_id"] == point_id


BAD_TABLES = {
    "non-positive loss": (lambda t: t.assign(loss_last=np.where(one_run(t), 0.0, t["loss_last"])),
                          r"run d8-i1000000 step \d+ has loss_last=0 .*positive and finite"),
    "infinite loss": (lambda t: t.assign(loss_mean=np.where(one_run(t), np.inf, t["loss_mean"])),
                      r"run d8-i1000000 step \d+ has loss_mean=inf"),
    "duplicate rows": (lambda t: pd.concat([t, t[one_run(t)].head(1)]),
                       r"run d8-i1000000 has 2 records sharing \(run, step, split\) keys.*collect the sweep again"),
    "params in billions": (lambda t: t.assign(params_total=np.where(one_run(t), t["params_total"] / 1e9,
                                                                    t["params_total"])),
                           r"run d8-i1000000 has params_total=0\.0\d+, but the analytic count of VAR-d8 is .*raw "
                           r"parameter count"),
    "FLOPs in PFLOPs": (lambda t: t.assign(train_flops=np.where(one_run(t), t["train_flops"] / 1e15,
                                                                t["train_flops"])),
                        r"run d8-i1000000 step \d+ has train_flops=.*1e-15 x images_seen x flops_train_per_image.*"
                        "raw FLOPs, not PFLOPs"),
    "FLOPs per image not analytic": (lambda t: t.assign(flops_train_per_image=np.where(
        one_run(t), 6.0 * t["params_total"] * 680, t["flops_train_per_image"]), train_flops=np.where(
        one_run(t), 6.0 * t["params_total"] * 680 * t["images_seen"], t["train_flops"])),
        r"run d8-i1000000 has flops_train_per_image=.*models\.flops gives"),
    "mixed protocols": (lambda t: t.assign(dataset=np.where(one_run(t), "imagenet-val-10k", t["dataset"])),
                        r"different dataset values \('synthetic': d6-i1000000, d10-i1000000, d12-i1000000; "
                        r"'imagenet-val-10k': d8-i1000000\).*split the table"),
}


@pytest.mark.parametrize("name", list(BAD_TABLES))
def test_bad_table_is_one_line_exit_2_and_earlier_results_stay(good, capsys, name):
    table, path, out, before = good
    spoil, message = BAD_TABLES[name]
    spoil(table).to_csv(path, index=False)
    for command, extra in (("fit", []), ("figures", ["--formats", "png"])):
        assert main([command, str(path), "-o", str(out), *FAST, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"varscale {command}: error: "), err
        assert re.search(message, err), err
    assert digest(out) == before


@pytest.mark.parametrize("content,message", [(b"", r"empty file \(0 bytes\)"),
                                             (b"\n\n", r"no columns"),
                                             (b"d6,val,100,18000000,5.1,5.2,0.6,0.7\n", r"no header row")])
def test_empty_or_headerless_file(good, capsys, content, message):
    _, path, out, before = good
    path.write_bytes(content)
    assert main(["fit", str(path), "-o", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert digest(out) == before


def test_a_metric_without_values_is_skipped_and_the_others_fit(good, capsys):
    table, path, out, _ = good
    table.assign(err_last=np.nan).to_csv(path, index=False)
    assert main(["fit", str(path), "-o", str(out), "--forms", "paper,saturating", "--no-chinchilla"]) == 0
    printed = capsys.readouterr().out
    assert "skipped: err_last vs N, paper: log-log power-law fit: 0 points" in printed
    assert "skipped: err_last vs C: no record has a value of err_last" in printed
    fitted = pd.read_csv(out / "fits.csv")
    assert set(fitted["metric"]) == {"loss_last", "loss_mean", "err_mean"}
    assert set(fitted["x"]) == {"N", "C"}


def test_a_second_run_at_one_size_is_reported(good, capsys):
    table, path, out, _ = good
    twin = table[one_run(table)].assign(point_id="d8-seed2", loss_last=lambda t: t["loss_last"] * 1.02)
    pd.concat([table, twin]).to_csv(path, index=False)
    assert main(["fit", str(path), "-o", str(out), *FAST]) == 0
    assert "note: loss_last: 2 runs of N=0.0" in capsys.readouterr().out


def test_figures_of_a_one_size_table_fail_and_keep_the_good_files(good, capsys):
    table, path, out, _ = good
    assert main(["figures", str(path), "-o", str(out), *FAST, "--formats", "png"]) == 0
    capsys.readouterr()
    before = digest(out)
    assert any(str(p).startswith("figures/") for p in map(str, before))
    table[one_run(table)].to_csv(path, index=False)
    assert main(["figures", str(path), "-o", str(out), *FAST, "--formats", "png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no law could be fitted" in err
    assert digest(out) == before
    assert not list(out.glob(".staging-*"))  # the staged set was removed


def test_unknown_figure_format_is_one_line_before_any_fit(good, capsys):
    _, path, out, before = good
    assert main(["figures", str(path), "-o", str(out), *FAST, "--formats", "png,bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--formats 'png,bogus': bogus is not a figure format" in err
    assert digest(out) == before
