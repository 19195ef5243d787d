"""Zero-shot editing against the release notebook's outputs (tests/golden/README.md, "Zero-shot editing")."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from models import VAR, VQVAE
from models.edit import box_edit_mask, check_box, keep_mask_at_scale

# Token ids and rng_after must match exactly. Images get the same tolerance as the sampling golden test
# (test_models_golden.py explains it): at one thread (pinned below) float sums still follow the CPU's kernel
# (AVX2 or AVX-512), a few ulps per layer, multiplied by guidance up to cfg 4. A wrong kept token or a mask off
# by one position moves pixels by 1e-2 or more, far above ATOL + RTOL.
ATOL = 1e-5
RTOL = 5e-5
CASES = ["edit.inpaint", "edit.outpaint", "edit.class", "edit.pn10_inpaint"]


@pytest.fixture(scope="module")
def edit_golden(golden_dir):
    torch.set_num_threads(1)
    config = json.loads((golden_dir / "config.json").read_text())
    edit_config = json.loads((golden_dir / "edit_config.json").read_text())
    vectors = load_file(str(golden_dir / "vectors.safetensors")) | load_file(str(golden_dir / "edit_vectors.safetensors"))
    vae_sd = load_file(str(golden_dir / "vae.safetensors"))
    models = {}
    for vae_name, var_name in (("vae", "var"), ("vae_pn10", "var_pn10")):
        vae = VQVAE(**config[vae_name])
        vae.load_state_dict(vae_sd, strict=True)
        var = VAR(vae_local=vae, **config[var_name])
        var.load_state_dict(load_file(str(golden_dir / f"{var_name}.safetensors")), strict=True)
        models[var_name] = var.eval()
    return {"cases": edit_config["cases"], "v": vectors, **models}


def input_image(v, case):
    if case == "edit.pn10_inpaint":
        return v["edit.pn10.img"]
    return v["tiny.img"]


@pytest.mark.parametrize("case", CASES)
def test_edit_equals_the_release_notebook(edit_golden, case):
    args, v = edit_golden["cases"][case], edit_golden["v"]
    var = edit_golden[args["model"]]
    vae = var.vae_proxy[0]
    with torch.no_grad():
        tokens = vae.img_to_idxBl(input_image(v, case))
    assert torch.equal(torch.cat(tokens, 1), v[f"{case}.input_idx_BL"])
    edit_mask = box_edit_mask(var.patch_nums, args["box"], inpainting=args["inpainting"])
    assert torch.equal(edit_mask, v[f"{case}.edit_mask"])
    torch.manual_seed(0)
    images = var.autoregressive_infer_cfg_with_mask(
        args["B"], torch.tensor(args["label_B"]), g_seed=args["g_seed"], cfg=args["cfg"], top_k=args["top_k"],
        top_p=args["top_p"], more_smooth=args["more_smooth"], input_img_tokens=tokens, edit_mask=edit_mask)
    rng_after = torch.rand(4, generator=var.rng)
    assert torch.equal(rng_after, v[f"{case}.rng_after"]), "random numbers consumed differ from the release"
    torch.testing.assert_close(images, v[f"{case}.images"], atol=ATOL, rtol=RTOL)


def test_kept_tokens_are_the_given_ones_and_the_rest_are_sampled(edit_golden):
    """The edit keeps exactly the masked positions at every scale (coarse scales: all of them)."""
    var, v = edit_golden["var"], edit_golden["v"]
    tokens = var.vae_proxy[0].img_to_idxBl(v["tiny.img"])
    mask = box_edit_mask(var.patch_nums, (0.25, 0.25, 0.75, 0.75), inpainting=True)
    out = var.sample_scales(4, torch.tensor([10] * 4), g_seed=0, cfg=3.0, top_k=16, top_p=0.95,
                            input_img_tokens=tokens, edit_mask=mask)
    plain = var.sample_scales(4, torch.tensor([10] * 4), g_seed=0, cfg=3.0, top_k=16, top_p=0.95)
    assert torch.equal(out["idx_Bl"][0], plain["idx_Bl"][0])   # same draws at the first scale
    assert not torch.allclose(out["f_hat"], plain["f_hat"])
    keep = keep_mask_at_scale(mask, 4, 4)[:, 0].bool()
    assert keep.sum() == 4 * 12 and not keep[:, 1:3, 1:3].any()   # the centre 2x2 of the 4x4 grid is generated


def test_box_rules():
    assert box_edit_mask((1, 2, 3, 4), (0.25, 0.25, 0.75, 0.75), inpainting=False).sum() == 4
    # Python's round is half-to-even: 0.625 * 4 = 2.5 rounds to 2, so this box starts at row 2
    assert box_edit_mask((1, 2, 3, 4), (0.625, 0, 1, 1), inpainting=False)[:, 0].tolist() == [0, 0, 1, 1]
    assert keep_mask_at_scale(torch.zeros(4, 4), 2, 1).sum() == 2   # a 1-token scale keeps the given token
    for bad, message in (((0.5, 0, 0.2, 1), "empty"), ((0, 0, 1.5, 1), r"\[0, 1\]"), ((0, 0, 1), "4 fractions")):
        with pytest.raises(ValueError, match=message):
            check_box(bad)
