"""Assemble the batches of ``varscale sample`` into the ADM ``.npz`` (rows permuted) and its JSON sidecar."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.sampling.loop import (
    ROUNDING_RULES,
    SampleDir,
    SamplingError,
    SamplingProtocol,
    batch_seed,
    class_labels,
    row_permutation,
)
from harness.sampling.npz import write_npz, write_png_folder
from models.files import (
    exclusive_lock,
    remove_stale_temps,
    save_json,
    sha256_file,
    utc_now_iso,
)


def merge(out: SampleDir, png: bool = False, rows_per_chunk: int = 1024) -> Path:
    """Write ``out.npz`` from the batch files; every batch must be present. Memory: one chunk of rows (the batch
    files are memory-mapped), so 50k x 256 x 256 x 3 never sits in RAM at once. One merge at a time per output
    (a lock); the temporary files of a merge that was killed are removed first."""
    header = out.header()
    with exclusive_lock(out.parts / ".merge.lock", f"sample output {out.npz} (another merge)"):
        for name in (out.npz.name, out.sidecar.name):
            remove_stale_temps(out.npz.parent, name)
        return _merge_locked(out, header, png, rows_per_chunk)


def _merge_locked(out: SampleDir, header: dict, png: bool, rows_per_chunk: int) -> Path:
    from tqdm import tqdm

    protocol = SamplingProtocol(**header["protocol"])
    missing = sorted(set(range(protocol.num_batches)) - out.done(protocol.num_batches))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise SamplingError(f"{out.parts}: {len(missing)} of {protocol.num_batches} batches missing ({shown}); "
                            f"run the sampling shards again (they redo only missing batches)")
    batches = [np.load(out.batch_path(b), mmap_mode="r") for b in range(protocol.num_batches)]
    n, bs = protocol.num_samples, protocol.batch_size
    shape = (n,) + batches[0].shape[1:]
    for b, arr in enumerate(batches):
        expected = min(bs, n - b * bs)
        if arr.shape != (expected,) + shape[1:] or arr.dtype != np.uint8:
            raise SamplingError(f"{out.batch_path(b)}: shape {arr.shape} {arr.dtype}; expected "
                                f"{(expected,) + shape[1:]} uint8")
    perm = row_permutation(protocol.master_seed, n)
    labels = class_labels(n, protocol.num_classes)

    def rows():
        with tqdm(total=n, desc="merging", unit="img", disable=None) as bar:
            for start in range(0, n, rows_per_chunk):
                index = perm[start:start + rows_per_chunk]
                chunk = np.stack([batches[i // bs][i % bs] for i in index])
                if png:
                    write_png_folder(out.png, chunk, first_index=start)
                bar.update(len(chunk))
                yield chunk

    write_npz(out.npz, {"arr_0": (shape, np.uint8, rows()), "arr_1": labels[perm], "sample_index": perm})
    _write_sidecar(out, header, protocol, perm, png)
    return out.npz


def _write_sidecar(out: SampleDir, header: dict, protocol: SamplingProtocol, perm: np.ndarray, png: bool) -> None:
    from harness.evaluation.evaluate import library_versions

    counts = np.bincount(class_labels(protocol.num_samples, protocol.num_classes), minlength=protocol.num_classes)
    save_json(out.sidecar, {
        "format": "varscale-samples/1",
        "file": str(out.npz.resolve()),
        "sha256": sha256_file(out.npz),
        "num_samples": protocol.num_samples,
        "image_shape": list(np.load(out.batch_path(0), mmap_mode="r").shape[1:]),
        "model": header["model"],
        "protocol": header["protocol"],
        "labels": {"rule": "sample i has class sorted(arange(N) % num_classes)[i] (class-balanced)",
                   "per_class_min": int(counts.min()), "per_class_max": int(counts.max())},
        "seeds": {"master_seed": protocol.master_seed,
                  "batch_seed_rule": "g_seed of batch b = SeedSequence(master_seed, spawn_key=(0, b)) -> 63 bits",
                  "first_batch_seeds": [batch_seed(protocol.master_seed, b)
                                        for b in range(min(4, protocol.num_batches))],
                  "row_permutation_rule": "np.random.default_rng(SeedSequence(master_seed, spawn_key=(1,)))"
                                          ".permutation(N); row r holds sample sample_index[r]"},
        "rounding": {"rule": protocol.rounding, "definition": ROUNDING_RULES[protocol.rounding]},
        "keys": {"arr_0": "uint8 (N, H, W, 3) NHWC, rows permuted", "arr_1": "int64 class label of each row",
                 "sample_index": "int64: the sample number (batch = index // batch_size) of each row"},
        "png_folder": str(out.png.resolve()) if png else None,
        "versions": library_versions(),
        "created": utc_now_iso(),
    })
