"""Inception Score of the classifier's logits, as the ADM evaluator computes it.

Softmax of the unbiased logits, then the rows are cut in file order, never shuffled, into splits; each split's
score is exp(mean KL(p(y|x) || p(y))) with p(y) the split's own marginal, and IS is the plain mean over splits.

Split rules (``split_rule``):

* ``adm`` (default): consecutive chunks of ``split_size`` = 5000 rows, the last one shorter when N is not a
  multiple (ADM's ``compute_inception_score``). Ten equal splits at N = 50,000; at N = 12,345 it is
  5000 + 5000 + 2345.
* ``equal``: ``num_splits`` splits with boundaries floor(i N / num_splits) (torch-fidelity, improved-gan). Equal
  to ``adm`` only at N = 50,000.

IS depends on the split size (a split's marginal is estimated from its rows), so a score at N != 50,000 is not
comparable to published 50k figures whatever the rule; ``evaluate.py`` warns.
"""
from __future__ import annotations

import numpy as np

ADM_SPLIT_SIZE = 5000
SPLIT_RULES = ("adm", "equal")


def softmax(logits_NK: np.ndarray) -> np.ndarray:
    z = np.asarray(logits_NK, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def split_bounds(n: int, split_rule: str = "adm", split_size: int = ADM_SPLIT_SIZE,
                 num_splits: int = 10) -> list[tuple[int, int]]:
    """[start, end) of each split of ``n`` rows."""
    if n < 1:
        raise ValueError("IS: no samples")
    if split_rule == "adm":
        if split_size < 1:
            raise ValueError(f"IS: split size must be positive, got {split_size}")
        return [(start, min(start + split_size, n)) for start in range(0, n, split_size)]
    if split_rule == "equal":
        if not 1 <= num_splits <= n:
            raise ValueError(f"IS: {n} samples cannot make {num_splits} splits")
        return [(i * n // num_splits, (i + 1) * n // num_splits) for i in range(num_splits)]
    raise ValueError(f"IS: unknown split rule {split_rule!r}; expected one of {SPLIT_RULES}")


def split_scores(probs_NK: np.ndarray, bounds: list[tuple[int, int]]) -> list[float]:
    scores = []
    for start, end in bounds:
        part = probs_NK[start:end]
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-30) - np.log(marginal + 1e-30))).sum(axis=1).mean()
        scores.append(float(np.exp(kl)))
    return scores


def inception_score(logits_NK: np.ndarray, split_rule: str = "adm", split_size: int = ADM_SPLIT_SIZE,
                    num_splits: int = 10) -> tuple[float, float, list[float]]:
    """Mean and std over splits, and each split's score."""
    probs = softmax(logits_NK)
    scores = split_scores(probs, split_bounds(len(probs), split_rule, split_size, num_splits))
    return float(np.mean(scores)), float(np.std(scores)), scores


def describe_rule(n: int, split_rule: str, split_size: int, num_splits: int) -> str:
    sizes = [end - start for start, end in split_bounds(n, split_rule, split_size, num_splits)]
    how = (f"consecutive chunks of {split_size} rows, the last shorter (ADM)" if split_rule == "adm"
           else f"{num_splits} equal consecutive splits, boundaries floor(iN/{num_splits})")
    return f"{how}; N={n} gives {len(sizes)} split(s) of sizes {sizes}; file order, no shuffling, float64"
