"""The fast sampling and attention paths give what the release's slow ones give (ids and randomness exactly)."""
from __future__ import annotations

import pytest
import torch

import models.sampling as sampling_module
from models import VQVAE
from models.sampling import _cpu_stream_matches, exponential_noise_at, sample_ids_top_k_top_p, sample_with_top_k_top_p_
from models.block_attention import BlockCausalMask
from models.var_blocks import SelfAttention

PATCH_NUMS_10 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def draw_both(logits_BlV: torch.Tensor, top_k: int, top_p: float, seed: int):
    fast_rng, slow_rng = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    untouched = logits_BlV.clone()
    fast = sample_ids_top_k_top_p(logits_BlV, top_k, top_p, rng=fast_rng)
    assert torch.equal(logits_BlV, untouched), "the fast sampler must not filter its input in place"
    slow = sample_with_top_k_top_p_(logits_BlV.clone(), top_k, top_p, rng=slow_rng, num_samples=1)[:, :, 0]
    return fast, slow, torch.rand(8, generator=fast_rng), torch.rand(8, generator=slow_rng)


@pytest.mark.parametrize("top_k, top_p", [(900, 0.96), (900, 0.0), (50, 0.5), (4095, 0.9), (0, 0.96), (0, 0.0)])
def test_partial_top_k_top_p_draws_the_same_ids_and_randomness(top_k, top_p):
    # peaked logits (scale 4) so that top-p actually removes tokens among the top k
    logits_BlV = torch.randn(3, 64, 4096, generator=torch.Generator().manual_seed(top_k)) * 4
    fast, slow, fast_after, slow_after = draw_both(logits_BlV, top_k, top_p, seed=7)
    assert torch.equal(fast, slow)
    assert torch.equal(fast_after, slow_after), "a different amount of randomness was consumed"
    if top_p:  # the case is informative: top-p removed something within the top k
        probs = logits_BlV.softmax(-1).sort(-1, descending=True).values.cumsum(-1)
        assert (probs[..., : (top_k or 4096) - 1] > top_p).any()


def test_ties_with_the_kth_logit_are_kept_like_the_release():
    logits_BlV = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(3))
    logits_BlV[0, 0, :10] = 5.0  # ten equal maxima, top-k 4: the release keeps all ten
    fast, slow, fast_after, slow_after = draw_both(logits_BlV, top_k=4, top_p=0.0, seed=1)
    assert torch.equal(fast, slow) and torch.equal(fast_after, slow_after)


def test_block_causal_mask_covers_every_query_once_with_the_release_mask():
    scale_of_token = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(PATCH_NUMS_10)])
    L = scale_of_token.numel()
    dense = torch.where(scale_of_token[:, None] >= scale_of_token[None, :], 0.0, -torch.inf).view(1, 1, L, L)
    for min_tokens in (1, 64, 10_000):
        chunks = BlockCausalMask([pn * pn for pn in PATCH_NUMS_10], dense, min_tokens).chunks
        assert [b for b, _, _ in chunks] == [0] + [e for _, e, _ in chunks[:-1]] and chunks[-1][1] == L
        for begin, end, mask in chunks:
            # an unmasked block may only be used where every key up to `end` is visible to every query
            expected = dense[:, :, begin:end, :end]
            assert torch.equal(mask if mask is not None else torch.zeros_like(expected), expected)
            assert (dense[:, :, begin:end, end:] == -torch.inf).all()
    assert len(BlockCausalMask([pn * pn for pn in PATCH_NUMS_10], dense, 64).chunks) == 5


def test_block_causal_attention_gradients_equal_the_dense_ones():
    torch.manual_seed(0)
    patch_nums = (1, 2, 3, 4, 6)
    scale_of_token = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(patch_nums)])
    L = scale_of_token.numel()
    dense = torch.where(scale_of_token[:, None] >= scale_of_token[None, :], 0.0, -torch.inf).view(1, 1, L, L)
    attn = SelfAttention(32, 4, attn_l2_norm=True)
    with torch.no_grad():
        attn.q_bias.normal_()
    x = torch.randn(2, L, 32, requires_grad=True)
    results = []
    for bias in (dense, BlockCausalMask([pn * pn for pn in patch_nums], dense, min_tokens=9)):
        x.grad = None
        attn.zero_grad()
        out = attn(x, bias)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), x.grad.clone(), attn.mat_qkv.weight.grad.clone()))
    for dense_t, block_t in zip(*results):
        torch.testing.assert_close(block_t, dense_t, atol=1e-5, rtol=1e-5)


def test_preallocated_kv_cache_keeps_one_buffer_and_refuses_overflow():
    attn = SelfAttention(16, 2).eval()
    attn.kv_caching(True, max_len=5)
    with torch.no_grad():
        attn(torch.randn(2, 1, 16), None)
        first = attn.cached_k_BHLc.data_ptr()
        attn(torch.randn(2, 4, 16), None)
        assert attn.cached_k_BHLc.data_ptr() == first and attn.cached_len == 5
        with pytest.raises(ValueError, match="KV cache of length 5"):
            attn(torch.randn(2, 1, 16), None)
    attn.kv_caching(False)
    assert attn.cached_k_BHLc is None and attn.cached_len == 0


def test_cpu_exponential_noise_is_the_exponential_draw_at_the_kept_positions():
    # 600 rows of 4096: more than one block of uniforms, so the blocks must consume the stream as one draw does
    assert _cpu_stream_matches(torch.float32), "the fast path is off on this PyTorch; the test would prove nothing"
    idx_NK = torch.randint(0, 4096, (600, 900), generator=torch.Generator().manual_seed(0))
    fast_rng, slow_rng = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    fast = exponential_noise_at(idx_NK, 4096, fast_rng, torch.float32)
    slow = torch.empty(600, 4096).exponential_(generator=slow_rng).gather(1, idx_NK)
    assert torch.equal(fast, slow)
    assert torch.equal(torch.rand(8, generator=fast_rng), torch.rand(8, generator=slow_rng))


def test_exponential_noise_falls_back_to_exponential_where_the_stream_differs(monkeypatch):
    monkeypatch.setitem(sampling_module._STREAM_CHECKED, torch.float32, False)
    idx_NK = torch.randint(0, 64, (5, 7), generator=torch.Generator().manual_seed(1))
    noise = exponential_noise_at(idx_NK, 64, torch.Generator().manual_seed(2), torch.float32)
    expected = torch.empty(5, 64).exponential_(generator=torch.Generator().manual_seed(2)).gather(1, idx_NK)
    assert torch.equal(noise, expected)


def test_cpu_channels_last_decode_equals_the_contiguous_decode():
    torch.manual_seed(0)
    vae = VQVAE(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2), test_mode=True, v_patch_nums=(1, 2, 4)).eval()
    f_hat = torch.randn(3, 8, 4, 4)
    with torch.no_grad():
        channels_last = vae.fhat_to_img(f_hat)
    contiguous = vae.fhat_to_img(f_hat).detach()  # with autograd on, the contiguous path
    assert channels_last.is_contiguous() and channels_last.shape == contiguous.shape
    torch.testing.assert_close(channels_last, contiguous, atol=1e-5, rtol=1e-5)


def test_cpu_training_keeps_dense_attention_when_the_block_probabilities_exceed_the_budget(monkeypatch):
    import models.var as var_module
    from models.registry import TOKENIZERS, build, var_spec

    spec = var_spec("VAR-mini-d2", tokenizer=TOKENIZERS["mini-f8-32px"])
    _, var = build(spec)
    var.block_causal_min_tokens = 16
    x = torch.randn(2, spec.L - 1, spec.tokenizer.z_channels)
    labels = torch.tensor([0, 1])
    used = []
    monkeypatch.setattr(BlockCausalMask, "attend", lambda self, *a, **k: used.append(1) or torch.zeros_like(a[0]))
    var(labels, x).sum().backward()
    assert used, "within the budget, training uses the blocks"
    used.clear()
    monkeypatch.setattr(var_module, "BLOCK_PROBABILITIES_BUDGET_BYTES", 0)
    var(labels, x).sum().backward()
    assert not used, "past the budget, training must use the dense kernel"
    with torch.no_grad():
        var(labels, x)
    assert used, "without autograd nothing is kept, so the blocks are used whatever the budget"


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("block", ["resnet", "resnet with shortcut conv", "attention"])
def test_residual_sums_without_grad_give_the_same_bits_and_layout_and_leave_the_input_alone(block, layout):
    # the layout matters as much as the bits: the next convolution's rounding depends on it (an in-place sum into
    # AttnBlock's channels-last projection once changed a contiguous encoder's output at 1e-6)
    from models.vae_blocks import AttnBlock, ResnetBlock

    torch.manual_seed(0)
    module = {"resnet": lambda: ResnetBlock(32, 32), "resnet with shortcut conv": lambda: ResnetBlock(32, 64),
              "attention": lambda: AttnBlock(32)}[block]().eval()
    x_BCHW = torch.randn(2, 32, 8, 8).contiguous(memory_format=layout)
    kept = x_BCHW.clone()
    with torch.enable_grad():
        expected = module(x_BCHW).detach()
    with torch.no_grad():
        got = module(x_BCHW)
    assert torch.equal(got, expected) and got.stride() == expected.stride()
    assert torch.equal(x_BCHW, kept)


@pytest.mark.parametrize("side", ["decoder", "encoder"])
def test_vqvae_without_grad_equals_its_steps_done_out_of_place(side):
    # both ends run their last SiLU in place without grad
    import torch.nn.functional as F

    torch.manual_seed(0)
    vae = VQVAE(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2), test_mode=True, v_patch_nums=(1, 2, 4)).eval()
    net = getattr(vae, side)
    x_BCHW = torch.randn(2, 8, 4, 4) if side == "decoder" else torch.randn(2, 3, 16, 16)
    kept = x_BCHW.clone()
    with torch.no_grad():
        got = net(x_BCHW)
        if side == "decoder":
            h = net.mid(net.conv_in(x_BCHW))
            for level in reversed(net.up):
                h = level(h)
        else:
            h = net.conv_in(x_BCHW)
            for level in net.down:
                h = level(h)
            h = net.mid(h)
        expected = net.conv_out(F.silu(net.norm_out(h)))
    assert torch.equal(got, expected) and torch.equal(x_BCHW, kept)
