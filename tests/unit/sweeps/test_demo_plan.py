"""The demo's study design: sizes over two decades, budgets that grow with N, peak lr ~ 1/width, spec overrides."""
from __future__ import annotations

import itertools
import math

import pytest
import yaml

from sweeps.demo import SIZES, write_spec
from sweeps.demo_plan import Budget, plan_runs, spec_overrides
from sweeps.points import expand
from sweeps.spec import load_spec


def test_full_demo_spans_two_decades_with_growing_budgets_and_width_scaled_lr():
    runs = plan_runs(SIZES["full"].budget)
    assert len(runs) >= 7
    assert math.log10(runs[-1].params_wo_emb / runs[0].params_wo_emb) >= 2
    steps = [r.total_steps for r in runs]
    assert all(a < b for a, b in itertools.pairwise(steps)), steps
    # muP-style transfer: peak lr x width is the same for every size, and base_lr follows the harness convention
    products = {round(r.peak_lr * r.width, 12) for r in runs}
    assert len(products) == 1
    assert all(math.isclose(r.base_lr * SIZES["full"].budget.batch_size / 256, r.peak_lr) for r in runs)
    assert all(r.eval_every * SIZES["full"].budget.evals_per_run >= r.total_steps for r in runs)


def test_steps_follow_the_power_of_the_parameter_ratio():
    budget = Budget(depths=(1, 4), base_steps=100, steps_power=0.5, batch_size=32, anchor_width=32,
                    lr_at_anchor=1e-3, evals_per_run=4)
    small, large = plan_runs(budget)
    assert small.total_steps == 100 and small.peak_lr == 1e-3
    assert large.total_steps == round(100 * math.sqrt(large.params_total / small.params_total))
    assert math.isclose(large.peak_lr, 1e-3 / 4)


def test_written_spec_gives_every_point_its_planned_steps_lr_and_seed(tmp_path):
    from harness.config import DataConfig

    size = SIZES["full"]
    tok, cache = tmp_path / "tok.safetensors", tmp_path / "tokens"
    tok.write_bytes(b"x")
    cache.mkdir()
    path = write_spec(tmp_path, size, tok, cache, DataConfig(synthetic_train_size=64, synthetic_val_size=16),
                      "local", seed=3)
    assert path.name == "demo-cpu-seed3.yaml"
    points = expand(load_spec(path))
    planned = {r.depth: r for r in plan_runs(size.budget)}
    assert [p.axes["depth"] for p in points] == sorted(planned, reverse=True)  # largest first
    for point in points:
        run = planned[point.axes["depth"]]
        assert point.train["total_steps"] == run.total_steps
        assert math.isclose(point.train["base_lr"], run.base_lr)
        assert point.train["eval_every"] == run.eval_every and point.train["seed"] == 3
    assert yaml.safe_load(path.read_text())["overrides"] == spec_overrides(list(planned.values()))


def test_quality_samples_are_named_by_their_protocol(tmp_path):
    """A rerun with more samples per class (or other sampling settings or seed) must not reuse an older file:
    the demo once scored 300 stale samples as if they were 2000."""
    from sweeps.demo_quality import SAMPLING, quality_samples_path

    protocol = {"samples_per_class": 30, "sampling": dict(SAMPLING), "sampling_seed": 1000, "fd_method": "sqrtm"}
    path = quality_samples_path(tmp_path, protocol)
    assert path.parent == tmp_path / "samples" and path.suffix == ".npz"
    assert quality_samples_path(tmp_path, dict(protocol, fd_method="eigh")) == path   # scoring only: same samples
    for change in ({"samples_per_class": 200}, {"sampling_seed": 1001}, {"sampling": dict(SAMPLING, cfg=2.0)}):
        assert quality_samples_path(tmp_path, protocol | change) != path, change


def test_quality_score_carries_the_fd_interval_of_a_class_balanced_draw(tmp_path):
    """score_run on a stored sample file (no sampling): the FD comes with its 95% interval, resampled within
    classes, and equals the evaluator's Frechet distance on the same features."""
    import numpy as np
    import torch

    from harness.evaluation.demo_features import SyntheticFeatureNet, embed_images, uint8_to_model_range
    from harness.evaluation.fid import feature_statistics, frechet_distance
    from harness.sampling.npz import write_npz
    from sweeps.demo_quality import FD_INTERVAL, SAMPLING, quality_samples_path, score_run

    torch.manual_seed(0)
    net = SyntheticFeatureNet(num_classes=10, feature_dim=8).eval()
    rng = np.random.default_rng(0)
    protocol = {"samples_per_class": 10, "sampling": dict(SAMPLING), "sampling_seed": 1000,
                "precision_recall_k": 3, "fd_method": "auto", "fd_interval": FD_INTERVAL}
    samples = quality_samples_path(tmp_path, protocol)
    samples.parent.mkdir(parents=True)
    write_npz(samples, {"arr_0": rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8),
                        "arr_1": np.repeat(np.arange(10), 10)})
    ref_features = rng.normal(size=(200, 8))
    result = score_run(tmp_path, {"depth": 2, "params_total": 1000}, net, ref_features, protocol)
    with np.load(samples) as data:
        features, _ = embed_images(net, uint8_to_model_range(data["arr_0"]))
    expected = frechet_distance(*feature_statistics(features), *feature_statistics(ref_features), "sqrtm")
    assert result["fd"] == pytest.approx(expected, rel=1e-6)
    assert result["fd_low"] < result["fd"] < result["fd_high"] and result["fd_se"] > 0
    assert (tmp_path / "quality" / "synthetic-features.json").is_file()
