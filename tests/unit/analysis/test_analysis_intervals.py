"""Intervals that mean what they say, flags in plain sight, and the tests that catch issue 12's four mutations."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.fits import FitOptions, fit_law, fit_sweep
from analysis.intervals import loglog_intervals
from analysis.laws import PAPER_LAWS
from analysis.synthetic import paper_params, synthetic_sweep_table

SIZES_5 = np.array([paper_params(d) for d in (6, 12, 18, 24, 30)]) / 1e9
SIZES_8 = np.array([paper_params(d) for d in (6, 8, 10, 12, 16, 20, 24, 30)]) / 1e9


def test_loglog_interval_is_the_t_interval_with_the_typed_95_percent_quantile():
    rng = np.random.default_rng(0)
    y = (2.0 * SIZES_5) ** -0.23 * np.exp(rng.normal(0, 0.02, SIZES_5.size))
    law = fit_law("paper", SIZES_5, y)
    assert law.ci_level == 0.95 and FitOptions().ci_level == 0.95
    (slope, _), cov = np.polyfit(np.log(SIZES_5), np.log(y), 1, cov="unscaled")
    residuals = np.log(y) - np.polyval(np.polyfit(np.log(SIZES_5), np.log(y), 1), np.log(SIZES_5))
    se = np.sqrt(cov[0, 0] * (residuals ** 2).sum() / 3)
    t_975_3dof = 3.182446305284263  # Student t, 97.5% quantile, 3 degrees of freedom (tables)
    assert law.ci_low["alpha"] == pytest.approx(slope - t_975_3dof * se, rel=1e-9)
    assert law.ci_high["alpha"] == pytest.approx(slope + t_975_3dof * se, rel=1e-9)


def test_fieller_interval_of_beta_is_the_set_a_t_test_does_not_reject():
    rng = np.random.default_rng(1)
    log_x = np.log(SIZES_8)
    log_y = -0.2 * (log_x + np.log(2.5)) + rng.normal(0, 0.03, log_x.size)
    interval = loglog_intervals(log_x, log_y, 0.95)["beta"]
    design = np.column_stack([np.ones_like(log_x), log_x])
    (c, alpha), *_ = np.linalg.lstsq(design, log_y, rcond=None)
    s2 = ((log_y - design @ [c, alpha]) ** 2).sum() / (log_x.size - 2)
    cov = s2 * np.linalg.inv(design.T @ design)
    rhos = np.linspace(np.log(interval.low) - 1, np.log(interval.high) + 1, 4001)
    statistic = (c - rhos * alpha) / np.sqrt(cov[0, 0] - 2 * rhos * cov[0, 1] + rhos ** 2 * cov[1, 1])
    accepted = rhos[np.abs(statistic) <= 2.446911848791681]  # t 97.5%, 6 dof
    assert np.exp(accepted.min()) == pytest.approx(interval.low, rel=2e-3)
    assert np.exp(accepted.max()) == pytest.approx(interval.high, rel=2e-3)


@pytest.mark.parametrize("sizes", [SIZES_5, SIZES_8], ids=["5 sizes", "8 sizes"])
def test_coverage_of_the_reported_loglog_intervals(sizes):
    """400 simulated sweeps through fit_law, the function behind fits.json (full study: bench_coverage.py)."""
    hits = {"alpha": 0, "beta": 0}
    for seed in range(400):
        rng = np.random.default_rng(seed)
        y = (2.0 * sizes) ** -0.23 * np.exp(rng.normal(0, 0.02, sizes.size))
        law = fit_law("paper", sizes, y)
        hits["alpha"] += law.ci_low["alpha"] <= -0.23 <= law.ci_high["alpha"]
        hits["beta"] += law.ci_low["beta"] <= 2.0 <= law.ci_high["beta"]
    for name, count in hits.items():
        assert 0.93 <= count / 400 <= 0.97, (name, count)


def test_coverage_of_the_profile_intervals_of_the_law_with_a_constant():
    """A cheap check (40 sweeps); benchmarks/bench_coverage.py runs 400 at 5 and 8 sizes."""
    truth = {"E": 2.0, "X0": 0.05, "alpha": 0.35}
    hits = dict.fromkeys(truth, 0)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        y = (2.0 + (0.05 / SIZES_5) ** 0.35) * np.exp(rng.normal(0, 0.01, SIZES_5.size))
        law = fit_law("saturating", SIZES_5, y)
        for name, value in truth.items():
            hits[name] += law.ci_low[name] <= value <= law.ci_high[name]
    assert all(count >= 35 for count in hits.values()), hits  # >= 0.875 of 40


def test_boundary_solution_on_exact_data_is_flagged_and_inside_its_interval():
    y = (0.05 / SIZES_5) ** 0.35  # E = 0 exactly: the irreducible term sits on its boundary
    law = fit_law("saturating", SIZES_5, y)
    assert any("E at its lower boundary" in flag for flag in law.flags), law.flags
    assert law.params["alpha"] == pytest.approx(0.35, rel=1e-6)
    for name, value in law.params.items():
        assert law.ci_low[name] <= value <= law.ci_high[name], (name, law.ci_text(name))
    assert not any("outside its own interval" in flag for flag in law.flags)


def test_unbounded_ends_are_reported_as_not_identified():
    rng = np.random.default_rng(3)
    y = (2.0 + (0.05 / SIZES_5) ** 0.35) * np.exp(rng.normal(0, 0.05, SIZES_5.size))  # too noisy to see E
    law = fit_law("saturating", SIZES_5, y)
    assert any("not identified" in flag for flag in law.flags)
    assert law.ci_low["E"] == 0.0 or np.isinf(law.ci_high["alpha"]) or np.isinf(law.ci_high["X0"])


def test_flags_reach_fits_json_fits_csv_and_the_cli_summary(tmp_path, capsys):
    from harness.cli.main import main
    table = synthetic_sweep_table(depths=(6, 8, 10, 12, 16), evals_per_run=3, noise=0.0, seed=0,
                                  laws={"loss_last": lambda n, d: (0.05 / (n / 1e9)) ** 0.35,
                                        **{m: (lambda n, d: 0.5 + 0 * n) for m in ("loss_mean", "err_last",
                                                                                   "err_mean")}})
    table.to_csv(tmp_path / "t.csv", index=False)
    assert main(["fit", str(tmp_path / "t.csv"), "--metrics", "loss_last", "--against", "N", "--no-chinchilla"]) == 0
    printed = capsys.readouterr().out
    assert "FLAGS (" in printed and "loss_last vs N, saturating: E at its lower boundary" in printed
    stored = json.loads((tmp_path / "analysis" / "fits.json").read_text())
    assert stored["options"]["ci_level"] == 0.95  # the CLI's default level is the stated 95%
    saturating = next(f for f in stored["fits"] if f["form"] == "saturating")
    assert any("E at its lower boundary" in flag for flag in saturating["flags"])
    flat = pd.read_csv(tmp_path / "analysis" / "fits.csv")
    assert flat[flat["form"] == "saturating"]["flags"].str.contains("E at its lower boundary").all()


# --- the four mutations of issue 12 -------------------------------------------------------------------------

def test_published_laws_are_the_numbers_printed_in_the_paper():
    """Eqs. 11-16 of Tian et al. 2024 (NeurIPS), typed from the paper's text, not from analysis/laws.py."""
    printed = {(11, "loss_last", "N"): (2.0, -0.23), (11, "loss_mean", "N"): (2.5, -0.20),
               (12, "err_last", "N"): (4.9e2, -0.016), (12, "err_mean", "N"): (6.5e2, -0.010),
               (13, "loss_last", "C"): (2.2e-5, -0.13), (14, "loss_mean", "C"): (1.5e-5, -0.16),
               (15, "err_last", "C"): (8.1e-2, -0.0067), (16, "err_mean", "C"): (4.4e-2, -0.011)}
    assert {(law.equation_number, law.metric, law.x): (law.beta, law.alpha) for law in PAPER_LAWS} == printed


def test_each_run_contributes_its_last_eval_record_not_its_first():
    table = synthetic_sweep_table(depths=(6, 8, 10, 12), evals_per_run=5, noise=0.0, seed=0)
    results = fit_sweep(table, metrics=("loss_last",), forms=("paper",), against=("N",), chinchilla=False)
    val = table[table["split"] == "val"]
    last = val.sort_values("step").groupby("point_id").tail(1).sort_values("params_total")["loss_last"]
    first = val.sort_values("step").groupby("point_id").head(1).sort_values("params_total")["loss_last"]
    assert not np.allclose(first, last)
    assert results.get("loss_last", "N", "paper").y_values == pytest.approx(last.tolist(), rel=1e-12)


@pytest.mark.parametrize("aggregate", ["best", "mean"])
def test_two_runs_at_one_size_keep_the_best_or_their_mean(aggregate):
    table = synthetic_sweep_table(depths=(6, 8, 10, 12), evals_per_run=3, noise=0.0, seed=0)
    worse = table.assign(point_id=table["point_id"] + "-worse", loss_last=table["loss_last"] * 1.05)
    results = fit_sweep(pd.concat([worse, table]), metrics=("loss_last",), forms=("paper",), against=("N",),
                        chinchilla=False, aggregate=aggregate)
    good = table[table["split"] == "val"].sort_values("step").groupby("point_id").tail(1) \
        .sort_values("params_total")["loss_last"].to_numpy()
    expected = good if aggregate == "best" else good * (1 + 1.05) / 2
    assert results.get("loss_last", "N", "paper").y_values == pytest.approx(expected.tolist(), rel=1e-12)
    assert any("2 runs of N=" in note for note in results.notes)
