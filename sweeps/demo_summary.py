"""The demo's own results: quality-vs-size and samples-per-size figures, the report, OUT/summary.json and the
printed summary with the issue's acceptance checks (sizes, monotone losses, fit quality, frontier, quality).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MONOTONE_METRICS = ("loss_last", "loss_mean", "err_last", "err_mean")


def quality_figures(quality: dict, figure_dir: Path) -> list[tuple[Path, str]]:
    """Synthetic-feature FD, precision/recall and class accuracy against N; one row of samples per size."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from analysis.style import save_figure

    rows = quality["sizes"]
    n = np.array([r["params_total"] for r in rows], float)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    fd = np.array([r["fd"] for r in rows])
    axes[0].semilogx(n, fd, "o-", color="C3")
    if all("fd_low" in r for r in rows):   # results stored before intervals existed have none
        band = np.array([[r["fd"] - r["fd_low"], r["fd_high"] - r["fd"]] for r in rows]).T
        axes[0].errorbar(n, fd, yerr=band, fmt="none", ecolor="C3", capsize=3, label="95% interval over samples")
        axes[0].legend(fontsize=8)
    axes[0].set_ylabel(f"{quality['metric']} (lower is better)")
    for key, style in (("precision", "o-"), ("recall", "s--"), ("class_accuracy", "^:")):
        axes[1 if key != "class_accuracy" else 2].semilogx(n, [r[key] for r in rows], style, label=key)
    axes[1].set_ylabel("precision / recall (k=3)")
    axes[1].legend()
    axes[2].set_ylabel("class accuracy of samples")
    for ax in axes:
        ax.set_xlabel("parameters N")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Sample quality against model size, in the demo's synthetic feature network (not Inception FID)")
    fig.tight_layout()
    quality_png = save_figure(fig, figure_dir, "quality_vs_params", ("png",))[0]

    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.1 * len(rows) + 0.4), squeeze=False)
    for ax, row in zip(axes[:, 0], rows):
        with np.load(row["samples"]) as data:
            images, labels = data["arr_0"], data["arr_1"]
        picks = [int(np.flatnonzero(labels == k)[0]) for k in sorted(set(labels.tolist()))]
        ax.imshow(np.concatenate([images[i] for i in picks], axis=1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(row["name"].replace("VAR-mini-", ""), rotation=0, ha="right", va="center")
    axes[0, 0].set_title("one sample of each class (columns) for every model size (rows), same seed")
    fig.tight_layout()
    samples_png = save_figure(fig, figure_dir, "samples_per_size", ("png",))[0]
    return [(quality_png, "Sample quality against parameters: Frechet distance, precision and recall in the "
                          "features of a small CNN the demo trains on the synthetic images (labelled "
                          "synthetic-feature FD; not comparable with Inception FID), and that network's class "
                          "accuracy on the samples. The FD's 95% intervals cover the draw of the samples only, not "
                          "the feature network's own training, which can move every value by more than its "
                          "interval (it learns from the tokenizer's reconstructions): read the sizes' order, not "
                          "the gaps between them."),
            (samples_png, "Samples of every model size: one per class, the first of the quality sample set.")]


def edit_figure(quality: dict, sweep_dir: Path) -> tuple[Path, str]:
    """Zero-shot in-painting of the centre of a held-out image by the largest model (varscale edit's code)."""
    from harness.data.synthetic import SyntheticImages
    from harness.sampling.edit import write_inpaint_example
    from harness.training.loop import read_run_config

    cfg, _ = read_run_config(Path(quality["largest_run"]))
    held_out = SyntheticImages("val", 1, cfg.data.resolution, cfg.data.num_classes,
                               cfg.data.synthetic_seed)[0][0]
    png = write_inpaint_example(sweep_dir / "analysis" / "figures" / "edit_inpaint_example.png", held_out,
                                run_dir=quality["largest_run"], box=(0.25, 0.25, 0.75, 0.75), count=4, seed=0)
    return png, ("Zero-shot in-painting by the largest model (as `varscale edit --mode inpaint`): a held-out image, "
                 "the box to regenerate (red), its tokenized reconstruction, and four results; outside the box the "
                 "image's own tokens are kept at every scale.")


def quality_table(quality: dict):
    import pandas as pd

    columns = ["name", "params_total", "num_samples", "fd", "fd_low", "fd_high", "precision", "recall",
               "class_accuracy"]
    frame = pd.DataFrame(quality["sizes"])
    frame = frame[[c for c in columns if c in frame]]
    return frame.rename(columns={"fd": quality["metric"], "params_total": "N"})


def write_report(sweep_dir: Path, n_boot: int, quality: dict) -> Path:
    from reports import build_report
    from reports.render import Table, Text

    figures = quality_figures(quality, sweep_dir / "analysis" / "figures") + [edit_figure(quality, sweep_dir)]
    note = ("Inception FID not computed: its weights are not on this machine (`varscale assets fetch --what "
            "inception` gets them); the synthetic-feature FD needs no download." if quality["inception"].get("skipped")
            else f"Inception FID of the largest model: {quality['inception']['fid']:.2f}")
    blocks = [Table(quality_table(quality), caption="Sample quality of every size (demo feature network; the "
                                                    "protocol is in each run's quality/synthetic-features.json)."),
              Text(note)]
    return build_report(sweep_dir, n_boot=n_boot, resolution=32, extra_figures=figures, extra_summary=blocks)


def strictly_decreasing(values) -> bool:
    return bool(np.all(np.diff(np.asarray(values, float)) < 0))


def _finite_or_none(value):
    """fits.json writes a missing interval end as the string 'nan' (or inf for an unbounded one); the summary keeps
    numbers only, and None where the fit reports no bound."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def fit_entry(fit: dict) -> dict:
    exponent = "alpha"
    interval = [_finite_or_none(fit["ci_low"].get(exponent)), _finite_or_none(fit["ci_high"].get(exponent))]
    return {"form": fit["form"], "target": fit["metric"], "against": fit["x"],
            "exponent": fit["params"].get(exponent),
            "interval": interval, "ci_level": fit["ci_level"], "flags": fit.get("flags", []),
            "params": fit["params"], "r": fit["r"], "n_points": fit["n_points"],
            "holdout_max_abs_rel_error": fit.get("holdout", {}).get("max_abs_rel_error")}


def law_checks(fits: list[dict]) -> dict:
    """The issue's bar for the law of last-scale loss against N: |r| >= 0.99 (paper form) or a hold-out-largest
    error <= 1% (saturating form)."""
    def find(form):
        return next((f for f in fits if (f["metric"], f["x"], f["form"]) == ("loss_last", "N", form)), None)
    paper, saturating = find("paper"), find("saturating")
    abs_r = abs(paper["r"]) if paper else None
    holdout = (saturating or {}).get("holdout", {}).get("max_abs_rel_error")
    return {"loss_last_paper_abs_r": abs_r, "loss_last_saturating_holdout_error": holdout,
            "law_clean": bool((abs_r is not None and abs_r >= 0.99) or (holdout is not None and holdout <= 0.01))}


def write_summary(out: Path, sweep_dir: Path, table, report: Path, tokenizer: dict, quality: dict,
                  stage_s: dict, seed: int) -> dict:
    from models.files import save_json, utc_now_iso

    analysis = sweep_dir / "analysis"
    fits = json.loads((analysis / "fits.json").read_text())
    final = table[table["split"] == "val"].sort_values("step").groupby("point_id").tail(1)
    final = final.sort_values("params_total")
    sizes = []
    for _, row in final.iterrows():
        sizes.append({"name": f"VAR-mini-d{int(row['depth'])}", "depth": int(row["depth"]),
                      "params_total": int(row["params_total"]), "params_wo_emb": int(row["params_wo_emb"]),
                      "train_flops": float(row["train_flops"]), "steps": int(row["step"]),
                      "tokens_seen": int(row["tokens_seen"]),
                      "peak_lr": float(row["lr"]) * int(row["batch_size"]) / 256,  # lr column: base_lr
                      **{m: float(row[m]) for m in MONOTONE_METRICS}})
    frontier = fits.get("frontiers", {}).get("loss_last", [])
    checks = {"sizes": len(sizes),
              "decades_wo_emb": float(np.log10(sizes[-1]["params_wo_emb"] / sizes[0]["params_wo_emb"])),
              **{f"{m}_strictly_decreasing": strictly_decreasing([s[m] for s in sizes]) for m in MONOTONE_METRICS},
              "frontier_points_loss_last": len(frontier),
              **law_checks(fits["fits"]),
              "quality_fd_strictly_decreasing": strictly_decreasing([q["fd"] for q in quality["sizes"]])}
    summary = {"created": utc_now_iso(), "seed": seed, "sweep": str(sweep_dir), "report": str(report),
               "sizes": sizes, "fits": [fit_entry(f) for f in fits["fits"] if f["form"] in ("paper", "saturating")],
               "fits_skipped": fits.get("skipped", []),
               "tokenizer": {"psnr_db": tokenizer["val"].get("rec_psnr_db"),
                             "codebook_use_per_scale": tokenizer["val"].get("codebook_usage_per_scale"),
                             "codebook_use_all": tokenizer["val"].get("codebook_usage_all"),
                             "vocab_size": tokenizer["config"]["vocab_size"],
                             "patch_nums": tokenizer["config"]["patch_nums"], "sha256": tokenizer["sha256"]},
               "quality": {k: v for k, v in quality.items() if k != "samples"},
               "checks": checks, "wall_time_s": stage_s,
               "wall_time_note": "this invocation's stages; a stage reused from an earlier run shows ~0 s"}
    name = "summary.json" if seed == 0 else f"summary-seed{seed}.json"
    save_json(out / name, summary)
    summary["path"] = str(out / name)
    return summary


def print_summary(summary: dict) -> None:
    print("\nmodel          N (total)   N (no emb.)  steps   train PFLOPs   val loss (all / last)   error (all / last)")
    for s in summary["sizes"]:
        print(f"{s['name']:<13}{s['params_total']:>11,}{s['params_wo_emb']:>13,}{s['steps']:>7}"
              f"{s['train_flops'] / 1e15:>14.4g}     {s['loss_mean']:.4f} / {s['loss_last']:.4f}       "
              f"{s['err_mean']:.4f} / {s['err_last']:.4f}")
    for fit in summary["fits"]:
        if fit["target"] not in ("loss_last", "loss_mean"):
            continue
        r = f"r = {fit['r']:.4f}" if fit["r"] is not None else "r = n/a"
        hold = fit["holdout_max_abs_rel_error"]
        hold_text = f"{100 * hold:.2f}%" if hold is not None else "n/a"
        low, high = fit["interval"]
        interval = ("[" + ", ".join("unbounded" if end is None else f"{end:+.4f}" for end in (low, high)) + "]"
                    if (low, high) != (None, None) else "(no interval)")
        print(f"fit {fit['target']:<9} vs {fit['against']} {fit['form']:<10} exponent {fit['exponent']:+.4f} "
              f"{interval}  {r}  hold-out largest error {hold_text}")
    tok = summary["tokenizer"]
    print(f"tokenizer: PSNR {tok['psnr_db']:.2f} dB, codebook use per scale "
          + " / ".join(f"{100 * u:.0f}%" for u in tok["codebook_use_per_scale"]))
    quality = summary["quality"]
    print(f"sample quality ({quality['metric']}, {quality['protocol']['samples_per_class']} samples per class): "
          + ", ".join(f"{q['name'].replace('VAR-mini-', '')} {q['fd']:.3f}"
                      + (f" ±{q['fd_high'] - q['fd']:.3f}" if "fd_high" in q else "") for q in quality["sizes"]))
    print(quality["inception"].get("skipped") or f"Inception FID (largest model): {quality['inception']['fid']:.2f}")
    print("checks: " + ", ".join(f"{k}={v if not isinstance(v, float) else round(v, 3)}"
                                 for k, v in summary["checks"].items()))
    wall = summary["wall_time_s"]
    print("wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in wall.items()))
    print(f"\nsummary: {Path(summary['path']).resolve()}\nreport: {Path(summary['report']).resolve()}\n"
          f"done in {wall['total'] / 60:.1f} min")
