"""Built-in tabular task: an MLP for a binary label over table files (the credit-default data in conf/credit_mlp.yaml).

Metrics: ``auc``, ``accuracy`` and ``loss`` (log loss) on each device's held-out rows; a device whose
held-out rows hold one class reports NaN AUC, which fedray's engine leaves out of the device average
(see fedray.tasks.metrics). ``evaluate_server`` scores the pooled held-out rows of every device.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from fedray.data.movielens import DataError
from fedray.tasks.base import EvalContext, Evaluation
from fedray.tasks.metrics import binary_metrics
from fedray.tasks.table import DeviceData, TableTask


def scaled(size: int, width: float) -> int:
    """A hidden size at a width multiplier: max(1, round(size * width)), so narrower models nest in wider ones."""
    return max(1, round(size * width))


class MLP(nn.Module):
    """Linear layers with ReLU between them, ending in one logit per row."""

    def __init__(self, inputs: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = [inputs, *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.layers = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


class TabularMLPTask(TableTask):
    """An MLP on a 0/1 label column; hidden sizes scale with the tier's width, inputs and the logit do not."""

    def __init__(self, paths, hidden: Sequence[int] = (64, 32), **kwargs) -> None:
        super().__init__(paths, **kwargs)
        if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"task.hidden must be a non-empty list of positive integers, got {hidden!r}")
        self.hidden = tuple(hidden)

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The table's rows, with a check that the label is binary."""
        x, y, groups = super().rows()
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise DataError(f"{', '.join(map(str, self.paths))}: column {self.label!r}: label {int(y[bad][0])} "
                            f"is not 0 or 1 ({int(bad.sum())} such rows); TabularMLPTask needs a binary label")
        return x, y, groups

    def model(self, width: float) -> nn.Module:
        inputs = self.input_shape[0] if self.input_shape is not None else self.rows()[0].shape[1]
        return MLP(inputs, [scaled(h, width) for h in self.hidden])

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(model(x), y.float())

    def _score(self, model: nn.Module, data: DeviceData) -> Evaluation:
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(data.x_test)).numpy()
        return Evaluation(samples=len(data.y_test), metrics=binary_metrics(data.y_test, logits))

    def evaluate(self, model: nn.Module, data: DeviceData, ctx: EvalContext) -> Evaluation:
        """AUC, accuracy and log loss on the device's held-out rows."""
        return self._score(model, data)

    def evaluate_server(self, model: nn.Module, round_: int) -> Evaluation:
        """AUC, accuracy and log loss on every device's held-out rows pooled."""
        return self._score(model, self.require_pooled_test())
