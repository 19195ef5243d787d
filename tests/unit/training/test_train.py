"""VAR training runs: loss falls, per-scale records, export, resume after a kill, control requests, NaN stop."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import time

import pytest
import torch
from harness_helpers import (
    VARSCALE,
    learning_fields,
    records,
    subprocess_env,
    tiny_run_config,
    write_run,
)

from harness.training.checkpointer import Checkpointer
from harness.training.control import TrainControl
from harness.training.loop import ResumeRefused, train_run
from harness.training.step import NonFiniteLossError

CONTRACT_FIELDS = ("split", "step", "images_seen", "tokens_seen", "train_flops", "wall_time_s", "throughput_img_s",
                   "mfu", "loss_mean", "loss_last", "err_mean", "err_last", "loss_per_scale", "err_per_scale")


def test_short_run_loss_falls_and_writes_per_scale_metrics(tmp_path, tokenizer):
    torch.set_num_threads(1)
    run = write_run(tmp_path / "run", tiny_run_config(tokenizer, total_steps=24, eval_every=8))
    result = train_run(run)
    assert result["state"] == "finished" and result["step"] == 24
    config = json.loads((run / "config.json").read_text())
    model = config["model"]
    for key in ("name", "depth", "width", "heads", "patch_nums", "vocab_size", "num_classes", "params_total",
                "params_wo_emb", "flops_fwd_per_image", "flops_train_per_image"):
        assert key in model
    assert model["name"] == "VAR-mini-d1" and model["patch_nums"] == [1, 2, 3, 4] and model["vocab_size"] == 64
    assert len(config["tokenizer"]["sha256"]) == 64 and config["tokenizer"]["kwargs"]["ch"] == 32
    assert config["protocol"]["eval_cond_drop_rate"] == 0.0

    val, train = records(run, "val"), records(run, "train")
    assert [r["step"] for r in val] == [8, 16, 24] and [r["step"] for r in train] == [8, 16, 24]
    for record in val + train:
        assert set(CONTRACT_FIELDS) <= set(record)
        assert len(record["loss_per_scale"]) == len(record["err_per_scale"]) == 4
        assert all(0.0 <= e <= 1.0 for e in record["err_per_scale"] + [record["err_mean"], record["err_last"]])
        assert record["loss_last"] == record["loss_per_scale"][-1]
        assert record["tokens_seen"] == record["images_seen"] * 30 == record["step"] * 8 * 30
        assert record["train_flops"] == record["images_seen"] * model["flops_train_per_image"]
        assert record["mfu"] is None and record["throughput_img_s"] > 0
    # token-count weighted mean of the per-scale losses (1, 4, 9, 16 tokens)
    weighted = sum(n * x for n, x in zip((1, 4, 9, 16), val[-1]["loss_per_scale"])) / 30
    assert math.isclose(val[-1]["loss_mean"], weighted, rel_tol=1e-9)
    assert val[-1]["loss_mean"] < val[0]["loss_mean"] - 0.2 < math.log(64) - 0.2
    assert train[-1]["loss_mean"] < train[0]["loss_mean"]

    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == status["total_steps"] == 24
    # the export rebuilds from config.json alone, the way the sampler will
    from safetensors.torch import load_file

    from harness.config import TokenizerRef
    from harness.tokenizer.storage import load_tokenizer
    from models import VAR
    from models.registry import var_spec

    vae, _ = load_tokenizer(TokenizerRef(**config["tokenizer"]))
    spec = var_spec(model["name"], num_classes=model["num_classes"])
    var = VAR(vae_local=vae, **{**spec.var_kwargs(), "patch_nums": tuple(model["patch_nums"])})
    var.load_state_dict(load_file(run / "final" / "model.safetensors"), strict=True)
    assert result["final"] == val[-1]
    assert train_run(run)["state"] == "finished"  # a finished run is not trained again
    assert len(records(run)) == 6


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, tokenizer):
    config = tiny_run_config(tokenizer, total_steps=60, eval_every=10, checkpoint_every_steps=5)
    reference = write_run(tmp_path / "reference", config)
    killed = write_run(tmp_path / "killed", config)
    done = subprocess.run([*VARSCALE, "train", "--run-dir", str(reference)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen([*VARSCALE, "train", "--run-dir", str(killed)], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    status = {}
    while time.monotonic() < deadline:  # kill it once a checkpoint exists but long before the end
        try:
            status = json.loads((killed / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        if status.get("step", 0) >= 15 or proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 15 <= status["step"] < 60 and status["state"] == "running"

    again = subprocess.run([*VARSCALE, "train", "--run-dir", str(killed)], env=subprocess_env(),
                           capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    ref_records, resumed = records(reference), records(killed)
    assert [learning_fields(r) for r in resumed] == [learning_fields(r) for r in ref_records]
    assert len(resumed) == 12
    from safetensors.torch import load_file

    a, b = load_file(reference / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_request_saves_and_stops_then_resumes(tmp_path, tokenizer):
    torch.set_num_threads(1)
    run = write_run(tmp_path / "run", tiny_run_config(tokenizer, total_steps=6, eval_every=3,
                                                       checkpoint_every_steps=0))
    control = TrainControl()
    control.request_checkpoint(stop=True)
    out = train_run(run, control)
    assert out["state"] == "requeued" and out["step"] == 1 and control.wait_saved(timeout=0)
    assert json.loads((run / "status.json").read_text())["state"] == "requeued"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 1
    assert train_run(run)["state"] == "finished"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 6
    assert (run / "checkpoints" / "last.prev.pt").exists()


def test_control_answers_only_the_requests_made_before_a_save():
    control = TrainControl()
    assert control.pending_request() == 0 and control.wait_saved(timeout=0)
    control.request_checkpoint()
    seen = control.pending_request()  # the trainer decides to save for this request ...
    control.request_checkpoint(stop=True, reason="interrupted")  # ... and a stop comes while it writes
    control.acknowledge_saved(seen)
    assert control.checkpoint_requested() and control.stop_after_save and control.stop_reason == "interrupted"
    assert not control.wait_saved(timeout=0)
    control.acknowledge_saved(control.pending_request())
    assert not control.checkpoint_requested() and control.wait_saved(timeout=0)


def test_a_stop_requested_during_a_periodic_checkpoint_is_not_lost(tmp_path, tokenizer, monkeypatch):
    """A signal lands at any moment, also while a periodic checkpoint is written; that save began before the
    request, so the run must still save and stop at the next step boundary instead of training on."""
    torch.set_num_threads(1)
    run = write_run(tmp_path / "run", tiny_run_config(tokenizer, total_steps=12, eval_every=0,
                                                       checkpoint_every_steps=2))
    control = TrainControl()
    real_save = Checkpointer.save

    def save_with_a_request_arriving(self, state):
        path = real_save(self, state)
        if state["step"] == 2:
            control.request_checkpoint(stop=True)  # what the signal handler does, while this save is not done
        return path

    monkeypatch.setattr(Checkpointer, "save", save_with_a_request_arriving)
    out = train_run(run, control)
    assert out["state"] == "requeued" and out["step"] == 3 and control.wait_saved(timeout=0)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 3


def test_gradient_accumulation_matches_the_full_batch(tmp_path, tokenizer):
    torch.set_num_threads(1)
    common = dict(total_steps=4, eval_every=2, checkpoint_every_steps=0, cond_drop_rate=0.0, drop_path_rate=0.0)
    full = write_run(tmp_path / "full", tiny_run_config(tokenizer, **common))
    accum = write_run(tmp_path / "accum", tiny_run_config(tokenizer, grad_accum=4, **common))
    train_run(full)
    train_run(accum)
    for a, b in zip(records(full, "val"), records(accum, "val")):
        assert a["loss_mean"] == pytest.approx(b["loss_mean"], rel=1e-5)
        assert a["loss_per_scale"] == pytest.approx(b["loss_per_scale"], rel=1e-5)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_compiled_step_with_its_loss_matches_the_eager_one(tmp_path, tokenizer, label_smoothing):
    """`train.compile`: model, cross-entropy and backward in one compiled graph. Without smoothing the training
    records are the compiled cross-entropy itself; with it, the gradients differ from plain cross-entropy's, so
    the trained weights show whether the compiled loss smooths. Both as eager to float tolerance."""
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    common = dict(total_steps=3, eval_every=3, checkpoint_every_steps=0, label_smoothing=label_smoothing)
    eager = write_run(tmp_path / "eager", tiny_run_config(tokenizer, **common))
    compiled = write_run(tmp_path / "compiled", tiny_run_config(tokenizer, compile=True, **common))
    train_run(eager)
    train_run(compiled)
    for split in ("train", "val"):
        for a, b in zip(records(eager, split), records(compiled, split), strict=True):
            assert a["loss_mean"] == pytest.approx(b["loss_mean"], rel=1e-6)
            assert a["loss_per_scale"] == pytest.approx(b["loss_per_scale"], rel=1e-6)
    a, b = (load_file(run / "final" / "model.safetensors") for run in (eager, compiled))
    assert a.keys() == b.keys()
    for name, value in a.items():
        # Adam amplifies the roundings of tiny gradients
        torch.testing.assert_close(b[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path, tokenizer):
    torch.set_num_threads(1)
    # an absurd learning rate: step 1 is finite, its update blows the weights up, step 2's loss is NaN/inf
    run = write_run(tmp_path / "run", tiny_run_config(tokenizer, base_lr=1e30, total_steps=8, eval_every=0,
                                                       checkpoint_every_steps=1))
    with pytest.raises(NonFiniteLossError, match=r"(loss|norm) is (nan|inf).*last good checkpoint is .*last\.pt"):
        train_run(run)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "NonFiniteLossError" in status["error"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == status["step"] >= 1
    weights = {k: t for k, t in state["trainer"]["model"].items() if k != "attn_bias_for_masking"}  # -inf mask
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert not (run / "final").exists()


def test_resume_refuses_a_changed_config(tmp_path, tokenizer):
    torch.set_num_threads(1)
    run = write_run(tmp_path / "run", tiny_run_config(tokenizer, total_steps=4, eval_every=0,
                                                       checkpoint_every_steps=2))
    control = TrainControl()
    control.request_checkpoint(stop=True)
    train_run(run, control)
    config = json.loads((run / "config.json").read_text())
    config["base_lr"] = 0.5
    (run / "config.json").write_text(json.dumps(config))
    status_before = (run / "status.json").read_bytes()
    from harness.config import ConfigError

    with pytest.raises(ConfigError, match=r"written with base_lr=0.1 but config.json now says 0.5"):
        train_run(run)
    assert (run / "status.json").read_bytes() == status_before  # a refused resume leaves the run's status alone
    config["base_lr"], config["checkpoint_every_steps"] = 0.1, 1  # an operational option may change
    (run / "config.json").write_text(json.dumps(config))
    assert train_run(run)["state"] == "finished"


def test_a_checkpoint_from_before_a_new_config_field_still_resumes(tmp_path, tokenizer):
    """An upgrade that adds a config field (with the old behaviour as its default) must not refuse old runs; a
    checkpoint whose config names a field this version does not know is refused, naming it."""
    torch.set_num_threads(1)
    run = write_run(tmp_path / "run", tiny_run_config(tokenizer, total_steps=4, eval_every=2,
                                                       checkpoint_every_steps=2))
    train_run(run)
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    older = json.loads(json.dumps(state["config"]))
    del older["compile"], older["data"]["workers"]  # as a version without these fields wrote it
    torch.save({**state, "config": older}, last)
    assert train_run(run)["state"] == "finished"

    torch.save({**state, "config": {**state["config"], "retired_option": 1}}, last)
    with pytest.raises(ResumeRefused, match="retired_option"):
        train_run(run)


def test_missing_dataset_directory_fails_the_run_with_a_clear_error(tmp_path, tokenizer):
    from harness.data.images import DatasetError

    run = write_run(tmp_path / "run", tiny_run_config(
        tokenizer, data={"source": "imagefolder", "root": str(tmp_path / "imagenet")}))
    (tmp_path / "imagenet" / "val").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"imagenet/train: dataset directory not found \(expected <root>/train/"):
        train_run(run)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "imagenet/train: dataset directory not found" in status["error"]


def test_checkpointer_falls_back_to_the_previous_checkpoint(tmp_path):
    from harness.training.checkpointer import Checkpointer

    ckpt = Checkpointer(tmp_path)
    ckpt.save({"step": 1, "w": torch.ones(3)})
    ckpt.save({"step": 2, "w": torch.zeros(3)})
    assert ckpt.load()["step"] == 2 and (tmp_path / "checkpoints" / "last.prev.pt").exists()
    ckpt.last_path.write_bytes(ckpt.last_path.read_bytes()[:100])  # a torn file
    with pytest.warns(UserWarning, match="last.pt is unreadable"):
        assert ckpt.load()["step"] == 1
    ckpt.last_path.unlink()  # a crash between the two renames leaves only last.prev.pt
    assert ckpt.load()["step"] == 1
    assert Checkpointer(tmp_path, is_writer=False).save({"step": 3}) is None
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))
