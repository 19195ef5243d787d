"""Registry, parameter counts (the reference table to the parameter) and the analytic FLOP counter."""
from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from models import build_vae_var
from models.flops import (
    block_causal_pairs,
    forward_flops,
    phi_flops_per_image,
    sample_flops_per_image,
    train_flops_per_image,
)
from models.params import param_counts
from models.registry import TOKENIZERS, build, list_presets, var_spec

# measured on the official classes: docs/references.md §2.6
REFERENCE_TABLE = {
    16: (310_283_520, 1_732_608, 308_550_912, 302_219_520, 4_198_400, 310.06, 298.53),
    20: (600_917_136, 2_165_760, 598_751_376, 590_182_800, 5_246_976, 589.71, 571.69),
    24: (1_033_399_360, 2_598_912, 1_030_800_448, 1_019_732_544, 6_295_552, 1001.58, 975.64),
    30: (2_010_020_356, 3_248_640, 2_006_771_716, 1_991_463_300, 7_868_416, 1923.52, 1882.98),
    36: (2_353_893_904, 7_492_608, 2_346_401_296, 2_294_398_224, 9_441_280, 11981.11, 11401.25),
}


@pytest.mark.parametrize("depth", sorted(REFERENCE_TABLE))
def test_reference_table_reproduced(depth):
    total, emb, wo_emb, blocks, head, gf_dense, gf_causal = REFERENCE_TABLE[depth]
    spec = var_spec(f"VAR-d{depth}")
    counts = param_counts(spec)
    assert (counts["total"], counts["embeddings"], counts["total_wo_embeddings"], counts["blocks"]) == \
        (total, emb, wo_emb, blocks)
    assert counts["head"] == head
    assert forward_flops(spec, "dense") / 1e9 == pytest.approx(gf_dense, abs=0.006)
    assert forward_flops(spec, "causal") / 1e9 == pytest.approx(gf_causal, abs=0.006)
    _, var = build(spec, device="meta")
    assert sum(p.numel() for p in var.parameters()) == total


def test_depth_rule_and_presets():
    spec = var_spec("VAR-d20")
    assert (spec.width, spec.heads, spec.drop_path_rate, spec.shared_aln) == (1280, 20, pytest.approx(0.1 * 20 / 24), False)
    d36 = var_spec("VAR-d36")
    assert d36.shared_aln and d36.tokenizer.resolution == 512 and d36.L == 2240
    mini = var_spec("VAR-mini-d4")
    assert (mini.width, mini.heads, mini.tokenizer.resolution) == (128, 4, 32)
    assert "VAR-d16" in list_presets() and "VAR-mini-d1" in list_presets()
    with pytest.raises(ValueError, match="VAR-d<depth>"):
        var_spec("VAR-16")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        var_spec("VAR-d4", tokenizer="nope")
    assert block_causal_pairs((1, 2, 3, 4, 5, 6, 8, 10, 13, 16)) == 286_434


@pytest.mark.parametrize("depth", [16, 20, 24, 30])
def test_official_layout_strict_load_on_meta(golden_dir, depth):
    layout = json.loads((golden_dir / "state_dict_layout.json").read_text())
    vae, var = build_vae_var(device="meta", depth=depth)
    for name, model in ((f"var_d{depth}", var), ("vae_ch160v4096z32", vae)):
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert ours == layout[name]
        state = {k: torch.empty(shape, device="meta", dtype=model.state_dict()[k].dtype)
                 for k, shape in layout[name].items()}
        model.load_state_dict(state, strict=True, assign=True)


def small_specs():
    yield var_spec("VAR-mini-d2", tokenizer="mini-f8-32px")
    yield var_spec("VAR-mini-d3", tokenizer="mini-f4-32px", num_classes=7)
    spec = var_spec("VAR-mini-d2", tokenizer=TOKENIZERS["mini-f8-32px"])
    from dataclasses import replace
    yield replace(spec, shared_aln=True, name="saln")


@pytest.mark.parametrize("spec", list(small_specs()), ids=lambda s: f"{s.name}-{s.tokenizer.name}")
def test_flops_agree_with_torch_flop_counter(spec):
    # FlopCounterMode has no formula for the fused CPU attention kernel; the math backend runs the same
    # products as plain bmm calls, which it counts
    with sdpa_kernel(SDPBackend.MATH):
        _check_flops(spec)


def _check_flops(spec):
    torch.manual_seed(0)
    vae, var = build(spec)
    B = 2
    x = torch.randn(B, spec.L - spec.patch_nums[0] ** 2, spec.tokenizer.z_channels)
    labels = torch.tensor([0, 1])
    var.cond_drop_rate = 0.0
    var.block_causal_min_tokens = 1  # every scale its own block: exactly the visible query-key pairs
    with FlopCounterMode(display=False) as counter:
        var(labels, x)
    assert counter.get_total_flops() == pytest.approx(B * forward_flops(spec, "causal"), rel=1e-3)
    var.block_causal_min_tokens = None  # the release's dense masked attention, what the compute axis counts
    with FlopCounterMode(display=False) as counter:
        var(labels, x)
    assert counter.get_total_flops() == pytest.approx(B * forward_flops(spec, "dense"), rel=1e-3)

    var.train()
    with FlopCounterMode(display=False) as counter:
        var(labels, x).logsumexp(-1).mean().backward()
    assert counter.get_total_flops() == pytest.approx(B * train_flops_per_image(spec), rel=1e-3)

    var.eval()
    with FlopCounterMode(display=False) as counter:
        var.sample_scales(B, labels, g_seed=0, cfg=1.5)
    expected = B * (sample_flops_per_image(spec, cfg=True) + phi_flops_per_image(spec.tokenizer))
    assert counter.get_total_flops() == pytest.approx(expected, rel=1e-3)
