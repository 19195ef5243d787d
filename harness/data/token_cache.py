"""Token cache: a dataset encoded once by a frozen tokenizer, read back as token ids by the trainer.

Layout of a cache directory::

    header.json          format, the data config, the tokenizer {path, sha256, kwargs}, patch_nums, L, dtype,
                         per-split counts, and the view that was encoded
    train_tokens.npy     (N, L) token ids of all scales concatenated (uint16 when the vocabulary allows)
    train_labels.npy     (N,) int64
    val_tokens.npy, val_labels.npy

The .npy files are opened memory-mapped. The header is written last, so a directory without one is an
interrupted encode and is rejected. The cache holds ONE view per image: the validation transform (centre crop)
for both splits, so training from a cache has no random-crop augmentation; the header says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.config import ConfigError, DataConfig, TokenizerRef, load_json, to_dict
from models.files import atomic_target, save_json, utc_now_iso

FORMAT = "varscale-token-cache/1"
VIEW = "centre crop of round(1.125*reso) Lanczos resize (the val transform) for both splits; no augmentation"


def _token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


@torch.no_grad()
def encode_dataset(vae, tokenizer: TokenizerRef, data_cfg: DataConfig, out_dir: Path, batch_size: int = 64,
                   device: str | torch.device = "cpu", progress: bool = False) -> Path:
    """Encode the train and val splits of ``data_cfg`` into ``out_dir`` (see the module docstring)."""
    from harness.data.images import ImageFolderData, build_image_datasets

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "header.json").exists():
        raise ConfigError(f"{out_dir} already holds a token cache (header.json); choose another --out")
    source_cfg = DataConfig(**{**to_dict(data_cfg), "token_cache": None})
    train, val = build_image_datasets(source_cfg)
    if isinstance(train, ImageFolderData):  # one deterministic view: the val transform
        train.train = False
    patch_nums = list(vae.patch_nums)
    L = sum(pn * pn for pn in patch_nums)
    dtype = _token_dtype(vae.vocab_size)
    splits: dict[str, Any] = {}
    unreadable_total = 0
    for split, dataset in (("train", train), ("val", val)):
        with (atomic_target(out_dir / f"{split}_tokens.npy") as tok_tmp,
              atomic_target(out_dir / f"{split}_labels.npy") as lab_tmp):
            unreadable_total += _encode_split(vae, dataset, tok_tmp, lab_tmp, dtype, L, batch_size, data_cfg.workers,
                                              device, progress, split)
        splits[split] = {"count": len(dataset), "tokens": f"{split}_tokens.npy", "labels": f"{split}_labels.npy"}
    header = {
        "format": FORMAT, "data": to_dict(source_cfg), "tokenizer": to_dict(tokenizer), "patch_nums": patch_nums,
        "L": L, "vocab_size": vae.vocab_size, "dtype": np.dtype(dtype).name, "view": VIEW, "splits": splits,
        "unreadable_images": unreadable_total,
        "created": utc_now_iso(),
    }
    save_json(out_dir / "header.json", header)
    return out_dir


def _encode_split(vae, dataset, tok_tmp: Path, lab_tmp: Path, dtype, L: int, batch_size: int, workers: int, device,
                  progress: bool, split: str) -> int:
    """Token ids and labels of one split into two .npy files (the atomic writer's temporaries); returns the count
    of unreadable images."""
    from tqdm import tqdm

    from harness.data.images import collate

    n = len(dataset)
    unreadable_total = 0
    tokens = np.lib.format.open_memmap(tok_tmp, mode="w+", dtype=dtype, shape=(n, L))
    labels = np.lib.format.open_memmap(lab_tmp, mode="w+", dtype=np.int64, shape=(n,))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=collate)
    start = 0
    for img, label, unreadable in tqdm(loader, desc=f"tokenizing {split}", disable=not progress, unit="batch"):
        idx_BL = torch.cat(vae.img_to_idxBl(img.to(device)), dim=1).cpu().numpy()
        tokens[start:start + len(label)] = idx_BL.astype(dtype)
        labels[start:start + len(label)] = label.numpy()
        start += len(label)
        unreadable_total += unreadable
    tokens.flush()
    labels.flush()
    del tokens, labels
    return unreadable_total


def read_header(cache_dir: Path) -> dict[str, Any]:
    cache_dir = Path(cache_dir)
    if not (cache_dir / "header.json").is_file():
        raise ConfigError(f"{cache_dir}: not a complete token cache (no header.json; was the encode interrupted?)")
    header = load_json(cache_dir / "header.json")
    if header.get("format") != FORMAT:
        raise ConfigError(f"{cache_dir}/header.json: format {header.get('format')!r}, expected {FORMAT!r}")
    return header


def check_compatible(header: dict[str, Any], cache_dir: Path, tokenizer: TokenizerRef, data_cfg: DataConfig,
                     patch_nums) -> None:
    """The cache must come from the same tokenizer file and the same data config as the run."""
    if header["tokenizer"]["sha256"] != tokenizer.sha256:
        raise ConfigError(f"token cache {cache_dir} was made with tokenizer sha256 {header['tokenizer']['sha256']}, "
                          f"but this run uses {tokenizer.sha256} ({tokenizer.path})")
    if list(header["patch_nums"]) != list(patch_nums):
        raise ConfigError(f"token cache {cache_dir} has patch_nums {header['patch_nums']}, the run {list(patch_nums)}")
    mine = {**to_dict(data_cfg), "token_cache": None, "workers": None}
    theirs = {**header["data"], "token_cache": None, "workers": None}
    diff = sorted(k for k in mine if mine[k] != theirs.get(k))
    if diff:
        raise ConfigError(f"token cache {cache_dir} was made from another data config: data.{diff[0]} is "
                          f"{theirs.get(diff[0])!r} there and {mine[diff[0]]!r} here")


class TokenCacheData:
    """Map-style dataset over one split of a cache: ``(token_ids_L int64, label, 0)``."""

    def __init__(self, cache_dir: Path, split: str) -> None:
        self.cache_dir, self.split = Path(cache_dir), split
        self.header = read_header(self.cache_dir)
        if split not in self.header["splits"]:
            raise ConfigError(f"token cache {cache_dir} has no split {split!r}")
        info = self.header["splits"][split]
        self._tokens_path, self._labels_path = self.cache_dir / info["tokens"], self.cache_dir / info["labels"]
        self._tokens = self._labels = None  # opened lazily: memory maps do not survive pickling to workers
        self.size = int(info["count"])

    def _open(self) -> None:
        self._tokens = np.load(self._tokens_path, mmap_mode="r")
        self._labels = np.load(self._labels_path, mmap_mode="r")

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        if self._tokens is None:
            self._open()
        ids = torch.from_numpy(self._tokens[index].astype(np.int64))
        return ids, int(self._labels[index]), 0

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tokens"] = state["_labels"] = None
        return state
