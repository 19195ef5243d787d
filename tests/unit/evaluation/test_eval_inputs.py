"""varscale eval end to end: ADM's precision/recall and IS rule through the whole pipeline, every trace method on
stored statistics, and every bad input refused with one line, exit 2 and nothing written."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from adm_reference import adm_inception_score, adm_precision_recall
from eval_kit import random_inception_weights

from harness.cli.main import main
from harness.evaluation import inception
from harness.evaluation.evaluate import EvalConfig, evaluate
from harness.sampling.npz import write_npz


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_inception_weights(tmp_path_factory)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="module")
def data(tmp_path_factory, weights, shared_cache):
    """Samples = 3 of the reference's images + 3 flat colours: precision 0.5, recall 1.0 (asymmetric). Their
    features go through the feature cache once, so the CLI runs below skip the Inception pass."""
    from harness.evaluation.feature_cache import features_for
    from harness.sampling.npz import open_npz
    from models.files import sha256_file

    root = tmp_path_factory.mktemp("inputs")
    ref = inception._synthetic_images(8, 32, 2)
    flat = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (0, 128, 255)])
    write_npz(root / "samples.npz", {"arr_0": np.concatenate([ref[:3], flat])})
    write_npz(root / "ref.npz", {"arr_0": ref})
    extractor = inception.InceptionExtractor(weights, device="cpu")
    fs, fr = (features_for(open_npz(root / name), extractor, sha256_file(weights), "float32", 64, shared_cache,
                           name)[0] for name in ("samples.npz", "ref.npz"))
    return root, fs, fr


def _run(weights, samples, ref, out, cache, *extra):
    return main(["eval", str(samples), *(["--ref", str(ref)] if ref else []), "--out", str(out),
                 "--inception-weights", str(weights), "--device", "cpu", "--fid-interval", "none",
                 "--bootstrap-rounds", "20", "--cache-dir", str(cache), "--cache-samples", *extra])


def test_precision_recall_and_is_through_the_cli_equal_adm(weights, data, tmp_path, capsys, shared_cache):
    root, fs, fr = data
    out = tmp_path / "r.json"
    assert _run(weights, root / "samples.npz", root / "ref.npz", out, shared_cache) == 0
    result = json.loads(out.read_text())
    m = result["metrics"]
    assert (m["precision"], m["recall"]) == adm_precision_recall(fs.pool, fr.pool) == (0.5, 1.0)
    assert m["is_mean"] == pytest.approx(adm_inception_score(fs.logits)[0], rel=1e-6)
    assert "5000 rows" in result["protocol"]["inception_score"]
    assert result["protocol"]["inception_score_split_rule"] == "adm"
    assert any("IS at N=6 is not comparable to published 50k" in w for w in result["warnings"])
    assert "adm-float16" in result["protocol"]["precision_recall"]
    assert result["input_sha256"] == {"samples": result["inputs"]["samples"]["sha256"],
                                      "reference": result["inputs"]["reference"]["sha256"]}
    for key in ("is_mean", "precision", "recall"):
        low, high = result["intervals"][key]["low"], result["intervals"][key]["high"]
        assert low <= high and "bootstrap" in result["intervals"][key]["method"]
    assert np.isfinite(m["kid"]) and "polynomial" in result["protocol"]["kid"]
    assert "P 0.5000 [" in capsys.readouterr().out


@pytest.mark.parametrize("method", [pytest.param("sqrtm", marks=pytest.mark.slow), "eigvals", "auto"])
def test_every_trace_method_end_to_end_on_stored_statistics(weights, shared_cache, tmp_path, method):
    """Both sides carry full-rank 2048-d statistics (the ADM case). Diagonal covariances keep scipy's sqrtm to
    about 20 s on a loaded 2-core machine (it takes minutes on dense ones); the trace is still non-trivial."""
    rng = np.random.default_rng(0)
    s_stats = {"mu": rng.normal(size=2048), "sigma": np.diag(rng.uniform(0.5, 2.0, 2048))}
    r_stats = {"mu": rng.normal(size=2048), "sigma": np.diag(rng.uniform(0.5, 2.0, 2048))}
    write_npz(tmp_path / "s.npz", {"arr_0": inception._synthetic_images(2, 32, 5)} | s_stats)
    write_npz(tmp_path / "r.npz", r_stats)
    s1, s2 = np.diag(s_stats["sigma"]), np.diag(r_stats["sigma"])
    expected = (((s_stats["mu"] - r_stats["mu"]) ** 2).sum() + s1.sum() + s2.sum() - 2 * np.sqrt(s1 * s2).sum())
    result = evaluate(EvalConfig(samples=str(tmp_path / "s.npz"), ref=str(tmp_path / "r.npz"), device="cpu",
                                 inception_weights=str(weights), fid_method=method, cache_dir=str(shared_cache),
                                 cache_samples=True, expected_samples=2,
                                 fid_interval="none", bootstrap_rounds=0, kid_subsets=0))
    assert result["protocol"]["fid_trace_sqrt"] == ("eigh" if method == "auto" else method)
    assert result["metrics"]["fid"] == pytest.approx(expected, rel=1e-9)
    assert any("carries its own mu/sigma" in w for w in result["warnings"])


def _stats_file(path, **override):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 2048))
    arrays = {"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)} | override
    write_npz(path, {k: v for k, v in arrays.items() if v is not None})
    return path


def _bad_cases(root, tmp):
    nan_mu = np.zeros(2048)
    nan_mu[7] = np.nan
    bad_sigma = np.eye(2048)
    bad_sigma[3, 5] = np.inf
    samples = root / "samples.npz"
    write_npz(tmp / "no_samples.npz", {"arr_0": np.zeros((0, 32, 32, 3), np.uint8)})
    write_npz(tmp / "no_ref.npz", {"arr_0": np.zeros((0, 32, 32, 3), np.uint8)})
    return {
        "nan_mu": (samples, _stats_file(tmp / "nan_mu.npz", mu=nan_mu),
                   "'mu' holds a non-finite value \\(nan at index \\(7,\\)"),
        "inf_sigma": (samples, _stats_file(tmp / "inf_sigma.npz", sigma=bad_sigma), "'sigma' holds a non-finite"),
        "short_mu": (samples, _stats_file(tmp / "short.npz", mu=np.zeros(2047)), "'mu' has shape \\(2047,\\)"),
        "asymmetric": (samples, _stats_file(tmp / "asym.npz", sigma=np.triu(np.ones((2048, 2048)))),
                       "'sigma' is not symmetric"),
        "zero_samples": (tmp / "no_samples.npz", root / "ref.npz", "no sample images \\('arr_0' has 0 rows\\)"),
        "zero_ref": (samples, tmp / "no_ref.npz", "no reference images .* and no stored 'mu'/'sigma'"),
    }


@pytest.mark.parametrize("case", ["nan_mu", "inf_sigma", "short_mu", "asymmetric", "zero_samples", "zero_ref"])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(weights, data, tmp_path, capsys, case):
    root, _, _ = data
    samples, ref, message = _bad_cases(root, tmp_path)[case]
    out = tmp_path / "out" / "r.json"
    assert _run(weights, samples, ref, out, tmp_path / "out" / "cache") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("varscale eval: error: ")
    assert str(samples if case == "zero_samples" else ref) in err[0]
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "out").exists()     # neither the result nor the feature cache


def test_nan_features_from_a_corrupted_cache_are_refused(weights, data, tmp_path, capsys, shared_cache):
    import shutil

    root, _, _ = data
    out, cache = tmp_path / "r.json", tmp_path / "cache"
    shutil.copytree(shared_cache, cache)
    (entry,) = [p for p in cache.glob("*.npz")
                if json.loads(p.with_suffix(".json").read_text())["source"].endswith("ref.npz")]
    with np.load(entry) as cached:
        arrays = dict(cached)
    arrays["pool"][4, 10] = np.nan
    write_npz(entry, arrays)
    assert _run(weights, root / "samples.npz", root / "ref.npz", out, cache) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "pool_3 features of image 4 are not finite" in err and entry.name in err
    assert not out.exists()


def test_output_is_checked_before_any_feature_and_never_silently_replaced(weights, data, tmp_path, capsys,
                                                                         shared_cache):
    root, _, _ = data
    cache = tmp_path / "cache"
    (tmp_path / "a_file").write_text("x")
    blocked = tmp_path / "a_file" / "r.json"          # its folder is a file: cannot be created (even as root)
    assert _run(weights, root / "samples.npz", root / "ref.npz", blocked, cache) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()           # no Inception pass happened
    if Path("/proc/self").is_dir():                    # procfs refuses new files, even to root
        assert _run(weights, root / "samples.npz", root / "ref.npz", Path("/proc/varscale-r.json"), cache) == 2
        assert "cannot write in /proc" in capsys.readouterr().err
    out = tmp_path / "r.json"
    out.write_text("earlier result")
    assert _run(weights, root / "samples.npz", root / "ref.npz", out, cache) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "earlier result" and not (tmp_path / "cache").exists()
    assert _run(weights, root / "samples.npz", root / "ref.npz", out, shared_cache, "--overwrite") == 0
    assert json.loads(out.read_text())["metrics"]["precision"] == 0.5
