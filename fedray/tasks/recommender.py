"""The built-in recommender (MF or NeuMF over implicit feedback) as a Task: one device per user.

Each device holds one user's positives and a held-out item. The user's own vector is a private parameter:
it trains on the device and never leaves it. The item tables are sparse row tables: a device's local
training gathers only the item rows it samples, so its update is exactly zero elsewhere (rows mode).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import OmegaConf

from fedray.core import clock
from fedray.data import load_recdata
from fedray.data.partition import RecData, check_negatives, eval_negatives
from fedray.data.synthetic import SyntheticUsers
from fedray.models.recommender import (ITEM_TABLES, ModelSpec, init_user, local_train, personalize, rank_metrics,
                                       scaled_spec, top_k)
from fedray.tasks.base import EvalContext, Evaluation, Task, TrainContext, TrainResult

USER = "user"


@dataclass(frozen=True)
class UserData:
    """One device's data: its user's training positives, held-out item and sampled evaluation negatives."""

    positives: np.ndarray
    test_item: int
    negatives: np.ndarray
    n_items: int

    @property
    def samples(self) -> int:
        """Training positives (the device's fusion weight)."""
        return len(self.positives)


class Users:
    """The federation's devices, one per user; a device's evaluation negatives are drawn when first asked for."""

    def __init__(self, data: RecData | SyntheticUsers, eval_negatives_count: int, seed: int):
        self.data, self.count, self.seed = data, eval_negatives_count, seed
        self._negatives = lru_cache(maxsize=None)(self._draw_negatives)

    def __reduce__(self):
        """Pickled as its data alone (the negatives' cache is rebuilt), so hosts map the arrays zero-copy."""
        return Users, (self.data, self.count, self.seed)

    @property
    def user_ids(self) -> np.ndarray:
        """Raw user id of each device."""
        return self.data.user_ids

    def __len__(self) -> int:
        return self.data.n_users

    def _draw_negatives(self, device: int) -> np.ndarray:
        return eval_negatives(self.data, np.array([device]), self.count, self.seed)[0]

    def __getitem__(self, device: int) -> UserData:
        device = int(device)
        positives, test_item = self.data.holdout(device)
        return UserData(positives, test_item, self._negatives(device), self.data.n_items)


class RecommenderModel(torch.nn.Module):
    """MF or NeuMF parameters as named tensors in wire order, plus the device's private user vector."""

    def __init__(self, spec: ModelSpec, init_std: float):
        super().__init__()
        self.spec = spec
        for name, shape in spec.shapes().items():
            if name == "item_bias" or name.endswith("_b"):
                value = torch.zeros(shape)
            elif name.startswith("mlp") or name == "out_w":
                value = torch.randn(shape) / np.sqrt(shape[0])
            else:
                value = torch.randn(shape) * init_std
            self.register_parameter(name, torch.nn.Parameter(value))
        self.register_parameter(USER, torch.nn.Parameter(torch.randn(spec.user_dim) * init_std))

    def global_arrays(self) -> dict[str, np.ndarray]:
        """The shared parameters as numpy views (no copies)."""
        return {name: p.detach().numpy() for name, p in self.named_parameters() if name != USER}


class RecommenderTask(Task):
    """Implicit-feedback product recommendation: leave-one-out HR@10 and NDCG@10 against sampled negatives."""

    private = (USER,)
    sparse = ITEM_TABLES
    server_lr = 40.0  # each item row is averaged over all K participants, few of which touch it

    def __init__(self, data: Mapping[str, Any], model: Mapping[str, Any], negatives: int = 4, l2: float = 0.0,
                 personalize_steps: int = 10, personalize_lr: float = 1.0, personalize_batch: int = 32):
        self.data_cfg = OmegaConf.create(dict(data))
        self.model_cfg = OmegaConf.create(dict(model))
        self.negatives, self.l2 = negatives, l2
        self.personalize_steps, self.personalize_lr, self.personalize_batch = personalize_steps, personalize_lr, personalize_batch
        self.n_items: int | None = None

    def load(self, seed: int) -> Users:
        """MovieLens from data.path, else the seeded synthetic set; one device per user."""
        recdata = load_recdata(self.data_cfg, seed)
        check_negatives(recdata, self.data_cfg.eval_negatives)
        self.n_items = recdata.n_items
        return Users(recdata, self.data_cfg.eval_negatives, seed)

    def share(self, data: Users) -> Users:
        """The users as loaded: CSR arrays (or the synthetic catalogue and counts) that hosts read zero-copy."""
        return data

    def take(self, shared: Users, devices: np.ndarray) -> Users:
        """Every user, read in place: a host only ever touches its own devices' rows."""
        self.n_items = shared.data.n_items
        return shared

    def sample_counts(self, data: Users, devices: np.ndarray) -> np.ndarray:
        return data.data.counts()[np.asarray(devices, np.int64)]

    def spec(self, width: float) -> ModelSpec:
        """The model's shape at a width multiplier (load() must have run: the catalogue sets the tables' rows)."""
        if self.n_items is None:
            raise RuntimeError("RecommenderTask.load(seed) must run before model(width)")
        m = self.model_cfg
        return scaled_spec(self.n_items, m.dim, list(m.hidden), m.kind, width)

    def model(self, width: float) -> RecommenderModel:
        return RecommenderModel(self.spec(width), self.model_cfg.init_std)

    def init_private(self, model: torch.nn.Module, device: int, rng: np.random.Generator) -> None:
        with torch.no_grad():
            model.user.copy_(torch.from_numpy(init_user(model.spec, self.model_cfg.init_std, rng)))

    def _steps(self, data: UserData, ctx: TrainContext) -> int:
        return ctx.steps if ctx.steps is not None else max(1, ctx.epochs * -(-data.samples // ctx.batch_size))

    def train(self, model: torch.nn.Module, data: UserData, ctx: TrainContext) -> TrainResult:
        res = local_train(model.global_arrays(), model.user.detach().numpy(), data.positives, model.spec,
                          steps=self._steps(data, ctx), batch=ctx.batch_size, lr=ctx.lr, negatives=self.negatives,
                          l2=self.l2, rng=ctx.rng)
        rows = torch.from_numpy(res.rows)
        with torch.no_grad():
            for name, value in res.trained.items():
                target = getattr(model, name)
                if name in ITEM_TABLES:
                    target[rows] = torch.from_numpy(value)
                else:
                    target.copy_(torch.from_numpy(value))
            model.user.copy_(torch.from_numpy(res.user))
        return TrainResult(res.samples, res.loss)

    def _personalized(self, model: torch.nn.Module, data: UserData, rng: np.random.Generator) -> np.ndarray:
        """The user's vector refit against the frozen global model (the stored vector is left as it was)."""
        return personalize(model.global_arrays(), model.user.detach().numpy()[None], [data.positives], model.spec,
                           steps=self.personalize_steps, batch=self.personalize_batch, lr=self.personalize_lr, negatives=self.negatives, rng=rng)

    def evaluate(self, model: torch.nn.Module, data: UserData, ctx: EvalContext) -> Evaluation:
        users = self._personalized(model, data, ctx.rng)
        hits, ndcg = rank_metrics(model.global_arrays(), users, np.array([data.test_item]), data.negatives[None],
                                  model.spec)
        return Evaluation(1, {"hr10": float(hits[0]), "ndcg10": float(ndcg[0])})

    def recommend(self, model: torch.nn.Module, data: UserData, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Top-k unseen items for the device's user, ranked with its personalized vector: what the device shows."""
        user = self._personalized(model, data, rng)[0]
        seen = np.append(data.positives, data.test_item)
        return top_k(model.global_arrays(), user, model.spec, k, seen)

    def train_flops(self, model: torch.nn.Module, data: UserData, ctx: TrainContext) -> float:
        spec = model.spec
        return clock.mf_flops(data.samples, self._steps(data, ctx), ctx.batch_size * (1 + self.negatives), spec.dim,
                              spec.mlp_hidden)
