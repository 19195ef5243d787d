"""Tokenizer training: reconstruction falls, usage per scale reported, dead codes re-initialised, file reloads."""
from __future__ import annotations

import json

import torch
from harness_helpers import TINY_VQVAE

from harness.config import DataConfig, TokenizerRef, TokenizerTrainConfig
from harness.data.synthetic import SyntheticImages
from harness.tokenizer.storage import load_tokenizer
from harness.tokenizer.train import quantizer_inputs, reinit_dead_codes, train_tokenizer


def _tiny_cfg(**overrides) -> TokenizerTrainConfig:
    data = DataConfig(synthetic_train_size=64, synthetic_val_size=16, num_classes=4)
    base = dict(data=data, vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2, 2, 4), patch_nums=(1, 2, 3, 4),
                total_steps=16, batch_size=8, lr=2e-3, log_every=4, dead_code_every=4, eval_images=16)
    return TokenizerTrainConfig(**{**base, **overrides})


def test_tokenizer_training_reports_per_scale_usage_and_reloads(tmp_path):
    torch.set_num_threads(1)
    summary = train_tokenizer(_tiny_cfg(), tmp_path / "tok")
    val = summary["val"]
    assert len(val["codebook_usage_per_scale"]) == 4 and len(val["perplexity_per_scale"]) == 4
    assert all(0 < u <= 1 for u in val["codebook_usage_per_scale"]) and 0 < val["rec_mse"] < 1
    log = [json.loads(line) for line in (tmp_path / "tok" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in log if r["split"] == "train"]
    assert [r["step"] for r in train] == [4, 8, 12, 16]
    assert train[-1]["rec_mse"] < train[0]["rec_mse"]
    assert len(train[-1]["codebook_usage_pct_per_scale"]) == 4
    # the file rebuilds from its own metadata, and the frozen copy reproduces the reported reconstruction error
    vae, ref = load_tokenizer(TokenizerRef(path=str(tmp_path / "tok" / "tokenizer.safetensors")))
    assert ref.sha256 == summary["sha256"] and ref.kwargs["vocab_size"] == 64
    images = torch.stack([SyntheticImages("val", 16, 32, 4)[i][0] for i in range(16)])
    rec = vae.idxBl_to_img(vae.img_to_idxBl(images), same_shape=True, last_one=True)
    assert abs(float(torch.nn.functional.mse_loss(rec, images)) - val["rec_mse"]) < 1e-5


def test_dead_codes_move_onto_quantizer_inputs():
    from models import VQVAE

    torch.manual_seed(0)
    vae = VQVAE(**TINY_VQVAE, test_mode=False)
    images = torch.stack([SyntheticImages("train", 8, 32, 4)[i][0] for i in range(8)])
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    vae(images)[2].backward()
    optimizer.step()  # creates Adam moments for the codebook
    q = vae.quantize
    q.ema_vocab_hit_SV.fill_(5.0)
    dead = torch.tensor([3, 17, 40])
    q.ema_vocab_hit_SV[:, dead] = 0.0
    before = q.embedding.weight.detach().clone()
    pool = torch.cat(quantizer_inputs(vae, images)).detach()  # residuals depend on the codebook: take them first
    moved = reinit_dead_codes(vae, images, optimizer, batch_tokens=8 * 30, generator=torch.Generator().manual_seed(0))
    assert moved == 3
    after = q.embedding.weight.detach()
    alive = torch.ones(64, dtype=torch.bool)
    alive[dead] = False
    assert torch.equal(after[alive], before[alive]) and not torch.equal(after[dead], before[dead])
    nearest = torch.cdist(after[dead], pool).min(dim=1).values
    assert (nearest < 1e-2).all()  # each re-initialised code sits on a real quantizer input
    state = optimizer.state[q.embedding.weight]
    assert (state["exp_avg"][dead] == 0).all() and (state["exp_avg_sq"][dead] == 0).all()
    assert (q.ema_vocab_hit_SV[:, dead] > 0).all()  # a grace period before they count as dead again


def test_finished_tokenizer_is_not_rewritten(tmp_path):
    torch.set_num_threads(1)
    cfg = _tiny_cfg(total_steps=4, log_every=2, eval_images=8)
    first = train_tokenizer(cfg, tmp_path / "tok")
    stamp = (tmp_path / "tok" / "tokenizer.safetensors").stat().st_mtime_ns
    again = train_tokenizer(cfg, tmp_path / "tok")
    assert again["sha256"] == first["sha256"]
    assert (tmp_path / "tok" / "tokenizer.safetensors").stat().st_mtime_ns == stamp
