import numpy as np
import pytest

from fedray.models.recommender import (ModelSpec, init_global, init_user, local_train, rank_metrics, scaled_spec,
                                       top_k)


@pytest.mark.parametrize("kind", ["mf", "neumf"])
def test_local_training_touches_only_sampled_rows_and_lowers_loss(kind):
    spec = ModelSpec(200, 8, (8, 4), kind)
    params = init_global(spec, 0.1, np.random.default_rng(0))
    user = init_user(spec, 0.1, np.random.default_rng(1))
    pos = np.array([3, 5, 7, 9], np.int32)
    first = local_train(params, user, pos, spec, steps=1, batch=4, lr=0.5, negatives=2, l2=0, rng=np.random.default_rng(2))
    res = local_train(params, user, pos, spec, steps=40, batch=4, lr=0.5, negatives=2, l2=0, rng=np.random.default_rng(2))
    assert set(res.trained) == set(spec.shapes())  # the user vector is not among the shared parameters
    assert set(pos) <= set(res.rows) and len(res.rows) < 200
    assert res.trained["item_emb"].shape == (len(res.rows), 8)
    assert not np.allclose(res.trained["item_emb"], params["item_emb"][res.rows])
    assert res.loss < first.loss
    assert not np.allclose(res.user, user) and res.samples == 4


def test_rank_metrics_by_hand():
    spec = ModelSpec(5, 1)
    params = {"item_emb": np.array([[5.0], [1.0], [2.0], [3.0], [4.0]], np.float32), "item_bias": np.zeros(5, np.float32)}
    users = np.array([[1.0], [1.0]], np.float32)
    hits, ndcg = rank_metrics(params, users, np.array([0, 1]), np.array([[1, 2], [3, 4]]), spec, k=1)
    np.testing.assert_array_equal(hits, [1.0, 0.0])
    np.testing.assert_allclose(ndcg, [1.0, 0.0])
    items, _ = top_k(params, np.array([1.0], np.float32), spec, 2, exclude=np.array([0]))
    assert items.tolist() == [4, 3]


def test_scaled_spec_widths():
    s = scaled_spec(100, 64, [32, 16], "neumf", 0.25)
    assert (s.dim, s.hidden) == (16, (8, 4))
    assert s.shapes()["mlp0_w"] == (32, 8)


def test_mlp_hidden_is_empty_for_mf():
    """Simulated compute counts MLP layers only for a model that has them (MF ignores model.hidden)."""
    assert scaled_spec(100, 32, [32, 16], "mf", 1.0).mlp_hidden == ()
    assert scaled_spec(100, 32, [32, 16], "neumf", 0.5).mlp_hidden == (16, 8)
    assert not any(k.startswith("mlp") for k in scaled_spec(100, 32, [32, 16], "mf", 1.0).shapes())
