"""varscale sample on a tiny random VAR: determinism across shard counts, resume, balance, permutation, rounding."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sampling_kit import make_tiny_run

from harness.cli.main import main
from harness.sampling.loop import (
    SampleDir,
    SamplingError,
    SamplingProtocol,
    batch_seed,
    class_labels,
    protocol_header,
    run_shard,
    to_uint8,
)
from harness.sampling.merge import merge

ARGS = ["--per-class", "2", "--batch-size", "4", "--top-k", "50", "--device", "cpu"]   # 20 samples, 5 batches


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def reference(run_dir, tmp_path_factory):
    """One-shard output: the bytes every other way of sampling must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "one.npz"
    assert main(["sample", "--run", str(run_dir), "--out", str(out), *ARGS]) == 0
    with np.load(out) as data:
        return out, {k: data[k] for k in data.files}


def test_output_is_class_balanced_permuted_and_documented(reference, run_dir):
    out, data = reference
    images, labels, index = data["arr_0"], data["arr_1"], data["sample_index"]
    assert images.dtype == np.uint8 and images.shape == (20, 32, 32, 3)
    assert np.bincount(labels).tolist() == [2] * 10
    assert sorted(index.tolist()) == list(range(20))
    np.testing.assert_array_equal(labels, class_labels(20, 10)[index])   # the permutation is the recorded one
    assert not np.array_equal(labels, np.sort(labels))                   # rows are not class-sorted
    assert len({images[i].tobytes() for i in range(20)}) == 20           # distinct seeds: no repeated samples
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["protocol"]["cfg"] == 1.5 and sidecar["protocol"]["top_p"] == 0.96
    assert sidecar["model"]["checkpoints"]["var"]["sha256"] and sidecar["model"]["checkpoints"]["tokenizer"]["sha256"]
    from models.registry import build, var_spec

    assert sidecar["model"]["params_total"] == sum(p.numel() for p in build(var_spec("VAR-mini-d1"))[1].parameters())
    assert sidecar["rounding"]["rule"] == "round" and "0.5" in sidecar["rounding"]["definition"]
    assert sidecar["seeds"]["first_batch_seeds"][:2] == [batch_seed(0, 0), batch_seed(0, 1)]
    assert sidecar["versions"]["torch"]


def test_same_bytes_whatever_the_number_of_shards(reference, run_dir, tmp_path):
    _, data = reference
    out = tmp_path / "three.npz"
    for shard in (2, 0, 1):   # e.g. a SLURM array, in any order; the shard that completes the set merges
        assert main(["sample", "--run", str(run_dir), "--out", str(out), *ARGS,
                     "--shard", str(shard), "--num-shards", "3"] + (["--no-merge"] if shard == 1 else [])) == 0
        assert not out.exists()
    assert main(["sample", "--out", str(out), "--merge-only"]) == 0
    with np.load(out) as sharded:
        for key in ("arr_0", "arr_1", "sample_index"):
            np.testing.assert_array_equal(sharded[key], data[key])


def test_torchrun_ranks_shard_the_batches_and_rank0_merges(reference, run_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "ddp.npz"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    # torchrun would set 1 thread per rank; on CPU the decoder's float sums depend on the thread count, which can
    # move a pixel across a rounding boundary, so the ranks use the thread count the reference was made with
    env.update(OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "harness.cli", "sample",
                           "--run-dir", str(run_dir), "--out", str(out), *ARGS], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "shard 0/2" in proc.stderr and "shard 1/2" in proc.stderr
    with np.load(out) as data:
        np.testing.assert_array_equal(data["arr_0"], reference[1]["arr_0"])


def test_submitit_local_jobs_one_per_shard(reference, run_dir, tmp_path):
    out = tmp_path / "jobs.npz"
    assert main(["sample", "--run", str(run_dir), "--out", str(out), *ARGS, "--submit", "local",
                 "--num-shards", "2", "--wait", "--cpus-per-task", "1"]) == 0
    with np.load(out) as data:
        np.testing.assert_array_equal(data["arr_0"], reference[1]["arr_0"])
    assert list((tmp_path / "jobs.npz.jobs").glob("*_log.err"))   # submitit's logs next to the output


def test_resume_after_a_killed_shard_redoes_only_missing_batches(reference, run_dir, tmp_path):
    from harness.sampling.load import load_run_model, make_generate

    var, info = load_run_model(run_dir)
    protocol = SamplingProtocol(num_classes=10, per_class=2, batch_size=4, top_k=50)
    out = SampleDir(tmp_path / "resumed.npz")
    out.claim(protocol_header(protocol, info))
    generate = make_generate(var, protocol, "cpu")
    calls = []

    def dies_after_two(batch, labels, seed):
        if len(calls) == 2:
            raise KeyboardInterrupt   # the job is killed mid-run
        calls.append(seed)
        return generate(batch, labels, seed)

    with pytest.raises(KeyboardInterrupt):
        run_shard(out, protocol, dies_after_two)
    assert out.done(protocol.num_batches) == {0, 1}
    assert not list(out.parts.glob("*.tmp"))   # nothing half-written
    with pytest.raises(SamplingError, match="2, 3, 4"):
        merge(out)
    assert run_shard(out, protocol, generate) == [2, 3, 4]
    merge(out)
    with np.load(out.npz) as resumed:
        np.testing.assert_array_equal(resumed["arr_0"], reference[1]["arr_0"])


def test_resume_refuses_a_different_protocol(run_dir, tmp_path):
    out = tmp_path / "x.npz"
    assert main(["sample", "--run", str(run_dir), "--out", str(out), *ARGS, "--no-merge",
                 "--shard", "0", "--num-shards", "5"]) == 0
    assert main(["sample", "--run", str(run_dir), "--out", str(out), *ARGS, "--cfg", "2.0"]) == 1
    protocol = SamplingProtocol(num_classes=10, per_class=2, batch_size=4, top_k=50, cfg=2.0)
    with pytest.raises(SamplingError, match="protocol.cfg: 1.5 there, 2.0 now"):
        SampleDir(out).claim(protocol_header(protocol, SampleDir(out).header()["model"]))
    moved = SampleDir(out).header()
    moved["model"]["checkpoints"]["var"]["path"] = "/another/mount/final/model.safetensors"
    SampleDir(out).claim(moved)   # the same files seen under another mount point: accepted (sha256 decides)
    moved["model"]["checkpoints"]["var"]["sha256"] = "0" * 64
    with pytest.raises(SamplingError, match="sha256"):
        SampleDir(out).claim(moved)


def test_preset_with_checkpoint_files_matches_the_run_directory(reference, run_dir, tmp_path):
    out = tmp_path / "preset.npz"
    assert main(["sample", "--model", "VAR-mini-d1", "--var-checkpoint", str(run_dir / "var.pth"),
                 "--vae-checkpoint", str(run_dir / "vae.pth"), "--out", str(out), *ARGS, "--png"]) == 0
    with np.load(out) as data:
        np.testing.assert_array_equal(data["arr_0"], reference[1]["arr_0"])
        from PIL import Image

        pngs = sorted((tmp_path / "preset_png").glob("*.png"))
        assert len(pngs) == 20
        np.testing.assert_array_equal(np.asarray(Image.open(pngs[3])), data["arr_0"][3])


def test_released_checkpoint_missing_from_the_cache_names_the_fetch_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VARSCALE_CACHE", str(tmp_path / "empty-cache"))
    assert main(["sample", "--model", "VAR-d16", "--out", str(tmp_path / "d16.npz"), "--device", "cpu"]) == 1
    assert "varscale assets fetch --what var-d16" in capsys.readouterr().err


def test_bad_settings_are_clear_errors(run_dir, tmp_path, capsys):
    assert main(["sample", "--run", str(run_dir), "--out", str(tmp_path / "a.npz"), "--device", "cpu",
                 "--per-class", "1"]) == 1   # default top-k 900 > this model's 256 codes
    assert "top_k=900 exceeds the vocabulary size 256" in capsys.readouterr().err
    assert main(["sample", "--model", "VAR-mini-d1", "--out", str(tmp_path / "b.npz"), "--device", "cpu"]) == 1
    assert "no released checkpoint" in capsys.readouterr().err
    assert main(["sample", "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.npz")]) == 1


def test_seeds_are_distinct_per_batch_and_depend_only_on_master_seed_and_index():
    seeds = [batch_seed(0, b) for b in range(2000)]
    assert len(set(seeds)) == 2000 and all(0 <= s < 2 ** 63 for s in seeds)
    assert batch_seed(0, 7) == batch_seed(0, 7) != batch_seed(1, 7)
    assert np.bincount(class_labels(50_000, 1000)).tolist() == [50] * 1000


def test_rounding_rules():
    x = torch.tensor([0.0, 0.4 / 255, 0.5 / 255, 0.9 / 255, 1.0, 1.2, -0.1]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    assert to_uint8(x, "round")[0, 0, :, 0].tolist() == [0, 0, 1, 1, 255, 255, 0]
    assert to_uint8(x, "trunc")[0, 0, :, 0].tolist() == [0, 0, 0, 0, 255, 255, 0]
    y = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torchvision_path = y.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(to_uint8(y, "round"), torchvision_path)   # what save_image does before PIL
