"""``varscale sample``: the class-balanced 50k-sample protocol, deterministic, sharded and resumable.

* Labels: sample ``i`` of ``N`` has class ``sorted(arange(N) % C)[i]``: ``N / C`` per class (50 x 1000 by default).
* Batches: batch ``b`` holds samples ``[b B, (b + 1) B)``; its ``g_seed`` depends only on the master seed and
  ``b`` (``SeedSequence(master_seed, spawn_key=(0, b))``), so every batch draws fresh noise (reusing one seed
  for all batches correlates them, VAR#69) and the output does not depend on how batches are spread over
  shards. The batch size is part of the protocol: the same seed with another B gives other samples.
* Shards: shard ``s`` of ``n`` makes the batches with ``b % n == s``. Each batch is written atomically to
  ``PARTS/batch_{b:06d}.npy``; a rerun skips the batches already there, so a killed shard redoes only its
  missing batches.
* Merge: rows are stored in a random permutation (``SeedSequence(master_seed, spawn_key=(1,))``) so that no run
  of consecutive rows is class-sorted (consecutive-split IS breaks on sorted files, guided-diffusion#165);
  ``arr_1`` holds the labels in row order and ``sample_index`` the permutation itself. A JSON sidecar holds
  the whole protocol.
* Rounding: see ``ROUNDING_RULES``; "round" is the default.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROUNDING_RULES = {
    "round": "uint8 = floor(clamp(x * 255 + 0.5, 0, 255)) for x in [0, 1]: round half up, as torchvision's "
             "save_image -> PIL PNG path; DiT's clamp(127.5 x + 128) on [-1, 1] is the same rule",
    "trunc": "uint8 = floor(clamp(x * 255, 0, 255)): truncation, as VAR's demo notebook and DDO's VAR_sample.py",
}
VAR_PROTOCOL = {"cfg": 1.5, "top_k": 900, "top_p": 0.96, "more_smooth": False}   # VAR README's FID settings


class SamplingError(RuntimeError):
    pass


@dataclass
class SamplingProtocol:
    """Everything that decides the bytes of the output (the model identity is added by the caller)."""
    num_classes: int
    per_class: int = 50
    num_samples: int | None = None     # default per_class x num_classes
    batch_size: int = 50
    cfg: float = VAR_PROTOCOL["cfg"]   # ramped linearly over scales inside autoregressive_infer_cfg
    top_k: int = VAR_PROTOCOL["top_k"]
    top_p: float = VAR_PROTOCOL["top_p"]
    more_smooth: bool = VAR_PROTOCOL["more_smooth"]
    master_seed: int = 0
    rounding: str = "round"
    precision: str = "fp32"            # fp32 | bf16 | fp16 (autocast, CUDA only)
    device_type: str = "cpu"           # the generator's device type: CPU and CUDA draw different numbers
    cpu_threads: int = 1               # on CPU the decoder's sums depend on the thread count: pinned, so that
                                       # shards, jobs and a one-process run give the same bytes

    def __post_init__(self) -> None:
        if self.num_samples is None:
            self.num_samples = self.per_class * self.num_classes
        if self.rounding not in ROUNDING_RULES:
            raise SamplingError(f"rounding {self.rounding!r} unknown; expected one of {', '.join(ROUNDING_RULES)}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise SamplingError(f"precision {self.precision!r} unknown; expected fp32, bf16 or fp16")
        for name in ("num_classes", "num_samples", "batch_size", "cpu_threads"):
            if getattr(self, name) <= 0:
                raise SamplingError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def num_batches(self) -> int:
        return -(-self.num_samples // self.batch_size)


def class_labels(num_samples: int, num_classes: int) -> np.ndarray:
    return np.sort(np.arange(num_samples, dtype=np.int64) % num_classes)


def batch_seed(master_seed: int, batch_index: int) -> int:
    state = np.random.SeedSequence(master_seed, spawn_key=(0, batch_index)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1     # 63 bits: fits torch.Generator.manual_seed


def row_permutation(master_seed: int, num_samples: int) -> np.ndarray:
    return np.random.default_rng(np.random.SeedSequence(master_seed, spawn_key=(1,))).permutation(num_samples)


def to_uint8(images_B3HW, rounding: str = "round") -> np.ndarray:
    """[0, 1] float images (B, 3, H, W) -> uint8 NHWC with the given rule."""
    import torch

    x = images_B3HW.detach().float().mul(255)
    if rounding == "round":
        x = x.add_(0.5)
    return x.clamp_(0, 255).floor_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class SampleDir:
    """``PATH.npz`` (merged), ``PATH.npz.json`` (sidecar), ``PATH.npz.parts/`` (batches + protocol.json)."""

    def __init__(self, npz_path: str | os.PathLike):
        self.npz = Path(npz_path)
        if self.npz.suffix != ".npz":
            raise SamplingError(f"output {self.npz} must end in .npz")
        self.parts = self.npz.with_name(self.npz.name + ".parts")
        self.sidecar = self.npz.with_name(self.npz.name + ".json")
        self.png = self.npz.with_name(self.npz.stem + "_png")

    def batch_path(self, b: int) -> Path:
        return self.parts / f"batch_{b:06d}.npy"

    def done(self, num_batches: int) -> set[int]:
        return {b for b in range(num_batches) if self.batch_path(b).is_file()}

    def write_batch(self, b: int, images_NHWC: np.ndarray) -> None:
        from models.files import atomic_target

        with atomic_target(self.batch_path(b)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, images_NHWC)

    def claim(self, header: dict) -> None:
        """Write ``protocol.json`` or check that an existing one is the same protocol (resume safety)."""
        from harness.config import first_difference
        from models.files import save_json

        header = json.loads(json.dumps(header))   # as it will read back (tuples become lists)
        self.parts.mkdir(parents=True, exist_ok=True)
        path = self.parts / "protocol.json"
        if path.is_file():
            existing = json.loads(path.read_text())
            if _identity(existing) != _identity(header):
                diff = first_difference(_identity(existing), _identity(header))
                raise SamplingError(f"{self.parts} holds batches of another protocol ({diff}); use another --out "
                                    f"or delete that folder")
            return
        save_json(path, header)

    def header(self) -> dict:
        path = self.parts / "protocol.json"
        if not path.is_file():
            raise SamplingError(f"{path} not found: nothing was sampled into {self.npz} yet")
        return json.loads(path.read_text())


def _identity(node):
    """The header without file locations: shards may see the same checkpoint under another mount point; the
    sha256 of every file still has to match."""
    if isinstance(node, dict):
        return {k: _identity(v) for k, v in node.items() if k not in ("path", "run_dir")}
    return node


def protocol_header(protocol: SamplingProtocol, model: dict) -> dict:
    return {"format": "varscale-samples/1", "protocol": dataclasses.asdict(protocol), "model": model}


Generate = Callable[[int, np.ndarray, int], "object"]   # (B, labels_B, g_seed) -> [0, 1] images (B, 3, H, W)


def run_shard(out: SampleDir, protocol: SamplingProtocol, generate: Generate, shard: int = 0,
              num_shards: int = 1) -> list[int]:
    """Make this shard's missing batches; returns the batch indices made now. One process per shard (a lock);
    the temporary files a killed run of this shard left are removed first."""
    from models.files import exclusive_lock

    if not 0 <= shard < num_shards:
        raise SamplingError(f"shard {shard} is not in [0, {num_shards})")
    out.parts.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out.parts / f".shard-{shard}-of-{num_shards}.lock",
                        f"sample output {out.npz} (shard {shard} of {num_shards})"):
        return _run_shard_locked(out, protocol, generate, shard, num_shards)


def _run_shard_locked(out: SampleDir, protocol: SamplingProtocol, generate: Generate, shard: int,
                      num_shards: int) -> list[int]:
    from tqdm import tqdm

    from models.files import remove_stale_temps
    labels = class_labels(protocol.num_samples, protocol.num_classes)
    mine = [b for b in range(protocol.num_batches) if b % num_shards == shard]
    todo = [b for b in mine if b not in out.done(protocol.num_batches)]
    for b in todo:  # only this shard's batches: another shard may be writing its own right now
        remove_stale_temps(out.parts, out.batch_path(b).name)
    made = []
    for b in tqdm(todo, desc=f"sampling shard {shard}/{num_shards}", unit="batch", disable=None):
        rows = slice(b * protocol.batch_size, min((b + 1) * protocol.batch_size, protocol.num_samples))
        images = generate(rows.stop - rows.start, labels[rows], batch_seed(protocol.master_seed, b))
        out.write_batch(b, to_uint8(images, protocol.rounding))
        made.append(b)
    return made
