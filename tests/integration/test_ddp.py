"""Two CPU processes with gloo (env:// as torchrun sets it) agree with one process on the same global batch."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest
import torch
from harness_helpers import (
    VARSCALE,
    make_tokenizer,
    records,
    subprocess_env,
    tiny_run_config,
    write_run,
)

from harness.training.loop import train_run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_two_gloo_processes_match_one_process(tmp_path, compiled):
    """With `compile: true` the two ranks compile the forward and the loss around the DDP-wrapped model, and the
    records still match one eager process."""
    torch.set_num_threads(1)
    tokenizer = make_tokenizer(tmp_path / "tokenizer.safetensors")
    # randomness that depends on the rank layout (cond-drop, drop-path) is off so the runs must agree
    config = tiny_run_config(tokenizer, model_preset="VAR-mini-d2", total_steps=6, eval_every=3,
                             checkpoint_every_steps=3, cond_drop_rate=0.0, drop_path_rate=0.0)
    single = write_run(tmp_path / "single", config)
    double = write_run(tmp_path / "double", {**config, "compile": compiled})
    train_run(single)

    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = subprocess_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                             MASTER_PORT=port)
        procs.append(subprocess.Popen([*VARSCALE, "train", "--run-dir", str(double)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=180))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("the 2-process run did not finish within 180 s")
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err

    config_written = json.loads((double / "config.json").read_text())
    assert config_written["protocol"]["world_size"] == 2
    one, two = records(single), records(double)
    assert [(r["split"], r["step"]) for r in two] == [(r["split"], r["step"]) for r in one]
    assert len(two) == 4  # rank 1 wrote nothing of its own
    for a, b in zip(one, two):
        assert b["images_seen"] == a["images_seen"] and b["tokens_seen"] == a["tokens_seen"]
        assert b["loss_mean"] == pytest.approx(a["loss_mean"], rel=2e-5, abs=1e-6)
        assert b["loss_per_scale"] == pytest.approx(a["loss_per_scale"], rel=2e-5, abs=1e-6)
        assert b["err_per_scale"] == pytest.approx(a["err_per_scale"], abs=1e-9)
    state = torch.load(double / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2  # every rank's RNG state is kept
    assert not torch.equal(state["rng"][0]["torch_cpu"], state["rng"][1]["torch_cpu"])
