"""TabularMLPTask: the credit data's load and partition, width nesting, training, metrics, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fedray.data.movielens import DataError
from fedray.tasks.base import EvalContext, Task, TrainContext
from fedray.tasks.tabular import TabularMLPTask
from tests.conftest import SHARED_DATA
from tests.tasks.test_metrics import pair_count_auc

CREDIT = [SHARED_DATA / "vertical" / f"default_credit_hetero_{party}.csv" for party in ("guest", "host")]
WIDTHS = (0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def credit():
    if not all(p.is_file() for p in CREDIT):
        pytest.skip(f"credit data not found under {SHARED_DATA / 'vertical'}")
    task = TabularMLPTask(CREDIT, label="y", devices=100, partition="dirichlet", alpha=0.5, min_rows=10)
    return task, task.load(0)


def test_credit_joins_to_30000_rows_of_23_features_over_100_devices(credit):
    task, data = credit
    assert len(data) == 100
    assert sum(d.samples + len(d.y_test) for d in data) == 30000
    assert {d.x_train.shape[1] for d in data} == {23}
    assert min(d.samples + len(d.y_test) for d in data) >= 10
    held_out = sum(len(d.y_test) for d in data) / 30000
    assert 0.18 < held_out < 0.22
    positive_share = np.array([d.y_train.mean() for d in data])
    assert positive_share.std() > 0.15  # Dirichlet(0.5) label skew, far from the iid spread (~0.05 here)
    assert len(task.pooled_test.y_test) == sum(len(d.y_test) for d in data)


def test_credit_partition_is_seeded(credit):
    task, data = credit
    again = TabularMLPTask(CREDIT, label="y", devices=100, partition="dirichlet", alpha=0.5, min_rows=10).load(0)
    assert all(np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test) for a, b in zip(data, again))


def test_widths_nest_and_every_entry_is_float(binary_csv):
    task = TabularMLPTask(binary_csv, devices=4, hidden=(12, 7))
    shapes = {w: {k: v.shape for k, v in task.model(w).state_dict().items()} for w in WIDTHS}
    assert all(set(s) == set(shapes[1.0]) for s in shapes.values())
    for small, large in zip(WIDTHS, WIDTHS[1:]):
        for key, shape in shapes[small].items():
            assert all(a <= b for a, b in zip(shape, shapes[large][key])), key
    for width in WIDTHS:
        state = task.model(width).state_dict()
        assert all(v.is_floating_point() for v in state.values())
        assert state["layers.0.weight"].shape[1] == 5 and state["layers.4.weight"].shape[0] == 1  # inputs, logit fixed
    assert shapes[0.25]["layers.0.weight"] == (3, 5) and shapes[0.25]["layers.2.weight"] == (2, 3)


def test_training_lowers_the_device_loss(binary_csv):
    task = TabularMLPTask(binary_csv, devices=2, hidden=(16,))
    data = task.load(0)[0]
    torch.manual_seed(0)
    model = task.model(1.0)
    train_loss = lambda: float(task.batch_loss(model, torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)).detach())
    before = train_loss()
    result = task.train(model, data, TrainContext(0, 0, steps=60, epochs=None, batch_size=32, lr=0.2, rng=np.random.default_rng(0)))
    assert result.samples == data.samples
    assert train_loss() < 0.8 * before


def test_evaluate_matches_an_independent_computation(binary_csv):
    task = TabularMLPTask(binary_csv, devices=3, hidden=(8,))
    data = task.load(0)
    torch.manual_seed(1)
    model = task.model(1.0)
    got = task.evaluate(model, data[1], EvalContext(0, 1, np.random.default_rng(0)))
    with torch.no_grad():
        logits = model(torch.from_numpy(data[1].x_test)).numpy().astype(np.float64)
    labels = data[1].y_test
    assert got.samples == len(labels)
    np.testing.assert_allclose(got.metrics["auc"], pair_count_auc(labels, logits), rtol=1e-9)
    probability = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(got.metrics["loss"], -np.mean(labels * np.log(probability) + (1 - labels) * np.log(1 - probability)), rtol=1e-6)
    assert got.metrics["accuracy"] == np.mean((probability > 0.5) == labels)
    pooled = task.evaluate_server(model, 0)
    assert pooled.samples == sum(len(d.y_test) for d in data)


def test_one_class_device_reports_nan_auc(binary_csv):
    task = TabularMLPTask(binary_csv, devices=40, partition="dirichlet", alpha=0.01, min_rows=5)
    data = task.load(0)
    one_class = [d for d in data if len(d.y_test) and len(np.unique(d.y_test)) == 1]
    assert one_class, "alpha=0.01 should leave some device with one held-out class"
    metrics = task.evaluate(task.model(1.0), one_class[0], EvalContext(0, 0, np.random.default_rng(0))).metrics
    assert np.isnan(metrics["auc"]) and np.isfinite(metrics["accuracy"]) and np.isfinite(metrics["loss"])


def test_non_binary_label_and_bad_hidden_are_named(tmp_path, binary_csv):
    path = tmp_path / "three.csv"
    path.write_text("id,y,f0\n1,0,0.5\n2,2,1.5\n3,1,2.0\n")
    with pytest.raises(DataError, match="column 'y': label 2 is not 0 or 1"):
        TabularMLPTask(path, devices=1).load(0)
    path.write_text("id,y,f0\n1,0,0.5\n2,0.5,1.5\n")
    with pytest.raises(DataError, match="label 0.5 of id '2' is not a class number"):
        TabularMLPTask(path, devices=1).load(0)
    for hidden in ((), (8, 0), (8.5,)):
        with pytest.raises(ValueError, match="task.hidden must be"):
            TabularMLPTask(binary_csv, hidden=hidden)
    with pytest.raises(TypeError, match="unexpected keyword argument 'alhpa'"):
        TabularMLPTask(binary_csv, alhpa=0.5)


def test_is_a_task():
    assert issubclass(TabularMLPTask, Task)
