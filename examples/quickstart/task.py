"""Quickstart: federate your own PyTorch model with fedray.

The first half is ordinary PyTorch that knows nothing of fedray: a churn classifier, its training loop, its
evaluation and a stand-in for your data. The second half is all the glue fedray needs: a Task that says how
to split the data over devices, build the model at a width, train and evaluate. Run it from the repository
root with `fedray run examples/quickstart/fedray.yaml`.
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class ChurnNet(nn.Module):
    """A small classifier of customers who will leave."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float,
                extra_loss=lambda: 0.0) -> float:
    """Mini-batch SGD on (x, y); returns the mean loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        batch = torch.randint(0, len(y), (batch_size,))
        loss = nn.functional.binary_cross_entropy_with_logits(model(x[batch]), y[batch]) + extra_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of customers classified right."""
    with torch.no_grad():
        return float(((model(x) > 0).float() == y).float().mean())


def customers(seed: int, rows: int = 20_000, features: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for your own customer table: features and a churn label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x @ rng.normal(size=features) + rng.normal(size=rows) > 0).astype(np.float32)
    return x, y


# ---- fedray glue ---------------------------------------------------------------------------------------
from fedray.data.partitioners import iid  # noqa: E402
from fedray.tasks import Evaluation, Task, TrainResult  # noqa: E402


@dataclass
class Shard:
    """One device's customers: 80 % to train on, 20 % held out."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def samples(self) -> int:
        return len(self.y)


class ChurnTask(Task):
    def __init__(self, devices: int = 100, hidden: int = 32):
        self.devices, self.hidden = devices, hidden

    def load(self, seed):
        x, y = customers(seed)
        shards = []
        for rows in iid(len(y), self.devices, np.random.default_rng(seed)):
            train, test = rows[: int(0.8 * len(rows))], rows[int(0.8 * len(rows)):]
            shards.append(Shard(*(torch.from_numpy(a) for a in (x[train], y[train], x[test], y[test]))))
        return shards

    def model(self, width):
        return ChurnNet(features=12, hidden=max(1, round(self.hidden * width)))

    def train(self, model, data, ctx):
        loss = train_steps(model, data.x, data.y, ctx.steps, ctx.batch_size, ctx.lr, lambda: ctx.proximal(model))
        return TrainResult(data.samples, loss)

    def evaluate(self, model, data, ctx):
        return Evaluation(len(data.y_test), {"accuracy": accuracy(model, data.x_test, data.y_test)})
