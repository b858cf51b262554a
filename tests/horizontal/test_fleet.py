"""The Ray fleet against real DeviceHost actors: streaming results, crashes, deadlines."""
import numpy as np
import pytest

from fedray.config import load_config, to_plain
from fedray.engine.devices import DeviceFailure, DeviceUpdate
from fedray.horizontal.fleet import gather
from fedray.horizontal.host import DeviceHost
from fedray.strategies.base import DeviceConfig
from fedray.tasks import build_task, check_model

BASE = ["data.synthetic.n_users=20", "data.synthetic.n_items=60", "data.eval_negatives=9", "model.dim=8"]


def host_and_params(tmp_path, overrides: list[str]):
    """One real host of all 20 devices, and the task's initial weights in the object store."""
    import ray

    from fedray.engine.devices import initial_params

    cfg = load_config(None, [*BASE, *overrides])
    plain = to_plain(cfg)
    task = build_task(plain["task"])
    task.load(cfg.seed)
    host = DeviceHost.options(num_cpus=0.1).remote(plain, list(range(20)), dict(cfg.tiers[0]), 0, str(tmp_path))
    return host, ray.put(initial_params(task, check_model(task), cfg.seed, 0, 1.0))


def launch(host, params, devices):
    return [(0, devices, host.train.options(num_returns="streaming").remote(devices, params, 1.0, 0, DeviceConfig()))]


@pytest.mark.ray
def test_train_streams_each_device_and_a_failing_device_does_not_stop_the_others(ray_local, tmp_path):
    import ray

    host, params = host_and_params(tmp_path, [])
    out = gather(launch(host, params, [3, 17, 0]), 120.0).results
    assert [o.device for o in out] == [3, 17, 0]  # one result per device, in the order asked
    assert isinstance(out[0], DeviceUpdate) and isinstance(out[2], DeviceUpdate) and out[0].samples > 0
    # a device the host does not hold fails alone:
    bad = gather(launch(host, params, [25]), 60.0).results
    assert isinstance(bad[0], DeviceFailure) and "25" in bad[0].error
    ray.kill(host)


@pytest.mark.ray
def test_gather_counts_a_dead_hosts_devices_as_lost(ray_local, tmp_path):
    host, params = host_and_params(tmp_path, ["faults.crash=1.0"])  # the first device kills the host
    out = gather(launch(host, params, [1, 2, 4]), 60.0)
    assert (out.results, out.lost, out.crashed, out.unanswered) == ([], 3, {0}, 0)


@pytest.mark.ray
def test_gather_gives_up_at_the_deadline_and_counts_the_rest_unanswered(ray_local, tmp_path):
    import ray

    host, params = host_and_params(tmp_path, ["train.local_steps=1000000"])  # minutes of training per device
    out = gather(launch(host, params, [5, 6]), 1.0)
    assert (out.results, out.lost, out.crashed, out.unanswered) == ([], 0, set(), 2)
    ray.kill(host)


@pytest.mark.ray
def test_the_ray_fleet_and_the_in_process_fleet_give_bit_identical_weights(ray_local, tmp_path):
    """Same seed, same rounds: the driver actor on device-host actors ends where the in-process engine does."""
    import ray

    from fedray.engine.engine import RoundEngine
    from fedray.engine.fleet import InProcessFleet
    from fedray.horizontal.driver import start_driver

    cfg = load_config(None, [*BASE, "train.participants=6", "train.over_select=1.5", "train.eval_every=2",
                             "runtime.devices_per_actor=10", "compression.error_feedback=true"])  # 2 hosts
    plain = to_plain(cfg)
    local = RoundEngine(plain, str(tmp_path / "local"), InProcessFleet)
    local.setup()
    driver = start_driver(plain, str(tmp_path / "ray"), 0.1)
    ray.get(driver.setup.remote())
    for _ in range(3):
        local_records = local.run_round()
        ray_records = ray.get(driver.run_round.remote())
    remote = ray.get(driver.__ray_call__.remote(lambda self: self.groups[0].params))
    assert remote.keys() == local.groups[0].params.keys()
    for name, value in local.groups[0].params.items():
        assert value.tobytes() == remote[name].tobytes(), name
    assert [r.metrics for r in local_records] == [r.metrics for r in ray_records]
    ray.get(driver.close.remote())
    ray.kill(driver)


@pytest.mark.ray
def test_a_killed_host_comes_back_with_its_devices_state_from_its_own_checkpoint(ray_local, tmp_path):
    import os
    import time

    import ray

    from fedray.checkpoint import CheckpointStore
    from fedray.horizontal.driver import start_driver

    cfg = load_config(None, [*BASE, "train.participants=10", "runtime.devices_per_actor=10", "checkpoint.every=2",
                             "runtime.max_restarts=1", "compression.error_feedback=true"])
    driver = start_driver(to_plain(cfg), str(tmp_path / "run"), 0.1)
    ray.get(driver.setup.remote())
    for _ in range(3):  # a checkpoint after round 2, then a round past it
        ray.get(driver.run_round.remote())
    hosts = ray.get(driver.__ray_call__.remote(lambda self: list(self.fleet.hosts)))
    before = ray.get(hosts[0].export_state.remote())
    pid = ray.get(hosts[0].__ray_call__.remote(lambda self: os.getpid()))
    ray.kill(hosts[0], no_restart=False)
    deadline = time.monotonic() + 60
    while True:  # until the restarted process (another pid) answers
        try:
            if ray.get(hosts[0].__ray_call__.remote(lambda self: os.getpid()), timeout=10) != pid:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.monotonic() < deadline, "the host never came back"
        time.sleep(0.5)
    after = ray.get(hosts[0].export_state.remote())
    saved = CheckpointStore(str(tmp_path / "run" / "checkpoints" / "devices" / "host-0000")).load(2).arrays("devices")
    assert after.keys() == saved.keys()
    assert all(np.array_equal(after[k], saved[k]) for k in saved)
    assert any(not np.array_equal(before[k], saved[k]) for k in saved)  # round 3 had moved on; the restart went back
    ray.kill(driver)


@pytest.mark.ray
def test_a_host_that_died_since_its_last_answer_is_reported_by_the_checkpoint_not_raised(ray_local, tmp_path):
    """Its node left between its round's answer and the checkpoint: the fleet names it (the engine then restarts or
    retires it, tests/engine/test_engine.py) and the live hosts' state is written."""
    import time

    import ray

    from fedray.checkpoint import CheckpointStore
    from fedray.horizontal.driver import start_driver

    cfg = load_config(None, [*BASE, "runtime.devices_per_actor=10"])
    run = tmp_path / "run"
    driver = start_driver(to_plain(cfg), str(run), 0.1)
    ray.get(driver.setup.remote())
    hosts = ray.get(driver.__ray_call__.remote(lambda self: list(self.fleet.hosts)))
    ray.kill(hosts[1], no_restart=True)
    deadline = time.monotonic() + 60
    while True:  # until the kill has landed: a call on the host fails
        try:
            ray.get(hosts[1].ping.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            break
        assert time.monotonic() < deadline, "the killed host still answers"
        time.sleep(0.2)
    assert ray.get(driver.__ray_call__.remote(lambda self: self.fleet.checkpoint(1, "digest"))) == {1}
    assert CheckpointStore(str(run / "checkpoints" / "devices" / "host-0000")).list() == [1]
    assert not CheckpointStore(str(run / "checkpoints" / "devices" / "host-0001")).list()
    ray.kill(driver)
