"""The driver as `fedray run` starts it: handed the task's facts and hosts already built, it builds no model."""
import subprocess
import sys
from pathlib import Path

import pytest

from fedray.cli import check_horizontal
from fedray.config import load_config, to_plain

ROOT = Path(__file__).resolve().parents[2]
BASE = ["data.synthetic.n_users=20", "data.synthetic.n_items=60", "data.eval_negatives=9", "model.dim=8",
        "train.participants=6", "train.eval_every=2", "runtime.devices_per_actor=20", "checkpoint.every=0"]  # 1 host


def test_the_driver_and_its_fleet_import_no_torch():
    """What the driver's process imports to unpickle the Driver class and its arguments leaves torch out."""
    code = ("import sys\n"
            "import fedray.horizontal.driver, fedray.horizontal.fleet, fedray.horizontal.host, fedray.tasks\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def driver_as_fedray_run_starts_it(cfg, run_dir: Path):
    """The preflight's (task, data, facts), the hosts started beside the driver, and the driver, as `fedray run` does."""
    from fedray.horizontal.driver import start_driver
    from fedray.horizontal.run import start_early

    plain = to_plain(cfg)
    loaded = check_horizontal(plain)
    loaded_ref, _, hosts = start_early(cfg, plain, run_dir, loaded)
    return start_driver(plain, str(run_dir), 0.1, loaded_ref, hosts, loaded[2]), hosts


@pytest.mark.ray
def test_a_driver_handed_the_facts_never_fetches_the_task_and_ends_where_the_in_process_engine_does(ray_local, tmp_path):
    import ray

    from fedray.engine.engine import RoundEngine
    from fedray.engine.fleet import InProcessFleet

    cfg = load_config(None, BASE)
    local = RoundEngine(to_plain(cfg), str(tmp_path / "local"), InProcessFleet)
    local.setup()
    driver, hosts = driver_as_fedray_run_starts_it(cfg, tmp_path / "ray")
    ray.get(driver.setup.remote())
    for _ in range(2):  # the second round evaluates
        local_records = local.run_round()
        ray_records = ray.get(driver.run_round.remote())
    remote = ray.get(driver.__ray_call__.remote(lambda self: (self.groups[0].params, self._loaded)))
    assert remote[1] is None  # the initial weights came from a host; no server-side evaluation to fetch it for
    for name, value in local.groups[0].params.items():
        assert value.tobytes() == remote[0][name].tobytes(), name
    assert [r.metrics for r in local_records] == [r.metrics for r in ray_records]
    ray.kill(driver)
    for host in hosts:
        ray.kill(host)


@pytest.mark.ray
def test_a_task_with_server_side_evaluation_is_fetched_by_the_driver_when_it_scores(ray_local, tmp_path):
    import ray

    cfg = load_config(ROOT / "conf/digits_cnn.yaml", ["task.devices=6", "train.participants=3", "train.eval_every=1",
                                                      "runtime.devices_per_actor=6", "checkpoint.every=0"])
    driver, hosts = driver_as_fedray_run_starts_it(cfg, tmp_path / "run")
    ray.get(driver.setup.remote())
    assert ray.get(driver.__ray_call__.remote(lambda self: self._loaded)) is None
    (record,) = ray.get(driver.run_round.remote())
    assert 0.0 <= record.metrics["server_accuracy"] <= 1.0
    assert ray.get(driver.__ray_call__.remote(lambda self: self._loaded is not None))
    ray.kill(driver)
    for host in hosts:
        ray.kill(host)
