"""Tokenizer files that others depend on: an existing output is never changed by a command that is refused, a
damaged file is one line, and the same weights always give the same bytes (sha256)."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import torch
from harness_helpers import TINY_VQVAE, make_tokenizer, run_cli

from harness.cli.main import main
from harness.config import DataConfig, TokenizerTrainConfig, to_dict
from harness.tokenizer.storage import save_tokenizer
from models import VQVAE


def _snapshot(folder):
    """Every file's bytes and modification time, but the lock file (its holder line is rewritten by each run)."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_existing_output_resumes_only_with_its_own_config(tmp_path):
    cfg = TokenizerTrainConfig(data=DataConfig(synthetic_train_size=32, synthetic_val_size=8, num_classes=4),
                               vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2, 2, 4), patch_nums=(1, 2, 3, 4),
                               total_steps=2, batch_size=4, log_every=2, eval_images=8, device="cpu")
    (tmp_path / "tok.json").write_text(json.dumps(to_dict(cfg)))
    out = tmp_path / "tok"
    first = run_cli("tokenizer", "train", "--out", str(out), "--config", str(tmp_path / "tok.json"))
    assert first.returncode == 0, first.stderr
    sha = json.loads(first.stdout)["sha256"]
    before, lock_time = _snapshot(out), (out / ".lock").stat().st_mtime_ns

    for change, name in (("lr=0.001", "lr"), ("vocab_size=32", "vocab_size")):  # a setting, an architecture
        refused = run_cli("tokenizer", "train", "--out", str(out), "--config", str(tmp_path / "tok.json"),
                          "--set", change)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert f"{out} holds a tokenizer of another config ({name}:" in lines[0]
        assert _snapshot(out) == before  # nothing written before deciding: same bytes, same times, no new file
        assert (out / ".lock").stat().st_mtime_ns == lock_time  # refused before even taking the lock

    same = run_cli("tokenizer", "train", "--out", str(out))  # no options: the stored config, already finished
    assert same.returncode == 0 and json.loads(same.stdout)["sha256"] == sha
    assert _snapshot(out) == before

    # as a varscale from before two config fields wrote it: still this tokenizer, finished, nothing rewritten
    for name in ("config.json", "summary.json"):
        stored = json.loads((out / name).read_text())
        config = stored if name == "config.json" else stored["config"]
        del config["dead_code_every"], config["data"]["workers"]  # both at their defaults here
        (out / name).write_text(json.dumps(stored))
    older = _snapshot(out)
    upgraded = run_cli("tokenizer", "train", "--out", str(out), "--config", str(tmp_path / "tok.json"))
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["sha256"] == sha
    assert (out / "tokenizer.safetensors").read_bytes() == before[Path("tokenizer.safetensors")][0]
    assert older[Path("tokenizer.safetensors")] == _snapshot(out)[Path("tokenizer.safetensors")]


def test_damaged_tokenizer_files_are_one_line(tmp_path, capsys):
    good = make_tokenizer(tmp_path / "good.safetensors")
    cases = {"empty.safetensors": b"", "truncated.safetensors": good.read_bytes()[:1000],
             "pickled.pth": pickle.dumps({"model": object})}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        code = main(["tokenize", "--tokenizer", str(tmp_path / name), "--out", str(tmp_path / "cache"),
                     "--kwargs", json.dumps(TINY_VQVAE)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"varscale tokenize: error: {tmp_path / name}: ")
        assert "Traceback" not in lines[0]
    assert main(["tokenize", "--tokenizer", str(good), "--out", str(tmp_path / "cache"), "--batch-size", "0"]) == 2
    assert capsys.readouterr().err.strip() == "varscale tokenize: error: --batch-size must be a positive integer, got 0"
    assert not (tmp_path / "cache").exists()


def test_same_weights_give_the_same_bytes(tmp_path):
    torch.manual_seed(0)
    vae = VQVAE(**TINY_VQVAE, test_mode=True)
    extra = {name: i for i, name in enumerate(("val", "train_config", "source", "seed", "note", "step"))}
    digests = set()
    for i in range(4):  # safetensors orders metadata by a hash map seeded anew on every save
        save_tokenizer(vae, tmp_path / f"t{i}.safetensors", extra)
        digests.add(hashlib.sha256((tmp_path / f"t{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    assert (tmp_path / "t0.safetensors").stat().st_mode & 0o777 == 0o644
