"""Block-causal attention over VAR's scales without computing the masked-out products.

The queries of a scale see the keys of that scale and of every coarser one, so the queries of one scale attend,
unmasked, to the key prefix that ends with their scale. Scales below `min_tokens` tokens are grouped into one
leading chunk that uses its slice of the dense mask. At the release's 10 scales this skips 38% of the query-key
products of the dense masked attention (and the reads of the L x L mask).

The backward is written out (`_BlockCausalAttention`) rather than left to autograd through per-chunk slices:
slicing the keys and values per chunk makes autograd allocate a zero-filled full-size gradient for every slice
and sum them, which costs as much as the skipped products save. Here each chunk adds its key and value gradients
into one buffer in place. It keeps each chunk's attention probabilities for the backward (62% of a dense L x L
map per head), which is fine on a CPU; on CUDA the dense masked `scaled_dot_product_attention` runs a fused
kernel that keeps none, so VAR uses this path on CPUs only (models/var.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class BlockCausalMask:
    """The chunks of queries that share one key prefix, built from the per-scale token counts."""

    def __init__(self, scale_lengths: list[int], dense_11LL: torch.Tensor, min_tokens: int = 16):
        self.chunks: list[tuple[int, int, torch.Tensor | None]] = []  # (query begin, query end = key end, mask)
        small_begin, small_scales, end = 0, 0, 0
        for n in list(scale_lengths) + [None]:
            if small_scales and (n is None or n >= min_tokens):  # close the group of small scales before it
                mask = dense_11LL[:, :, small_begin:end, :end] if small_scales > 1 else None
                self.chunks.append((small_begin, end, mask))
                small_scales = 0
            if n is None:
                break
            if n >= min_tokens:
                self.chunks.append((end, end + n, None))
            else:
                small_begin, small_scales = (small_begin, small_scales + 1) if small_scales else (end, 1)
            end += n
        self.pairs = sum((end - begin) * end for begin, end, _ in self.chunks)  # query-key products computed

    def attend(self, q_BHLc, k_BHLc, v_BHLc, scale: float, dropout_p: float = 0.0) -> torch.Tensor:
        if dropout_p > 0:  # attention dropout (off in every released config) needs the fused kernel's dropout
            outs = [F.scaled_dot_product_attention(q_BHLc[:, :, begin:end], k_BHLc[:, :, :end], v_BHLc[:, :, :end],
                                                   attn_mask=mask, dropout_p=dropout_p, scale=scale)
                    for begin, end, mask in self.chunks]
            return torch.cat(outs, dim=2)
        return _BlockCausalAttention.apply(q_BHLc, k_BHLc, v_BHLc, scale, self.chunks)


class _BlockCausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_BHLc, k_BHLc, v_BHLc, scale: float, chunks):
        # contiguous once, so that every chunk's key prefix is a strided view that bmm takes without a copy
        q_BHLc, k_BHLc, v_BHLc = q_BHLc.contiguous(), k_BHLc.contiguous(), v_BHLc.contiguous()
        outs, probs = [], []
        for begin, end, mask in chunks:
            scores_BHlk = torch.matmul(q_BHLc[:, :, begin:end], k_BHLc[:, :, :end].transpose(-1, -2))
            if scale != 1.0:
                scores_BHlk.mul_(scale)
            if mask is not None:
                scores_BHlk.add_(mask.to(scores_BHlk.dtype))
            p_BHlk = scores_BHlk.float().softmax(dim=-1).to(q_BHLc.dtype)
            outs.append(torch.matmul(p_BHlk, v_BHLc[:, :, :end]))
            probs.append(p_BHlk)
        ctx.save_for_backward(q_BHLc, k_BHLc, v_BHLc, *probs)
        ctx.scale, ctx.chunks = scale, chunks
        return torch.cat(outs, dim=2)

    @staticmethod
    def backward(ctx, grad_out_BHLc):
        q_BHLc, k_BHLc, v_BHLc, *probs = ctx.saved_tensors
        grad_out_BHLc = grad_out_BHLc.contiguous()
        grad_qs, grad_k, grad_v = [], torch.zeros_like(k_BHLc), torch.zeros_like(v_BHLc)
        for (begin, end, _), p_BHlk in zip(ctx.chunks, probs):
            g_BHlc = grad_out_BHLc[:, :, begin:end]
            grad_v[:, :, :end] += torch.matmul(p_BHlk.transpose(-1, -2), g_BHlc)
            grad_p_BHlk = torch.matmul(g_BHlc, v_BHLc[:, :, :end].transpose(-1, -2))
            # softmax backward: p * (dp - sum(dp * p)), then the scale of the scores
            grad_s_BHlk = grad_p_BHlk.sub_((grad_p_BHlk * p_BHlk).sum(dim=-1, keepdim=True)).mul_(p_BHlk)
            if ctx.scale != 1.0:
                grad_s_BHlk.mul_(ctx.scale)
            grad_qs.append(torch.matmul(grad_s_BHlk, k_BHLc[:, :, :end]))
            grad_k[:, :, :end] += torch.matmul(grad_s_BHlk.transpose(-1, -2), q_BHLc[:, :, begin:end])
        return torch.cat(grad_qs, dim=2), grad_k, grad_v, None, None
