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


def sample_ids_top_k_top_p(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                           rng: torch.Generator | None = None) -> torch.Tensor:
    """One id per position (B, l), the same draw as `sample_with_top_k_top_p_(..., num_samples=1)`.

    With top-k set, only the k largest logits can be drawn, so top-p, the softmax and the final choice run on
    those k values (sorted once by `topk`) instead of sorting and renormalising the whole vocabulary. The random
    numbers are consumed as `torch.multinomial` consumes them for one sample (one exponential per vocabulary
    entry, row-major, the id being the argmax of probs / noise), so a seed gives the same ids. Does not modify
    `logits_BlV`. Falls back to the full filter when there is nothing to select partially (top-k off or >= V) or
    when logits tie with the k-th largest value (the official filter keeps such ties).
    """
    B, l, V = logits_BlV.shape
    logits_NV = logits_BlV.reshape(B * l, V)
    if 0 < top_k < V:
        top_NK, top_idx_NK = logits_NV.topk(top_k, dim=-1, largest=True, sorted=True)
        if int((logits_NV >= top_NK[:, -1:]).sum(dim=-1).max()) == top_k:
            return _draw_among_top_k(top_NK, top_idx_NK, top_p, rng, V).view(B, l)
    return sample_with_top_k_top_p_(logits_NV.clone().view(B, l, V), top_k, top_p, rng, 1)[:, :, 0]


def _draw_among_top_k(top_NK: torch.Tensor, top_idx_NK: torch.Tensor, top_p: float, rng, V: int) -> torch.Tensor:
    if top_p > 0:  # ascending order, as the full filter's cumulative sum runs (the dropped tokens add zeros)
        ascending_NK = top_NK.flip(-1)
        remove_NK = ascending_NK.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove_NK[:, -1] = False  # the most likely token always survives
        top_NK = ascending_NK.masked_fill_(remove_NK, -torch.inf).flip(-1)
    probs_NK = top_NK.softmax(dim=-1)
    best_N1 = (probs_NK / exponential_noise_at(top_idx_NK, V, rng, probs_NK.dtype)).argmax(dim=-1, keepdim=True)
    return top_idx_NK.gather(1, best_N1)


def exponential_noise_at(idx_NK: torch.Tensor, V: int, rng: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    """The values at `idx_NK` of `torch.empty(N, V, dtype=dtype).exponential_(generator=rng)`, advancing `rng` as
    that call does.

    On a CPU generator, PyTorch draws each exponential as -log1p(-u) of one double-precision uniform u, serially,
    then rounds it to `dtype`; `torch.rand(..., dtype=float64)` consumes the generator identically, so the same u
    come out at a third of the cost, and the logarithm is needed only at the k kept positions of each row. Whether
    this equality holds is checked once per process and dtype on a private generator (`_cpu_stream_matches`), and
    the plain `exponential_` is used where it does not (other devices or PyTorch versions).
    """
    N = idx_NK.shape[0]
    generator_device = rng.device if rng is not None else torch.device("cpu")
    if idx_NK.device.type == "cpu" and generator_device.type == "cpu" and _cpu_stream_matches(dtype):
        # rows in blocks of at most 8 MiB of uniforms: the stream is row-major, so blocks consume it as one draw
        # would, and a block stays below glibc's mmap threshold (no fresh pages to fault in per scale)
        rows = max(1, (1 << 20) // V)
        u_NK = torch.cat([torch.rand(min(rows, N - begin), V, generator=rng, dtype=torch.float64)
                          .gather(1, idx_NK[begin:begin + rows]) for begin in range(0, N, rows)])
        return u_NK.neg_().log1p_().neg_().to(dtype)
    noise_NV = torch.empty(N, V, device=idx_NK.device, dtype=dtype).exponential_(generator=rng)
    return noise_NV.gather(1, idx_NK)


_STREAM_CHECKED: dict[torch.dtype, bool] = {}


def _cpu_stream_matches(dtype: torch.dtype) -> bool:
    if dtype not in _STREAM_CHECKED:
        exact = torch.empty(64, 4096, dtype=dtype).exponential_(generator=torch.Generator().manual_seed(1234))
        uniform = torch.rand(64, 4096, dtype=torch.float64, generator=torch.Generator().manual_seed(1234))
        _STREAM_CHECKED[dtype] = torch.equal(uniform.neg().log1p().neg().to(dtype), exact)
    return _STREAM_CHECKED[dtype]
