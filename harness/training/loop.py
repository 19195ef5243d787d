"""``train_run(run_dir)``: the resumable VAR training run behind ``varscale train`` and the sweeps.

RUN_DIR/config.json holds a TrainConfig (extra derived blocks "model" and "protocol" are rewritten here). Running
the same command again continues from checkpoints/last.pt; on CPU the continued run is bit-identical to an
uninterrupted one (same data order, RNG states, optimizer state). Files follow docs/contracts.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

from harness.config import ConfigError, TrainConfig, as_current, from_dict, load_json, to_dict
from harness.data.images import GlobalBatchSampler, build_image_datasets, collate
from harness.data.token_cache import TokenCacheData, check_compatible, read_header
from harness.distributed import (
    DistEnv,
    broadcast_object,
    gather_objects,
    init_from_env,
    shutdown,
)
from harness.tokenizer.storage import load_tokenizer, save_state_dict_file
from harness.training.checkpointer import (
    Checkpointer,
    capture_rng_states,
    restore_rng_states,
)
from harness.training.control import ForkSafeLoader, TrainControl, ignore_job_signals
from harness.training.metrics import (
    MetricsLog,
    ScaleStats,
    peak_flops_per_device,
    write_status,
)
from harness.training.model_setup import build_var, model_block, protocol_block
from harness.training.step import NonFiniteLossError, Trainer
from models.files import exclusive_lock, remove_stale_temps, save_json

DERIVED_BLOCKS = ("model", "protocol")
CHECKPOINT_FORMAT = "varscale-train/1"


class ResumeRefused(ConfigError):
    """The run's checkpoint belongs to another config: refused before anything in the run directory changes."""


def read_run_config(run_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    raw = load_json(Path(run_dir) / "config.json")
    if not isinstance(raw, dict):
        raise ConfigError(f"{run_dir}/config.json must hold a JSON object")
    cfg = from_dict(TrainConfig, {k: v for k, v in raw.items() if k not in DERIVED_BLOCKS})
    cfg.validate()
    return cfg, raw


def train_run(run_dir: Path, control: TrainControl | None = None) -> dict[str, Any]:
    """Train (or continue training) the run in ``run_dir``; returns the final held-out record and state.

    Rank 0 holds the run directory's lock for the whole run: a second trainer on the same directory is refused
    with the first one's host/pid/job. ``status.json`` is only written by a process holding the lock, and not when
    the start is refused (lock held elsewhere, a checkpoint of another config): what an earlier run recorded stays.
    Failures record "failed", KeyboardInterrupt "interrupted"; a save-and-stop request its reason (see control)."""
    run_dir = Path(run_dir)
    cfg, _ = read_run_config(run_dir)
    env = init_from_env(cfg.device)
    run = _Run(run_dir, cfg, env, control or TrainControl())
    try:
        with run_lock(run_dir) if env.is_main else contextlib.nullcontext():
            for folder, name in STALE_TEMPS:  # left by a process killed while writing (we hold the lock now)
                remove_stale_temps(run_dir / folder, name)
            return run.run()
    except BaseException as exc:
        if env.is_main and run.started and not isinstance(exc, (SystemExit, ResumeRefused)):
            state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = None if state == "interrupted" else f"{type(exc).__name__}: {exc}".splitlines()[0]
            with contextlib.suppress(OSError):  # a full disk may refuse this too; the CLI reports the error
                write_status(run_dir, state, _checkpoint_step(run_dir), cfg.total_steps, error=error)
        raise
    finally:
        shutdown(env)


STALE_TEMPS = ((".", "status.json"), (".", "config.json"), ("checkpoints", "last.pt"),
               ("final", "model.safetensors"))


def run_lock(run_dir: Path):
    return exclusive_lock(Path(run_dir) / ".lock", f"run directory {run_dir}")


def _checkpoint_step(run_dir: Path) -> int:
    try:
        status = load_json(run_dir / "status.json")
        return int(status.get("step", 0))
    except (ConfigError, ValueError):
        return 0


# options that may change between a checkpoint and its resumption without changing the trajectory
OPERATIONAL_OPTIONS = {"checkpoint_every_steps", "checkpoint_every_minutes", "peak_flops", "eval_batch_size",
                       "data.workers", "device"}


def _as_current_config(saved: dict[str, Any], path: Path) -> dict[str, Any]:
    """A checkpoint's config as this version reads it (harness.config.as_current): an upgrade alone does not
    refuse a resume."""
    try:
        return as_current(TrainConfig, saved)
    except ConfigError as exc:
        raise ResumeRefused(f"{path} was written by a varscale whose config this one cannot read ({exc}); "
                            "resume it with that version, or start a new run dir") from None


def _check_same_config(saved: dict[str, Any], current: dict[str, Any], path: Path, prefix: str = "") -> None:
    for key in sorted(set(saved) | set(current)):
        name = prefix + key
        if isinstance(saved.get(key), dict) and isinstance(current.get(key), dict) and key != "kwargs":
            _check_same_config(saved[key], current[key], path, name + ".")
        elif saved.get(key) != current.get(key) and name not in OPERATIONAL_OPTIONS:
            raise ResumeRefused(f"{path} was written with {name}={saved.get(key)!r} but config.json now says "
                              f"{current.get(key)!r}; resuming would not continue the same run (use a new run dir)")


class _Run:
    def __init__(self, run_dir: Path, cfg: TrainConfig, env: DistEnv, control: TrainControl) -> None:
        self.run_dir, self.cfg, self.env, self.control = run_dir, cfg, env, control
        self.device = env.device
        self.started = False  # set once this process holds the run's lock and so owns its status.json

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg, env = self.cfg, self.env
        if self.device.type == "cuda":  # the official default (tf32=True)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.vae, tokenizer = load_tokenizer(cfg.tokenizer, self.device)
        self.cfg = cfg = dataclasses.replace(cfg, tokenizer=tokenizer)
        self.var, self.spec = build_var(cfg, self.vae, self.device)
        self.model_info = model_block(self.spec, self.var)
        torch.manual_seed(cfg.seed * 1000 + env.rank + 1)  # per-rank stream for cond-drop and drop-path
        self.from_cache = cfg.data.token_cache is not None
        if self.from_cache:
            header = read_header(Path(cfg.data.token_cache))
            check_compatible(header, Path(cfg.data.token_cache), tokenizer, cfg.data, self.vae.patch_nums)
            self.train_set = TokenCacheData(Path(cfg.data.token_cache), "train")
            self.val_set = TokenCacheData(Path(cfg.data.token_cache), "val")
        else:
            self.train_set, self.val_set = build_image_datasets(cfg.data)
        self.trainer = Trainer(cfg, self.vae, self.var, env)
        self.checkpointer = Checkpointer(self.run_dir, is_writer=env.is_main)
        self.metrics = MetricsLog(self.run_dir, is_writer=env.is_main)
        self.train_stats = ScaleStats(self.vae.patch_nums)
        self.peak_flops = peak_flops_per_device(cfg.peak_flops, self.device)

    def _resume(self) -> None:
        self.step, self.wall_time_s, self.unreadable = 0, 0.0, 0
        state = self.checkpointer.load(map_location="cpu")
        if state is None:
            self.metrics.truncate_to(0)
            return
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ResumeRefused(f"{self.checkpointer.last_path}: unknown checkpoint format {state.get('format')!r}")
        _check_same_config(_as_current_config(state["config"], self.checkpointer.last_path), to_dict(self.cfg),
                           self.checkpointer.last_path)
        self.trainer.load_state_dict(state["trainer"])
        self.step, self.wall_time_s = int(state["step"]), float(state["wall_time_s"])
        self.unreadable = int(state.get("unreadable_images", 0)) if self.env.is_main else 0  # saved as a total
        rng = state["rng"]
        if len(rng) == self.env.world_size:
            restore_rng_states(rng[self.env.rank], {"var": self.var.rng})
        if self.env.is_main:
            self.train_stats.load_packed(state["train_stats"])
        self.metrics.truncate_to(int(state["metrics_bytes"]))

    def _loaders(self):
        cfg, env = self.cfg, self.env
        sampler = GlobalBatchSampler(len(self.train_set), cfg.batch_size, cfg.grad_accum, env.rank, env.world_size,
                                     cfg.seed, start_step=self.step)
        # own generators: creating a DataLoader iterator otherwise draws from the global RNG, which would shift
        # the cond-drop stream of a resumed run
        train = torch.utils.data.DataLoader(self.train_set, batch_sampler=sampler, num_workers=cfg.data.workers,
                                            worker_init_fn=ignore_job_signals, collate_fn=collate,
                                            pin_memory=self.device.type == "cuda",
                                            generator=torch.Generator().manual_seed(cfg.seed))
        n_eval = min(cfg.eval_images, len(self.val_set))
        mine = list(range(env.rank, n_eval, env.world_size))
        val = torch.utils.data.DataLoader(torch.utils.data.Subset(self.val_set, mine), batch_size=cfg.eval_batch_size,
                                          shuffle=False, num_workers=cfg.data.workers, collate_fn=collate,
                                          worker_init_fn=ignore_job_signals,
                                          generator=torch.Generator().manual_seed(cfg.seed))
        return iter(ForkSafeLoader(train)), ForkSafeLoader(val)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        self.started = True
        self._setup()
        self._resume()  # refuses a checkpoint of another config before config.json is rewritten
        cfg, env = self.cfg, self.env
        if env.is_main:
            save_json(self.run_dir / "config.json",
                      {**to_dict(cfg), "model": self.model_info, "protocol": protocol_block(cfg, env.world_size)})
        final_path = self.run_dir / "final" / "model.safetensors"
        if self.step >= cfg.total_steps and final_path.exists():
            return self._result("finished")
        if env.is_main:
            write_status(self.run_dir, "running", self.step, cfg.total_steps)
        train_iter, self.val_loader = self._loaders()
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (env.is_main and sys.stderr.isatty()))
        self.last_save_time = time.monotonic()
        interval_time, interval_images = 0.0, 0  # step time only: evaluation and saving excluded
        try:
            while self.step < cfg.total_steps:
                t0 = time.monotonic()
                micro = [next(train_iter) for _ in range(cfg.grad_accum)]
                out = self.trainer.train_step(self.step, [(d, y) for d, y, _ in micro], self.from_cache,
                                              self.train_stats)
                self.unreadable += sum(n for _, _, n in micro)
                self.step += 1
                step_time = time.monotonic() - t0
                self.wall_time_s += step_time
                interval_time += step_time
                interval_images += cfg.batch_size
                bar.update(1)
                bar.set_postfix(loss=f"{out['loss']:.4f}", lr=f"{out['lr']:.2e}", refresh=False)
                if self.step == cfg.total_steps or (cfg.eval_every and self.step % cfg.eval_every == 0):
                    self._record(throughput=interval_images / max(interval_time, 1e-9), lr=out["lr"])
                    interval_time, interval_images = 0.0, 0
                request = self.control.pending_request()  # before the save: one made during it waits for the next
                save, stop = self._save_decision(request)
                if save or self.step == cfg.total_steps:
                    self._save()
                    # a save-and-stop answers every request so far: the run ends here, no later save could
                    answered = max(request, self.control.pending_request()) if stop else request
                    if answered:
                        self.control.acknowledge_saved(answered)
                if stop:  # SIGTERM ("interrupted") or the scheduler's requeue warning ("requeued")
                    bar.close()
                    if env.is_main:
                        write_status(self.run_dir, self.control.stop_reason, self.step, cfg.total_steps)
                    return self._result(self.control.stop_reason)
        except NonFiniteLossError as exc:
            kept = self.checkpointer.last_path if self.checkpointer.last_path.exists() else None
            where = f"the last good checkpoint is {kept}" if kept else "no checkpoint had been written yet"
            raise NonFiniteLossError(f"{exc}; training stopped, {where}") from None
        bar.close()
        self._export(final_path)
        if env.is_main:
            write_status(self.run_dir, "finished", self.step, cfg.total_steps)
        return self._result("finished")

    def _save_decision(self, request: int) -> tuple[bool, bool]:
        """Rank 0 decides (steps, minutes, its control's ``request``); every rank follows so collectives line up."""
        cfg = self.cfg
        decision = (False, False)
        if self.env.is_main:
            by_steps = cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0
            minutes = (time.monotonic() - self.last_save_time) / 60
            by_time = cfg.checkpoint_every_minutes and minutes >= cfg.checkpoint_every_minutes
            decision = (bool(by_steps or by_time or request), bool(request and self.control.stop_after_save))
        return tuple(broadcast_object(self.env, decision))

    def _save(self) -> None:
        if not self.trainer.parameters_finite():
            raise NonFiniteLossError(f"model parameters became non-finite at step {self.step}")
        rng = gather_objects(self.env, capture_rng_states({"var": self.var.rng}))
        stats = self.train_stats.packed().to(self.device)
        unreadable = torch.tensor([float(self.unreadable)], device=self.device)
        if self.env.distributed:
            torch.distributed.all_reduce(stats)
            torch.distributed.all_reduce(unreadable)
        state = {
            "format": CHECKPOINT_FORMAT, "step": self.step, "wall_time_s": self.wall_time_s,
            "images_seen": self.step * self.cfg.batch_size, "unreadable_images": int(unreadable.item()),
            "trainer": self.trainer.state_dict(), "scheduler": {"name": self.cfg.lr_schedule, "step": self.step},
            "rng": rng, "world_size": self.env.world_size,
            "data_position": {"step": self.step, "seed": self.cfg.seed, "batch_size": self.cfg.batch_size},
            "train_stats": stats.cpu(), "metrics_bytes": self.metrics.size(), "metrics": self.metrics.read(),
            "config": to_dict(self.cfg),
        }
        self.checkpointer.save(state)
        self.last_save_time = time.monotonic()
        if self.env.is_main:
            write_status(self.run_dir, "running", self.step, self.cfg.total_steps)

    # ------------------------------------------------------------------ records
    def _counters(self, throughput: float) -> dict[str, Any]:
        images = self.step * self.cfg.batch_size
        flops_rate = throughput * self.model_info["flops_train_per_image"]
        mfu = flops_rate / (self.peak_flops * self.env.world_size) if self.peak_flops else None
        return {"step": self.step, "images_seen": images, "tokens_seen": images * self.var.L,
                "train_flops": float(images * self.model_info["flops_train_per_image"]),
                "wall_time_s": round(self.wall_time_s, 3), "throughput_img_s": throughput, "mfu": mfu}

    def _record(self, throughput: float, lr: float) -> None:
        counters = self._counters(throughput)
        stats = self.train_stats.packed().to(self.device)
        if self.env.distributed:
            torch.distributed.all_reduce(stats)
        train = ScaleStats(self.vae.patch_nums)
        train.load_packed(stats)
        unreadable = torch.tensor([float(self.unreadable)], device=self.device)
        if self.env.distributed:
            torch.distributed.all_reduce(unreadable)
        self.metrics.append({"split": "train", **counters, **train.summary(), "lr": lr,
                             "unreadable_images": int(unreadable.item())})
        self.train_stats.reset()
        val = self.trainer.evaluate(self.val_loader, self.from_cache)
        self.metrics.append({"split": "val", **counters, **val.summary()})

    def _export(self, path: Path) -> None:
        """The finished VAR as an official-format state dict (same keys as var_d*.pth) in safetensors."""
        if not self.env.is_main:
            return
        import json

        save_state_dict_file(self.var, path, {"model": json.dumps(self.model_info),
                                              "tokenizer": json.dumps(to_dict(self.cfg.tokenizer))})

    def _result(self, state: str) -> dict[str, Any]:
        records = MetricsLog(self.run_dir, is_writer=False).read()
        val = [r for r in records if r.get("split") == "val"]
        return {"run_dir": str(self.run_dir), "state": state, "step": self.step,
                "total_steps": self.cfg.total_steps, "final": val[-1] if val else None}
