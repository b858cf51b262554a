import numpy as np

from fedray.config import load_config, to_plain
from fedray.core import ternary
from fedray.data import load_recdata
from fedray.horizontal.device import DeviceFleet, decode_update
from fedray.models.recommender import ModelSpec, init_global


def fleet(overrides=()):
    cfg = load_config(None, ["data.synthetic.n_users=20", "data.synthetic.n_items=60", "data.eval_negatives=9", *overrides])
    data = load_recdata(cfg.data, cfg.seed)
    spec = ModelSpec(data.n_items, 8)
    return DeviceFleet(to_plain(cfg), data, np.arange(data.n_users)), spec, init_global(spec, 0.1, np.random.default_rng(0))


def test_train_returns_bytes_and_keeps_user_vector_private():
    f, spec, params = fleet()
    out = f.train(3, params, spec, 0)
    assert set(out) == {"device", "payload", "samples", "loss"} and isinstance(out["payload"], bytes)
    tensors = decode_update(out["payload"], list(spec.shapes().values()), "ternary")
    assert [t.shape for t in tensors] == list(spec.shapes().values())
    assert ternary.payload_elements(out["payload"]) == sum(int(np.prod(s)) for s in spec.shapes().values())
    assert f.states[3].user is not None and f.states[3].residual is not None


def test_training_is_reproducible_and_state_round_trips():
    f1, spec, params = fleet()
    f2, _, _ = fleet()
    a = [f1.train(d, params, spec, r)["payload"] for r in range(2) for d in (1, 2)]
    f2.import_state(f1.export_state())
    f1b, _, _ = fleet()
    [f1b.train(d, params, spec, r) for r in range(2) for d in (1, 2)]
    assert [f1b.train(d, params, spec, 2)["payload"] for d in (1, 2)] == [f2.train(d, params, spec, 2)["payload"] for d in (1, 2)]
    assert a[0] != a[2]  # a new round draws new randomness


def test_float_mode_round_trips_exact_update():
    f, spec, params = fleet(["compression.method=none"])
    out = f.train(0, params, spec, 0)
    tensors = decode_update(out["payload"], list(spec.shapes().values()), "none")
    assert len(out["payload"]) == 4 * sum(t.size for t in tensors)


def test_evaluate_scores_hosted_devices():
    f, spec, params = fleet()
    hits, ndcg = f.evaluate(np.arange(5), params, spec, 0)
    assert hits.shape == (5,) and ((ndcg >= 0) & (ndcg <= 1)).all()
