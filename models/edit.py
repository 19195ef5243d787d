"""Zero-shot editing masks: which token positions keep the given image's tokens while VAR samples the rest.

VAR was never trained for editing; the paper's in-painting, out-painting and class-conditional editing (section 6,
the release's `demo_zero_shot_edit.ipynb`) come from one change to sampling: at every scale, positions the mask
marks keep the tokens of the image being edited and only the other positions take the sampled tokens. The mask
lives on the last (finest) token grid; each scale reads it resized bilinearly (align_corners False) and
thresholded at 0.5, and the coarsest scales (at most 3 tokens) always keep the given tokens, as the release does,
so global colour and layout come from the image.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# scales with at most this many tokens keep every given token whatever the mask says (the release's rule)
ALWAYS_KEEP_MAX_TOKENS = 3


def check_box(box: Sequence[float]) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) as fractions of the image side; raises ValueError naming the problem."""
    if len(box) != 4:
        raise ValueError(f"a box is 4 fractions y0,x0,y1,x1; got {len(box)} values {list(box)}")
    y0, x0, y1, x1 = (float(v) for v in box)
    if not all(0.0 <= v <= 1.0 for v in (y0, x0, y1, x1)):
        raise ValueError(f"box {y0:g},{x0:g},{y1:g},{x1:g} must lie in [0, 1] (fractions of the image side)")
    if not (y0 < y1 and x0 < x1):
        raise ValueError(f"box {y0:g},{x0:g},{y1:g},{x1:g} is empty: need y0 < y1 and x0 < x1")
    return y0, x0, y1, x1


def box_edit_mask(patch_nums: Sequence[int], box: Sequence[float], inpainting: bool = True,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The (pn, pn) keep-mask on the finest token grid for a box: 1 keeps the given token, 0 samples a new one.

    In-painting regenerates the box and keeps the rest; out-painting keeps the box and regenerates the rest.
    Box edges snap to the grid with Python's round (half to even), as the release does.
    """
    y0, x0, y1, x1 = check_box(box)
    pn = patch_nums[-1]
    inside_hw = torch.zeros(pn, pn, device=device)
    inside_hw[round(y0 * pn):round(y1 * pn), round(x0 * pn):round(x1 * pn)] = 1
    return 1 - inside_hw if inpainting else inside_hw


def keep_mask_at_scale(edit_mask: torch.Tensor, B: int, pn: int) -> torch.Tensor:
    """The keep-mask (B, 1, pn, pn) of 0/1 for one scale from a (h, w) or (B, h, w) mask."""
    if edit_mask.ndim == 2:
        edit_mask = edit_mask.unsqueeze(0).expand(B, *edit_mask.shape)
    if edit_mask.ndim != 3 or edit_mask.shape[0] != B:
        raise ValueError(f"edit_mask must be (h, w) or ({B}, h, w); got {tuple(edit_mask.shape)}")
    if pn * pn <= ALWAYS_KEEP_MAX_TOKENS:
        return edit_mask.new_ones(B, 1, pn, pn, dtype=torch.float32)
    resized = F.interpolate(edit_mask.unsqueeze(1).float(), size=(pn, pn), mode="bilinear", align_corners=False)
    return resized.gt(0.5).float()


def keep_given_tokens(edit_mask: torch.Tensor, sampled_BChw: torch.Tensor, given_BChw: torch.Tensor) -> torch.Tensor:
    """Mix one scale's code maps: the given image's codes where the mask keeps them, the sampled codes elsewhere."""
    B, _, h, w = sampled_BChw.shape
    if h != w:
        raise ValueError(f"token maps are square; got {h}x{w}")
    keep_B1hw = keep_mask_at_scale(edit_mask.to(sampled_BChw.device), B, h)
    return given_BChw * keep_B1hw + sampled_BChw * (1 - keep_B1hw)
