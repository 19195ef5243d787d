"""The fits' flags reach the report: a flags table beside the fits, and the notes on the data."""
from __future__ import annotations

import numpy as np

from analysis.synthetic import synthetic_sweep_table
from reports import build_report


def test_report_lists_the_flags_of_a_boundary_fit(tmp_path):
    laws = {"loss_last": lambda n, d: (0.05 / (n / 1e9)) ** 0.35,  # E = 0: the constant sits on its boundary
            **{m: (lambda n, d: 0.5 + 0 * np.asarray(n, float)) for m in ("loss_mean", "err_last", "err_mean")}}
    table = synthetic_sweep_table(depths=(6, 8, 10, 12, 16), evals_per_run=3, noise=0.0, laws=laws)
    table.to_csv(tmp_path / "collected.csv", index=False)
    page = build_report(tmp_path / "collected.csv", metrics=("loss_last",), against=("N",), chinchilla=False,
                        formats=("png",)).read_text()
    assert "Flags: " in page and "E at its lower boundary" in page
    markdown = (tmp_path / "analysis" / "report.md").read_text()
    assert "| loss_last | N | saturating | E at its lower boundary" in markdown
