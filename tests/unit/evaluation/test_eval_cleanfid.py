"""The clean-fid second opinion: a TorchScript fixture with NVIDIA's interface whose resize is TensorFlow 1's
(so the legacy_tensorflow path is tested in substance), and labels saying what each clean-fid FID is against."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_kit import random_inception_weights

from harness.cli.main import main
from harness.evaluation import cleanfid_check as cb
from harness.evaluation import inception
from harness.evaluation.fid import frechet_distance
from harness.sampling.npz import open_npz, write_npz

# sha256 of the float32 NCHW bytes of tf.compat.v1.image.resize_bilinear(x, [299, 299], align_corners=False,
# half_pixel_centers=False) for x = default_rng(0).integers(0, 256, (2, 3, 32, 48)) as float32 (NHWC into TF),
# computed once with tensorflow-cpu 2.21.0 on CPU (TF is not a dependency; see docs/evaluation.md).
TF1_RESIZE_SHA256 = "4d572989be5f37a22729e88cf893bb2ebbf7094978d6e8f1019e1410fdfe931d"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_inception_weights(tmp_path_factory)


@pytest.fixture(scope="module")
def cleanfid_dir(tmp_path_factory, weights):
    folder = tmp_path_factory.mktemp("cleanfid")
    cb.write_random_cleanfid_weights(folder, weights)
    return folder


def test_fixture_resize_is_tensorflow_1_bit_for_bit():
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 48)).astype(np.float32))
    ours = cb.resize_like_tf1(x, 299)
    assert hashlib.sha256(ours.numpy().tobytes()).hexdigest() == TF1_RESIZE_SHA256
    assert torch.equal(ours, interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False))
    pytorch_bilinear = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (ours - pytorch_bilinear).abs().max() > 1.0        # what the earlier fixture did is far from TF


def test_legacy_tensorflow_features_are_the_network_on_tf1_resized_input(cleanfid_dir, tmp_path):
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    images = inception._synthetic_images(3, 32, 4)
    write_npz(tmp_path / "s.npz", {"arr_0": images})
    extractor = cb.CleanFidExtractor("legacy_tensorflow", cleanfid_dir, "cpu")
    features = extractor.features(open_npz(tmp_path / "s.npz"))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    trunk = extractor.model.base.layers
    with torch.no_grad():
        expected = trunk((interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
                          - 128) / 128).reshape(-1, 2048).numpy()
        other = trunk((F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 128)
                      / 128).reshape(-1, 2048).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(features - other).max() > 100 * np.abs(features - expected).max() + 1e-4


def test_cleanfid_results_say_what_they_are_compared_against(weights, cleanfid_dir, tmp_path, capsys):
    samples, ref = inception._synthetic_images(4, 32, 1), inception._synthetic_images(5, 32, 2)
    write_npz(tmp_path / "s.npz", {"arr_0": samples})
    extractor = cb.CleanFidExtractor("legacy_tensorflow", cleanfid_dir, "cpu")
    write_npz(tmp_path / "plain_ref.npz", {"arr_0": ref})
    ref_feats = extractor.features(open_npz(tmp_path / "plain_ref.npz")).astype(np.float64)
    rng = np.random.default_rng(0)
    full_mu = ref_feats.mean(0) + rng.normal(0, 0.01, 2048)          # "full-dataset" statistics: not the images'
    full_sigma = np.cov(ref_feats, rowvar=False) + np.diag(rng.uniform(0.01, 0.02, 2048))
    write_npz(tmp_path / "ref.npz", {"arr_0": ref, "mu": full_mu, "sigma": full_sigma})
    args = ["eval", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "ref.npz"), "--device", "cpu",
            "--inception-weights", str(weights), "--cache-dir", str(tmp_path / "cache"), "--cache-samples",
            "--cleanfid-weights-dir", str(cleanfid_dir), "--bootstrap-rounds", "0", "--kid-subsets", "0"]
    assert main(args + ["--cleanfid", "clean,legacy_tensorflow", "--out", str(tmp_path / "images.json")]) == 0
    line = capsys.readouterr().out
    assert "clean-fid[clean] FID" in line and "vs the 5 images of ref.npz, not its stored statistics" in line
    by_images = json.loads((tmp_path / "images.json").read_text())["cleanfid"]
    for mode in ("clean", "legacy_tensorflow"):
        label = by_images[mode]["compared_against"]
        assert label["fid_reference"] == "images" and label["num_images"] == 5
        assert label["comparable_to_headline_fid"] is False
    assert main(args + ["--cleanfid", "legacy_tensorflow", "--out", str(tmp_path / "stats.json"),
                        "--cleanfid-against", "stored-statistics"]) == 0
    assert "legacy_tensorflow] FID" in capsys.readouterr().out
    by_stats = json.loads((tmp_path / "stats.json").read_text())["cleanfid"]
    legacy = by_stats["legacy_tensorflow"]
    assert legacy["compared_against"]["comparable_to_headline_fid"] is True
    sample_feats = extractor.features(open_npz(tmp_path / "s.npz")).astype(np.float64)
    expected = frechet_distance(sample_feats.mean(0), np.cov(sample_feats, rowvar=False), full_mu, full_sigma,
                                "eigh")
    assert legacy["fid"] == pytest.approx(expected, rel=1e-5)
    assert legacy["fid_vs_reference_images"] == pytest.approx(by_images["legacy_tensorflow"]["fid"], rel=1e-9)
    assert legacy["fid"] != pytest.approx(legacy["fid_vs_reference_images"], rel=1e-3)
    clean_label = cb.compared_against(open_npz(tmp_path / "ref.npz"), "clean", "stored-statistics")
    assert clean_label["fid_reference"] == "images" and "do not apply" in clean_label["label"]   # PIL features

def test_cleanfid_backend_on_its_own_weights_format(weights, cleanfid_dir, tmp_path):
    from cleanfid.fid import kernel_distance

    from harness.evaluation.evaluate import EvalConfig, evaluate

    samples_arr, ref_arr = inception._synthetic_images(3, 32, 1), inception._synthetic_images(3, 32, 2)
    write_npz(tmp_path / "s.npz", {"arr_0": samples_arr[:3]})
    write_npz(tmp_path / "r.npz", {"arr_0": ref_arr[:3]})
    assert (cleanfid_dir / "inception-2015-12-05.pt").is_file()
    samples, ref = open_npz(tmp_path / "s.npz"), open_npz(tmp_path / "r.npz")
    extractor = cb.CleanFidExtractor("legacy_tensorflow", cleanfid_dir, "cpu")
    fs, fr = extractor.features(samples), extractor.features(ref)
    assert fs.shape == (3, 2048)
    legacy = cb.fid_kid(fs, fr, kid_seed=3, fid_method="gram")
    mu1, s1 = fs.mean(0), np.cov(fs, rowvar=False)
    mu2, s2 = fr.mean(0), np.cov(fr, rowvar=False)
    assert legacy["fid"] == pytest.approx(frechet_distance(mu1, s1, mu2, s2, "gram", fs, fr), rel=1e-9)
    state = np.random.get_state()
    np.random.seed(3)
    assert legacy["kid"] == pytest.approx(kernel_distance(fs, fr), rel=1e-12)   # seeded: reproducible
    np.random.set_state(state)
    # through varscale eval (--cleanfid clean): the second opinion sits next to the ADM metrics in the result
    result = evaluate(EvalConfig(samples=str(tmp_path / "s.npz"), ref=str(tmp_path / "r.npz"), device="cpu",
                                 inception_weights=str(weights), no_cache=True, fid_interval="none",
                                 cleanfid_modes=("clean",), cleanfid_weights_dir=str(cleanfid_dir), kid_seed=3))
    assert np.random.get_state()[1].tolist() == state[1].tolist()      # global RNG left as it was
    clean = result["cleanfid"]["clean"]
    assert clean["weights_sha256"] and clean["kid_seed"] == 3 and np.isfinite(clean["kid"])
    assert clean["fid"] != pytest.approx(legacy["fid"], rel=1e-3)     # PIL bicubic outside vs resize inside
    assert "fid" in result["metrics"] and "precision" not in result["metrics"]   # 3 images: k=3 needs 4
    assert any("need more than k=3 images" in w for w in result["warnings"])
    with pytest.raises(FileNotFoundError, match="varscale assets fetch --what inception-cleanfid"):
        cb.find_weights_dir(tmp_path / "nowhere")


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_cleanfid_frechet_distance_agrees_with_ours():
    from cleanfid.fid import frechet_distance as cleanfid_fd

    from harness.evaluation.fid import feature_statistics

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 32)), rng.normal(0.2, 1.1, size=(150, 32))
    (mu1, s1), (mu2, s2) = feature_statistics(a), feature_statistics(b)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(cleanfid_fd(mu1, s1, mu2, s2), rel=1e-9)


