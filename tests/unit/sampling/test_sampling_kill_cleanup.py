"""A merge killed while writing leaves a temporary file; the next merge removes it and writes the outputs 0644."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
from harness_helpers import subprocess_env

from harness.sampling.loop import SampleDir, SamplingProtocol, protocol_header
from harness.sampling.merge import merge


def test_killed_merge_leaves_nothing_after_the_next_one(tmp_path):
    out = SampleDir(tmp_path / "samples.npz")
    protocol = SamplingProtocol(num_classes=4, per_class=1000, batch_size=50)  # 80 batches, ~50 MB to merge
    out.claim(protocol_header(protocol, {"name": "none", "sha256": "0" * 64}))
    rng = np.random.default_rng(0)
    for b in range(protocol.num_batches):
        out.write_batch(b, rng.integers(0, 256, size=(50, 64, 64, 3), dtype=np.uint8))
    code = f"from harness.sampling.loop import SampleDir; from harness.sampling.merge import merge; " \
           f"merge(SampleDir({str(out.npz)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=subprocess_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".samples.npz.*.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline, "the merge ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert list(tmp_path.glob(".samples.npz.*.tmp")) and not out.npz.exists()

    merge(out)
    assert not list(tmp_path.glob(".*.tmp"))
    assert out.npz.stat().st_mode & 0o777 == 0o644 and out.sidecar.stat().st_mode & 0o777 == 0o644
    assert np.load(out.npz)["arr_0"].shape == (4000, 64, 64, 3)
