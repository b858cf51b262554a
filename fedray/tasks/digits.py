"""Built-in image task: a small CNN on scikit-learn's bundled digits (1,797 8x8 images, 10 classes), conf/digits_cnn.yaml.

Pixels (0..16) are scaled to [0, 1]. Metrics: ``accuracy`` and ``loss`` (cross-entropy) on each device's
held-out images; ``evaluate_server`` scores every device's held-out images pooled.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from fedray.tasks.base import EvalContext, Evaluation
from fedray.tasks.metrics import multiclass_metrics
from fedray.tasks.table import DeviceData, PartitionedTask
from fedray.tasks.tabular import scaled

CLASSES = 10


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 images [n, 1, 8, 8] in [0, 1] and int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("DigitsCNNTask needs scikit-learn for its bundled digits: pip install scikit-learn") from None
    bunch = load_digits()
    return (bunch.images[:, None] / 16.0).astype(np.float32), bunch.target.astype(np.int64)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool, and two linear layers; flattening keeps channels leading (slices nest)."""

    def __init__(self, channels: Sequence[int], hidden: int) -> None:
        super().__init__()
        first, second = channels
        self.features = nn.Sequential(nn.Conv2d(1, first, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(first, second, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(second * 16, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DigitsCNNTask(PartitionedTask):
    """Digits over devices (default: 50, Dirichlet(0.5) label skew); channel counts and hidden size scale with width."""

    def __init__(self, devices: int = 50, partition: str = "dirichlet", alpha: float | None = None,
                 channels: Sequence[int] = (16, 32), hidden: int = 64, **kwargs) -> None:
        if partition == "dirichlet" and alpha is None:
            alpha = 0.5
        super().__init__(devices=devices, partition=partition, alpha=alpha, **kwargs)
        if len(channels) != 2 or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"task.channels must be two positive integers, got {channels!r}")
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"task.hidden must be a positive integer, got {hidden!r}")
        self.channels, self.hidden = tuple(channels), hidden

    def rows(self) -> tuple[np.ndarray, np.ndarray, None]:
        x, y = digits()
        return x, y, None

    def model(self, width: float) -> nn.Module:
        return SmallCNN([scaled(c, width) for c in self.channels], scaled(self.hidden, width))

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y)

    def _score(self, model: nn.Module, data: DeviceData) -> Evaluation:
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(data.x_test)).numpy()
        return Evaluation(samples=len(data.y_test), metrics=multiclass_metrics(data.y_test, logits))

    def evaluate(self, model: nn.Module, data: DeviceData, ctx: EvalContext) -> Evaluation:
        """Accuracy and cross-entropy on the device's held-out images."""
        return self._score(model, data)

    def evaluate_server(self, model: nn.Module, round_: int) -> Evaluation:
        """Accuracy and cross-entropy on every device's held-out images pooled."""
        return self._score(model, self.require_pooled_test())
