"""Our VQVAE and VAR against vectors produced by the unmodified official code (see tests/golden/README.md)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from models import VAR, VQVAE

# Token ids and random-number consumption must match exactly. Floats get a tolerance that holds on any x86 CPU:
# at one thread (pinned below) the order of a sum still depends on the kernel the CPU picks (AVX2 or AVX-512),
# which moves float32 results by a few ulps per layer, and classifier-free guidance (1+t)*cond - t*uncond with
# cfg up to 4 multiplies that by up to 9. A 1.9e-5 (8.5e-6 relative) logit difference was seen on another
# machine; RTOL = 5e-5 (about 400 ulps) covers it, while a real defect (a missing bias, a wrong scale) moves
# logits by 1e-2 or more. The sampled ids are safe: the smallest top-two margin in the cases is 4.9e-4 relative.
ATOL = 1e-5
RTOL = 5e-5
SAMPLING_CASES = ["var.ar_A", "var.ar_B", "var.ar_C", "var.ar_D", "var.ar_E", "var.ar_F", "var_saln.ar_A",
                  "var_pn10.ar_A"]


@pytest.fixture(scope="module")
def golden(golden_dir):
    torch.set_num_threads(1)
    config = json.loads((golden_dir / "config.json").read_text())
    vectors = load_file(str(golden_dir / "vectors.safetensors"))
    vae_sd = load_file(str(golden_dir / "vae.safetensors"))

    def build_vae(name):
        vae = VQVAE(**config[name])
        vae.load_state_dict(vae_sd, strict=True)  # fp16 file: upcast on load gives exactly the weights used
        return vae

    def build_var(name, vae):
        kwargs = dict(config[name])
        model = VAR(vae_local=vae, **kwargs)
        model.load_state_dict(load_file(str(golden_dir / f"{name}.safetensors")), strict=True)
        return model.eval()

    vae, vae_pn10 = build_vae("vae"), build_vae("vae_pn10")
    models = {"var": build_var("var", vae), "var_saln": build_var("var_saln", vae),
              "var_pn10": build_var("var_pn10", vae_pn10)}
    return {"config": config, "v": vectors, "vae": vae, "vae_pn10": vae_pn10, **models}


def split_scales(idx_BL: torch.Tensor, patch_nums) -> list[torch.Tensor]:
    return list(idx_BL.split([pn * pn for pn in patch_nums], dim=1))


def test_tiny_tokenizer_encode_decode(golden):
    v, vae = golden["v"], golden["vae"]
    with torch.no_grad():
        f = vae.img_to_f(v["tiny.img"])
        torch.testing.assert_close(f, v["tiny.f"], atol=ATOL, rtol=RTOL)
        # token ids from the stored latent must match exactly (no encoder noise involved)
        ids_from_f = vae.quantize.f_to_idxBl_or_fhat(v["tiny.f"], to_fhat=False)
        for si, ids in enumerate(ids_from_f):
            assert torch.equal(ids, v[f"tiny.idx_s{si}"]), f"scale {si}"
        ids = vae.img_to_idxBl(v["tiny.img"])
        assert torch.equal(torch.cat(ids, 1), v["tiny.idx_BL"])
        fhat = torch.stack(vae.quantize.f_to_idxBl_or_fhat(v["tiny.f"], to_fhat=True))
        torch.testing.assert_close(fhat, v["tiny.fhat_per_scale"], atol=ATOL, rtol=RTOL)
        ms_h = [vae.quantize.embedding(i).transpose(1, 2).reshape(4, 8, pn, pn)
                for i, pn in zip(ids, vae.v_patch_nums)]
        fhat_from_idx = torch.stack(vae.quantize.embed_to_fhat(ms_h, all_to_max_scale=True, last_one=False))
        torch.testing.assert_close(fhat_from_idx, v["tiny.fhat_from_idx_per_scale"], atol=ATOL, rtol=RTOL)
        x_in = vae.quantize.idxBl_to_var_input(split_scales(v["tiny.idx_BL"], vae.v_patch_nums))
        torch.testing.assert_close(x_in, v["tiny.x_BLCv_wo_first_l"], atol=ATOL, rtol=RTOL)
        decoded = vae.idxBl_to_img(split_scales(v["tiny.idx_BL"], vae.v_patch_nums), same_shape=True, last_one=True)
        torch.testing.assert_close(decoded, v["tiny.decoded"], atol=ATOL, rtol=RTOL)
        recon = vae.img_to_reconstructed_img(v["tiny.img"], last_one=True)
        torch.testing.assert_close(recon, v["tiny.decoded"], atol=ATOL, rtol=RTOL)


def test_ten_scale_tokenizer(golden):
    v, vae = golden["v"], golden["vae_pn10"]
    assert [vae.quantize.quant_resi.index_for(si / 9) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    with torch.no_grad():
        x = v["pn10.img_u8"].float().div(255)
        x = x.add(x).add_(-1)
        torch.testing.assert_close(vae.img_to_f(x), v["pn10.f"], atol=ATOL, rtol=RTOL)
        ids = vae.quantize.f_to_idxBl_or_fhat(v["pn10.f"], to_fhat=False)
        assert torch.equal(torch.cat(ids, 1), v["pn10.idx_BL"])
        fhat = torch.stack(vae.quantize.f_to_idxBl_or_fhat(v["pn10.f"], to_fhat=True))
        torch.testing.assert_close(fhat, v["pn10.fhat_per_scale"], atol=ATOL, rtol=RTOL)
        x_in = vae.quantize.idxBl_to_var_input(split_scales(v["pn10.idx_BL"], vae.v_patch_nums))
        torch.testing.assert_close(x_in, v["pn10.x_BLCv_wo_first_l"], atol=ATOL, rtol=RTOL)


# attention paths: None = the release's dense masked attention; 64 = per-scale blocks for scales of >= 64 tokens
# (at 10 scales, 4 unmasked blocks and one masked group); 16 = the CPU default; 1 = every scale its own block
ATTENTION_PATHS = [None, 16, 64, 1]


@pytest.mark.parametrize("min_tokens", ATTENTION_PATHS)
@pytest.mark.parametrize("name, x_key", [("var", "tiny"), ("var_saln", "tiny"), ("var_pn10", "pn10")])
def test_teacher_forced_logits(golden, name, x_key, min_tokens):
    v, model = golden["v"], golden[name]
    default, model.block_causal_min_tokens = model.block_causal_min_tokens, min_tokens
    try:
        with torch.no_grad():
            logits = model(v[f"{name}.fwd.labels"], v[f"{x_key}.x_BLCv_wo_first_l"])
    finally:
        model.block_causal_min_tokens = default
    torch.testing.assert_close(logits, v[f"{name}.fwd.logits_BLV"], atol=ATOL, rtol=RTOL)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), v[f"{x_key}.idx_BL"].flatten()).item()
    assert ce == pytest.approx(golden["config"]["cases"][f"{name}.fwd"]["ce_mean"], abs=1e-5)


@pytest.mark.parametrize("case", SAMPLING_CASES)
def test_sampling_cases(golden, case):
    name = case.split(".")[0]
    v, model, args = golden["v"], golden[name], golden["config"]["cases"][case]
    label = args["label_B"]
    label_B = torch.tensor(label) if isinstance(label, list) else label
    if args["global_torch_manual_seed_before_call"] is not None:
        torch.manual_seed(args["global_torch_manual_seed_before_call"])
    out = model.sample_scales(args["B"], label_B, g_seed=args["g_seed"], cfg=args["cfg"], top_k=args["top_k"],
                              top_p=args["top_p"], more_smooth=args["more_smooth"], keep_logits=True)
    rng_after = torch.rand(4, generator=model.rng) if args["g_seed"] is not None else torch.rand(4)
    assert torch.equal(torch.cat(out["idx_Bl"], 1), v[f"{case}.idx_BL"])
    assert torch.equal(out["labels"], v[f"{case}.labels_used"])
    torch.testing.assert_close(torch.cat(out["logits_BlV"], 1), v[f"{case}.logits_cfg_BLV"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out["f_hat"], v[f"{case}.f_hat"], atol=ATOL, rtol=RTOL)
    assert torch.equal(rng_after, v[f"{case}.rng_after"]), "a different amount of randomness was consumed"
    if f"{case}.img_01" in v:
        if args["global_torch_manual_seed_before_call"] is not None:
            torch.manual_seed(args["global_torch_manual_seed_before_call"])
        img = model.autoregressive_infer_cfg(args["B"], label_B, g_seed=args["g_seed"], cfg=args["cfg"],
                                             top_k=args["top_k"], top_p=args["top_p"],
                                             more_smooth=args["more_smooth"])
        torch.testing.assert_close(img, v[f"{case}.img_01"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", ["var", "var_saln"])
def test_kv_cached_sampling_equals_teacher_forcing(golden, name):
    """Block-causal masked training and KV-cached inference compute the same logits."""
    model, vae = golden[name], golden["vae"]
    labels = torch.tensor([2, 7])
    out = model.sample_scales(2, labels, g_seed=11, cfg=0.0, top_k=0, top_p=0.0, keep_logits=True)
    x_in = vae.quantize.idxBl_to_var_input(out["idx_Bl"])
    rate, model.cond_drop_rate = model.cond_drop_rate, 0.0
    try:
        with torch.no_grad():
            logits_tf = model(labels, x_in)
    finally:
        model.cond_drop_rate = rate
    torch.testing.assert_close(torch.cat(out["logits_BlV"], 1), logits_tf, atol=2e-5, rtol=RTOL)


# inductor codegen makes these the slowest tests of the area: 314 s and 177 s wall on a 2-core CPU at load ~13,
# 73 s of CPU time for this whole file; on a quiet CI machine expect about a minute for the pair
@pytest.mark.slow
def test_compiled_sampling_step_gives_the_golden_samples(golden):
    """`varscale sample --compile`: the same ids and randomness as the official code, logits to tolerance."""
    case, model, v = "var.ar_A", golden["var"], golden["v"]
    args = golden["config"]["cases"][case]
    model.compile_sampling_step()
    try:
        out = model.sample_scales(args["B"], torch.tensor(args["label_B"]), g_seed=args["g_seed"], cfg=args["cfg"],
                                  top_k=args["top_k"], top_p=args["top_p"], keep_logits=True)
    finally:
        model.compile_sampling_step(False)
    assert torch.equal(torch.cat(out["idx_Bl"], 1), v[f"{case}.idx_BL"])
    assert torch.equal(torch.rand(4, generator=model.rng), v[f"{case}.rng_after"])
    torch.testing.assert_close(torch.cat(out["logits_BlV"], 1), v[f"{case}.logits_cfg_BLV"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out["f_hat"], v[f"{case}.f_hat"], atol=ATOL, rtol=RTOL)


@pytest.mark.slow
def test_compiled_training_forward_and_backward_match_eager(golden):
    """`train.compile`: compiled logits equal the golden ones and the gradients equal the eager ones."""
    model, v = golden["var_pn10"], golden["v"]
    labels, x_in, gt = v["var_pn10.fwd.labels"], v["pn10.x_BLCv_wo_first_l"], v["pn10.idx_BL"]

    def logits_and_grads(forward):
        model.zero_grad(set_to_none=True)
        logits = forward(labels, x_in)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), gt.flatten()).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    eager_logits, eager_grads = logits_and_grads(model)
    compiled_logits, compiled_grads = logits_and_grads(torch.compile(model, dynamic=False))
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(compiled_logits, v["var_pn10.fwd.logits_BLV"], atol=ATOL, rtol=RTOL)
    assert compiled_grads.keys() == eager_grads.keys() and len(eager_grads) > 10
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
