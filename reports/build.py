"""`build_report(source) -> Path`: fits, figures and comparison of a sweep (or run), written up as HTML and Markdown.

Files (in OUT = SOURCE/analysis unless given): report.html (self-contained, figures inlined as base64) and
report.md (figures linked from OUT/figures), next to the fit files and figures of analysis/pipeline.py.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.compute import run_summary
from analysis.fits import FitOptions
from analysis.pipeline import Analysis, run_all, sweep_root
from models.files import atomic_write_text
from reports.environment import environment
from reports.render import (
    Image,
    Pre,
    Section,
    Table,
    Text,
    render_html,
    render_markdown,
)

FIGURE_CAPTIONS = {
    "fig5_scaling_vs_params": "Figure 5 of the VAR paper for this sweep: final test loss and token error "
                              "against parameters, last scale and all scales, with the fitted laws (shaded: exact "
                              "95% band of the pure power law; ringed: the largest run, predicted by a fit to the "
                              "others). The paper's error laws are drawn as published; its loss laws describe "
                              "(L - E)/E and are compared in the next figure.",
    "fig5_6_paper_laws_normalised": "The VAR paper's loss laws (Eqs. 11, 13, 14) on the quantity they describe, "
                                    "reducible over irreducible loss: (L - E)/E of our runs with E from our fit "
                                    "E + (X0/X)^alpha, and the published lines as printed.",
    "fig6_scaling_vs_compute": "Figure 6 of the VAR paper for this sweep: every run's validation curve against "
                               "training compute (colour: model size), the Pareto frontier and the laws fitted "
                               "to it.",
    "per_scale_metrics": "Final validation loss and token error at each scale of every run.",
    "per_scale_curves": "Validation loss of each scale over training, for the largest model.",
    "samples_grid": "Samples of the largest model that has a sample batch.",
    "baselines_fid_vs_params": "FID against parameters: published results and our evaluations (red stars).",
    "baselines_fid_vs_time": "FID against inference time relative to VAR-d30: published results and ours "
                             "(open stars: time estimated from parameters, not measured).",
}


FIGURE_ORDER = ("fig5_scaling_vs_params", "fig6_scaling_vs_compute", "samples_grid", "per_scale_metrics",
                "per_scale_curves")


def plain_equation(mathtext: str) -> str:
    """Mathtext legend equation as plain text: $L=(2.0\\cdot N)^{-0.23}$ -> L=(2.0·N)^-0.23. Its terms are set
    apart (" + "): a law with three terms has no other place to wrap, and pushed the fits table off the page."""
    text = mathtext.strip("$").replace(r"\cdot ", "·").replace(r"\times", "×").replace("+", " + ")
    return re.sub(r"\^\{([^}]*)\}", r"^\1", text)


def sweep_config_blocks(root: Path, table: pd.DataFrame) -> list:
    """The sweep spec and one run configuration, each shown once (the spec the state names is the one on disk)."""
    blocks: list = []
    specs: list[Path] = []
    state_path = root / "state.json"
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        blocks.append(Text(f"Sweep {state.get('sweep', root.name)!r}, executor {state.get('executor', '?')}."))
        if state.get("spec") and Path(state["spec"]).is_file():
            specs.append(Path(state["spec"]))
    specs += sorted(root.glob("*.y*ml"))
    shown: set[str] = set()
    for spec in specs:
        text = spec.read_text()
        if text in shown:  # the same spec under two names (a copy next to the sweep) is shown once
            continue
        shown.add(text)
        blocks.append(Pre(text, caption=f"Sweep spec {spec}"))
    run_dirs = [Path(p) for p in table.get("run_dir", pd.Series(dtype=str)).dropna().unique()]
    configs = [d / "config.json" for d in ([root] if (root / "config.json").is_file() else run_dirs)]
    config_path = next((c for c in configs if c.is_file()), None)
    if config_path is not None:
        note = "" if config_path.parent == root else " (the first run; the others differ in their grid values)"
        blocks.append(Pre(json.dumps(json.loads(config_path.read_text()), indent=1),
                          caption=f"Run configuration {config_path}{note}"))
    return blocks or [Text("No sweep spec or run configuration found next to the table.")]


def runs_table(table: pd.DataFrame) -> pd.DataFrame:
    summary = run_summary(table)
    summary.insert(summary.columns.get_loc("N"), "N (M)", summary["N"] / 1e6)
    summary = summary.drop(columns=[c for c in ("N", "N_wo_emb") if c in summary])
    return summary.rename(columns={"C_pflops": "C (PFLOPs)", "images_seen": "images"})


def fits_table(analysis: Analysis) -> pd.DataFrame:
    rows = []
    for fit in analysis.fits.fits:
        rows.append({
            "metric": fit.metric, "against": fit.x, "form": fit.form, "law": plain_equation(fit.equation),
            f"parameters [{int(fit.ci_level * 100)}% CI]": "; ".join(f"{k}={fit.ci_text(k)}" for k in fit.params),
            "Pearson r": fit.r, "RMSE log": fit.rmse_log, "points": fit.n_points, "interval": fit.interval_method,
            "hold-out largest rel. error": fit.holdout.get("max_abs_rel_error"), "flags": len(fit.flags),
        })
    return pd.DataFrame(rows)


FIT_METHOD = ("Points against N: the final validation record of each model size; against C: the frontier of "
              "the runs' validation curves after smoothing each (a cubic in log C per run), on 60 budgets. Paper "
              "form: least squares in log-log space (Pearson r as in the VAR paper), exact t interval for alpha "
              "and Fieller's interval for beta against N. Law with a constant L=E+(X0/X)^alpha: least squares on "
              "log L, profile-likelihood intervals calibrated with the t distribution; an end the data do not "
              "bound is reported as not identified (0 or infinity). Laws against C: basic bootstrap interval "
              "over residuals within runs, re-smoothing, re-taking the frontier and re-fitting each resample. "
              "E + A/N^a + B/D^b: Huber loss on log L; E's interval by inverting a parametric-bootstrap test "
              "(simulated at each tested E), B's by the t-calibrated profile likelihood, A, a, b by a parametric "
              "bootstrap (refits to the fitted law plus noise of the least-squares residual sd). N is in billions "
              "of parameters and C in PFLOPs (1e15 FLOPs), as in the VAR paper. Hold-out: refit without the largest model and predict it.")


def flag_blocks(analysis: Analysis) -> list:
    """The fits' flags and the notes on the data, in plain sight next to the fits."""
    rows = analysis.fits.flag_rows()
    blocks = [Table(pd.DataFrame(rows), caption=f"Flags: {len(rows)} reasons not to take a fit at face value "
                                                "(non-convergence, boundary solutions, unbounded or missing "
                                                "intervals, estimates outside their interval).")
              if rows else Text("Flags: none (every fit converged, inside its box, with bounded intervals).")]
    return blocks + [Text(f"Note: {note}") for note in analysis.fits.notes]


def headline_table(analysis: Analysis) -> pd.DataFrame:
    """The exponents, the numbers a reader looks for first."""
    rows = [{"metric": f.metric, "against": f.x, "form": f.form,
             f"alpha [{int(f.ci_level * 100)}% CI]": f.ci_text("alpha"),
             "Pearson r": f.r, "hold-out largest rel. error": f.holdout.get("max_abs_rel_error")}
            for f in analysis.fits.fits if "alpha" in f.params]
    return pd.DataFrame(rows)


def comparison_sections(analysis: Analysis) -> list:
    table = analysis.comparison
    columns = ["model", "family", "fid", "is", "precision", "recall", "params_m", "steps", "rel_time", "origin",
               "note", "source"]
    if table.empty:
        return [Text(f"Nothing to compare: analysis/data/baselines.csv has no published results at "
                     f"{analysis.resolution}x{analysis.resolution}, and no evaluation results (RUN_DIR/eval/*.json) "
                     "were found under the sweep. Run `varscale sample` and `varscale eval` on a run to place it "
                     "here.")]
    blocks: list = []
    ours = table[table["origin"].str.startswith("varscale")]
    if len(ours) == len(table):
        blocks.append(Text(f"analysis/data/baselines.csv has no published results at {analysis.resolution}x"
                           f"{analysis.resolution}; our evaluations are shown alone (FIDs at other resolutions or "
                           "on other data are not comparable)."))
    if len(ours):
        blocks.append(Table(ours[columns], caption="Our evaluations (varscale eval result files)."))
    else:
        blocks.append(Text("No evaluation results (RUN_DIR/eval/*.json) were found under the sweep; the table "
                           "lists the published results only. Run `varscale sample` and `varscale eval` on a "
                           "run to place it here."))
    blocks.append(Table(table[columns], caption="Published ImageNet results (analysis/data/baselines.csv, each "
                                                "with its source) and ours, marked in bold, sorted by FID."))
    return blocks


def environment_blocks(table: pd.DataFrame) -> list:
    env = environment()
    versions = pd.DataFrame(sorted(env["versions"].items()), columns=["package", "version"])
    hardware = pd.DataFrame([(k, ", ".join(v) if isinstance(v, list) else v) for k, v in env["hardware"].items()],
                            columns=["item", "value"])
    git = env["git"]
    dirty = " (with uncommitted changes)" if git.get("uncommitted_changes") else ""
    return [Text(f"varscale code at git commit {git['commit']}{dirty}; report made on this machine:"),
            Table(versions, caption="Library versions"), Table(hardware, caption="Hardware")]


def build_report(source: Path | str, out_dir: Path | str | None = None, options: FitOptions | None = None,
                 samples: Path | str | None = None, paper_laws: str | None = "normalised", resolution: int = 256,
                 title: str | None = None, formats=("png", "pdf"), extra_figures: Sequence[tuple[Path, str]] = (),
                 extra_summary: Sequence = (), **overrides) -> Path:
    """Fit, draw and write OUT/report.html and OUT/report.md; returns the HTML path.

    ``extra_figures`` ((png path, caption) pairs) follow Figures 5 and 6; ``extra_summary`` (report blocks)
    follow the headline table: how a caller such as the demo adds its own results without a section of its own.
    """
    analysis = run_all(source, out_dir, options, samples=samples, paper_laws=paper_laws, resolution=resolution,
                       formats=formats, **overrides)
    root = sweep_root(source)
    title = title or f"varscale report: {root.name}"
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    runs = runs_table(analysis.table)
    figures = [p for p in analysis.figures if p.suffix == ".png" and not p.stem.startswith("baselines")]
    figures.sort(key=lambda p: FIGURE_ORDER.index(p.stem) if p.stem in FIGURE_ORDER else len(FIGURE_ORDER))
    extra = list(extra_figures)
    # a reader wants the result first: exponents, the figures, then the numbers behind them; configuration and
    # environment last and folded
    sections = [
        Section("Summary", [Text(f"Source: {analysis.source}. Created {created}. {len(runs)} runs, "
                                 f"{runs['N (M)'].min():.3g}M to {runs['N (M)'].max():.3g}M parameters."),
                            Table(headline_table(analysis), caption="Fitted exponents (details below). Paper "
                                  "form L=(beta·X)^alpha: alpha < 0 when the metric falls; saturating form "
                                  "L=E+(X0/X)^alpha: alpha > 0.")
                            if analysis.fits.fits else Text("No scaling law could be fitted; see below why."),
                            *extra_summary]),
        Section("Figures", [Image(p, FIGURE_CAPTIONS.get(p.stem, p.stem)) for p in figures[:2]]
                + [Image(Path(p), caption) for p, caption in extra] + [Image(p, FIGURE_CAPTIONS.get(p.stem, p.stem))
                                                                   for p in figures[2:]]),
        Section("Scaling-law fits", [
            Text(f"{FIT_METHOD} Several runs of one size: aggregate={analysis.fits.options['aggregate']}."),
            Table(fits_table(analysis)) if analysis.fits.fits else Text("No law was fitted."),
            *(flag_blocks(analysis) if analysis.fits.fits else []),
            *[Text(f"Not fitted: {reason}") for reason in analysis.fits.skipped]]),
        Section("Runs", [Table(runs, caption="Final validation record of every run (losses in nats, errors as "
                                             "fractions; C = cumulative training compute).")]),
        Section("Evaluation against published baselines", comparison_sections(analysis) + [
            Image(p, FIGURE_CAPTIONS[p.stem]) for p in analysis.figures
            if p.suffix == ".png" and p.stem.startswith("baselines")]),
        Section("Compute accounting and fit options", [
            Table(pd.DataFrame(list(analysis.fits.convention.items()), columns=["quantity", "convention"])),
            Pre(json.dumps(analysis.fits.options, indent=1), caption="Fit options (fits.json holds them too)")],
            folded=True),
        Section("Sweep configuration", sweep_config_blocks(root, analysis.table), folded=True),
        Section("Environment", environment_blocks(analysis.table), folded=True),
    ]
    html_path = atomic_write_text(analysis.out_dir / "report.html", render_html(title, sections))
    atomic_write_text(analysis.out_dir / "report.md", render_markdown(title, sections, analysis.out_dir))
    return html_path
