"""DigitsCNNTask: scikit-learn's digits over devices, channel nesting, training and accuracy."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fedray.tasks.base import EvalContext, TrainContext
from fedray.tasks.digits import DigitsCNNTask, digits

WIDTHS = (0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def loaded():
    pytest.importorskip("sklearn")
    task = DigitsCNNTask(min_rows=10)
    return task, task.load(0)


def test_digits_spread_over_50_devices_with_label_skew(loaded):
    task, data = loaded
    assert len(data) == 50
    assert sum(d.samples + len(d.y_test) for d in data) == 1797
    assert min(d.samples + len(d.y_test) for d in data) >= 10
    assert data[0].x_train.shape[1:] == (1, 8, 8) and data[0].x_train.dtype == np.float32
    assert 0.0 <= min(d.x_train.min() for d in data) and max(d.x_train.max() for d in data) <= 1.0
    classes_per_device = np.mean([len(np.unique(np.concatenate([d.y_train, d.y_test]))) for d in data])
    assert classes_per_device < 8  # iid devices of ~36 images would hold nearly all 10 classes
    again = DigitsCNNTask(min_rows=10).load(0)
    assert all(np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test) for a, b in zip(data, again))


def test_channels_nest_across_widths():
    task = DigitsCNNTask(channels=(8, 12), hidden=20)
    shapes = {w: {k: v.shape for k, v in task.model(w).state_dict().items()} for w in WIDTHS}
    for small, large in zip(WIDTHS, WIDTHS[1:]):
        for key, shape in shapes[small].items():
            assert all(a <= b for a, b in zip(shape, shapes[large][key])), key
    assert shapes[0.25]["features.0.weight"] == (2, 1, 3, 3)
    assert shapes[0.25]["head.1.weight"] == (5, 3 * 16)
    assert all(s["head.3.weight"][0] == 10 for s in shapes.values())
    for width in WIDTHS:
        assert all(v.is_floating_point() for v in task.model(width).state_dict().values())


def test_training_lowers_loss_and_evaluate_counts_correct_argmax(loaded):
    task, data = loaded
    device = max(range(len(data)), key=lambda d: data[d].samples)
    torch.manual_seed(0)
    model = task.model(0.5)
    x, y = torch.from_numpy(data[device].x_train), torch.from_numpy(data[device].y_train)
    before = float(task.batch_loss(model, x, y).detach())
    task.train(model, data[device], TrainContext(0, device, steps=60, epochs=None, batch_size=16, lr=0.3,
                                                 rng=np.random.default_rng(0)))
    assert float(task.batch_loss(model, x, y).detach()) < 0.5 * before
    got = task.evaluate(model, data[device], EvalContext(0, device, np.random.default_rng(0)))
    with torch.no_grad():
        predicted = model(torch.from_numpy(data[device].x_test)).argmax(dim=1).numpy()
    assert got.samples == len(data[device].y_test)
    assert got.metrics["accuracy"] == np.mean(predicted == data[device].y_test)
    assert task.evaluate_server(model, 0).samples == sum(len(d.y_test) for d in data)


def test_missing_sklearn_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        digits()


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=(8,)), "task.channels must be two positive integers"),
    (dict(channels=(8, 0)), "task.channels must be two positive integers"),
    (dict(hidden=0), "task.hidden must be a positive integer"),
    (dict(partition="size", sigma=1.0, alpha=0.5), "takes no parameter alpha"),
])
def test_bad_kwargs_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DigitsCNNTask(**kwargs)
