"""Width-scalable implicit-feedback recommenders (MF, NeuMF) as pure functions over named parameter arrays.

Global parameters (item tables, MLP) are a dict of float32 numpy arrays in a fixed key order; the user's
own vector is a separate array that stays with its device. Local training gathers only the item rows a
device touches, so a device's update is exactly zero outside them (what the sparse codec exploits).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

ITEM_TABLES = ("item_emb", "item_bias", "item_mlp")  # parameters indexed by item along axis 0


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a recommender: item count, embedding width, MLP widths and kind."""

    n_items: int
    dim: int
    hidden: tuple[int, ...] = ()
    kind: str = "mf"

    @property
    def user_dim(self) -> int:
        return self.dim * (2 if self.kind == "neumf" else 1)

    @property
    def mlp_hidden(self) -> tuple[int, ...]:
        """Hidden widths of the MLP the model really has (MF has none, whatever `hidden` holds)."""
        return self.hidden if self.kind == "neumf" else ()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the global parameters, in wire order."""
        shapes: dict[str, tuple[int, ...]] = {"item_emb": (self.n_items, self.dim), "item_bias": (self.n_items,)}
        if self.kind == "neumf":
            shapes["item_mlp"] = (self.n_items, self.dim)
            widths = (2 * self.dim, *self.hidden)
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
                shapes[f"mlp{i}_w"] = (a, b)
                shapes[f"mlp{i}_b"] = (b,)
            shapes["out_w"] = (self.dim + widths[-1],)
        return shapes


def scaled_spec(n_items: int, dim: int, hidden: Sequence[int], kind: str, width: float) -> ModelSpec:
    """A spec whose embedding and MLP widths are scaled by a tier's width multiplier (at least 1 unit each)."""
    return ModelSpec(n_items, max(1, round(dim * width)), tuple(max(1, round(h * width)) for h in hidden), kind)


def init_global(spec: ModelSpec, std: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seeded initial global parameters (item biases start at zero)."""
    out = {}
    for name, shape in spec.shapes().items():
        if name == "item_bias" or name.endswith("_b"):
            out[name] = np.zeros(shape, np.float32)
        elif name.startswith("mlp") or name == "out_w":
            out[name] = (rng.normal(0.0, 1.0, shape) / np.sqrt(shape[0])).astype(np.float32)
        else:
            out[name] = (rng.normal(0.0, std, shape)).astype(np.float32)
    return out


def init_user(spec: ModelSpec, std: float, rng: np.random.Generator) -> np.ndarray:
    """A device's private user vector."""
    return rng.normal(0.0, std, spec.user_dim).astype(np.float32)


def score(p: Mapping[str, torch.Tensor], user: torch.Tensor, rows: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Logits for users (..., user_dim) against item rows (...) of the given item tables (broadcasting)."""
    d = spec.dim
    gmf = user[..., :d] * p["item_emb"][rows]
    if spec.kind == "mf":
        return gmf.sum(-1) + p["item_bias"][rows]
    item_mlp = p["item_mlp"][rows]
    h = torch.cat([user[..., d:].expand_as(item_mlp), item_mlp], dim=-1)
    i = 0
    while f"mlp{i}_w" in p:
        h = torch.relu(h @ p[f"mlp{i}_w"] + p[f"mlp{i}_b"])
        i += 1
    return torch.cat([gmf, h], dim=-1) @ p["out_w"] + p["item_bias"][rows]


def _bce(logits_pos: torch.Tensor, logits_neg: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of positives (label 1) and sampled negatives (label 0)."""
    return torch.nn.functional.softplus(-logits_pos).mean() + torch.nn.functional.softplus(logits_neg).mean()


@dataclass
class LocalResult:
    """Outcome of one device's local training."""

    rows: np.ndarray  # the item rows the device touched (sorted), the only rows of the item tables it changed
    trained: dict[str, np.ndarray]  # new values: the touched rows of item tables, whole arrays otherwise
    user: np.ndarray  # the device's new private user vector
    loss: float  # mean training loss over the local steps
    samples: int  # training positives the device holds (its fusion weight)


def sample_batches(positives: np.ndarray, n_items: int, steps: int, batch: int, negatives: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positives [steps, batch] drawn with replacement and uniform negatives [steps, batch * negatives]."""
    pos = positives[rng.integers(0, len(positives), (steps, batch))]
    neg = rng.integers(0, n_items, (steps, batch * negatives), dtype=np.int64)
    return pos.astype(np.int64), neg


def local_train(global_params: Mapping[str, np.ndarray], user: np.ndarray, positives: np.ndarray, spec: ModelSpec,
                *, steps: int, batch: int, lr: float, negatives: int, l2: float,
                rng: np.random.Generator) -> LocalResult:
    """t steps of SGD on the device's positives and sampled negatives, over only the item rows it samples."""
    pos, neg = sample_batches(positives, spec.n_items, steps, batch, negatives, rng)
    rows, inverse = np.unique(np.concatenate([pos.ravel(), neg.ravel()]), return_inverse=True)
    local_pos = torch.from_numpy(inverse[:pos.size].reshape(pos.shape))
    local_neg = torch.from_numpy(inverse[pos.size:].reshape(neg.shape))
    params = {}
    for name, value in global_params.items():
        sub = value[rows] if name in ITEM_TABLES else value
        params[name] = torch.tensor(sub, requires_grad=True)
    u = torch.tensor(user, requires_grad=True)
    leaves = [*params.values(), u]
    losses = torch.zeros(steps)
    for s in range(steps):
        loss = _bce(score(params, u, local_pos[s], spec), score(params, u, local_neg[s], spec))
        if l2:
            loss = loss + l2 * (u.square().sum() + params["item_emb"].square().sum() / len(rows))
        grads = torch.autograd.grad(loss, leaves)
        with torch.no_grad():
            for leaf, g in zip(leaves, grads):
                leaf -= lr * g
        losses[s] = loss.detach()
    trained = {name: t.detach().numpy() for name, t in params.items()}
    return LocalResult(rows, trained, u.detach().numpy().copy(), float(losses.mean()), int(len(positives)))


def personalize(global_params: Mapping[str, np.ndarray], users: np.ndarray, positives: Sequence[np.ndarray],
                spec: ModelSpec, *, steps: int, batch: int, lr: float, negatives: int,
                rng: np.random.Generator) -> np.ndarray:
    """Fit many devices' private user vectors at once with the global model frozen (before ranking items)."""
    u = torch.tensor(np.asarray(users, np.float32), requires_grad=True)
    if steps == 0 or len(users) == 0:
        return u.detach().numpy()
    params = {k: torch.from_numpy(np.array(v)) for k, v in global_params.items()}
    for _ in range(steps):
        pos = np.stack([p[rng.integers(0, len(p), batch)] for p in positives]).astype(np.int64)
        neg = rng.integers(0, spec.n_items, (len(users), batch * negatives), dtype=np.int64)
        lp = score(params, u[:, None, :], torch.from_numpy(pos), spec)
        ln = score(params, u[:, None, :], torch.from_numpy(neg), spec)
        loss = (torch.nn.functional.softplus(-lp).mean(1) + torch.nn.functional.softplus(ln).mean(1)).sum()
        (g,) = torch.autograd.grad(loss, [u])
        with torch.no_grad():
            u -= lr * g
    return u.detach().numpy()


def rank_metrics(global_params: Mapping[str, np.ndarray], users: np.ndarray, test_items: np.ndarray,
                 negatives: np.ndarray, spec: ModelSpec, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out HR@k and NDCG@k per user: the held-out item ranked among its sampled negatives."""
    params = {name: torch.from_numpy(np.array(v)) for name, v in global_params.items()}
    cand = torch.from_numpy(np.concatenate([test_items[:, None], negatives], axis=1).astype(np.int64))
    with torch.no_grad():
        s = score(params, torch.from_numpy(np.asarray(users, np.float32))[:, None, :], cand, spec).numpy()
    rank = (s[:, 1:] > s[:, :1]).sum(1)
    hit = rank < k
    ndcg = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    return hit.astype(np.float64), ndcg


def top_k(global_params: Mapping[str, np.ndarray], user: np.ndarray, spec: ModelSpec, k: int,
          exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k best-scoring items for one user, skipping the items it already has; returns (items, scores)."""
    params = {name: torch.from_numpy(np.array(v)) for name, v in global_params.items()}
    with torch.no_grad():
        s = score(params, torch.from_numpy(np.asarray(user, np.float32)), torch.arange(spec.n_items), spec).numpy()
    s[exclude] = -np.inf
    best = np.argsort(-s, kind="stable")[:k]
    return best, s[best]
