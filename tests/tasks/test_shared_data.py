"""The data seam between the driver and device hosts: load once, share once, each host takes its devices."""
import numpy as np
import pytest

from fedray.config import load_config, to_plain
from fedray.engine.engine import RoundEngine
from fedray.engine.fleet import InProcessFleet
from fedray.tasks import Task, build_task
from fedray.tasks.digits import DigitsCNNTask
from fedray.tasks.tabular import TabularMLPTask

BASE = ["data.synthetic.n_users=30", "data.synthetic.n_items=80", "data.eval_negatives=9", "model.dim=8"]


def test_recommender_hosts_see_each_users_data_as_loaded_and_size_models_without_loading():
    plain = to_plain(load_config(None, BASE))
    driver_task = build_task(plain["task"])
    data = driver_task.load(plain["seed"])
    host_task = build_task(plain["task"])  # a host's task: load never runs there
    mine = host_task.take(driver_task.share(data), np.array([3, 11]))
    for device in (3, 11):
        assert np.array_equal(mine[device].positives, data[device].positives)
        assert mine[device].test_item == data[device].test_item
        assert np.array_equal(mine[device].negatives, data[device].negatives)
    assert host_task.model(1.0).item_emb.shape == driver_task.model(1.0).item_emb.shape


def test_table_hosts_take_only_their_devices_and_never_read_the_files(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rows.csv"
    x = rng.normal(size=(200, 3))
    rows = "\n".join(f"{i},{a:.4f},{b:.4f},{c:.4f},{int(a > 0)}" for i, (a, b, c) in enumerate(x))
    path.write_text("id,f0,f1,f2,y\n" + rows + "\n")
    driver_task = TabularMLPTask(str(path), devices=10)
    data = driver_task.load(0)
    path.unlink()  # a host reading the file again would fail now
    host_task = TabularMLPTask(str(path), devices=10)
    mine = host_task.take(driver_task.share(data), np.array([2, 5]))
    assert sorted(mine) == [2, 5]
    assert np.array_equal(mine[5].x_train, data[5].x_train) and np.array_equal(mine[2].y_test, data[2].y_test)
    assert host_task.model(1.0).state_dict().keys() == driver_task.model(1.0).state_dict().keys()


class CountingDigits(DigitsCNNTask):
    """The digits task, counting its loads and the devices each take asks for."""

    loads = 0
    takes: list[list[int]] = []

    def load(self, seed):
        CountingDigits.loads += 1
        return super().load(seed)

    def take(self, shared, devices):
        CountingDigits.takes.append(sorted(int(d) for d in devices))
        return super().take(shared, devices)


class OwnLoader(CountingDigits):
    """A user task that shares nothing: its hosts load for themselves, as before the seam existed."""

    def share(self, data):
        return Task.share(self, data)


@pytest.mark.parametrize("task_class,takes", [(CountingDigits, True), (OwnLoader, False)])
def test_the_engine_loads_once_and_each_host_takes_exactly_its_devices(task_class, takes, tmp_path):
    CountingDigits.loads, CountingDigits.takes = 0, []
    cfg = load_config(None, [f"task.target=tests.tasks.test_shared_data:{task_class.__name__}", "task.devices=12",
                             "runtime.devices_per_actor=5", "train.participants=4", "train.local_steps=1"])
    engine = RoundEngine(to_plain(cfg), str(tmp_path), InProcessFleet)
    info = engine.setup()
    assert CountingDigits.loads == 1 and info.hosts == 3
    expected = [engine.host_of == h for h in range(3)]
    assert CountingDigits.takes == ([np.flatnonzero(m).tolist() for m in expected] if takes else [])
    assert set(info.phases) == {"task load", "host start", "reports", "grouping"}
    assert all(seconds >= 0 for seconds in info.phases.values())
    engine.run_round()
