"""Inception Score of the classifier's logits, as the ADM evaluator computes it.

Softmax of the unbiased logits; ``num_splits`` consecutive equal splits, no shuffling (ADM uses 5000-row splits,
which is the same at N = 50,000); mean and std of exp(mean KL) over splits; float64.
"""
from __future__ import annotations

import numpy as np


def softmax(logits_NK: np.ndarray) -> np.ndarray:
    z = np.asarray(logits_NK, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def inception_score(logits_NK: np.ndarray, num_splits: int = 10) -> tuple[float, float, list[float]]:
    """IS over ``num_splits`` consecutive splits (row order as given; never shuffled). Returns mean, std, scores."""
    probs = softmax(logits_NK)
    if len(probs) < num_splits:
        raise ValueError(f"IS: {len(probs)} samples cannot make {num_splits} splits")
    scores = []
    n = len(probs)
    for i in range(num_splits):  # boundaries floor(i N / splits), as torch-fidelity; ADM's 5000-row splits at 50k
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-30) - np.log(marginal + 1e-30))).sum(axis=1).mean()
        scores.append(float(np.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores)), scores
