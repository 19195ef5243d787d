"""varscale eval end to end on a randomly initialised Inception saved exactly like torch-fidelity's real weights
file (a plain dict of tensors from torch.save), and clean-fid on a random TorchScript file with NVIDIA's interface."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from adm_reference import adm_precision_recall
from eval_kit import random_inception_weights

from harness.evaluation import inception, intervals
from harness.evaluation.evaluate import EvalConfig, evaluate
from harness.sampling.npz import SampleFormatError, write_npz, write_png_folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_inception_weights(tmp_path_factory)


@pytest.fixture(scope="module")
def extractor(weights):
    return inception.InceptionExtractor(weights, device="cpu")


def _images(n, seed):
    return inception._synthetic_images(n, 32, seed)


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    samples, ref = _images(6, 1), _images(6, 2)
    write_npz(root / "samples.npz", {"arr_0": samples, "arr_1": np.arange(6) % 3})
    write_npz(root / "ref.npz", {"arr_0": ref})
    return root, samples, ref


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="module")
def features(extractor, batches, weights, shared_cache):
    """The Inception features of both batches, computed once and left in the shared cache for later evals."""
    from harness.evaluation.feature_cache import features_for
    from harness.sampling.npz import open_npz
    from models.files import sha256_file

    root, _, _ = batches
    weights_sha = sha256_file(weights)
    return tuple(features_for(open_npz(root / name), extractor, weights_sha, "float32", 64, shared_cache, name)[0]
                 for name in ("samples.npz", "ref.npz"))


def _cfg(weights, samples, ref, cache, **kw):
    """``cache``: a folder for the feature cache (a shared one saves Inception passes between tests)."""
    kw = {"fid_method": "gram", "fid_interval": "none", "bootstrap_rounds": 0, "kid_subsets": 5} | kw
    return EvalConfig(samples=str(samples), ref=str(ref) if ref else None, inception_weights=str(weights),
                      device="cpu", expected_samples=6, cache_dir=str(cache), cache_samples=True, **kw)


# ------------------------------------------------------------------------------------------------ the loader

def test_loader_loads_the_real_file_format_strictly(weights, tmp_path):
    model, path = inception.load_inception(weights)
    assert path == weights
    saved = torch.load(weights, weights_only=True)
    assert type(saved) is dict and not any(k.endswith("num_batches_tracked") for k in saved)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    for mutate, name in ((lambda d: d.update(extra=torch.zeros(1)), "extra"),
                         (lambda d: d.pop("Mixed_6d.branch1x1.conv.weight"), "missing")):
        broken = dict(saved)
        mutate(broken)
        torch.save(broken, tmp_path / f"{name}.pth")
        with pytest.raises(inception.InceptionWeightsError, match="does not match"):
            inception.load_inception(tmp_path / f"{name}.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(inception.InceptionWeightsError, match="junk.pth"):
        inception.load_inception(tmp_path / "junk.pth")


def test_missing_weights_error_names_the_file_and_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("VARSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("VARSCALE_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(inception.InceptionWeightsError) as info:
        inception.find_weights()
    assert inception.WEIGHTS_FILENAME in str(info.value)
    assert "varscale assets fetch --what inception" in str(info.value)


@pytest.mark.parametrize("where", ["varscale_cache", "torch_hub"])
def test_loader_finds_weights_in_the_cache_and_in_torch_hub(weights, tmp_path, monkeypatch, where):
    monkeypatch.setenv("VARSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("VARSCALE_INCEPTION_WEIGHTS", raising=False)
    folder = (tmp_path / "cache" / "inception" if where == "varscale_cache"
              else tmp_path / "torch" / "hub" / "checkpoints")
    folder.mkdir(parents=True)
    shutil.copy(weights, folder / inception.WEIGHTS_FILENAME)
    assert inception.find_weights() == folder / inception.WEIGHTS_FILENAME


def test_feature_sets_pool_logits_and_tf_ordered_spatial(extractor):
    images = _images(3, 7)
    captured = {}
    hook = extractor.model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: captured.update(out=o.clone()))
    feats = extractor.batch(images)
    hook.remove()
    assert feats.pool.shape == (3, 2048) and feats.logits.shape == (3, 1008) and feats.spatial.shape == (3, 2023)
    full = captured["out"].numpy()                       # (B, 192, 17, 17), after the ReLU
    assert full.shape == (3, 192, 17, 17) and full.min() >= 0
    np.testing.assert_array_equal(feats.spatial.reshape(3, 17, 17, 7), full[:, :7].transpose(0, 2, 3, 1))
    fc = extractor.model.fc.weight.detach().numpy()
    np.testing.assert_allclose(feats.logits, feats.pool @ fc.T, rtol=1e-4, atol=1e-4)   # no bias, as ADM
    assert feats.pool.std(axis=0).mean() > 1e-2                                            # informative features


# -------------------------------------------------------------------------------------------- the evaluator

def _independent_fid(x1, x2):
    from scipy.linalg import sqrtm

    s1, s2 = np.cov(x1.astype(np.float64), rowvar=False), np.cov(x2.astype(np.float64), rowvar=False)
    d = x1.mean(0, dtype=np.float64) - x2.mean(0, dtype=np.float64)
    # low rank (6 points in 2048-d): sqrtm of the small Gram product has the same non-zero spectrum
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    g = (c1.astype(np.float64) @ c2.T.astype(np.float64)) / np.sqrt((len(x1) - 1) * (len(x2) - 1))
    tr = np.trace(sqrtm(g @ g.T)).real
    return d @ d + np.trace(s1) + np.trace(s2) - 2 * tr


def test_eval_npz_matches_independent_metrics_on_the_same_features(weights, batches, features, shared_cache):
    root, _, _ = batches
    result = evaluate(_cfg(weights, root / "samples.npz", root / "ref.npz", shared_cache))
    fs, fr = features
    m = result["metrics"]
    assert m["fid"] == pytest.approx(_independent_fid(fs.pool, fr.pool), rel=1e-5)
    assert m["sfid"] == pytest.approx(_independent_fid(fs.spatial, fr.spatial), rel=1e-5)
    assert (m["precision"], m["recall"]) == adm_precision_recall(fs.pool, fr.pool)   # ADM's float16 formula
    p = torch.softmax(torch.from_numpy(fs.logits).double(), 1).numpy()
    assert m["is_mean"] == pytest.approx(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0))), 1))), rel=1e-6)
    assert m["kid"] == pytest.approx(intervals.kid(fs.pool, fr.pool, 5)["kid"], rel=1e-9)
    assert result["inputs"]["samples"]["sha256"] and result["weights"]["inception"]["sha256"]
    assert result["versions"]["torch-fidelity"] == "0.4.0" and "FID" in result["summary"]
    json.dumps(result)   # serialisable as it is


def test_eval_of_a_set_against_itself(weights, batches, features, shared_cache):
    root, _, _ = batches
    m = evaluate(_cfg(weights, root / "samples.npz", root / "samples.npz", shared_cache))["metrics"]
    assert abs(m["fid"]) < 1e-6 and abs(m["sfid"]) < 1e-6
    assert m["precision"] == 1.0 and m["recall"] == 1.0


def test_reference_cache_hits_on_same_content_and_misses_on_changed_content(weights, batches, features, tmp_path,
                                                                            shared_cache):
    root, _, ref = batches
    write_npz(tmp_path / "ref.npz", {"arr_0": ref[:4]})
    cache = shared_cache   # the samples' features are there already; this reference is new to it
    first = evaluate(_cfg(weights, root / "samples.npz", tmp_path / "ref.npz", cache, is_splits=2))
    assert not first["inputs"]["reference"]["feature_cache"]["cache_hit"]
    shutil.copy(tmp_path / "ref.npz", tmp_path / "renamed_ref.npz")
    again = evaluate(_cfg(weights, root / "samples.npz", tmp_path / "renamed_ref.npz", cache, is_splits=2))
    assert again["inputs"]["reference"]["feature_cache"]["cache_hit"]
    assert again["metrics"]["fid"] == first["metrics"]["fid"]
    changed = ref[:4].copy()
    changed[0, 0, 0, 0] ^= 1
    write_npz(tmp_path / "changed_ref.npz", {"arr_0": changed})
    third = evaluate(_cfg(weights, root / "samples.npz", tmp_path / "changed_ref.npz", cache, is_splits=2))
    assert not third["inputs"]["reference"]["feature_cache"]["cache_hit"]
    assert third["metrics"]["fid"] != first["metrics"]["fid"]


def test_eval_on_image_folder_and_run_directory_agree_with_npz(weights, batches, features, tmp_path, shared_cache):
    root, samples, _ = batches
    base = evaluate(_cfg(weights, root / "samples.npz", root / "ref.npz", shared_cache))["metrics"]
    write_png_folder(tmp_path / "pngs", samples)
    folder = evaluate(_cfg(weights, tmp_path / "pngs", root / "ref.npz", shared_cache))["metrics"]
    assert folder["fid"] == pytest.approx(base["fid"], rel=1e-6)   # PNG is lossless
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    shutil.copy(root / "samples.npz", run / "samples" / "s.npz")
    from harness.cli.main import main

    assert main(["eval", str(run), "--ref", str(root / "ref.npz"), "--inception-weights", str(weights),
                 "--device", "cpu", "--fid-interval", "none", "--cache-dir", str(shared_cache),
                 "--cache-samples"]) == 0
    saved = json.loads((run / "eval" / "s.vs-ref.json").read_text())
    assert saved["metrics"]["fid"] == pytest.approx(base["fid"], rel=1e-9)
    assert any("fewer than the protocol's 50000" in w for w in saved["warnings"])


def test_reference_with_only_statistics(weights, features, batches, tmp_path, shared_cache):
    root, _, _ = batches
    fs, fr = features
    write_npz(tmp_path / "stats.npz", {"mu": fr.pool.mean(0).astype(np.float64),
                                       "sigma": np.cov(fr.pool.astype(np.float64), rowvar=False)})
    result = evaluate(_cfg(weights, root / "samples.npz", tmp_path / "stats.npz", shared_cache))
    assert result["metrics"]["fid"] == pytest.approx(_independent_fid(fs.pool, fr.pool), rel=1e-5)
    assert result["inputs"]["reference"]["statistics"] == "stored mu/sigma"
    assert "precision" not in result["metrics"] and "sfid" not in result["metrics"]
    assert any("precision/recall and KID not computed" in w for w in result["warnings"])
    assert any("sFID not computed" in w for w in result["warnings"])


@pytest.mark.parametrize("arrays,message", [
    ({"images": np.zeros((2, 8, 8, 3), np.uint8)}, "no 'arr_0'"),
    ({"arr_0": np.zeros((2, 8, 8, 3), np.float32)}, "dtype float32; expected uint8"),
    ({"arr_0": np.zeros((2, 3, 8, 8), np.uint8)}, "looks like NCHW"),
    ({"arr_0": np.zeros((2, 8, 8), np.uint8)}, "expected \\(N, H, W, 3\\)"),
])
def test_bad_sample_files_give_clear_errors(weights, batches, tmp_path, arrays, message):
    root, _, _ = batches
    write_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(SampleFormatError, match=message):
        evaluate(_cfg(weights, tmp_path / "bad.npz", root / "ref.npz", tmp_path))


def test_reference_without_images_or_statistics_is_an_error(weights, batches, tmp_path):
    root, _, _ = batches
    write_npz(tmp_path / "empty_ref.npz", {"arr_1": np.arange(3)})
    with pytest.raises(SampleFormatError, match="no 'arr_0' \\(images\\) and no 'mu'"):
        evaluate(_cfg(weights, root / "samples.npz", tmp_path / "empty_ref.npz", tmp_path))


def test_wrong_resolution_and_class_sorted_rows(weights, batches, tmp_path):
    root, samples, _ = batches
    with pytest.raises(SampleFormatError, match="expected 256x256"):
        evaluate(_cfg(weights, root / "samples.npz", root / "ref.npz", tmp_path, resolution=256))
    write_npz(tmp_path / "sorted.npz", {"arr_0": samples[:4], "arr_1": np.repeat(np.arange(2), 2)})
    result = evaluate(_cfg(weights, tmp_path / "sorted.npz", None, tmp_path, is_split_size=2))
    assert any("class-sorted" in w for w in result["warnings"])
    assert any("only IS" in w for w in result["warnings"])


# ------------------------------------------------------------------------------------ sample -> eval, end to end

def test_sample_then_eval_the_run_directory(weights, tmp_path):
    """The whole pipeline: varscale sample on a tiny random VAR, then varscale eval on its run directory."""
    from sampling_kit import make_tiny_run

    from harness.cli.main import main

    run = make_tiny_run(tmp_path)
    assert main(["sample", "--run", str(run), "--num-samples", "5", "--batch-size", "5", "--top-k", "50",
                 "--device", "cpu"]) == 0
    ref = _images(4, 3)
    write_npz(tmp_path / "ref.npz", {"arr_0": ref})
    assert main(["eval", str(run), "--ref", str(tmp_path / "ref.npz"), "--inception-weights", str(weights),
                 "--device", "cpu", "--fid-interval", "bootstrap", "--fid-bootstrap-rounds", "2", "--no-cache"]) == 0
    (result_path,) = (run / "eval").glob("*.json")
    result = json.loads(result_path.read_text())
    assert result["inputs"]["samples"]["num_images"] == 5
    assert result["inputs"]["samples"]["sampling_protocol"]["protocol"]["top_k"] == 50   # the sidecar travels along
    assert result["metrics"]["fid"] > 0 and 0 <= result["metrics"]["precision"] <= 1
    assert result["protocol"]["fid_trace_sqrt"] == "gram"          # auto: 5 images < 2048 dimensions
    assert result["intervals"]["fid"]["low"] <= result["intervals"]["fid"]["high"]


def test_fid_and_sfid_carry_a_delta_interval_by_default_when_samples_outnumber_dimensions(tmp_path):
    """The pipeline's metric stage on features (an Inception pass would need > 2048 images): by default FID and
    sFID get the delta-method interval of intervals.fid_delta_interval; --fid-interval none gives none."""
    from types import SimpleNamespace

    from harness.evaluation import fid
    from harness.evaluation.reference_metrics import reference_metrics

    rng = np.random.default_rng(0)
    pool, spatial = rng.normal(size=(300, 8)) + 0.2, rng.normal(size=(300, 6))
    ref_pool, ref_spatial = rng.normal(size=(500, 8)), rng.normal(size=(500, 6))
    (mu, sigma), (mu_s, sigma_s) = fid.feature_statistics(ref_pool), fid.feature_statistics(ref_spatial)
    ref = SimpleNamespace(path=tmp_path / "ref.npz", num_images=0,
                          stats={"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s})
    samples = SimpleNamespace(path=tmp_path / "s.npz", num_images=300, stats={}, labels=None)
    feats = SimpleNamespace(pool=pool, spatial=spatial)
    for choice, expected in (("delta", {"fid", "sfid"}), ("none", set())):
        cfg = EvalConfig(samples="s.npz") if choice == "delta" else EvalConfig(samples="s.npz", fid_interval=choice)
        metrics, found, warnings = {}, {}, []
        reference_metrics(cfg, samples, feats, ref, None, "cpu", metrics, found, warnings)
        assert set(found) == expected, choice
    direct = intervals.fid_delta_interval(spatial, mu_s, sigma_s)
    metrics, found = {}, {}
    reference_metrics(EvalConfig(samples="s.npz"), samples, feats, ref, None, "cpu", metrics, found, [])
    assert found["sfid"]["low"] == direct["low"] and found["sfid"]["high"] == direct["high"]
    assert metrics["sfid"] == pytest.approx(direct["value"], rel=1e-9)
    assert "delta method" in found["fid"]["method"] and "within their class" not in found["fid"]["method"]
    samples.labels = np.repeat(np.arange(3), 100)   # a class-balanced file: resampling within classes
    found = {}
    reference_metrics(EvalConfig(samples="s.npz"), samples, feats, ref, None, "cpu", {}, found, [])
    assert "within their class" in found["fid"]["method"] and "within their class" in found["sfid"]["method"]
