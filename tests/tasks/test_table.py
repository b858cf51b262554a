"""PartitionedTask and TableTask: stratified holdout, seeded loads, standardization, the training loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fedray.data.movielens import DataError
from fedray.tasks.base import TrainContext
from fedray.tasks.table import DeviceData, PartitionedTask, TableTask, holdout


class LinearTask(PartitionedTask):
    """A logistic-regression task over fixed in-memory rows, to test the base class alone."""

    def __init__(self, x, y, groups=None, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.groups = x, y, groups

    def rows(self):
        return self.x, self.y, self.groups

    def model(self, width):
        return torch.nn.Linear(self.x.shape[1], 1)

    def batch_loss(self, model, x, y):
        return torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y.float())


def synthetic(n_rows=500, n_features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, n_features))
    y = (x @ np.arange(1, n_features + 1) + rng.normal(size=n_rows) > 0).astype(np.int64)
    return x, y


def ctx(steps=None, epochs=None, batch_size=16, lr=0.1, mu=0.0, model=None):
    params = {k: v.detach().clone() for k, v in model.named_parameters()} if model is not None else {}
    return TrainContext(round_=0, device=0, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr,
                        rng=np.random.default_rng(0), proximal_mu=mu, global_params=params)


def test_holdout_is_stratified_per_device_and_label():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 1000)
    parts = np.array_split(rng.permutation(1000), 7)
    splits = holdout(labels, [np.sort(p) for p in parts], 0.2, np.random.default_rng(1))
    for part, (train, test) in zip(parts, splits):
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.sort(part))
        for label in range(3):
            n = int((labels[part] == label).sum())
            assert int((labels[test] == label).sum()) == int(np.floor(0.2 * n + 0.5))


def test_load_is_seeded_and_covers_every_row():
    x, y = synthetic()
    task = LinearTask(x, y, devices=8, partition="dirichlet", alpha=0.5, min_rows=10)
    first, again, other = task.load(3), task.load(3), task.load(4)
    assert len(first) == 8
    assert sum(d.samples + len(d.y_test) for d in first) == len(y)
    assert min(d.samples + len(d.y_test) for d in first) >= 10
    assert all(np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test) for a, b in zip(first, again))
    assert not all(np.array_equal(a.y_train, b.y_train) for a, b in zip(first, other))
    pooled = np.concatenate([d.x_test for d in other])  # pooled_test is that of the latest load
    assert np.array_equal(np.sort(pooled, axis=0), np.sort(task.pooled_test.x_test, axis=0))
    assert first[0].x_train.dtype == np.float32 and first[0].y_train.dtype == np.int64


def test_steps_mode_runs_exactly_the_asked_batches_and_epochs_mode_sees_each_row_once():
    x, y = synthetic(n_rows=50)
    task = LinearTask(x, y, devices=1, test_fraction=0.0)
    data = task.load(0)[0]
    seen = []
    task.batch_loss = lambda model, bx, by: (seen.append(len(by)), model(bx).sum() * 0.0)[1]
    model = task.model(1.0)
    task.train(model, data, ctx(steps=7, batch_size=16))
    assert seen == [16] * 7
    seen.clear()
    task.train(model, data, ctx(epochs=2, batch_size=16))
    assert seen == [16, 16, 16, 2] * 2


def test_training_lowers_the_loss_and_proximal_term_holds_weights_near_global():
    x, y = synthetic()
    task = LinearTask(x, y, devices=1, test_fraction=0.0)
    data = task.load(0)[0]
    torch.manual_seed(0)
    model = task.model(1.0)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    full = lambda m: float(task.batch_loss(m, torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)).detach())
    before = full(model)
    task.train(model, data, ctx(steps=50, lr=0.1))
    assert full(model) < 0.8 * before
    free_drift = sum(float((model.state_dict()[k] - start[k]).norm()) for k in start)
    model.load_state_dict(start)
    task.train(model, data, ctx(steps=50, lr=0.1, mu=1 / 0.1, model=model))  # mu * lr = 1: pulled back every step
    held_drift = sum(float((model.state_dict()[k] - start[k]).norm()) for k in start)
    assert held_drift < 0.3 * free_drift


def test_table_task_standardizes_with_training_rows_only(binary_csv):
    task = _table(binary_csv)
    data = task.load(0)
    train = np.concatenate([d.x_train for d in data]).astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-5)
    assert abs(task.pooled_test.x_test.mean()) > 1e-4  # held-out rows did not enter the statistics


def _table(path, **kwargs):
    class Table(TableTask):
        def batch_loss(self, model, x, y):
            raise AssertionError("not trained here")
    return Table(path, devices=kwargs.pop("devices", 5), **kwargs)


def test_table_task_picks_features_and_groups(tmp_path, binary_csv):
    x, _, _ = _table(binary_csv, features=["f3", "f1"]).rows()
    full, _, _ = _table(binary_csv).rows()
    np.testing.assert_array_equal(x, full[:, [3, 1]])
    grouped = tmp_path / "grouped.csv"
    grouped.write_text("id,y,branch,f0\n1,0,7,0.5\n2,1,7,1.5\n3,1,9,2.0\n4,0,9,0.0\n5,1,9,1.0\n")
    task = _table(grouped, devices=None, partition="natural", group_by="branch", test_fraction=0.0)
    data = task.load(0)
    assert [d.samples for d in data] == [2, 3]
    assert data[0].x_train.shape == (2, 1)  # the group column is not a feature


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(partition="shards"), ValueError, "allowed methods are iid, dirichlet, natural, size"),
    (dict(partition="iid", alpha=0.5), ValueError, "takes no parameter alpha"),
    (dict(devices=0), ValueError, "task.devices must be a positive integer"),
    (dict(devices=None), ValueError, "task.devices is required"),
    (dict(test_fraction=1.0), ValueError, "test_fraction must be in"),
    (dict(optimizer="rmsprop"), ValueError, "allowed: sgd, adam"),
    (dict(features=["y", "f0"]), ValueError, "features lists the label column"),
])
def test_bad_kwargs_are_named(binary_csv, kwargs, error, message):
    with pytest.raises(error, match=message):
        _table(binary_csv, **kwargs)


def test_bad_columns_are_named(binary_csv):
    with pytest.raises(DataError, match="no column 'age'"):
        _table(binary_csv, features=["age"]).load(0)
    with pytest.raises(DataError, match="no label column 'target'"):
        _table(binary_csv, label="target").load(0)
    with pytest.raises(ValueError, match="needs a group column"):
        _table(binary_csv, devices=None, partition="natural").load(0)


def test_too_few_rows_for_the_holdout_is_an_error(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text("id,y,f0\n1,0,0.5\n2,1,1.5\n")
    with pytest.raises(DataError, match="no training rows"):
        _table(path, devices=2, test_fraction=0.9).load(0)


def test_evaluate_server_needs_a_load(binary_csv):
    with pytest.raises(RuntimeError, match=r"needs load\(seed\)"):
        _table(binary_csv).require_pooled_test()


def test_device_data_samples_counts_training_rows():
    data = DeviceData(np.zeros((3, 2), np.float32), np.zeros(3, np.int64), np.zeros((1, 2), np.float32), np.zeros(1, np.int64))
    assert data.samples == 3
