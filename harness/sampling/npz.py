"""Image batches on disk: the ADM ``.npz`` sample/reference format and folders of PNG/JPEG files.

ADM format (openai/guided-diffusion ``evaluations/evaluator.py``): ``arr_0`` uint8 (N, H, W, 3) NHWC, optional
``arr_1`` int labels, and for reference batches optional precomputed statistics ``mu``/``sigma`` (pool_3) and
``mu_s``/``sigma_s`` (spatial). A 50k x 256 x 256 x 3 batch is 9.8 GB, so ``arr_0`` is streamed from the zip
member in row chunks (read and write), never loaded whole.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from models.files import atomic_target, sha256_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


class SampleFormatError(ValueError):
    """An input batch that is not in the expected format; the message names the file and what was expected."""


@dataclass
class ImageSource:
    """A set of uint8 NHWC images to score, with whatever else the file carried."""
    path: Path
    kind: str                          # "npz" or "folder"
    num_images: int
    height: int = 0
    width: int = 0
    labels: np.ndarray | None = None
    stats: dict[str, np.ndarray] = field(default_factory=dict)   # mu, sigma, mu_s, sigma_s when stored
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)              # folder inputs only

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        if self.kind == "npz":
            yield from _iter_npz_rows(self.path, "arr_0", batch_size)
        else:
            for start in range(0, len(self.files), batch_size):
                yield np.stack([_read_image(p) for p in self.files[start:start + batch_size]])

    def read_all(self) -> np.ndarray:
        return np.concatenate(list(self.iter_batches(1024)))


# ---------------------------------------------------------------------------------------------------------- npz

def _member_name(zf: zipfile.ZipFile, key: str) -> str | None:
    name = key + ".npy"
    return name if name in zf.namelist() else None


def _read_header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


def _npz_array_info(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype] | None:
    with zipfile.ZipFile(path) as zf:
        name = _member_name(zf, key)
        if name is None:
            return None
        with zf.open(name) as fp:
            shape, fortran, dtype = _read_header(fp)
    if fortran and len(shape) > 1:
        raise SampleFormatError(f"{path}: '{key}' is stored in Fortran order; save it C-contiguous")
    return shape, dtype


def _iter_npz_rows(path: Path, key: str, batch_size: int) -> Iterator[np.ndarray]:
    with zipfile.ZipFile(path) as zf, zf.open(_member_name(zf, key)) as fp:
        shape, _, dtype = _read_header(fp)
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        for start in range(0, shape[0], batch_size):
            count = min(batch_size, shape[0] - start)
            buf = fp.read(count * row_bytes)
            if len(buf) != count * row_bytes:
                raise SampleFormatError(f"{path}: '{key}' is truncated at row {start} of {shape[0]}")
            yield np.frombuffer(buf, dtype=dtype).reshape((count,) + tuple(shape[1:]))


def _load_small(path: Path, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data[key])


def _check_images_header(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if len(shape) != 4:
        raise SampleFormatError(f"{path}: 'arr_0' has shape {shape}; expected (N, H, W, 3) uint8 NHWC")
    if shape[-1] != 3:
        if shape[1] == 3:
            raise SampleFormatError(f"{path}: 'arr_0' has shape {shape}, which looks like NCHW; expected NHWC "
                                    f"(N, H, W, 3): store arr.transpose(0, 2, 3, 1)")
        raise SampleFormatError(f"{path}: 'arr_0' has shape {shape}; expected 3 RGB channels last (N, H, W, 3)")
    if dtype != np.uint8:
        raise SampleFormatError(f"{path}: 'arr_0' has dtype {dtype}; expected uint8 in [0, 255] "
                                f"(convert [0, 1] floats with floor(x * 255 + 0.5) clipped to [0, 255])")


def open_npz(path: str | os.PathLike) -> ImageSource:
    """Validate an ADM-format ``.npz`` without loading its images; statistics and labels are read."""
    path = Path(path)
    if not path.is_file():
        raise SampleFormatError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise SampleFormatError(f"{path}: not an .npz (zip) archive; expected the ADM format with 'arr_0'")
    with zipfile.ZipFile(path) as zf:
        keys = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
    info = _npz_array_info(path, "arr_0")
    if info is None and "mu" not in keys:
        raise SampleFormatError(f"{path}: has no 'arr_0' (images) and no 'mu'/'sigma' statistics; keys found: {keys}")
    source = ImageSource(path=path, kind="npz", num_images=0)
    if info is not None:
        shape, dtype = info
        _check_images_header(path, shape, dtype)
        source.num_images, source.height, source.width = shape[0], shape[1], shape[2]
    if "arr_1" in keys and info is not None:
        labels = _load_small(path, "arr_1")
        if labels.shape != (source.num_images,) or not np.issubdtype(labels.dtype, np.integer):
            raise SampleFormatError(f"{path}: 'arr_1' has shape {labels.shape} dtype {labels.dtype}; expected "
                                    f"({source.num_images},) integer class labels")
        source.labels = labels.astype(np.int64)
    for key in STAT_KEYS:
        if key in keys:
            source.stats[key] = _load_small(path, key).astype(np.float64)
    if "mu" in source.stats and "sigma" not in source.stats:
        raise SampleFormatError(f"{path}: has 'mu' but no 'sigma'")
    return source


def write_npz(path: str | os.PathLike,
              arrays: dict[str, np.ndarray | tuple[tuple[int, ...], np.dtype, Iterable]]) -> Path:
    """Write an uncompressed ``.npz`` atomically (temp file + ``os.replace``); ``np.load`` reads it as usual.

    A value is either an array or ``(shape, dtype, chunks)``, where ``chunks`` yields C-ordered row blocks whose
    concatenation has that shape: this streams a 10 GB ``arr_0`` through bounded memory.
    """
    path = Path(path)
    with atomic_target(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                                                     allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as out:
                if isinstance(value, tuple):
                    _write_streamed(out, path, key, *value)
                else:
                    np.lib.format.write_array(out, np.ascontiguousarray(value), allow_pickle=False)
    return path


def _write_streamed(out, path: Path, key: str, shape, dtype, chunks: Iterable) -> None:
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_2_0(out, header)
    rows = 0
    for chunk in chunks:
        chunk = np.ascontiguousarray(chunk, dtype=dtype)
        if chunk.shape[1:] != tuple(shape[1:]):
            raise ValueError(f"{path}: chunk of '{key}' has shape {chunk.shape}; expected rows of {shape[1:]}")
        out.write(chunk.tobytes())
        rows += len(chunk)
    if rows != shape[0]:
        raise ValueError(f"{path}: '{key}' got {rows} rows; expected {shape[0]}")


# ------------------------------------------------------------------------------------------------------ folders

def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def open_image_folder(path: str | os.PathLike) -> ImageSource:
    """All PNG/JPEG files under ``path`` (recursive, sorted by relative path); they must share one size."""
    from PIL import Image

    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise SampleFormatError(f"{path}: no {'/'.join(IMAGE_EXTENSIONS)} files in this folder")
    with Image.open(files[0]) as first:
        width, height = first.size
    for f in files[1:]:
        with Image.open(f) as img:
            if img.size != (width, height):
                raise SampleFormatError(f"{f}: size {img.size[0]}x{img.size[1]} differs from {files[0].name}'s "
                                        f"{width}x{height}; every image of a batch must have the same size")
    source = ImageSource(path=path, kind="folder", num_images=len(files), height=height, width=width, files=files)
    if any(f.suffix.lower() != ".png" for f in files):
        source.warnings.append(f"{path}: contains JPEG files; lossy compression shifts FID (the protocol saves PNG)")
    return source


def write_png_folder(folder: str | os.PathLike, images_NHWC: np.ndarray, first_index: int = 0) -> None:
    """``{index:06d}.png``, so that sorted file order equals row order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for offset, image in enumerate(images_NHWC):
        save_png(image, folder / f"{first_index + offset:06d}.png")


def save_png(image_HWC: np.ndarray, target: Path) -> None:
    """One uint8 RGB image as a PNG, written atomically (a reader never opens half a file)."""
    from PIL import Image

    with atomic_target(target) as tmp:
        Image.fromarray(image_HWC).save(tmp, format="PNG")


def open_images(path: str | os.PathLike) -> ImageSource:
    path = Path(path)
    if path.is_dir():
        return open_image_folder(path)
    return open_npz(path)


# -------------------------------------------------------------------------------------------------- hashing

def sha256_source(source: ImageSource) -> str:
    """The file's sha256, or for a folder the sha256 over (relative name, file sha256) of every image."""
    if source.kind == "npz":
        return sha256_file(source.path)
    digest = hashlib.sha256()
    for f in source.files:
        digest.update(f"{f.relative_to(source.path).as_posix()}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()
