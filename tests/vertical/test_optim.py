"""Each party's optimizer against torch.optim on the same gradients, and its checkpoint table."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fedray.vertical.optim import LocalOptimizer, load_state_table, state_table


def _torch_optimizer(kind: str, params, lr: float, l2: float, momentum: float):
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=l2)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=kind == "nesterov", weight_decay=l2)


@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adam"])
def test_steps_match_torch_on_a_quadratic(kind):
    """Catches a wrong momentum/Nesterov direction, a missing Adam bias correction or a misplaced L2 term."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((6, 6))
    H, b = A @ A.T / 6 + np.eye(6), rng.standard_normal(6)
    ours = LocalOptimizer(6, kind, lr=0.05, l2=0.01, momentum=0.8)
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    ref = _torch_optimizer(kind, [w], 0.05, 0.01, 0.8)
    for _ in range(25):
        ours.step(H @ ours.w - b)
        ref.zero_grad()
        w.grad = torch.from_numpy(H @ w.detach().numpy() - b)
        ref.step()
    assert np.allclose(ours.w, w.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_penalize_mask_keeps_l2_off_the_intercept():
    opt = LocalOptimizer(2, "sgd", lr=1.0, l2=0.5, momentum=0.0)
    opt.w = np.array([2.0, 2.0])
    opt.step(np.zeros(2), penalize=np.array([1.0, 0.0]))
    assert opt.w.tolist() == [1.0, 2.0]


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="optimizer 'rmsprop': allowed values are sgd, nesterov, adam"):
        LocalOptimizer(3, "rmsprop", 0.1, 0.0, 0.0)


def test_state_round_trips_by_code_and_continues_identically():
    """A restored Adam state (moments and step count) continues exactly; a lost step count would not."""
    rng = np.random.default_rng(2)
    codes = np.array([7, 3, 9])
    a = LocalOptimizer(3, "adam", 0.1, 0.0, 0.0)
    for _ in range(4):
        a.step(rng.standard_normal(3))
    table = state_table(codes, a)
    b = LocalOptimizer(2, "adam", 0.1, 0.0, 0.0)
    assert load_state_table("p", np.array([9, 7]), b, table) == 2  # a subset, in another order
    assert b.w.tolist() == [a.w[2], a.w[0]] and b.steps == 4
    g = rng.standard_normal(3)
    a.step(g)
    b.step(g[[2, 0]])
    assert b.w.tolist() == [a.w[2], a.w[0]]
    with pytest.raises(ValueError, match=r"p: checkpoint state has no weights for feature codes \[4\]"):
        load_state_table("p", np.array([4]), b, table)
    with pytest.raises(ValueError, match="lacks columns"):
        load_state_table("p", codes, b, table.drop(["steps"]))
