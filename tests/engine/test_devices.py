"""Simulated devices in-process (no Ray): local training, encoding, private state, faults."""
import numpy as np
import pytest

from fedray.config import load_config, to_plain
from fedray.core import ternary
from fedray.engine.devices import Devices, decode_update, initial_params, tensor_modes
from fedray.strategies.base import DeviceConfig
from fedray.tasks import build_task, check_model

BASE = ["data.synthetic.n_users=20", "data.synthetic.n_items=60", "data.eval_negatives=9", "model.dim=8"]


def devices(overrides=()):
    """All 20 devices of a small synthetic recommender on one host, and the task's initial weights."""
    plain = to_plain(load_config(None, [*BASE, *overrides]))
    task = build_task(plain["task"])
    data = task.load(plain["seed"])
    params = initial_params(task, check_model(task), plain["seed"], 0, 1.0)
    return Devices(plain, task, data, np.arange(len(data)), plain["tiers"][0], 0), params


def shapes(params):
    return [v.shape for v in params.values()]


def test_train_returns_bytes_and_keeps_the_user_vector_private():
    host, params = devices()
    out = host.train(3, params, 1.0, 0, DeviceConfig())
    assert isinstance(out.payload, bytes) and out.samples > 0 and out.flops > 0
    assert "user" not in params  # the private vector is not a shared parameter
    assert ternary.payload_elements(out.payload) == sum(v.size for v in params.values())
    assert [t.shape for t in decode_update(out.payload, shapes(params), "ternary")] == shapes(params)
    st = host.states[3]
    assert set(st.private) == {"user"} and st.residual is not None and st.rounds == 1


def test_training_is_reproducible_and_state_round_trips():
    a, params = devices()
    for round_ in range(2):
        for d in (1, 2):
            a.train(d, params, 1.0, round_, DeviceConfig())
    b, _ = devices()
    b.import_state(a.export_state())
    assert [a.train(d, params, 1.0, 2, DeviceConfig()).payload for d in (1, 2)] == \
           [b.train(d, params, 1.0, 2, DeviceConfig()).payload for d in (1, 2)]
    c, _ = devices()
    assert c.train(1, params, 1.0, 0, DeviceConfig()).payload != c.train(1, params, 1.0, 1, DeviceConfig()).payload


def test_float_mode_sends_exactly_the_trained_weights_minus_the_global_ones():
    host, params = devices(["compression.method=none"])
    out = host.train(0, params, 1.0, 0, DeviceConfig())
    trained = host._models[1.0].state_dict()
    for name, sent in zip(params, decode_update(out.payload, shapes(params), "none")):
        np.testing.assert_array_equal(sent, trained[name].numpy() - params[name])
    assert np.abs(sent).sum() > 0


def test_byzantine_devices_send_their_honest_update_flipped_and_scaled():
    honest, params = devices(["compression.method=none"])
    bad, _ = devices(["compression.method=none", "faults.byzantine=1.0", "faults.byzantine_scale=3"])
    h = decode_update(honest.train(4, params, 1.0, 0, DeviceConfig()).payload, shapes(params), "none")
    b = decode_update(bad.train(4, params, 1.0, 0, DeviceConfig()).payload, shapes(params), "none")
    for x, y in zip(h, b):
        np.testing.assert_array_equal(y, x * np.float32(-3))


def test_evaluate_scores_hosted_devices_without_changing_their_state():
    host, params = devices()
    host.train(2, params, 1.0, 0, DeviceConfig())
    before = host.export_state()
    evals = host.evaluate([0, 1, 2], [0, 0, 0], {0: params}, {0: 1.0}, 0)
    assert [e.device for e in evals] == [0, 1, 2]
    assert all(set(e.evaluation.metrics) == {"hr10", "ndcg10"} and 0 <= e.evaluation.metrics["ndcg10"] <= 1 for e in evals)
    after = host.export_state()
    assert before.keys() <= after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


def test_sparse_row_tables_get_the_configured_mode_and_dense_layers_go_dense():
    assert tensor_modes(["emb", "w"], ["emb"], "rows") == ["rows", "dense"]
    assert tensor_modes(["emb", "w"], ["emb"], "auto") == ["auto", "auto"]


@pytest.mark.parametrize("corrupt", [1.0])
def test_corrupted_payloads_fail_to_decode(corrupt):
    host, params = devices([f"faults.corrupt={corrupt}"])
    out = host.train(1, params, 1.0, 0, DeviceConfig())
    with pytest.raises(ValueError):
        decode_update(out.payload, shapes(params), "ternary")


def test_only_devices_that_trained_hold_state_and_sparse_state_round_trips():
    host, params = devices()
    assert host.states == {}  # twenty registered devices, none trained: no state at all
    host.train(7, params, 1.0, 0, DeviceConfig())
    host.train(2, params, 1.0, 0, DeviceConfig())
    assert sorted(host.states) == [2, 7]
    saved = host.export_state()
    assert {key.split("/")[0] for key in saved} == {"2", "7"}
    fresh, _ = devices()
    fresh.import_state(saved)
    assert sorted(fresh.states) == [2, 7]
    assert fresh.train(7, params, 1.0, 1, DeviceConfig()).payload == host.train(7, params, 1.0, 1, DeviceConfig()).payload


def test_a_device_the_host_does_not_hold_gets_no_state():
    plain = to_plain(load_config(None, BASE))
    task = build_task(plain["task"])
    data = task.load(plain["seed"])
    host = Devices(plain, task, data, np.array([1, 4, 9]), plain["tiers"][0], 0)
    params = initial_params(task, check_model(task), plain["seed"], 0, 1.0)
    with pytest.raises(KeyError, match="device 5 is not hosted"):
        host.train(5, params, 1.0, 0, DeviceConfig())
    host.import_state({"5/rounds": np.array(3), "4/rounds": np.array(2)})  # another host's device is skipped
    assert sorted(host.states) == [4] and host.states[4].rounds == 2


def test_reported_sample_counts_are_each_devices_training_positives():
    host, _ = devices()
    assert host.report().samples.tolist() == [host.data[d].samples for d in range(20)]
