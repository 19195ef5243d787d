"""Figures: the matplotlib objects carry the expected axes, labels, lines and legends; the files are real images."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from PIL import Image as PILImage

from analysis.baselines import (
    OURS,
    comparison_table,
    figure_fid_vs_params,
    figure_fid_vs_time,
    find_eval_results,
    load_baselines,
    load_eval_result,
)
from analysis.figures import draw_all, figure_vs_compute, figure_vs_params, size_text
from analysis.figures_normalised import figure_paper_normalised
from analysis.fits import fit_sweep
from analysis.laws import paper_law
from analysis.run_figures import figure_per_scale, figure_per_scale_curves, figure_sample_grid
from analysis.style import save_figure
from analysis.synthetic import synthetic_sweep_table

matplotlib.use("Agg")
DEPTHS = (6, 8, 10, 12, 16)


@pytest.fixture(scope="module")
def sweep():
    table = synthetic_sweep_table(depths=DEPTHS, evals_per_run=8, noise=0.003, seed=4)
    return table, fit_sweep(table, n_boot=100, chinchilla=False)


def drawn_lines(ax):
    """Lines drawn with a line style (fits, references, curves), not marker-only point sets."""
    return [line for line in ax.get_lines() if line.get_linestyle() not in ("None", "none", "")]


def test_figure5_axes_labels_lines_and_legend(sweep):
    _, fits = sweep
    fig = figure_vs_params(fits)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4
    titles = [ax.get_title() for ax in axes]
    assert titles == ["Test loss, last scale", "Test loss, all scales", "Token error rate, last scale",
                      "Token error rate, all scales"]
    for ax, metric in zip(axes, ("loss_last", "loss_mean", "err_last", "err_mean")):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert ax.get_xlabel() == "Model parameters N (billions)"
        assert ax.get_ylabel().endswith("(nats)" if metric.startswith("loss") else "(fraction)")
        # the two fitted forms; the paper's error laws (a fraction, like ours) as published, its loss laws not
        # here (they describe (L - E)/E: figure_paper_normalised)
        assert len(drawn_lines(ax)) == (3 if metric.startswith("err") else 2)
        points = [line for line in ax.get_lines() if line.get_linestyle() in ("None", "none")]
        runs, held_out = points
        assert len(runs.get_xdata()) == len(DEPTHS)
        assert list(held_out.get_xdata()) == [max(runs.get_xdata())]  # the largest run, ringed
        labels = [t.get_text() for t in ax.texts]
        assert labels == [size_text(x) for x in sorted(runs.get_xdata())] and "18M" in labels
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        paper_fit = fits.get(metric, "N", "paper")
        assert any(paper_fit.equation in text and f"r={paper_fit.r:.3f}" in text and
                   f"α∈[{paper_fit.ci_low['alpha']:.3g}, {paper_fit.ci_high['alpha']:.3g}]" in text for text in legend)
        assert all(len(text) < 70 for line in legend for text in line.split("\n")), legend  # compact
        assert "e-1" not in paper_fit.equation and "times10" not in paper_fit.equation  # a readable coefficient
        assert any(fits.get(metric, "N", "saturating").equation in text for text in legend)
        assert any(text.startswith("held out") for text in legend)
        assert any("95% band" in text for text in legend) and len(ax.collections) >= 1
        assert any("VAR paper Eq." in text for text in legend) == metric.startswith("err")
    matplotlib.pyplot.close(fig)


def test_published_laws_drawn_as_published_or_not_at_all(sweep):
    _, fits = sweep
    fig = figure_vs_params(fits, paper_laws="absolute")
    ax = fig.axes[0]
    reference = next(line for line in ax.get_lines() if "VAR paper" in line.get_label())
    x = np.asarray(reference.get_xdata())
    np.testing.assert_allclose(reference.get_ydata(), paper_law("loss_last", "N")(x))
    matplotlib.pyplot.close(fig)
    fig = figure_vs_params(fits, paper_laws=None)
    assert all(len(drawn_lines(ax)) == 2 for ax in fig.axes)
    matplotlib.pyplot.close(fig)


def test_figure6_every_run_frontier_fits_and_colorbar(sweep):
    table, fits = sweep
    fig = figure_vs_compute(table, fits)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 4
    colorbar = [ax for ax in fig.axes if ax not in panels]
    assert len(colorbar) == 1 and "parameters" in colorbar[0].get_ylabel()
    for ax in panels:
        assert ax.get_xlabel() == "Training compute C (PFLOPs)"
        labels = [line.get_label() for line in drawn_lines(ax)]
        run_curves = [label for label in labels if label.startswith("_")]  # unlabelled: one per run
        assert len(run_curves) == len(DEPTHS)
        assert sum(label.startswith("Pareto frontier") for label in labels) == 1
        assert sum(label.startswith("frontier of the smoothed curves") for label in labels) == 1
        assert len(labels) == len(DEPTHS) + 2 + 2 + (1 if ax.get_title().startswith("Token") else 0)
        # the power law against C has an interval now (this session's bootstrap), so its band is drawn
        assert [c.get_label() for c in ax.collections] == ["95% band of the power law"]
    matplotlib.pyplot.close(fig)


def test_per_scale_and_sample_grid(sweep, tmp_path):
    table, _ = sweep
    fig = figure_per_scale(table)
    loss_ax, err_ax = fig.axes[:2]
    assert len(loss_ax.get_lines()) == len(DEPTHS)
    assert [t.get_text() for t in loss_ax.get_xticklabels()][-1] == "16×16"
    assert "fraction" in err_ax.get_ylabel()
    matplotlib.pyplot.close(fig)
    # the token map sizes come from the runs' config.json when it is there
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": {"patch_nums": list(range(1, 11))}}))
    fig = figure_per_scale(table.assign(run_dir=str(tmp_path / "run")))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][-1] == "10×10"
    matplotlib.pyplot.close(fig)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    labels = np.array([5, 3, 1, 3, 5, 1, 2, 2, 9, 0, 0, 4])
    np.savez(tmp_path / "samples.npz", arr_0=images, arr_1=labels)
    fig = figure_sample_grid(tmp_path / "samples.npz", columns=4, max_images=12)
    # one row per class (0, 1, 2: the first three of the labels), each with that class's 2 samples
    assert len(fig.axes) == 3 * 2
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["class 0", "class 1", "class 2"]
    shown = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
    expected = [images[i] for c in (0, 1, 2) for i in np.flatnonzero(labels == c)]
    assert len(shown) == len(expected) == 6
    assert all(np.array_equal(a, b) for a, b in zip(shown, expected))
    matplotlib.pyplot.close(fig)
    fig = figure_sample_grid(images, columns=4, max_images=8)  # no labels: file order
    assert sum(bool(ax.get_images()) for ax in fig.axes) == 8
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="uint8"):
        figure_sample_grid(images.astype(np.float32))


def test_draw_all_writes_real_png_and_pdf_files(sweep, tmp_path):
    table, fits = sweep
    images = np.random.default_rng(1).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    paths = draw_all(table, fits, tmp_path, samples=images, formats=("png",))
    paths += save_figure(figure_vs_params(fits), tmp_path, "fig5_scaling_vs_params", formats=("pdf",))
    stems = {p.stem for p in paths}
    assert stems == {"fig5_scaling_vs_params", "fig6_scaling_vs_compute", "fig5_6_paper_laws_normalised",
                     "per_scale_metrics", "per_scale_curves", "samples_grid"}
    for path in paths:
        assert path.stat().st_size > 5000
        if path.suffix == ".pdf":
            assert path.read_bytes()[:5] == b"%PDF-"
    with PILImage.open(tmp_path / "fig5_scaling_vs_params.png") as image:
        image.load()
        # 6.75 in at 200 dpi, give or take the tight bounding box
        assert image.format == "PNG" and 0.85 * 1350 < image.width < 1.15 * 1350 and image.height > 800
        assert np.asarray(image.convert("L")).std() > 10  # not a blank canvas


def eval_json(path, fid, name="VAR-d6", params=18_492_580):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "metrics": {"fid": fid, "sfid": 9.0, "is_mean": 20.5, "is_std": 0.4, "precision": 0.3, "recall": 0.2},
        "inputs": {"samples": {"num_images": 1000, "resolution": [256, 256],
                               "sampling_protocol": {"model": {"name": name,
                                                               "config_model_block": {"params_total": params}}}},
                   "reference": {"path": "/refs/VIRTUAL_imagenet256_labeled.npz"}}}))
    return path


def test_baselines_file_and_comparison_with_ours(tmp_path):
    published = load_baselines(256)
    assert published["source"].notna().all() and (published["source"].str.len() > 3).all()
    d30 = published[published["model"] == "VAR-d30"].iloc[0]
    assert (d30["fid"], d30["is"], d30["params_m"], d30["rel_time"]) == (1.92, 323.1, 2000, 1)
    assert set(load_baselines(512)["model"]) >= {"VAR-d36-s", "DiT-XL/2"}
    eval_json(tmp_path / "sweep" / "d6" / "eval" / "samples.json", fid=45.0)
    (tmp_path / "sweep" / "d6" / "config.json").write_text("{}")
    paths = find_eval_results(tmp_path / "sweep")
    assert len(paths) == 1
    row = load_eval_result(paths[0])
    assert row["model"] == "VAR-d6" and row["origin"] == OURS and row["params_m"] == pytest.approx(18.49258)
    assert "N=1000 samples" in row["note"] and row["time_estimated"]
    table = comparison_table(paths)
    assert (table["origin"] == OURS).sum() == 1 and len(table) == len(published) + 1
    for figure in (figure_fid_vs_params(table), figure_fid_vs_time(table)):
        ax = figure.axes[0]
        assert ax.get_ylabel().startswith("FID") and ax.get_xscale() == "log"
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(text.startswith("varscale (ours)") for text in legend)
        assert any("(published)" in text for text in legend)
        matplotlib.pyplot.close(figure)


def test_a_metric_that_cannot_be_fitted_keeps_its_panel(sweep):
    table, _ = sweep
    flat = table.assign(err_last=1.0)  # tiny models: every token wrong, no slope to fit
    fits = fit_sweep(flat, forms=("paper",), against=("N",), chinchilla=False, n_boot=100)
    assert fits.get("err_last", "N") is None and any("err_last vs N" in s for s in fits.skipped)
    fig = figure_vs_params(fits, paper_laws=None)
    panel = fig.axes[2]
    assert panel.get_visible() and panel.get_title() == "Token error rate, last scale"
    assert any("not fitted" in t.get_text() for t in panel.get_legend().get_texts())
    matplotlib.pyplot.close(fig)


def test_nearly_flat_law_is_printed_as_a_coefficient_times_a_power(sweep):
    _, fits = sweep
    fit = fits.get("loss_last", "N", "paper")
    assert fit.equation == rf"$L={np.exp(fit.intercept):.3g}\cdot N^{{{fit.params['alpha']:.3g}}}$"
    flat = type(fit)(**{**fit.__dict__, "params": {"alpha": -1e-4, "beta": float("inf")}, "intercept": 1.7})
    assert flat.equation.startswith(r"$L=5.47\cdot N^{-0.0001}")
    np.testing.assert_allclose(flat.predict(np.array([1.0, 2.0])), np.exp(1.7) * np.array([1.0, 2.0]) ** -1e-4)


def test_every_published_row_names_its_source_and_protocol():
    table = load_baselines(None)
    for column in ("source", "primary_source", "gen_resolution", "labels", "guidance"):
        empty = table[table[column].isna() | (table[column].astype(str).str.strip().str.len() == 0)]
        assert empty.empty, (column, empty["model"].tolist())
    by_model = table[table["resolution"] == 256].set_index("model")
    # issue 12's corrections, typed from the stored READMEs (LlamaGen @ce98ec4, REPA-E)
    for model, params in (("LlamaGen-L", 343), ("LlamaGen-L (384)", 343), ("LlamaGen-XL", 775),
                          ("LlamaGen-XXL", 1400)):
        assert by_model.loc[model, "params_m"] == params
    for model in ("LlamaGen-L (384)", "LlamaGen-XL", "LlamaGen-XXL", "LlamaGen-3B"):
        assert by_model.loc[model, "gen_resolution"] == 384 and "384" in by_model.loc[model, "note"]
    assert by_model.loc["REPA-E (SiT-XL/1)", "fid"] == 1.12
    assert "class-balanced" in by_model.loc["REPA-E (SiT-XL/1)", "labels"]
    repa_note = by_model.loc["REPA (SiT-XL/2)", "note"]
    assert "5.84" in repa_note and "class-balanced" in repa_note


def test_the_papers_loss_laws_are_drawn_against_reducible_over_irreducible_loss(sweep):
    _, fits = sweep
    fig = figure_paper_normalised(fits)
    for ax in fig.axes:
        metric = "loss_last" if "last" in ax.get_title() else "loss_mean"
        x_name = "N" if ax.get_title().endswith("N") else "C"
        fit = fits.get(metric, x_name, "saturating")
        if not ax.get_lines():  # our E is not identified: nothing to normalise by, and the panel says so
            assert "not comparable" in ax.texts[0].get_text()
            assert any(flag.startswith("E") and ("not identified" in flag or "boundary" in flag) for flag in fit.flags)
            continue
        published = next(line for line in ax.get_lines() if line.get_label().startswith("VAR paper"))
        grid = np.asarray(published.get_xdata())
        np.testing.assert_allclose(published.get_ydata(), paper_law(metric, x_name)(grid))  # as printed
        points = next(line for line in ax.get_lines() if line.get_label().startswith("our runs"))
        expected = (np.array(fit.y_values) - fit.params["E"]) / fit.params["E"]
        np.testing.assert_allclose(points.get_ydata(), expected[expected > 0])
        assert ax.get_ylabel() == "(L − E) / E"
    matplotlib.pyplot.close(fig)


def test_every_baseline_point_is_labelled_inside_the_axes_without_overlap():
    for make in (figure_fid_vs_params, figure_fid_vs_time):
        fig = make(comparison_table([]))
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        drawn = sum(len(c.get_offsets()) for c in ax.collections)
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(boxes) == drawn > 10
        inside = ax.get_window_extent(renderer)
        for k, box in enumerate(boxes):
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
            overlapping = [other for other in boxes[k + 1:] if box.overlaps(other)]
            assert len(overlapping) <= 1, ax.texts[k].get_text()  # at most a touch between neighbours
        matplotlib.pyplot.close(fig)


def _visible_tick_label_boxes(ax, renderer):
    ticks = [t for t in ax.xaxis.get_major_ticks() + ax.xaxis.get_minor_ticks()
             if t.label1.get_visible() and t.label1.get_text() and ax.get_xlim()[0] <= t.get_loc() <= ax.get_xlim()[1]]
    return [(t.label1.get_text(), t.label1.get_window_extent(renderer)) for t in ticks]


def test_tick_labels_and_panel_notes_stay_readable(sweep):
    table, fits = sweep
    # the largest run's curve over under a decade of images seen: matplotlib would label the minor ticks
    # "2 x 10^5", "3 x 10^5", ... side by side, and they touched in the demo's per-scale figure
    largest = table[table["params_total"] == table["params_total"].max()]
    one_decade = largest[(largest["images_seen"] >= 130_000) & (largest["images_seen"] <= 1_000_000)]
    fig = figure_per_scale_curves(one_decade)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = _visible_tick_label_boxes(fig.axes[0], renderer)
    assert len(labels) >= 2
    assert all("times" not in text and "^" not in text for text, _ in labels), [text for text, _ in labels]
    for k, (_, box) in enumerate(labels):
        assert not any(box.overlaps(other) for _, other in labels[k + 1:]), [text for text, _ in labels]
    matplotlib.pyplot.close(fig)

    fig = figure_paper_normalised(fits)  # this sweep's E is not identified against N: panels say so in words
    fig.canvas.draw()
    notes = [(ax, ax.texts[0]) for ax in fig.axes if ax.texts]
    assert notes
    for ax, note in notes:
        inside, box = ax.get_window_extent(renderer), note.get_window_extent(fig.canvas.get_renderer())
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, note.get_text()
    matplotlib.pyplot.close(fig)


def test_size_labels_of_figure5_stay_inside_the_axes_and_off_the_held_out_ring(sweep):
    _, fits = sweep
    fig = figure_vs_params(fits)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_text().endswith(("k", "M", "B"))]
        if not labels:
            continue
        inside = ax.get_window_extent(renderer)
        ring = next(line for line in ax.get_lines() if line.get_label().startswith("held out"))
        ring_xy = ax.transData.transform(np.column_stack([ring.get_xdata(), ring.get_ydata()]))[0]
        ring_radius = (ring.get_markersize() + ring.get_markeredgewidth()) / 2 * fig.dpi / 72  # to its outer edge
        for label in labels:
            box = label.get_window_extent(renderer)
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0, label.get_text()
            nearest_x = min(max(ring_xy[0], box.x0), box.x1)
            nearest_y = min(max(ring_xy[1], box.y0), box.y1)
            assert np.hypot(nearest_x - ring_xy[0], nearest_y - ring_xy[1]) >= ring_radius, label.get_text()
    matplotlib.pyplot.close(fig)
