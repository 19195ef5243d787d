"""The demo study's design: which model sizes, how long each one trains and at which learning rate.

Two rules make a small CPU study measure a law instead of its own tuning:
- budgets grow with size: a model of N parameters trains ``base_steps * (N / N_smallest) ** steps_power`` steps
  at a fixed batch, so the token budget grows with N (as in scaling studies; a 2-core CPU cannot afford the
  compute-optimal ~20 tokens per parameter, so every size stops at a smaller fraction of it, and the growth is
  kept gentle so the largest model still fits the time budget);
- the learning rate transfers across widths: peak lr ~ 1 / width (the muP rule for Adam on hidden weights; the
  GPT-3 family's learning rates fall about as fast with width), anchored at ``lr_at_anchor`` for
  ``anchor_width``. One learning rate for all widths mistunes either the small or the large models.
Every point's record (config.json) holds the steps and lr it got; summary.json lists them per size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    depths: tuple[int, ...]
    base_steps: int  # steps of the smallest model
    steps_power: float  # steps grow as (N / N_smallest) ** steps_power
    batch_size: int
    anchor_width: int  # width whose peak lr is lr_at_anchor
    lr_at_anchor: float  # peak learning rate (after warm-up) at anchor_width
    evals_per_run: int  # held-out records along each run (dense enough for the compute frontier)


@dataclass(frozen=True)
class PlannedRun:
    depth: int
    width: int
    params_total: int
    params_wo_emb: int
    total_steps: int
    base_lr: float  # the harness's convention: peak lr = base_lr * batch_size / 256
    peak_lr: float
    eval_every: int


def plan_runs(budget: Budget, tokenizer: str = "mini-f8-32px", num_classes: int = 10) -> list[PlannedRun]:
    # deferred: the CLI imports this module before it needs torch
    from models.params import param_counts
    from models.registry import TOKENIZERS, var_spec

    specs = [var_spec(f"VAR-mini-d{d}", num_classes=num_classes, tokenizer=TOKENIZERS[tokenizer])
             for d in budget.depths]
    counts = [param_counts(s) for s in specs]
    smallest = min(c["total"] for c in counts)
    runs = []
    for spec, count in zip(specs, counts):
        steps = round(budget.base_steps * (count["total"] / smallest) ** budget.steps_power)
        peak = budget.lr_at_anchor * budget.anchor_width / spec.width
        runs.append(PlannedRun(depth=spec.depth, width=spec.width, params_total=count["total"],
                               params_wo_emb=count["total_wo_embeddings"], total_steps=steps,
                               base_lr=peak * 256 / budget.batch_size, peak_lr=peak,
                               eval_every=max(1, math.ceil(steps / budget.evals_per_run))))
    return runs


def spec_overrides(runs: list[PlannedRun]) -> list[dict]:
    """The per-size training options as sweep-spec overrides (one per depth)."""
    return [{"when": {"depth": [r.depth]}, "train": {"total_steps": r.total_steps, "base_lr": r.base_lr,
                                                     "eval_every": r.eval_every}} for r in runs]


def describe(runs: list[PlannedRun], batch_size: int, tokens_per_image: int) -> str:
    lines = ["model           N (total)  N (no emb.)   steps   tokens seen   peak lr"]
    for r in runs:
        lines.append(f"VAR-mini-d{r.depth:<3}{r.params_total:>12,}{r.params_wo_emb:>13,}{r.total_steps:>8}"
                     f"{r.total_steps * batch_size * tokens_per_image:>14,}   {r.peak_lr:.2e}")
    return "\n".join(lines)
