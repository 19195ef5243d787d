"""Labelled PNG grids for looking at samples and edits (``varscale show``, ``varscale edit``).

Tiles smaller than ``MIN_TILE`` pixels (the CPU-sized 32 px models) are enlarged with nearest-neighbour so that
every pixel stays visible and the captions fit; the grid never resamples larger images.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MIN_TILE = 96
GAP = 4
CAPTION_H = 16
LABEL_W = 72
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def _tile(image_HWC: np.ndarray, size: int):
    from PIL import Image

    tile = Image.fromarray(image_HWC)
    return tile if tile.width == size else tile.resize((size, size), Image.Resampling.NEAREST)


def labelled_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] | None = None,
                  column_captions: Sequence[str] | None = None):
    """A PIL image: rows of uint8 HWC tiles (all the same square size), optional labels left and captions above."""
    from PIL import Image, ImageDraw, ImageFont

    side = rows[0][0].shape[0]
    if any(t.shape[:2] != (side, side) for row in rows for t in row):
        raise ValueError("grid tiles must all be square images of the same size")
    size = max(side, MIN_TILE)
    ncols = max(len(row) for row in rows)
    left = LABEL_W if row_labels else 0
    top = CAPTION_H if column_captions else 0
    width = left + ncols * size + (ncols + 1) * GAP
    height = top + len(rows) * size + (len(rows) + 1) * GAP
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for c, caption in enumerate(column_captions or []):
        draw.text((left + GAP + c * (size + GAP), 2), caption, fill=INK, font=font)
    for r, row in enumerate(rows):
        y = top + GAP + r * (size + GAP)
        if row_labels:
            draw.text((GAP, y + size // 2 - 6), row_labels[r], fill=INK, font=font)
        for c, image in enumerate(row):
            grid.paste(_tile(image, size), (left + GAP + c * (size + GAP), y))
    return grid


def save_png(image, path: str | Path) -> Path:
    """Write a PIL image as PNG through the project's atomic writer (same pixels give the same bytes)."""
    from models.files import atomic_write_bytes

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
