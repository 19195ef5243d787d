"""Synthetic collected sweep tables drawn from known laws, for tests and for trying the analysis without a sweep.

The columns follow docs/contracts.md. Losses follow the Chinchilla form L(N, D) = E + A/N^a + B/D^b along each
run's training curve (D = images seen), times log-normal noise; the final records of runs that all see the
same D therefore lie on a power law plus constant in N with E' = E + B/D^b. Parameter counts are the official
VAR totals at the given depths and FLOPs per image the analytic counts of models/flops.py, as a real sweep's
table carries them (analysis/validate.py checks both).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.flops import forward_flops, train_flops_per_image
from models.params import param_counts
from models.quant import PATCH_NUMS_256 as PATCH_NUMS
from models.registry import var_spec

# the paper trained 12 of the 13 even depths 6..30 (which one it left out is not published), so all 13 are here
PAPER_DEPTHS = tuple(range(6, 31, 2))


def paper_params(depth: int) -> int:
    """Total parameters of VAR-d{depth} (official code: embeddings and head included), from models/ alone."""
    return param_counts(var_spec(f"VAR-d{depth}"))["total"]


def paper_params_wo_emb(depth: int) -> int:
    return param_counts(var_spec(f"VAR-d{depth}"))["total_wo_embeddings"]
TOKENS_PER_IMAGE = sum(p * p for p in PATCH_NUMS)


@dataclass(frozen=True)
class SyntheticLaw:
    """L = e_inf + a_coef / N^a_exp + b_coef / D^b_exp with N in parameters and D in images."""

    e_inf: float = 4.5
    a_coef: float = 300.0
    a_exp: float = 0.3
    b_coef: float = 60.0
    b_exp: float = 0.3

    def __call__(self, n, d):
        return self.e_inf + self.a_coef / np.asarray(n, float) ** self.a_exp \
            + self.b_coef / np.asarray(d, float) ** self.b_exp


LOSS_MEAN_LAW = SyntheticLaw(e_inf=4.0, a_coef=250.0, a_exp=0.28, b_coef=50.0, b_exp=0.3)
LOSS_LAST_LAW = SyntheticLaw()
ERR_LAST_LAW = SyntheticLaw(e_inf=0.55, a_coef=6.0, a_exp=0.25, b_coef=1.5, b_exp=0.3)
ERR_MEAN_LAW = SyntheticLaw(e_inf=0.5, a_coef=5.0, a_exp=0.25, b_coef=1.2, b_exp=0.3)


def synthetic_sweep_table(depths=(6, 8, 10, 12, 14, 16), images_per_run=(1_000_000,), evals_per_run: int = 12,
                          noise: float = 0.005, seed: int = 0, sweep: str = "synthetic",
                          laws: dict | None = None) -> pd.DataFrame:
    """One run per (depth, images_per_run entry), `evals_per_run` val records each (log-spaced steps) and a
    train record next to each. `laws` maps metric column -> callable(N, D_images); defaults above."""
    laws = laws or {"loss_last": LOSS_LAST_LAW, "loss_mean": LOSS_MEAN_LAW, "err_last": ERR_LAST_LAW,
                    "err_mean": ERR_MEAN_LAW}
    rng = np.random.default_rng(seed)
    batch = 256
    rows = []
    for depth in depths:
        n_params = paper_params(depth)
        spec = var_spec(f"VAR-d{depth}")
        flops_fwd, flops_train = forward_flops(spec), train_flops_per_image(spec)
        for images in images_per_run:
            point_id = f"d{depth}-i{images}"
            total_steps = max(int(images // batch), evals_per_run)
            steps = np.unique(np.geomspace(max(total_steps / 100, 1), total_steps, evals_per_run).astype(int))
            for step in steps:
                seen = int(step * batch)
                base = {"step": int(step), "images_seen": seen, "tokens_seen": seen * TOKENS_PER_IMAGE,
                        "train_flops": float(flops_train) * seen, "wall_time_s": float(step) * 0.1,
                        "throughput_img_s": 2560.0, "mfu": None}
                values = {m: float(law(n_params, seen) * np.exp(rng.normal(0, noise))) for m, law in laws.items()}
                per_scale = {f"loss_s{k}": values["loss_mean"] * (0.6 + 0.1 * k) for k in range(len(PATCH_NUMS))}
                per_scale.update({f"err_s{k}": min(values["err_mean"] * (0.7 + 0.06 * k), 1.0)
                                  for k in range(len(PATCH_NUMS))})
                point = {"sweep": sweep, "point_id": point_id, "run_dir": f"/runs/{sweep}/{point_id}",
                         "depth": depth, "width": 64 * depth, "params_total": n_params,
                         "params_wo_emb": paper_params_wo_emb(depth), "flops_fwd_per_image": flops_fwd,
                         "flops_train_per_image": flops_train, "lr": 1e-4, "seed": seed, "dataset": "synthetic",
                         "state": "finished"}
                for split in ("train", "val"):
                    rows.append({"split": split, **base, **values, **per_scale, **point})
    return pd.DataFrame(rows)
