"""Official-API compatibility, the tokenizer's training path, and clear errors on bad input."""
from __future__ import annotations

import inspect

import pytest
import torch

import models
from models import VAR, VQVAE, build_vae_var
from models.registry import TOKENIZERS, build, var_spec


@pytest.fixture(scope="module")
def mini():
    torch.manual_seed(0)
    vae, var = build(var_spec("VAR-mini-d2"))
    return vae, var.eval()


def test_official_constructor_keywords_exist():
    official_vqvae = {"vocab_size", "z_channels", "ch", "dropout", "beta", "using_znorm", "quant_conv_ks",
                      "quant_resi", "share_quant_resi", "default_qresi_counts", "v_patch_nums", "test_mode"}
    official_var = {"vae_local", "num_classes", "depth", "embed_dim", "num_heads", "mlp_ratio", "drop_rate",
                    "attn_drop_rate", "drop_path_rate", "norm_eps", "shared_aln", "cond_drop_rate", "attn_l2_norm",
                    "patch_nums", "flash_if_available", "fused_if_available"}
    official_build = {"device", "patch_nums", "V", "Cvae", "ch", "share_quant_resi", "num_classes", "depth",
                      "shared_aln", "attn_l2_norm", "flash_if_available", "fused_if_available", "init_adaln",
                      "init_adaln_gamma", "init_head", "init_std"}
    assert official_vqvae <= set(inspect.signature(VQVAE).parameters)
    assert official_var <= set(inspect.signature(VAR).parameters)
    assert official_build <= set(inspect.signature(build_vae_var).parameters)
    for name in ("img_to_idxBl", "idxBl_to_img", "fhat_to_img", "img_to_reconstructed_img"):
        assert callable(getattr(VQVAE, name))
    assert list(inspect.signature(VAR.autoregressive_infer_cfg).parameters)[1:] == \
        ["B", "label_B", "g_seed", "cfg", "top_k", "top_p", "more_smooth"]


def test_demo_notebook_usage_runs_unchanged():
    # the official notebook's calls, at a small depth and with a small tokenizer so that it runs on CPU
    patch_nums = (1, 2, 3, 4)
    vae, var = models.build_vae_var(V=64, Cvae=8, ch=32, share_quant_resi=4, device="cpu", patch_nums=patch_nums,
                                    num_classes=10, depth=2, shared_aln=False)
    assert isinstance(vae, VQVAE) and isinstance(var, VAR)
    var.eval()
    torch.manual_seed(0)
    label_B = torch.tensor([1, 2, 3], device="cpu")
    with torch.inference_mode():
        recon_B3HW = var.autoregressive_infer_cfg(B=3, label_B=label_B, cfg=4, top_k=50, top_p=0.95, g_seed=0,
                                                  more_smooth=False)
    assert recon_B3HW.shape == (3, 3, 64, 64) and recon_B3HW.min() >= 0 and recon_B3HW.max() <= 1
    # same seed, same images
    again = var.autoregressive_infer_cfg(B=3, label_B=label_B, cfg=4, top_k=50, top_p=0.95, g_seed=0)
    assert torch.equal(recon_B3HW, again)


def test_tokenizer_training_path_is_straight_through(mini):
    spec = TOKENIZERS["mini-f8-32px"]
    torch.manual_seed(0)
    vae = VQVAE(test_mode=False, **spec.vqvae_kwargs()).train()
    img = torch.rand(4, 3, 32, 32) * 2 - 1
    rec, usages, vq_loss = vae(img, ret_usages=True)
    assert rec.shape == img.shape and len(usages) == len(spec.patch_nums) and vq_loss.ndim == 0
    (torch.nn.functional.mse_loss(rec, img) + vq_loss).backward()
    assert vae.encoder.conv_in.weight.grad is not None and vae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert vae.quantize.embedding.weight.grad.abs().sum() > 0
    assert vae.quantize.ema_vocab_hit_SV.sum() > 0


def test_configurable_downsampling_round_trip():
    for name in ("mini-f8-32px", "mini-f4-32px", "mini-f8-64px"):
        spec = TOKENIZERS[name]
        vae = VQVAE(**spec.vqvae_kwargs())
        img = torch.rand(2, 3, spec.resolution, spec.resolution) * 2 - 1
        with torch.no_grad():
            ids = vae.img_to_idxBl(img)
            assert [i.shape[1] for i in ids] == [pn * pn for pn in spec.patch_nums]
            out = vae.idxBl_to_img(ids, same_shape=True, last_one=True)
        assert out.shape == img.shape


def test_clear_errors(mini):
    vae, var = mini
    with pytest.raises(ValueError, match=r"takes images of shape \(B, 3, 32, 32\).*got \(1, 3, 64, 64\)"):
        vae.img_to_idxBl(torch.zeros(1, 3, 64, 64))
    x = torch.zeros(2, var.L - 1, vae.Cvae)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 10\]"):
        var(torch.tensor([0, 11]), x)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 10\]"):
        var.autoregressive_infer_cfg(2, torch.tensor([-3, 1]), g_seed=0)
    with pytest.raises(ValueError, match="top_k=900 is larger than the vocabulary size 256"):
        var.autoregressive_infer_cfg(2, torch.tensor([0, 1]), g_seed=0, top_k=900)
    with pytest.raises(ValueError, match=r"x_BLCv_wo_first_l must be \(B, 29, 16\)"):
        var(torch.tensor([0, 1]), torch.zeros(2, 10, 16))
    with pytest.raises(ValueError, match="multiple of 32"):
        VQVAE(ch=48)
    with pytest.raises(ValueError, match="differ from the tokenizer"):
        VAR(vae_local=vae, depth=1, embed_dim=32, num_heads=1, patch_nums=(1, 2, 4))
