"""The Task API: what a user writes to federate their own model (no Ray, no fedray internals).

A task is a plain class. fedray builds it from config (`task.target: "pkg.module:Class"`, the other keys
of `task` are its constructor's keyword arguments), then asks it for:

- ``load(seed)``: the federation's per-device data, indexable by device id (``len`` = number of devices);
  the driver calls it once; device hosts build their own devices' data from ``share(data)`` (put in Ray's
  object store once) with ``take(shared, devices)``, or, where ``share`` returns None (the default), by
  calling ``load(seed)`` themselves;
- ``model(width)``: a torch ``nn.Module`` at a width multiplier (tiers get narrower models);
- ``train(model, data, ctx)``: local training of one device from the global weights already loaded into
  ``model``, for ``ctx.steps`` steps or ``ctx.epochs`` epochs; fedray computes the update itself;
- ``evaluate(model, data, ctx)``: named metrics on one device's held-out data, weighted by ``samples``.

Randomness must come from ``ctx.rng`` (numpy) or torch's global generator, which fedray seeds per
(run seed, round, device) before each call, so runs are reproducible and resumable bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # a task's own module imports torch; this one does not, so the Ray driver can do without it
    import torch


@dataclass(frozen=True)
class TrainContext:
    """What one device's local training is asked to do this round."""

    round_: int
    device: int
    steps: int | None  # local steps t (None: run `epochs` epochs instead)
    epochs: int | None  # local epochs E (None: run `steps` steps)
    batch_size: int
    lr: float
    rng: np.random.Generator  # seeded by (run seed, round, device)
    proximal_mu: float = 0.0  # FedProx: weight of mu/2 * ||w - w_global||^2 (0: off)
    global_params: Mapping[str, torch.Tensor] = field(default_factory=dict)  # the round's global weights

    def proximal(self, model: torch.nn.Module) -> torch.Tensor:
        """FedProx's term mu/2 * ||w - w_global||^2 over the shared parameters (0 when mu is 0): add it to the loss."""
        import torch

        if not self.proximal_mu:
            return torch.zeros(())
        total = torch.zeros(())
        for name, p in model.named_parameters():
            g = self.global_params.get(name)
            if g is not None:
                total = total + (p - g).square().sum()
        return 0.5 * self.proximal_mu * total


@dataclass(frozen=True)
class EvalContext:
    """Where an evaluation happens: the round and device, and a seeded generator for any sampling it needs."""

    round_: int
    device: int
    rng: np.random.Generator


@dataclass(frozen=True)
class TrainResult:
    """What local training reports: its sample count (the fusion weight) and mean training loss."""

    samples: int
    loss: float


@dataclass(frozen=True)
class Evaluation:
    """Named metrics of one device (or the server's test set), averaged over devices weighted by samples."""

    samples: int
    metrics: Mapping[str, float]


class Task:
    """Base class of federated tasks; subclass it and override load, model, train and evaluate."""

    private: Sequence[str] = ()  # state_dict keys that stay on the device: never sent, never checkpointed by the driver
    sparse: Sequence[str] = ()  # row tables (embeddings): updates touch few rows, so they travel in rows mode
    server_lr: float = 1.0  # the server learning rate strategies use unless `strategy.server_lr` is set

    def load(self, seed: int) -> Sequence[Any]:
        """Per-device data, indexable by device id; each item is whatever train and evaluate take."""
        raise NotImplementedError(f"{type(self).__name__}.load(seed) is not implemented")

    def share(self, data: Sequence[Any]) -> Any | None:
        """What device hosts build their devices' data from: the driver puts it in Ray's object store once and
        every host reads its numpy arrays zero-copy. None (the default): each host calls load(seed) itself."""
        return None

    def take(self, shared: Any, devices: np.ndarray) -> Sequence[Any] | Mapping[int, Any]:
        """The data of `devices` (indexable by their device ids) from what share returned; it sets whatever else
        load would have set on this task (e.g. sizes that model needs), since hosts never call load."""
        raise NotImplementedError(f"{type(self).__name__}.share returned data but take(shared, devices) is not implemented")

    def sample_counts(self, data: Sequence[Any], devices: np.ndarray) -> np.ndarray:
        """Training samples of each of `devices` (their fusion weights, reported at start); override with a
        vectorised lookup when devices are many."""
        return np.array([data[int(d)].samples for d in devices], np.int64)

    def model(self, width: float) -> torch.nn.Module:
        """A fresh model at width multiplier `width` (1.0: full size); narrower widths nest in wider ones."""
        raise NotImplementedError(f"{type(self).__name__}.model(width) is not implemented")

    def train(self, model: torch.nn.Module, data: Any, ctx: TrainContext) -> TrainResult:
        """Train `model` in place on one device's data."""
        raise NotImplementedError(f"{type(self).__name__}.train(model, data, ctx) is not implemented")

    def evaluate(self, model: torch.nn.Module, data: Any, ctx: EvalContext) -> Evaluation:
        """Metrics of `model` on one device's held-out data."""
        raise NotImplementedError(f"{type(self).__name__}.evaluate(model, data, ctx) is not implemented")

    def evaluate_server(self, model: torch.nn.Module, round_: int) -> Evaluation | None:
        """Optional metrics on a central test set (None: the task has none)."""
        return None

    def init_private(self, model: torch.nn.Module, device: int, rng: np.random.Generator) -> None:
        """Set every private parameter of `model` for a device that has none yet (default: a fresh model's, seeded
        per device)."""

    def train_flops(self, model: torch.nn.Module, data: Any, ctx: TrainContext) -> float:
        """Estimated FLOPs of one device's local training, for the simulated clock (6 per parameter and sample)."""
        n_params = sum(p.numel() for p in model.parameters())
        per_step = ctx.batch_size
        samples = getattr(data, "samples", per_step)
        work = ctx.steps * per_step if ctx.steps is not None else (ctx.epochs or 1) * samples
        return float(6 * n_params * work)
