import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from fedray.core.fusion import weighted_mean
from fedray.strategies.adaptive import FedAdagrad, FedAdam, FedYogi

shapes_st = st.lists(array_shapes(min_dims=0, max_dims=3, max_side=5), min_size=1, max_size=3)


def random_round(seed: int, n: int, shapes: list[tuple[int, ...]]):
    """Global weights, n deltas shaped like them and positive integer sample counts, from one seed."""
    rng = np.random.default_rng(seed)
    params = {f"t{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    updates = [{k: rng.normal(size=p.shape).astype(np.float32) for k, p in params.items()} for _ in range(n)]
    return params, updates, rng.integers(1, 1000, n).tolist()


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), shapes=shapes_st, lr=st.floats(1e-3, 10.0),
       beta1=st.floats(0.0, 0.99), beta2=st.floats(0.0, 0.999), tau=st.floats(1e-6, 1.0))
def test_fedadam_is_the_old_server_optimizer_bit_for_bit(legacy_optimizer, seed, n, shapes, lr, beta1, beta2, tau):
    params, _, _ = random_round(seed, n, shapes)
    old, new = legacy_optimizer("fedadam", lr, beta1, beta2, tau), FedAdam(lr, beta1, beta2, tau)
    x_old = x_new = params
    for round_ in range(3):
        _, updates, weights = random_round(seed + round_ + 1, n, shapes)
        x_old = old.step(x_old, weighted_mean(updates, weights))
        x_new = new.aggregate(round_, x_new, updates, weights)
        for k in params:
            assert x_new[k].dtype == np.float32
            np.testing.assert_array_equal(x_new[k], x_old[k])
    assert old.state().keys() == new.state().keys()


def test_fedadam_resumes_from_an_old_server_optimizer_checkpoint(legacy_optimizer):
    params, updates, weights = random_round(3, 4, [(6,), (2, 3)])
    old = legacy_optimizer("fedadam", 0.1)
    x = old.step(params, weighted_mean(updates, weights))
    new = FedAdam(0.1)
    new.load_state(old.state())
    _, updates, weights = random_round(4, 4, [(6,), (2, 3)])
    expected = old.step(x, weighted_mean(updates, weights))
    got = new.aggregate(1, x, updates, weights)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


def reference_run(rule: str, directions: list[list[float]], lr: float, beta1: float, beta2: float, tau: float):
    """Reddi et al.'s Algorithm 2 on one coordinate list, in Python floats, returning the final weights' offsets."""
    size = len(directions[0])
    m, v, x = [0.0] * size, [0.0] * size, [0.0] * size
    for d in directions:
        for i in range(size):
            m[i] = beta1 * m[i] + (1 - beta1) * d[i]
            if rule == "adam":
                v[i] = beta2 * v[i] + (1 - beta2) * d[i] ** 2
            elif rule == "yogi":
                sign = (v[i] > d[i] ** 2) - (v[i] < d[i] ** 2)
                v[i] = v[i] - (1 - beta2) * d[i] ** 2 * sign
            else:
                v[i] = v[i] + d[i] ** 2
            x[i] += lr * m[i] / (math.sqrt(v[i]) + tau)
    return x


@pytest.mark.parametrize("rule, cls", [("adam", FedAdam), ("yogi", FedYogi), ("adagrad", FedAdagrad)])
def test_adaptive_rules_follow_reddi_et_al(rule, cls):
    # a large step then small ones: the three second moments part ways (Yogi shrinks v additively, Adagrad never)
    directions = [[3.0, -0.5, 0.0, 1e-3], [0.1, -0.5, 0.2, 1e-3], [0.1, 0.4, -0.2, 2.0], [-0.05, 0.0, 0.0, 1e-3]]
    kwargs = dict(server_lr=0.3, beta1=0.8, tau=1e-2) | ({} if rule == "adagrad" else dict(beta2=0.9))
    strategy = cls(**kwargs)
    x = {"w": np.zeros(4, np.float32)}
    for round_, d in enumerate(directions):  # one update: the weighted mean is the update itself
        x = strategy.aggregate(round_, x, [{"w": np.array(d, np.float32)}], [7])
    expected = reference_run(rule, directions, 0.3, 0.8, 0.9, 1e-2)
    np.testing.assert_allclose(x["w"], expected, rtol=2e-5, atol=1e-6)


def test_the_three_second_moments_differ():
    directions = [np.array([3.0, 0.1], np.float32), np.array([0.1, 0.1], np.float32)]
    finals = []
    for cls in (FedAdam, FedYogi, FedAdagrad):
        strategy, x = cls(1.0, beta1=0.5), {"w": np.zeros(2, np.float32)}
        for round_, d in enumerate(directions):
            x = strategy.aggregate(round_, x, [{"w": d}], [1])
        finals.append(strategy.v["w"])
    assert not np.array_equal(finals[0], finals[1]) and not np.array_equal(finals[1], finals[2])


@pytest.mark.parametrize("cls", [FedAdam, FedYogi, FedAdagrad])
def test_resumed_adaptive_strategy_equals_uninterrupted_run(cls):
    rounds = [random_round(seed, 3, [(4, 2), ()]) for seed in range(5)]
    steady, first = cls(0.05), cls(0.05)
    x = y = rounds[0][0]
    for round_, (_, updates, weights) in enumerate(rounds):
        x = steady.aggregate(round_, x, updates, weights)
        if round_ < 2:
            y = first.aggregate(round_, y, updates, weights)
    resumed = cls(0.05)
    resumed.load_state({k: v.copy() for k, v in first.state().items()})
    for round_, (_, updates, weights) in enumerate(rounds[2:], start=2):
        y = resumed.aggregate(round_, y, updates, weights)
    assert set(first.state()) == {"m/t0", "m/t1", "v/t0", "v/t1"}
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])


def test_adaptive_parameters_and_state_are_checked():
    for kwargs, word in [(dict(beta1=1.0), "beta1"), (dict(beta2=-0.1), "beta2"), (dict(tau=0.0), "tau"),
                         (dict(tau=float("inf")), "tau"), (dict(server_lr=-1.0), "server_lr")]:
        with pytest.raises(ValueError, match=word):
            FedYogi(**kwargs)
    with pytest.raises(TypeError):
        FedAdagrad(beta2=0.9)  # Adagrad has no beta2: the builder must not pass it
    with pytest.raises(ValueError, match="velocity/w"):
        FedAdam().load_state({"velocity/w": np.zeros(1, np.float32)})
