"""DeviceHost on the shared real Ray cluster: one streaming training call per host and round."""
import numpy as np
import pytest

from fedray.config import load_config, to_plain
from fedray.core import ternary
from fedray.horizontal.host import DeviceHost
from fedray.models.recommender import ModelSpec, init_global


@pytest.mark.ray
def test_train_streams_each_device_and_a_failing_device_does_not_stop_the_others(ray_local, tmp_path):
    import ray

    cfg = load_config(None, ["data.synthetic.n_users=20", "data.synthetic.n_items=60", "data.eval_negatives=9"])
    host = DeviceHost.options(num_cpus=0.1).remote(to_plain(cfg), [0, 1, 2, 3], dict(cfg.tiers[0]), 0, str(tmp_path))
    spec = ModelSpec(60, 8)
    params = ray.put(init_global(spec, 0.1, np.random.default_rng(0)))
    stream = host.train.options(num_returns="streaming").remote([3, 17, 0], params, spec, 0)  # 17 lives elsewhere
    out = [ray.get(ref) for ref in stream]
    assert [o["device"] for o in out] == [3, 17, 0]  # one result per device, in the order asked
    assert set(out[1]) == {"device", "error"} and "17" in out[1]["error"]
    for o in (out[0], out[2]):
        tensors = ternary.decode(o["payload"], list(spec.shapes().values()))
        assert o["samples"] > 0 and any(t.any() for t in tensors)
    ray.kill(host)
