import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from fedray.core.fusion import weighted_mean
from fedray.strategies.base import Strategy
from fedray.strategies.fedavg import FedAvg, FedAvgM, FedProx

shapes_st = st.lists(array_shapes(min_dims=0, max_dims=3, max_side=5), min_size=1, max_size=3)


def random_round(seed: int, n: int, shapes: list[tuple[int, ...]]):
    """Global weights, n deltas shaped like them and positive integer sample counts, from one seed."""
    rng = np.random.default_rng(seed)
    params = {f"t{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    updates = [{k: rng.normal(size=p.shape).astype(np.float32) for k, p in params.items()} for _ in range(n)]
    return params, updates, rng.integers(1, 1000, n).tolist()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), shapes=shapes_st, lr=st.floats(0.01, 50.0))
def test_fedavg_is_the_old_sgd_server_step_bit_for_bit(legacy_optimizer, seed, n, shapes, lr):
    params, updates, weights = random_round(seed, n, shapes)
    old = legacy_optimizer("sgd", lr).step(params, weighted_mean(updates, weights))
    new = FedAvg(lr).aggregate(0, params, updates, weights)
    assert new.keys() == old.keys()
    for k in old:
        assert new[k].dtype == np.float32 and new[k].shape == params[k].shape
        np.testing.assert_array_equal(new[k], old[k])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), shapes=shapes_st)
def test_fedavg_weights_deltas_by_sample_count(seed, n, shapes):
    params, updates, weights = random_round(seed, n, shapes)
    out = FedAvg(2.0).aggregate(0, params, updates, weights)
    for k, p in params.items():
        expected = p + 2.0 * sum(w * u[k].astype(np.float64) for w, u in zip(weights, updates)) / sum(weights)
        np.testing.assert_allclose(out[k], expected, rtol=1e-5, atol=1e-5)


def test_fedavgm_accumulates_velocity():
    params = {"w": np.array([1.0, -2.0], np.float32)}
    first = [{"w": np.array([1.0, 0.0], np.float32)}, {"w": np.array([0.0, 3.0], np.float32)}]
    second = [{"w": np.array([-1.0, 1.0], np.float32)}]
    strategy = FedAvgM(server_lr=0.5, momentum=0.8)
    x1 = strategy.aggregate(0, params, first, [1, 3])
    x2 = strategy.aggregate(1, x1, second, [5])
    d1 = np.array([0.25, 2.25])
    d2 = np.array([-1.0, 1.0])
    np.testing.assert_allclose(x1["w"], params["w"] + 0.5 * d1, rtol=1e-6)
    np.testing.assert_allclose(x2["w"], params["w"] + 0.5 * d1 + 0.5 * (0.8 * d1 + d2), rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), shapes=shapes_st)
def test_fedavgm_without_momentum_is_fedavg(seed, n, shapes):
    params, updates, weights = random_round(seed, n, shapes)
    a = FedAvgM(3.0, momentum=0.0).aggregate(0, params, updates, weights)
    b = FedAvg(3.0).aggregate(0, params, updates, weights)
    for k in params:
        np.testing.assert_array_equal(a[k], b[k])


def test_fedavgm_resumed_from_state_equals_uninterrupted_run():
    rounds = [random_round(seed, 4, [(3, 2), (5,)]) for seed in range(4)]
    steady = FedAvgM(1.5, momentum=0.9)
    x = rounds[0][0]
    for round_, (_, updates, weights) in enumerate(rounds):
        x = steady.aggregate(round_, x, updates, weights)
    first = FedAvgM(1.5, momentum=0.9)
    y = rounds[0][0]
    for round_, (_, updates, weights) in enumerate(rounds[:2]):
        y = first.aggregate(round_, y, updates, weights)
    resumed = FedAvgM(1.5, momentum=0.9)
    resumed.load_state({k: v.copy() for k, v in first.state().items()})
    for round_, (_, updates, weights) in enumerate(rounds[2:], start=2):
        y = resumed.aggregate(round_, y, updates, weights)
    assert set(first.state()) == {"velocity/t0", "velocity/t1"}
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])


def test_fedavgm_rejects_state_of_another_strategy_and_bad_momentum():
    with pytest.raises(ValueError, match="'m/w'"):
        FedAvgM().load_state({"m/w": np.zeros(2, np.float32)})
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="momentum"):
            FedAvgM(momentum=bad)


def test_fedprox_draws_like_fedavg_and_tells_devices_mu():
    devices = np.arange(10, 40)
    plan = FedProx(proximal_mu=0.05).configure(3, devices, 5, 1.4, np.random.default_rng(7))
    base = Strategy().configure(3, devices, 5, 1.4, np.random.default_rng(7))
    np.testing.assert_array_equal(plan.devices, base.devices)
    assert len(plan.devices) == 7 and plan.config.proximal_mu == 0.05
    assert base.config.proximal_mu == 0.0
    params, updates, weights = random_round(1, 3, [(4,)])
    np.testing.assert_array_equal(FedProx(2.0, 0.05).aggregate(0, params, updates, weights)["t0"],
                                  FedAvg(2.0).aggregate(0, params, updates, weights)["t0"])
    with pytest.raises(ValueError, match="proximal_mu"):
        FedProx(proximal_mu=-1.0)


def test_aggregate_names_the_update_and_tensor_that_do_not_fit():
    params, updates, weights = random_round(0, 3, [(2, 2), (3,)])
    updates[2]["t1"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"update 2: tensor 't1' has shape \(4,\), expected \(3,\)"):
        FedAvg().aggregate(0, params, updates, weights)
    del updates[1]["t0"]
    with pytest.raises(ValueError, match="update 1: tensors"):
        FedAvgM().aggregate(0, params, updates, weights)
    with pytest.raises(ValueError, match="no updates"):
        FedAvg().aggregate(0, params, [], [])
    with pytest.raises(ValueError, match="server_lr"):
        FedAvg(server_lr=0.0)
