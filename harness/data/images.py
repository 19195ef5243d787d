"""Image data: an ImageNet-style folder with the official preprocessing, the synthetic set, and a resumable order.

Official preprocessing (docs/references.md §2.4): the shorter side is resized to ``round(1.125 * reso)`` with Lanczos,
then a random crop (train) or a centre crop (val) of ``reso``; values mapped to [-1, 1]; no flip.

Every sample is a tuple ``(image_3HW, label, n_unreadable)``. An unreadable file is reported by path (a warning)
and replaced by the next readable file of the split, and ``n_unreadable`` counts how many were skipped to produce
this sample, so the trainer can total them in its records instead of dropping them silently.

The order of training samples is a pure function of ``(seed, step)`` (``GlobalBatchSampler``): resuming at a step
continues the same sequence, and each rank reads its own slice of every global batch, so N processes see exactly
the images one process would. Random crops are seeded per sample from the same key, not from a global RNG.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from harness.config import DataConfig

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class DatasetError(ValueError):
    """A missing, empty or inconsistent dataset; the message names the directory and the expected layout."""


def list_image_folder(split_dir: Path, class_names: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """Files of ``split_dir/<class>/*`` with labels in sorted class-folder order (the torchvision rule)."""
    layout = "expected <root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG"
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: dataset directory not found ({layout})")
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{split_dir}: no class sub-folders ({layout})")
    if class_names is None:
        class_names = folders
    else:
        extra = sorted(set(folders) - set(class_names))
        if extra:
            raise DatasetError(f"{split_dir}: class folders {extra[:5]} do not exist in the train split")
    index_of = {name: i for i, name in enumerate(class_names)}
    samples = []
    for name in folders:
        with os.scandir(split_dir / name) as entries:  # scandir: no stat per file (1.28M files for ImageNet)
            files = sorted(e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                           and e.is_file())
        samples.extend((split_dir / name / f, index_of[name]) for f in files)
    if not samples:
        raise DatasetError(f"{split_dir}: no images with extensions {', '.join(IMAGE_EXTENSIONS)} ({layout})")
    return samples, class_names


def preprocess(img, resolution: int, crop_seed: int | None) -> torch.Tensor:
    """PIL image -> (3, reso, reso) in [-1, 1]; ``crop_seed=None`` means the centre crop (val)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    img = TF.resize(img.convert("RGB"), round(1.125 * resolution), interpolation=InterpolationMode.LANCZOS)
    width, height = img.size
    if crop_seed is None:
        img = TF.center_crop(img, [resolution, resolution])
    else:
        rng = np.random.default_rng(crop_seed)
        top = int(rng.integers(0, height - resolution + 1))
        left = int(rng.integers(0, width - resolution + 1))
        img = TF.crop(img, top, left, resolution, resolution)
    return TF.to_tensor(img).mul_(2).sub_(1)


class ImageFolderData:
    """``root/<split>/<class>/*`` as a map-style dataset; keys are an index or ``(index, crop_seed)``."""

    def __init__(self, root: Path, split: str, resolution: int, train: bool,
                 class_names: list[str] | None = None) -> None:
        self.root, self.split, self.resolution, self.train = Path(root), split, resolution, train
        self.samples, self.class_names = list_image_folder(self.root / split, class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        from PIL import Image, UnidentifiedImageError

        index, crop_seed = key if isinstance(key, tuple) else (key, None)
        if not self.train:
            crop_seed = None
        elif crop_seed is None:
            crop_seed = index
        for skipped in range(len(self.samples)):
            path, label = self.samples[(index + skipped) % len(self.samples)]
            try:
                with Image.open(path) as img:
                    return preprocess(img, self.resolution, crop_seed), label, skipped
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
                warnings.warn(f"unreadable image {path}: {exc}; using the next file instead", stacklevel=2)
        raise DatasetError(f"{self.root / self.split}: no image of the split could be read")


def check_image_folder(root: Path) -> dict:
    """Open every image of ``root/{train,val}``; return counts and the unreadable paths (``varscale data check``)."""
    from PIL import Image

    report = {"root": str(root), "splits": {}}
    class_names = None
    for split in ("train", "val"):
        samples, class_names = list_image_folder(Path(root) / split, class_names)
        bad = []
        for path, _ in samples:
            try:
                with Image.open(path) as img:
                    img.load()
            except Exception as exc:  # noqa: BLE001 - every failure is a finding here
                bad.append(f"{path}: {exc}")
        report["splits"][split] = {"images": len(samples), "classes": len(class_names), "unreadable": bad}
    return report


def build_image_datasets(cfg: DataConfig):
    """(train, val) image datasets for a data config; num_classes of an image folder must match the config."""
    from harness.data.synthetic import SyntheticImages

    if cfg.source == "synthetic":
        return (SyntheticImages("train", cfg.synthetic_train_size, cfg.resolution, cfg.num_classes, cfg.synthetic_seed),
                SyntheticImages("val", cfg.synthetic_val_size, cfg.resolution, cfg.num_classes, cfg.synthetic_seed))
    train = ImageFolderData(Path(cfg.root), "train", cfg.resolution, train=True)
    val = ImageFolderData(Path(cfg.root), "val", cfg.resolution, train=False, class_names=train.class_names)
    if train.num_classes != cfg.num_classes:
        raise DatasetError(f"{cfg.root}/train has {train.num_classes} class folders but data.num_classes is "
                           f"{cfg.num_classes}; set data.num_classes={train.num_classes}")
    return train, val


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.default_rng([seed, epoch, index]).integers(0, 2**62))


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's micro-batches of keys ``(index, crop_seed)`` from ``start_step`` on, forever.

    Global batch ``step`` is the slice ``[step*B, (step+1)*B)`` of the concatenated per-epoch permutations
    (epoch e uses ``randperm(N)`` seeded with ``(seed, e)``; an incomplete tail is dropped). Rank r takes its
    ``B / world`` consecutive entries of it, cut into ``grad_accum`` micro-batches.
    """

    def __init__(self, dataset_size: int, global_batch: int, grad_accum: int, rank: int, world_size: int,
                 seed: int, start_step: int = 0) -> None:
        if global_batch % (world_size * grad_accum):
            raise ValueError(f"batch_size {global_batch} must be divisible by world_size*grad_accum "
                             f"({world_size}*{grad_accum})")
        if dataset_size < global_batch:
            raise DatasetError(f"the training split has {dataset_size} images, fewer than one batch ({global_batch})")
        self.n, self.B, self.accum = dataset_size, global_batch, grad_accum
        self.rank, self.world, self.seed, self.start_step = rank, world_size, seed, start_step
        self.steps_per_epoch = dataset_size // global_batch
        self._perm_epoch, self._perm = -1, None

    def global_batch_indices(self, step: int) -> list[int]:
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, epoch]).integers(0, 2**62)))
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=gen).tolist(), epoch
        return self._perm[within * self.B:(within + 1) * self.B]

    def rank_micro_batches(self, step: int) -> list[list[tuple[int, int]]]:
        epoch = step // self.steps_per_epoch
        per_rank = self.B // self.world
        mine = self.global_batch_indices(step)[self.rank * per_rank:(self.rank + 1) * per_rank]
        keys = [(i, sample_seed(self.seed, epoch, i)) for i in mine]
        micro = per_rank // self.accum
        return [keys[k * micro:(k + 1) * micro] for k in range(self.accum)]

    def __iter__(self):
        step = self.start_step
        while True:
            yield from self.rank_micro_batches(step)
            step += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs this for its own bookkeeping
        return 2**62


def collate(batch):
    images_or_tokens = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    unreadable = sum(int(b[2]) for b in batch)
    return images_or_tokens, labels, unreadable
