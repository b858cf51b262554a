"""The driver's side of a round against real DeviceHost actors: draining their result streams."""
import numpy as np
import pytest

from fedray.config import load_config, to_plain
from fedray.horizontal.driver import gather
from fedray.horizontal.host import DeviceHost
from fedray.models.recommender import ModelSpec, init_global

BASE = ["data.synthetic.n_users=20", "data.synthetic.n_items=60", "data.eval_negatives=9"]
SPEC = ModelSpec(60, 8)


def launch(tmp_path, overrides: list[str], devices: list[int]):
    """One real host training the given devices in one streaming call -> (host actor, calls as the driver makes them)."""
    import ray

    cfg = load_config(None, [*BASE, *overrides])
    host = DeviceHost.options(num_cpus=0.1).remote(to_plain(cfg), list(range(20)), dict(cfg.tiers[0]), 0,
                                                   str(tmp_path))
    params = ray.put(init_global(SPEC, 0.1, np.random.default_rng(0)))
    return host, [(0, devices, host.train.options(num_returns="streaming").remote(devices, params, SPEC, 0))]


@pytest.mark.ray
def test_gather_counts_a_dead_hosts_devices_as_lost(ray_local, tmp_path):
    host, calls = launch(tmp_path, ["faults.crash=1.0"], [1, 2, 4])  # the first device kills the host
    results, lost, crashed, unanswered = gather(calls, 60.0)
    assert (results, lost, crashed, unanswered) == ([], 3, {0}, 0)


@pytest.mark.ray
def test_gather_gives_up_at_the_deadline_and_counts_the_rest_unanswered(ray_local, tmp_path):
    import ray

    host, calls = launch(tmp_path, ["train.local_steps=1000000"], [5, 6])  # minutes of training per device
    results, lost, crashed, unanswered = gather(calls, 1.0)
    assert (results, lost, crashed, unanswered) == ([], 0, set(), 2)
    ray.kill(host)
