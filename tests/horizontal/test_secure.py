"""Secure aggregation through real Ray: the driver actor on device-host actors ends bit-identical to the
in-process engine, with a masked view; a host killed mid-protocol only drops its devices; SIGKILL + resume is
bit-exact."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from runs import sigkill_after_checkpoint
from fedray.checkpoint import table_to_arrays
from fedray.cli import main
from fedray.config import load_config, to_plain
from fedray.engine.devices import DeviceUpdate
from fedray.engine.engine import RoundEngine
from fedray.engine.fleet import InProcessFleet
from fedray.privacy import packing, quantize
from fedray.privacy.secagg import MaskedInput

ROOT = Path(__file__).resolve().parents[2]
BASE = ["data.synthetic.n_users=20", "data.synthetic.n_items=60", "data.eval_negatives=9", "model.dim=8",
        "privacy.secure_aggregation=true", "compression.mode=dense", "privacy.weight_levels=2",
        "runtime.devices_per_actor=5", "runtime.actor_cpus=0.1", "train.eval_every=100"]


class DropFleet(InProcessFleet):
    """In-process reference: the devices in `gone` vanish at `phase`, as if their host died there."""

    phase, gone = "", set()

    def exchange(self, phase, by_host, timeout_s):
        if phase == self.phase:
            by_host = {h: {d: m for d, m in msgs.items() if d not in self.gone} for h, msgs in by_host.items()}
        return super().exchange(phase, by_host, timeout_s)


@pytest.mark.ray
def test_the_ray_driver_matches_the_in_process_engine_and_sees_only_masked_vectors(ray_local, tmp_path):
    import ray

    from fedray.horizontal.driver import start_driver

    plain = to_plain(load_config(None, [*BASE, "train.participants=8", "train.over_select=1.25",
                                        "runtime.devices_per_actor=10"]))
    local = RoundEngine(plain, str(tmp_path / "local"), InProcessFleet)
    local.setup()
    driver = start_driver(plain, str(tmp_path / "ray"), 0.1)
    ray.get(driver.setup.remote())
    ray.get(driver.__ray_call__.remote(lambda self: setattr(self, "secure_view", [])))
    for _ in range(2):
        local.run_round()
        record = ray.get(driver.run_round.remote())[0]
        assert record.applied and record.participants == 8
    remote, view = ray.get(driver.__ray_call__.remote(lambda self: (self.groups[0].params, self.secure_view)))
    for name, value in local.groups[0].params.items():
        assert value.tobytes() == remote[name].tobytes(), name
    length = sum(v.size for v in remote.values())
    bits = quantize.modulus_bits(int(local.secure_weight[local.group_of == 0].max()) * 8)
    masked = [m for m in view if isinstance(m, MaskedInput)]
    assert len(masked) == 16 and all(len(m.payload) == packing.packed_size(length, bits) for m in masked)
    assert all(m.payload == b"" for m in view if isinstance(m, DeviceUpdate))
    pooled = np.concatenate([packing.unpack(m.payload, length, bits).astype(np.int64) for m in masked])
    counts = np.bincount(pooled, minlength=1 << bits)
    dof = (1 << bits) - 1
    assert ((counts - counts.mean()) ** 2 / counts.mean()).sum() < dof + 6 * np.sqrt(2 * dof)
    ray.get(driver.close.remote())
    ray.kill(driver)


@pytest.mark.ray
@pytest.mark.parametrize("phase", ["share", "unmask"])
def test_a_host_killed_mid_protocol_drops_only_its_devices_and_the_sum_stays_exact(ray_local, tmp_path, phase):
    import ray

    from fedray.horizontal.fleet import RayFleet

    overrides = [*BASE, "train.participants=20", "privacy.threshold=0.55", "runtime.max_restarts=1"]
    plain = to_plain(load_config(None, overrides))
    e = RoundEngine(plain, str(tmp_path / "ray"), RayFleet)
    e.setup()
    victim = 1
    real = e.fleet.exchange

    def kill_then_exchange(ph, by_host, timeout_s):
        if ph == phase:
            ray.kill(e.fleet.hosts[victim], no_restart=False)
            time.sleep(0.5)
        return real(ph, by_host, timeout_s)

    e.fleet.exchange = kill_then_exchange
    rec = e.run_round()[0]
    gone = set(int(d) for d in np.flatnonzero(e.host_of == victim))
    DropFleet.phase, DropFleet.gone = phase, gone
    ref = RoundEngine(plain, str(tmp_path / "ref"), DropFleet)
    ref.setup()
    ref_rec = ref.run_round()[0]
    assert rec.applied and ref_rec.applied
    assert rec.participants == ref_rec.participants == (20 if phase == "unmask" else 20 - len(gone))
    assert rec.failures >= len(gone) and rec.restarts == 1
    for name, value in ref.groups[0].params.items():
        assert value.tobytes() == e.groups[0].params[name].tobytes(), name
    e.close()


def final_models(run: Path) -> dict:
    return table_to_arrays(pq.read_table(run / "models/group-0.parquet"))


@pytest.mark.ray
def test_sigkill_mid_run_then_resume_is_bit_identical_under_secure_aggregation(ray_local, tmp_path):
    job = [str(ROOT / "conf/default.yaml"), *BASE[:4], *BASE[4:7], "train.participants=10", "train.rounds=6",
           "runtime.devices_per_actor=10", "checkpoint.every=2", "checkpoint.keep=3", "compression.error_feedback=true"]
    ref = RoundEngine(to_plain(load_config(job[0], job[1:])), str(tmp_path / "ref"), InProcessFleet)
    ref.setup()
    for _ in range(6):
        ref.run_round()
    address = ray_local.get_runtime_context().gcs_address
    run = tmp_path / "run"
    sigkill_after_checkpoint([*job, f"runtime.address={address}"], run, 2)
    assert list((run / "checkpoints").glob("ckpt-*")) and not (run / "models").exists()
    assert main(["resume", str(run), f"runtime.address={address}"]) == 0
    resumed = final_models(run)
    for name, value in ref.groups[0].params.items():
        assert value.tobytes() == resumed[name].tobytes(), name
