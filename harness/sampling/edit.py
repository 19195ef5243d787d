"""Zero-shot editing of one image with a VAR (the model side of ``varscale edit``; the rule is in models/edit.py).

A *region* (a box in fractions of the image side, or a mask image: white = the region) is marked on the finest
token grid. ``inpaint`` and ``class`` regenerate the region and keep the rest (``class`` conditions on a class,
``inpaint`` on the null class); ``outpaint`` keeps the region and regenerates the rest with the null class.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from harness.sampling.loop import SamplingError, to_uint8

MODES = ("inpaint", "outpaint", "class")
OVERLAY_RGB = np.array([255, 0, 0], dtype=np.float32)   # the regenerated area is tinted red in the overlay


class EditError(SamplingError):
    """A bad edit input (image, mask, box, class); the message is one line naming the value."""


def open_image(path: str | Path, what: str = "image"):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise EditError(f"{what} {path} not found")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise EditError(f"{what} {path} is not an image PIL can read ({type(exc).__name__})") from None


def prepare_image(image, resolution: int) -> torch.Tensor:
    """(1, 3, res, res) in [-1, 1]. A file or PIL image goes through the release's validation preprocessing
    (shorter side to 1.125x with Lanczos, centre crop); a (3, res, res) tensor in [-1, 1] is taken as is."""
    from harness.data.images import preprocess

    if isinstance(image, torch.Tensor):
        if tuple(image.shape) != (3, resolution, resolution):
            raise EditError(f"image tensor must be (3, {resolution}, {resolution}) in [-1, 1]; got {tuple(image.shape)}")
        return image.float().unsqueeze(0)
    if isinstance(image, (str, Path)):
        image = open_image(image)
    return preprocess(image, resolution, crop_seed=None).unsqueeze(0)


def region_from_box(box: Sequence[float], patch_nums: Sequence[int]) -> torch.Tensor:
    """(pn, pn) 0/1 on the finest token grid: 1 inside the box (the release's rounding of the edges)."""
    from models.edit import box_edit_mask

    try:
        return box_edit_mask(patch_nums, box, inpainting=False)
    except ValueError as exc:
        raise EditError(f"--box: {exc}") from None


def region_from_mask_image(path: str | Path, image_size: tuple[int, int], resolution: int, pn: int) -> torch.Tensor:
    """(pn, pn) 0/1: a token is in the region when over half of its pixels are white (>= 50% grey) in the mask,
    after the mask went through the same resize and crop as the image."""
    import torch.nn.functional as F

    from harness.data.images import preprocess

    mask = open_image(path, "mask")
    if mask.size != image_size:
        raise EditError(f"mask {path} is {mask.size[0]}x{mask.size[1]} pixels but the image is "
                        f"{image_size[0]}x{image_size[1]}; give a mask of the image's size")
    white_11HW = preprocess(mask.convert("L"), resolution, crop_seed=None)[:1].add(1).div(2).unsqueeze(0)
    covered_hw = F.interpolate(white_11HW.clamp(0, 1), size=(pn, pn), mode="area")[0, 0]
    return covered_hw.gt(0.5).float()


def keep_mask_for(region_hw: torch.Tensor, mode: str) -> torch.Tensor:
    """The keep-mask the model takes (1 = keep the image's token); refuses an edit that changes nothing."""
    if mode not in MODES:
        raise EditError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
    keep_hw = region_hw if mode == "outpaint" else 1 - region_hw
    if bool(keep_hw.bool().all()):
        pn = region_hw.shape[-1]
        if mode == "outpaint":
            raise EditError(f"the region covers the whole {pn}x{pn} token grid, so out-painting has nothing to "
                            f"generate; make the box or mask smaller")
        raise EditError(f"the region covers no token of the {pn}x{pn} token grid, so nothing would be generated; "
                        f"make the box or mask larger")
    return keep_hw


def edit_label(mode: str, class_id: int | None, num_classes: int) -> int:
    if mode != "class":
        if class_id is not None:
            raise EditError(f"--class is only for --mode class; {mode} uses the unconditional class")
        return num_classes
    if class_id is None:
        raise EditError("--mode class needs --class N (the class to edit towards)")
    if not 0 <= class_id < num_classes:
        raise EditError(f"--class {class_id} is out of range: this model has classes 0..{num_classes - 1}")
    return class_id


def run_edit(var, image_13HW: torch.Tensor, keep_hw: torch.Tensor, label: int, count: int, seed: int,
             cfg: float, top_k: int, top_p: float, more_smooth: bool, cpu_threads: int = 1) -> torch.Tensor:
    """``count`` edits of one image, (count, 3, H, W) in [0, 1]; one seeded call, as the release's notebook."""
    if top_k > var.V:
        raise EditError(f"top_k={top_k} exceeds the vocabulary size {var.V} of this model; pass --top-k {var.V} "
                        f"or smaller (0 disables top-k)")
    if count < 1:
        raise EditError(f"--count must be at least 1; got {count}")
    device = var.lvl_1L.device
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads)   # the decoder's float sums depend on the thread count
    try:
        with torch.no_grad():
            vae = var.vae_proxy[0]
            tokens = [ids.expand(count, -1) for ids in vae.img_to_idxBl(image_13HW.to(device))]
            return var.autoregressive_infer_cfg_with_mask(
                count, torch.full((count,), label, device=device), g_seed=seed, cfg=cfg, top_k=top_k, top_p=top_p,
                more_smooth=more_smooth, input_img_tokens=tokens, edit_mask=keep_hw.to(device)).float()
    finally:
        torch.set_num_threads(threads)


def reconstruct(var, image_13HW: torch.Tensor) -> torch.Tensor:
    """The tokenizer's reconstruction in [0, 1]: what keeping every token would give (the kept area's look)."""
    vae = var.vae_proxy[0]
    with torch.no_grad():
        return vae.img_to_reconstructed_img(image_13HW.to(var.lvl_1L.device), last_one=True).add(1).div(2)


def edit_grid(image_13HW: torch.Tensor, keep_hw: torch.Tensor, recon_13HW: torch.Tensor, results_B3HW: torch.Tensor,
              captions: Sequence[str]):
    """One row: the input, the input with the regenerated area tinted, its reconstruction, then every result."""
    from harness.sampling.grid import labelled_grid

    input_HWC = to_uint8(image_13HW.add(1).div(2).cpu())[0]
    side = input_HWC.shape[0]
    scale = side // keep_hw.shape[-1]
    generated_HW1 = (1 - keep_hw.cpu().numpy()).repeat(scale, 0).repeat(scale, 1)[..., None]
    overlay = input_HWC * (1 - 0.5 * generated_HW1) + OVERLAY_RGB * 0.5 * generated_HW1
    tiles = [input_HWC, np.floor(overlay + 0.5).astype(np.uint8), to_uint8(recon_13HW.cpu())[0],
             *to_uint8(results_B3HW.cpu())]
    return labelled_grid([tiles], column_captions=["input", "region", "tokenized", *captions])


def write_inpaint_example(out_png: str | Path, image, run_dir: str | Path | None = None, var=None,
                          box: Sequence[float] = (0.25, 0.25, 0.75, 0.75), count: int = 4, seed: int = 0,
                          cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0) -> Path:
    """In-paint a box of one image with a trained run (or a loaded ``var``) and write the grid PNG.

    ``image``: a file path, a PIL image, or a (3, res, res) tensor in [-1, 1] such as a held-out sample of the
    run's data set. Returns the PNG path; deterministic for a seed on CPU.
    """
    from harness.sampling.grid import save_png
    from harness.sampling.load import load_run_model

    if var is None:
        if run_dir is None:
            raise EditError("write_inpaint_example needs run_dir or var")
        var, _ = load_run_model(run_dir, "cpu")
    vae = var.vae_proxy[0]
    image_13HW = prepare_image(image, vae.resolution)
    keep_hw = keep_mask_for(region_from_box(box, var.patch_nums), "inpaint")
    results = run_edit(var, image_13HW, keep_hw, var.num_classes, count, seed, cfg, top_k, top_p, False)
    grid = edit_grid(image_13HW, keep_hw, reconstruct(var, image_13HW), results, [f"#{i}" for i in range(count)])
    return save_png(grid, out_png)
