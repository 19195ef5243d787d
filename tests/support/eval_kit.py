"""Shared evaluation test material: one random Inception weights file per test session (writing it calibrates
the network, which takes seconds to a minute on a loaded 2-core machine; several test modules use it)."""
from __future__ import annotations

from pathlib import Path

_made: dict[str, Path] = {}


def random_inception_weights(tmp_path_factory) -> Path:
    from harness.evaluation import inception

    if "weights" not in _made:
        folder = tmp_path_factory.getbasetemp() / "eval-kit-inception"
        folder.mkdir(exist_ok=True)
        _made["weights"] = inception.write_random_inception_weights(folder / inception.WEIGHTS_FILENAME)
    return _made["weights"]
