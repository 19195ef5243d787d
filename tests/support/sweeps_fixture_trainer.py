"""A small, fast trainer for the sweep tests that keeps harness.training.loop.train_run's contract.

It reads RUN_DIR/config.json (a TrainConfig), fits one scalar weight by SGD on a deterministic data stream
(example k depends only on the seed and k), appends contract-shaped records to metrics.jsonl, writes
status.json, checkpoints to checkpoints/last.pt (JSON here) and honours a TrainControl exactly as the real
trainer does. Its final metrics depend only on the config, so an interrupted-and-resumed run must end with the
same numbers as an uninterrupted one. Seconds per step come from VARSCALE_FIXTURE_STEP_S so that the SLURM tests
can interrupt a run in the middle. Not a mock: the SLURM jobs really run it.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
from pathlib import Path

SCALES = 3


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _status(run_dir: Path, state: str, step: int, total: int, error: str | None = None) -> None:
    _write_json(run_dir / "status.json", {"state": state, "step": step, "total_steps": total, "error": error,
                                          "updated": dt.datetime.now(dt.timezone.utc).isoformat()})


def _losses(w: float, depth: int) -> list[float]:
    # per-"scale" losses: a larger model (depth) and a better fit give lower loss, like the real study
    return [((w - 1.0) ** 2 + (s + 1) / (4.0 * depth)) for s in range(SCALES)]


def train_run(run_dir: Path, control=None) -> dict:
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    depth = int(config["model_preset"].rsplit("-d", 1)[1])
    total, seed, lr = int(config["total_steps"]), int(config["seed"]), float(config["base_lr"])
    eval_every, batch = int(config["eval_every"]) or total, int(config["batch_size"])
    data = config["data"]
    if data["source"] == "imagefolder":
        train_dir = Path(data["root"]) / "train"
        if not train_dir.is_dir() or not any(p.is_dir() for p in train_dir.iterdir()):
            message = f"ValueError: no class folders in {train_dir}"
            _status(run_dir, "failed", 0, total, message)
            raise ValueError(message.split(": ", 1)[1])
    # the model block train_run adds to config.json (sizes are made up but grow with depth)
    config["model"] = {"name": config["model_preset"], "depth": depth, "width": 32 * depth, "heads": depth,
                       "params_total": 1000 * depth ** 3, "params_wo_emb": 900 * depth ** 3,
                       "flops_fwd_per_image": 2e3 * depth ** 3, "flops_train_per_image": 6e3 * depth ** 3}
    _write_json(run_dir / "config.json", config)
    ckpt = run_dir / "checkpoints" / "last.pt"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "w": 0.0, "metrics_bytes": 0}
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():  # records written after the checkpoint are written again
        with open(metrics, "r+b") as fh:
            fh.truncate(state["metrics_bytes"])
    step, w = state["step"], state["w"]
    with open(run_dir / "starts.log", "a") as fh:  # evidence for the tests: where each (re)start began
        fh.write(f"{step}\n")
    step_s = float(os.environ.get("VARSCALE_FIXTURE_STEP_S", "0.01"))
    started = time.monotonic()
    _status(run_dir, "running", step, total)

    def save() -> None:
        ckpt.parent.mkdir(exist_ok=True)
        size = metrics.stat().st_size if metrics.exists() else 0
        _write_json(ckpt, {"step": step, "w": w, "metrics_bytes": size})
        _status(run_dir, "running", step, total)

    while step < total:
        x = random.Random(seed * 100003 + step).uniform(0.5, 1.5)
        w -= lr * 2 * (w * x - x) * x  # d/dw (w x - x)^2
        step += 1
        time.sleep(step_s)
        if step % eval_every == 0 or step == total:
            losses = _losses(w, depth)
            errs = [min(1.0, 0.5 * loss) for loss in losses]
            counters = {"step": step, "images_seen": step * batch, "tokens_seen": step * batch * 14,
                        "train_flops": step * batch * 6e3 * depth ** 3,
                        "wall_time_s": time.monotonic() - started, "throughput_img_s": batch / max(step_s, 1e-3),
                        "mfu": None}
            with open(metrics, "a") as fh:
                for split in ("train", "val"):
                    fh.write(json.dumps({"split": split, **counters, "loss_mean": sum(losses) / SCALES,
                                         "loss_last": losses[-1], "err_mean": sum(errs) / SCALES,
                                         "err_last": errs[-1], "loss_per_scale": losses,
                                         "err_per_scale": errs}) + "\n")
        every = int(config["checkpoint_every_steps"])
        if every and step % every == 0 and step < total:
            save()
        request = control.pending_request() if control is not None else 0
        if request:
            save()
            control.acknowledge_saved(request)
            if control.stop_after_save:
                return {"state": "running", "step": step}
    save()
    _status(run_dir, "finished", step, total)
    return {"state": "finished", "step": step, "w": w}
