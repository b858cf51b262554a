"""Classification metrics of the built-in tasks, in numpy: ROC AUC by ranks, accuracy, log loss.

A metric that is undefined on a device's held-out rows is NaN, never a made-up value: AUC when the rows
hold one class only (or none), every metric when there are no rows. fedray's round engine skips NaN
values when it averages a metric over devices, so a round's device-average AUC is the sample-weighted
mean over the devices whose held-out rows hold both classes; the server-side pooled AUC has no such gap.
"""
from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic: P(score of a positive > score of a negative), ties counting half."""
    labels = np.asarray(labels).astype(bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {labels.shape} vs {scores.shape}")
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank shared by each group of tied scores
    rank_sum = mean_rank[group][labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def binary_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """AUC, accuracy at probability 0.5, and mean log loss of logits for 0/1 labels (all NaN on no rows)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    if len(labels) == 0:
        return {"auc": float("nan"), "accuracy": float("nan"), "loss": float("nan")}
    # -log sigmoid(z) for positives, -log(1 - sigmoid(z)) for negatives, both as softplus (no overflow)
    loss = np.logaddexp(0.0, np.where(labels > 0, -logits, logits)).mean()
    accuracy = ((logits > 0) == (labels > 0)).mean()
    return {"auc": auc(labels, logits), "accuracy": float(accuracy), "loss": float(loss)}


def multiclass_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Accuracy of the arg-max class and mean cross-entropy of [rows, classes] logits (NaN on no rows)."""
    labels = np.asarray(labels).reshape(-1)
    logits = np.asarray(logits, dtype=np.float64)
    if len(labels) == 0:
        return {"accuracy": float("nan"), "loss": float("nan")}
    rows = np.arange(len(labels))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    loss = (log_norm - shifted[rows, labels]).mean()
    return {"accuracy": float((logits.argmax(axis=1) == labels).mean()), "loss": float(loss)}
