"""Supervised tasks over rows held in memory: partition over devices, stratified holdout, minibatch training.

``PartitionedTask`` turns a task's rows (features, integer labels, optional group ids) into per-device
data: a seeded partitioner picks each device's rows, a seeded stratified holdout keeps ``test_fraction``
of every (device, label) group for evaluation, and local training runs minibatch SGD or Adam with the
FedProx term. ``TableTask`` reads those rows from CSV/Parquet/Arrow files joined on an id column.

Standardization (TableTask): features are centred and scaled with the mean and standard deviation of
the training rows of all devices together. In a real federation these are one round of secure sums
(count, sum, sum of squares) per device; computing them pooled here is a simulation convenience that
gives the same numbers. Held-out rows never enter the statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fedray.data.movielens import DataError
from fedray.data.partitioners import METHODS, check_method, partition
from fedray.data.tables import load_table
from fedray.engine.streams import Stream, stream
from fedray.tasks.base import Task, TrainContext, TrainResult

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class DeviceData:
    """One device's rows: training and held-out features (float32) and integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def samples(self) -> int:
        """Training rows: the device's fusion weight."""
        return len(self.y_train)


def holdout(labels: np.ndarray, parts: Sequence[np.ndarray], test_fraction: float,
            rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per device, (train rows, test rows): a random round(test_fraction * n) of each label's n rows are held out."""
    device = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    rows = np.concatenate(parts)
    order = np.lexsort((rng.random(len(rows)), labels[rows], device))  # grouped by (device, label), random within
    rows, device, label = rows[order], device[order], labels[rows[order]]
    starts = np.flatnonzero(np.r_[True, (device[1:] != device[:-1]) | (label[1:] != label[:-1])])
    sizes = np.diff(np.r_[starts, len(rows)])
    rank = np.arange(len(rows)) - np.repeat(starts, sizes)
    is_test = rank < np.repeat(np.floor(test_fraction * sizes + 0.5), sizes)
    bounds = np.cumsum([len(p) for p in parts])[:-1]
    return [(np.sort(r[~t]), np.sort(r[t])) for r, t in zip(np.split(rows, bounds), np.split(is_test, bounds))]


class PartitionedTask(Task):
    """A supervised task whose rows are split over devices by a named partitioner; subclasses give rows and a loss."""

    standardize = False  # centre and scale features by the pooled training-row statistics

    def __init__(self, devices: int | None = 100, partition: str = "iid", alpha: float | None = None,
                 sigma: float | None = None, min_rows: int | None = None, test_fraction: float = 0.2,
                 optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params = {k: v for k, v in (("alpha", alpha), ("sigma", sigma), ("min_rows", min_rows)) if v is not None}
        check_method(partition, self.params)
        if devices is not None and (not isinstance(devices, int) or devices < 1):
            raise ValueError(f"task.devices must be a positive integer, got {devices!r}")
        if devices is None and partition != "natural":
            raise ValueError(f"task.devices is required for partition {partition!r} (one of {', '.join(METHODS)})")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"task.test_fraction must be in [0, 1), got {test_fraction!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"task.optimizer {optimizer!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
        self.devices, self.partition, self.test_fraction = devices, partition, test_fraction
        self.optimizer, self.momentum, self.weight_decay = optimizer, momentum, weight_decay
        self.pooled_test: DeviceData | None = None  # every device's held-out rows, set by load()
        self.input_shape: tuple[int, ...] | None = None  # one row's feature shape, set by load() or take()

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """All rows: features [n, ...], integer labels [n], and group ids [n] for `natural` partitions (or None)."""
        raise NotImplementedError(f"{type(self).__name__}.rows() is not implemented")

    def load(self, seed: int) -> list[DeviceData]:
        """Partition the rows over devices and hold out a stratified test share of each, both seeded by `seed`."""
        x, y, groups = self.rows()
        if self.partition == "natural" and groups is None:
            raise ValueError(f"{type(self).__name__}: partition 'natural' needs a group column (task.group_by)")
        parts = partition(self.partition, n_devices=self.devices, rng=stream(seed, Stream.PARTITION),
                          labels=y, ids=groups, **self.params)
        splits = holdout(y, parts, self.test_fraction, stream(seed, Stream.HOLDOUT))
        empty = [d for d, (train, _) in enumerate(splits) if len(train) == 0]
        if empty:
            raise DataError(f"device {empty[0]} has no training rows after holding out test_fraction="
                            f"{self.test_fraction} ({len(empty)} such devices); lower it or raise task.min_rows")
        x = x.astype(np.float32)
        if self.standardize:
            train_rows = np.concatenate([train for train, _ in splits])
            mean, std = x[train_rows].mean(axis=0), x[train_rows].std(axis=0)
            x = ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
        y = y.astype(np.int64)
        data = [DeviceData(x[train], y[train], x[test], y[test]) for train, test in splits]
        test_rows = np.sort(np.concatenate([test for _, test in splits]))
        self.pooled_test = DeviceData(x[:0], y[:0], x[test_rows], y[test_rows])
        self.input_shape = x.shape[1:]
        return data

    def share(self, data: list[DeviceData]) -> list[DeviceData]:
        """Every device's rows as partitioned by load: hosts read the arrays zero-copy and never re-read the files."""
        return data

    def take(self, shared: list[DeviceData], devices: np.ndarray) -> dict[int, DeviceData]:
        """The listed devices' rows, by device id."""
        self.input_shape = shared[0].x_train.shape[1:]
        return {int(d): shared[int(d)] for d in devices}

    def require_pooled_test(self) -> DeviceData:
        """The pooled held-out rows, which exist once load(seed) has run in this process."""
        if self.pooled_test is None:
            raise RuntimeError(f"{type(self).__name__}.evaluate_server needs load(seed) to have run in this process")
        return self.pooled_test

    def batch_loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean training loss of one minibatch."""
        raise NotImplementedError(f"{type(self).__name__}.batch_loss() is not implemented")

    def _optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _batches(self, n: int, ctx: TrainContext) -> list[torch.Tensor]:
        """Row indices of each minibatch: ctx.steps batches through reshuffled epochs, else ctx.epochs full epochs."""
        size = min(ctx.batch_size, n)
        if ctx.steps is not None:
            epochs = -(-ctx.steps * size // n)
            order = torch.argsort(torch.rand(epochs, n), dim=1).reshape(-1)
            return list(order[: ctx.steps * size].reshape(ctx.steps, size))
        return [batch for _ in range(ctx.epochs or 1) for batch in torch.randperm(n).split(size)]

    def train(self, model: torch.nn.Module, data: DeviceData, ctx: TrainContext) -> TrainResult:
        """Minibatch training from the loaded global weights, the FedProx term added to every batch's loss."""
        x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
        batches = self._batches(data.samples, ctx)
        optimizer = self._optimizer(model, ctx.lr)
        model.train()
        total = 0.0
        for rows in batches:
            optimizer.zero_grad()
            loss = self.batch_loss(model, x[rows], y[rows])
            (loss + ctx.proximal(model)).backward()
            optimizer.step()
            total += float(loss.detach())
        return TrainResult(samples=data.samples, loss=total / max(len(batches), 1))


class TableTask(PartitionedTask):
    """Rows from one table file or several joined on `id_column`: `label` is the target, `features` the inputs."""

    standardize = True

    def __init__(self, paths: str | Path | Sequence[str | Path], label: str = "y", features: Sequence[str] | None = None,
                 id_column: str = "id", group_by: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self.label, self.features, self.id_column, self.group_by = label, features, id_column, group_by
        if features is not None and label in features:
            raise ValueError(f"task.features lists the label column {label!r}")
        self._rows: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Read (once per process) the label, features and group column from the task's files."""
        if self._rows is None:
            extra = [self.group_by] if self.group_by is not None and self.group_by not in (self.features or ()) else []
            wanted = None if self.features is None else [self.label, *self.features, *extra]
            ids, names, matrix = load_table(self.paths, self.id_column, wanted)
            where = ", ".join(map(str, self.paths))
            if self.label not in names:
                raise DataError(f"{where}: no label column {self.label!r}; columns are {names}")
            labels = matrix[:, names.index(self.label)]
            bad = labels != np.round(labels)
            if bad.any():
                raise DataError(f"{where}: column {self.label!r}: label {labels[bad][0]} of id {str(ids[bad][0])!r} "
                                "is not a class number")
            groups = None
            if self.group_by is not None:
                if self.group_by not in names:
                    raise DataError(f"{where}: no group column {self.group_by!r} (task.group_by); columns are {names}")
                groups = matrix[:, names.index(self.group_by)]
            inputs = [n for n in names if n not in (self.label, self.group_by)] if self.features is None else self.features
            if not inputs:
                raise DataError(f"{where}: no feature columns besides {self.label!r}")
            features = matrix[:, [names.index(n) for n in inputs]]
            self._rows = (features, labels.astype(np.int64), groups)
        return self._rows
