"""varscale sample --submit slurm on the real local SLURM cluster: one array task per shard, same bytes."""
from __future__ import annotations

import numpy as np
import pytest
from sampling_kit import make_tiny_run

from harness.cli.main import main

pytestmark = pytest.mark.slurm

ARGS = ["--per-class", "2", "--batch-size", "4", "--top-k", "50", "--device", "cpu"]


def test_slurm_array_shards_give_the_one_shard_bytes(tmp_path):
    run = make_tiny_run(tmp_path)
    one = tmp_path / "one.npz"
    assert main(["sample", "--run", str(run), "--out", str(one), *ARGS]) == 0
    out = tmp_path / "slurm.npz"
    assert main(["sample", "--run", str(run), "--out", str(out), *ARGS, "--submit", "slurm", "--num-shards", "2",
                 "--wait", "--cpus-per-task", "1", "--timeout-min", "10"]) == 0
    with np.load(out) as sharded, np.load(one) as single:
        for key in ("arr_0", "arr_1", "sample_index"):
            np.testing.assert_array_equal(sharded[key], single[key])
    assert len(list((tmp_path / "slurm.npz.jobs").glob("*_log.out"))) == 2
