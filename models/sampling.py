"""Token sampling helpers with the official semantics (and the same consumption of random numbers)."""
from __future__ import annotations

import torch


def filter_top_k_top_p_(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """In place: top-k first (ties with the k-th value are kept), then top-p on what is left."""
    V = logits_BlV.shape[-1]
    if top_k > V:
        raise ValueError(f"top_k={top_k} is larger than the vocabulary size {V}; use top_k <= {V} (0 disables it)")
    if top_k > 0:
        kth_largest = logits_BlV.topk(top_k, largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
        logits_BlV.masked_fill_(logits_BlV < kth_largest, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits_BlV.sort(dim=-1, descending=False)
        remove_sorted = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove_sorted[..., -1:] = False  # the most likely token always survives
        remove = torch.zeros_like(remove_sorted).scatter_(-1, sorted_idx, remove_sorted)
        logits_BlV.masked_fill_(remove, -torch.inf)
    return logits_BlV


def sample_with_top_k_top_p_(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                             rng: torch.Generator | None = None, num_samples: int = 1) -> torch.Tensor:
    """Filter in place, then draw `num_samples` ids per position: returns (B, l, num_samples)."""
    B, l, V = logits_BlV.shape
    filter_top_k_top_p_(logits_BlV, top_k, top_p)
    probs_NV = logits_BlV.softmax(dim=-1).view(-1, V)
    ids = torch.multinomial(probs_NV, num_samples=abs(num_samples), replacement=num_samples >= 0, generator=rng)
    return ids.view(B, l, abs(num_samples))


def gumbel_softmax_with_rng(logits: torch.Tensor, tau: float, rng: torch.Generator | None, dim: int = -1):
    """Soft Gumbel-softmax whose noise comes from `rng` (the global generator when None)."""
    gumbels = -torch.empty_like(logits, memory_format=torch.legacy_contiguous_format).exponential_(generator=rng).log()
    return ((logits + gumbels) / tau).softmax(dim)
