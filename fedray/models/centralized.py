"""The same recommender trained on pooled data in one process: the quality ceiling federated runs compare to."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from fedray.data.partition import RecData
from fedray.models.recommender import ModelSpec, _bce, init_global, init_user, score


def train_centralized(data: RecData, spec: ModelSpec, *, epochs: int, batch: int, lr: float, negatives: int,
                      init_std: float, seed: int, on_epoch: Callable[[int, float, dict, np.ndarray], None] | None = None
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Minibatch SGD over every (user, positive) pair with sampled negatives; returns (global params, user table)."""
    rng = np.random.default_rng([seed, 4242])
    params_np = init_global(spec, init_std, np.random.default_rng([seed, 1]))
    users_np = np.stack([init_user(spec, init_std, np.random.default_rng([seed, 2, u])) for u in range(data.n_users)])
    params = {k: torch.tensor(v, requires_grad=True) for k, v in params_np.items()}
    users = torch.tensor(users_np, requires_grad=True)
    leaves = [*params.values(), users]
    pair_users = np.repeat(np.arange(data.n_users), data.counts())
    pair_items = data.items.astype(np.int64)
    for epoch in range(epochs):
        order = rng.permutation(len(pair_users))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            u = torch.from_numpy(pair_users[idx])
            pos = torch.from_numpy(pair_items[idx])
            neg = torch.from_numpy(rng.integers(0, spec.n_items, (len(idx), negatives)))
            uvec = users[u]
            loss = _bce(score(params, uvec, pos, spec), score(params, uvec[:, None, :], neg, spec))
            grads = torch.autograd.grad(loss, leaves)
            with torch.no_grad():
                for leaf, g in zip(leaves, grads):
                    leaf -= lr * g
            total += float(loss.detach()) * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / len(order), {k: v.detach().numpy() for k, v in params.items()},
                     users.detach().numpy())
    return {k: v.detach().numpy().copy() for k, v in params.items()}, users.detach().numpy().copy()
