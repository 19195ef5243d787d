"""Compute accounting: model size N and cumulative training compute C for every metrics record.

Everything comes from the collected table; the analytic FLOP counter already ran in the trainer (the
record's `train_flops`) and the per-image counts are point columns. The convention below is stored with every
fit and printed in every report, because papers differ (6ND, attention or not, CFG, tokenizer).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.table import TableError, is_finished

COMPUTE_CONVENTION = {
    "N": "params_total: every VAR transformer parameter, class and position embeddings and output head "
         "included (as the VAR paper's tables count them); the VQVAE tokenizer is excluded",
    "N_wo_emb": "params_wo_emb: the same without embedding parameters (Kaplan et al.'s convention)",
    "C": "cumulative training compute = images seen x training FLOPs per image, training FLOPs per image = "
         "3 x analytic forward FLOPs (forward + backward ~ 2 x forward) less the word embedding's input "
         "gradient, which training never computes (models.flops.train_flops_per_image)",
    "forward_flops_include": "every matrix multiply of the transformer on all L tokens of the K scales "
                             "(attention projections, dense L x L attention scores and weighted sum with "
                             "the block-causal mask not exploited, FFN, AdaLN modulation, head); "
                             "a multiply-add counts as 2 FLOPs",
    "forward_flops_exclude": "normalisation, softmax, activation functions, interpolation between scales, "
                             "the VQVAE tokenizer (encoding the training images), the optimizer step",
    "units": "N in billions of parameters (N_billion) and C in PFLOPs = 1e15 FLOPs (C_pflops) in the fits, "
             "as in the VAR paper",
}


def add_compute_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of the table with N, N_wo_emb, N_billion, C_flops, C_pflops (and D_images, D_tokens)."""
    out = table.copy()
    out["N"] = out["params_total"].astype(float)
    out["N_wo_emb"] = out["params_wo_emb"].astype(float) if "params_wo_emb" in out else np.nan
    out["N_billion"] = out["N"] / 1e9
    if "train_flops" in out and out["train_flops"].notna().all():
        compute = out["train_flops"].astype(float)
    elif {"images_seen", "flops_train_per_image"} <= set(out.columns):
        compute = out["images_seen"].astype(float) * out["flops_train_per_image"].astype(float)
    else:
        raise TableError("compute accounting needs the records' `train_flops` or both `images_seen` and "
                         "`flops_train_per_image` columns (docs/contracts.md)")
    if (compute < 0).any():
        raise TableError(f"negative training compute in {int((compute < 0).sum())} record(s)")
    out["C_flops"] = compute
    out["C_pflops"] = compute / 1e15
    out["D_images"] = out["images_seen"].astype(float) if "images_seen" in out else np.nan
    out["D_tokens"] = out["tokens_seen"].astype(float) if "tokens_seen" in out else np.nan
    return out


def final_records(table: pd.DataFrame, split: str = "val", finished_only: bool = True) -> pd.DataFrame:
    """The last record of `split` of every point (one row per run), with compute columns.

    `finished_only` drops runs whose `state` column says they are not finished (running or failed runs would
    put an under-trained model at its size); tables without a `state` column keep every run.
    """
    data = table if "C_flops" in table else add_compute_columns(table)
    data = data[data["split"] == split]
    if data.empty:
        raise TableError(f"no {split!r} records in the table (splits present: {sorted(table['split'].unique())})")
    if finished_only and "state" in data:
        data = data[is_finished(data["state"])]
        if data.empty:
            raise TableError("no finished runs in the table; pass include_unfinished to fit the runs as they are")
    last = data.sort_values(["point_id", "step"]).groupby("point_id", sort=False).tail(1)
    return last.sort_values(["N", "point_id"]).reset_index(drop=True)


def run_summary(table: pd.DataFrame, split: str = "val") -> pd.DataFrame:
    """One row per run: size, compute so far, final metrics and state (for reports and the demo)."""
    last = final_records(table, split=split, finished_only=False)
    columns = ["point_id", "depth", "width", "N", "N_wo_emb", "C_pflops", "images_seen", "step", "lr", "seed",
               "loss_last", "loss_mean", "err_last", "err_mean", "state"]
    return last[[c for c in columns if c in last.columns]].reset_index(drop=True)
