"""Metrics against independent computations: AUC by brute-force pair counts, losses by torch."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedray.tasks.metrics import auc, binary_metrics, multiclass_metrics


def pair_count_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(positive scores above negative), ties half: every (positive, negative) pair compared."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(-3, 3)), min_size=2, max_size=60))
def test_auc_matches_pair_counting_with_ties(pairs):
    labels, scores = (np.array(v) for v in zip(*pairs))
    expected = pair_count_auc(labels, scores.astype(float)) if 0 < labels.sum() < len(labels) else float("nan")
    np.testing.assert_allclose(auc(labels, scores), expected, rtol=1e-12, equal_nan=True)


def test_auc_is_nan_for_one_class_and_reverses_with_scores():
    assert np.isnan(auc(np.ones(5), np.arange(5)))
    assert np.isnan(auc(np.zeros(0), np.zeros(0)))
    labels, scores = np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.9, 0.4, 0.35, 0.8])
    assert auc(labels, scores) == 5 / 6
    assert auc(labels, -scores) == 1 / 6


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(-30, 30).filter(lambda v: abs(v) > 1e-6)), min_size=1, max_size=40))
def test_binary_loss_and_accuracy_match_torch(pairs):
    labels, logits = (np.array(v, dtype=np.float64) for v in zip(*pairs))
    got = binary_metrics(labels, logits)
    want = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor(labels)).item()
    np.testing.assert_allclose(got["loss"], want, rtol=1e-9, atol=1e-12)
    assert got["accuracy"] == np.mean((torch.sigmoid(torch.tensor(logits)).numpy() > 0.5) == labels)


def test_multiclass_metrics_match_torch():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(0, 5, (50, 10)), rng.integers(0, 10, 50)
    got = multiclass_metrics(labels, logits)
    want = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
    np.testing.assert_allclose(got["loss"], want, rtol=1e-9)
    assert got["accuracy"] == np.mean(logits.argmax(axis=1) == labels)


def test_empty_rows_give_nan_metrics():
    assert all(np.isnan(v) for v in binary_metrics(np.zeros(0), np.zeros(0)).values())
    assert all(np.isnan(v) for v in multiclass_metrics(np.zeros(0, int), np.zeros((0, 10))).values())
