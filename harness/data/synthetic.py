"""The embedded synthetic dataset: class-conditional procedural images, no download.

Every image is a pure function of ``(seed, split, index)``, at any resolution. A class fixes a *style*: a palette,
a background pattern (stripes, checkerboard, rings or a gradient) with its frequency and angle, a distribution
over shape kinds, a layout (grid, scatter or centred), a size range, a fine texture inside the shapes and a
small marker at each shape's centre (dot, cross or none). Hues are spaced by the golden angle over the labels, so
no two classes share a colour scheme. A sample draws the free parameters (phase, jitter, positions, which shapes,
texture phase) from its own generator. The result has structure at several scales: the coarse layout and colours
(first VAR scales), shape outlines (middle scales), the fine in-shape texture and the markers, whose place follows
from the coarse content (last scales), so a larger model keeps finding something to predict at the fine scales.

Labels are balanced: ``label = index % num_classes``.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_IDS = {"train": 0, "val": 1}
BACKGROUNDS = ("stripes", "checker", "rings", "gradient")
SHAPES = ("disk", "square", "triangle", "ring")
LAYOUTS = ("grid", "scatter", "centred")
MARKERS = ("dot", "cross", "none")


@dataclass(frozen=True)
class ClassStyle:
    palette: np.ndarray  # (4, 3) colours in [0, 1]: background pair and shape pair
    background: str
    bg_freq: float
    bg_angle: float
    shape_probs: np.ndarray  # over SHAPES
    n_shapes: tuple[int, int]  # inclusive range
    size: tuple[float, float]  # radius range, fraction of the image side
    layout: str
    texture_freq: float  # in-shape stripes, cycles per image side
    texture_amp: float
    marker: str  # one of MARKERS, drawn in the background's dark colour at every shape's centre


def class_style(seed: int, label: int) -> ClassStyle:
    """The fixed style of class ``label``; some choices cycle with the label so that classes differ for sure."""
    rng = np.random.default_rng([seed, 7919, label])
    return ClassStyle(
        palette=_class_palette(rng, label),
        background=BACKGROUNDS[label % len(BACKGROUNDS)],
        bg_freq=float(rng.uniform(1.0, 5.0)),
        bg_angle=float(rng.uniform(0, math.pi)),
        shape_probs=rng.dirichlet(np.full(len(SHAPES), 0.5)),
        n_shapes=(1, int(rng.integers(1, 5))),
        size=(float(rng.uniform(0.08, 0.15)), float(rng.uniform(0.18, 0.3))),
        layout=LAYOUTS[(label // len(BACKGROUNDS)) % len(LAYOUTS)],
        texture_freq=float(rng.uniform(6.0, 14.0)),
        texture_amp=float(rng.uniform(0.1, 0.35)),
        marker=MARKERS[(label // 2) % len(MARKERS)],
    )


def _class_palette(rng: np.random.Generator, label: int) -> np.ndarray:
    """Background pair around the class hue, shape pair around its complement; hues by the golden angle."""
    hue = (0.618034 * label + rng.uniform(-0.03, 0.03)) % 1.0
    rows = []
    for h, (s_lo, s_hi), (v_lo, v_hi) in ((hue, (0.3, 0.6), (0.25, 0.45)), (hue, (0.3, 0.6), (0.65, 0.9)),
                                          (hue + 0.5, (0.6, 0.95), (0.7, 0.95)), (hue + 0.42, (0.6, 0.95),
                                                                                 (0.45, 0.7))):
        rows.append(colorsys.hsv_to_rgb(h % 1.0, rng.uniform(s_lo, s_hi), rng.uniform(v_lo, v_hi)))
    return np.asarray(rows, dtype=np.float64)


def generate_image(seed: int, split: str, index: int, resolution: int, num_classes: int) -> tuple[np.ndarray, int]:
    """Return ``(image_HW3 float32 in [0, 1], label)`` for sample ``index`` of ``split``."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    label = index % num_classes
    style = class_style(seed, label)
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    side = np.linspace(0.5 / resolution, 1 - 0.5 / resolution, resolution, dtype=np.float64)
    v, u = np.meshgrid(side, side, indexing="ij")  # v: rows (y), u: columns (x)
    pixel = 1.0 / resolution

    img = _background(style, rng, u, v)
    for cx, cy, radius in _layout(style, rng):
        kind = SHAPES[rng.choice(len(SHAPES), p=style.shape_probs)]
        colour = np.clip(style.palette[2 + int(rng.integers(0, 2))] + rng.normal(0, 0.04, 3), 0, 1)
        sdf = _shape_sdf(kind, u - cx, v - cy, radius, angle=float(rng.uniform(0, 2 * math.pi)))
        coverage = np.clip(0.5 - sdf / pixel, 0.0, 1.0)[..., None]  # one-pixel anti-aliased edge
        stripes = np.sin(2 * math.pi * style.texture_freq * (u * math.cos(style.bg_angle + 1.0)
                                                             + v * math.sin(style.bg_angle + 1.0))
                         + rng.uniform(0, 2 * math.pi))
        fill = colour * (1 - style.texture_amp * 0.5 * (1 + stripes))[..., None]
        img = img * (1 - coverage) + fill * coverage
        marker = _marker_coverage(style.marker, u - cx, v - cy, pixel)[..., None]
        img = img * (1 - marker) + style.palette[0] * marker
    img = img + rng.normal(0, 0.015, img.shape)
    return np.clip(img, 0, 1).astype(np.float32), label


def _background(style: ClassStyle, rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    freq = style.bg_freq * rng.uniform(0.9, 1.1)
    angle = style.bg_angle + rng.normal(0, 0.1)
    phase = rng.uniform(0, 2 * math.pi)
    along = u * math.cos(angle) + v * math.sin(angle)
    if style.background == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * along + phase)
    elif style.background == "checker":
        across = -u * math.sin(angle) + v * math.cos(angle)
        t = 0.5 + 0.5 * np.tanh(4 * np.sin(2 * math.pi * freq * along + phase)
                                * np.sin(2 * math.pi * freq * across + phase))
    elif style.background == "rings":
        cx, cy = rng.uniform(0.2, 0.8, 2)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * np.hypot(u - cx, v - cy) * 1.5 + phase)
    else:  # gradient
        t = np.clip(along / max(math.cos(angle) + math.sin(angle), 1e-3), 0, 1)
    c0, c1 = style.palette[0], style.palette[1]
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


def _layout(style: ClassStyle, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    lo, hi = style.n_shapes
    count = int(rng.integers(lo, hi + 1))
    radii = rng.uniform(*style.size, size=count)
    if style.layout == "centred":
        offsets = rng.normal(0, 0.05, size=(count, 2))
        return [(0.5 + dx, 0.5 + dy, r * (1 - 0.25 * i)) for i, ((dx, dy), r) in enumerate(zip(offsets, radii))]
    if style.layout == "grid":
        cells = rng.permutation(4)[:count]
        return [(0.25 + 0.5 * (c % 2) + rng.normal(0, 0.03), 0.25 + 0.5 * (c // 2) + rng.normal(0, 0.03),
                 min(r, 0.22)) for c, r in zip(cells, radii)]
    centres = rng.uniform(0.15, 0.85, size=(count, 2))
    return [(float(x), float(y), float(r)) for (x, y), r in zip(centres, radii)]


def _marker_coverage(kind: str, dx: np.ndarray, dy: np.ndarray, pixel: float) -> np.ndarray:
    """Coverage in [0, 1] of a marker a few pixels wide centred at the origin."""
    if kind == "dot":
        return np.clip(1.5 - np.hypot(dx, dy) / pixel, 0.0, 1.0)
    if kind == "cross":
        arm = (np.abs(dx) < 0.6 * pixel) & (np.abs(dy) < 2.5 * pixel) | (np.abs(dy) < 0.6 * pixel) & (
            np.abs(dx) < 2.5 * pixel)
        return arm.astype(np.float64)
    return np.zeros_like(dx)


def _shape_sdf(kind: str, dx: np.ndarray, dy: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Signed distance (negative inside) to a shape centred at the origin."""
    cos, sin = math.cos(angle), math.sin(angle)
    x, y = dx * cos + dy * sin, -dx * sin + dy * cos
    if kind == "disk":
        return np.hypot(x, y) - radius
    if kind == "ring":
        return np.abs(np.hypot(x, y) - 0.7 * radius) - 0.3 * radius
    if kind == "square":
        half = radius * 0.85
        qx, qy = np.abs(x) - half, np.abs(y) - half
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    # triangle: intersection of three half-planes (distance approximated by the max of the plane distances)
    dists = [x * math.cos(a) + y * math.sin(a) - 0.5 * radius for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
    return np.maximum(np.maximum(dists[0], dists[1]), dists[2])


class SyntheticImages:
    """Map-style dataset of ``(image_3HW in [-1, 1], label, 0)``; the 0 counts unreadable files (never any)."""

    def __init__(self, split: str, size: int, resolution: int, num_classes: int, seed: int = 0) -> None:
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
        self.split, self.size, self.resolution, self.num_classes, self.seed = split, size, resolution, num_classes, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        import torch

        index = key[0] if isinstance(key, tuple) else key  # (index, augmentation seed): no augmentation here
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} synthetic images")
        img, label = generate_image(self.seed, self.split, index, self.resolution, self.num_classes)
        tensor = torch.from_numpy(img).permute(2, 0, 1).mul(2).sub(1)
        return tensor.contiguous(), label, 0


def write_imagefolder(out_dir: Path, num_classes: int, train_size: int, val_size: int, resolution: int,
                      seed: int = 0, image_size: int | None = None, progress: bool = False) -> Path:
    """Write the synthetic set as ``out_dir/{train,val}/class_XXX/NNNNNN.png``.

    ``image_size`` defaults to ``round(1.125 * resolution)`` so that the official loader's resize is a no-op and
    its crop sees the whole generated picture minus a margin.
    """
    from tqdm import tqdm

    from harness.sampling.npz import save_png

    out_dir = Path(out_dir)
    image_size = image_size or round(1.125 * resolution)
    total = train_size + val_size
    bar = tqdm(total=total, desc="writing synthetic images", disable=not progress, unit="img")
    for split, size in (("train", train_size), ("val", val_size)):
        for k in range(num_classes):
            (out_dir / split / f"class_{k:03d}").mkdir(parents=True, exist_ok=True)
        for index in range(size):
            img, label = generate_image(seed, split, index, image_size, num_classes)
            path = out_dir / split / f"class_{label:03d}" / f"{index:06d}.png"
            save_png(np.round(img * 255).astype(np.uint8), path)
            bar.update(1)
    bar.close()
    return out_dir
