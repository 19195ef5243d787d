"""Checkpoint I/O on files written here in the official format and in a Hugging Face cache layout."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models.checkpoint import (
    CheckpointError,
    load_official,
    load_state_dict_file,
    load_strict,
    load_vae_var,
    resolve_official_file,
    sha256_file,
)
from models.registry import build, var_spec

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def mini_files(tmp_path_factory):
    torch.manual_seed(0)
    vae, var = build(var_spec("VAR-mini-d2"))
    out = tmp_path_factory.mktemp("ckpt")
    torch.save(vae.state_dict(), out / "vae.pth")  # the release saves plain state dicts with torch.save
    torch.save(var.state_dict(), out / "var.pth")
    save_file({k: v.contiguous() for k, v in var.state_dict().items()}, str(out / "var.safetensors"))
    return out, vae, var


def make_hf_cache(root: Path, files: dict[str, Path]) -> Path:
    repo = root / "models--FoundationVision--var"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    snap = repo / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True)
    for name, src in files.items():
        (snap / name).write_bytes(src.read_bytes())
    return root


def test_round_trip_pth_and_safetensors(mini_files):
    out, vae, var = mini_files
    spec = var_spec("VAR-mini-d2")
    for var_file in ("var.pth", "var.safetensors"):
        vae2, var2, prov = load_vae_var(spec, out / "vae.pth", out / var_file)
        for k, v in var.state_dict().items():
            assert torch.equal(var2.state_dict()[k], v), k
        assert prov["var"]["sha256"] == sha256_file(out / var_file)
        assert var2.vae_proxy[0] is vae2
    labels = torch.tensor([1, 2])
    torch.testing.assert_close(var2.autoregressive_infer_cfg(2, labels, g_seed=3),
                               var.eval().autoregressive_infer_cfg(2, labels, g_seed=3))


def test_hf_cache_layout_offline(mini_files, tmp_path, monkeypatch):
    out, _, _ = mini_files
    cache = make_hf_cache(tmp_path / "hf", {"var_d16.pth": out / "var.pth", "vae_ch160v4096z32.pth": out / "vae.pth"})
    path = resolve_official_file("var_d16.pth", cache_dir=cache, offline=True)
    assert path.read_bytes() == (out / "var.pth").read_bytes()
    with pytest.raises(CheckpointError, match=r"var_d20.pth.*varscale assets fetch --what var-d20"):
        resolve_official_file("var_d20.pth", cache_dir=cache, offline=True)
    # the released-depth loader finds the cached files and reports what the small stand-in files hold
    with pytest.raises(CheckpointError, match=r"vocab_size=256, z_channels=16, ch=32, 4 levels"):
        load_official(16, cache_dir=cache, offline=True)


def test_checkpoint_of_another_depth(mini_files):
    out, _, _ = mini_files
    _, var3 = build(var_spec("VAR-mini-d3"), device="meta")
    with pytest.raises(CheckpointError) as err:
        load_strict(var3, load_state_dict_file(out / "var.pth"), source="var.pth")
    message = str(err.value)
    assert "looks like VAR-d2" in message and "missing keys" in message and "blocks.2." in message
    assert "shape mismatches" in message


def test_bad_files(tmp_path, mini_files):
    out, _, _ = mini_files
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes((out / "var.pth").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="trunc.pth is not a readable PyTorch checkpoint"):
        load_state_dict_file(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_state_dict_file(text)

    class Payload:  # an arbitrary pickled object must never be unpickled
        def __reduce__(self):
            return (os.getcwd, ())

    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, evil)
    with pytest.raises(CheckpointError, match="evil.pth") as refused:
        load_state_dict_file(evil)
    assert "\n" not in str(refused.value) and "pickled Python object" in str(refused.value)  # one line, not torch's
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="bad.safetensors is not a readable safetensors file"):
        load_state_dict_file(bad_st)
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict_file(tmp_path / "absent.pth")


def test_ema_hit_rows_of_another_schedule_load(mini_files):
    """The release's rule: hit statistics with another number of scales are replaced by the model's zeros."""
    out, vae, _ = mini_files
    state = load_state_dict_file(out / "vae.pth")
    state["quantize.ema_vocab_hit_SV"] = torch.ones(10, vae.vocab_size)
    vae.load_state_dict(state, strict=True)
    assert vae.quantize.ema_vocab_hit_SV.shape[0] == len(vae.v_patch_nums)
    meta_vae, _ = build(var_spec("VAR-mini-d2"), device="meta")  # the path load_vae_var takes
    load_strict(meta_vae, state, source="vae.pth", assign=True)
    hits = meta_vae.quantize.ema_vocab_hit_SV
    assert not hits.is_meta and hits.shape == (len(meta_vae.v_patch_nums), meta_vae.vocab_size)
    assert torch.count_nonzero(hits) == 0
