"""The round engine in-process (no Ray): rounds, records, evaluation, checkpoints, robust strategies."""
import subprocess
import sys

import numpy as np
import pytest

from fedray.config import load_config, to_plain
from fedray.engine.engine import RoundEngine, check_nesting, weighted_metrics
from fedray.engine.device_files import save_device_checkpoint
from fedray.engine.fleet import InProcessFleet
from fedray.tasks import Evaluation

SMALL = ["data.synthetic.n_users=40", "data.synthetic.n_items=200", "data.eval_negatives=20", "model.dim=8",
         "train.participants=10", "train.eval_every=2", "runtime.devices_per_actor=15"]


def engine(tmp_path, overrides=(), name="run"):
    cfg = load_config(None, [*SMALL, *overrides])
    e = RoundEngine(to_plain(cfg), str(tmp_path / name), InProcessFleet)
    e.setup()
    return e


def test_rounds_move_the_model_and_record_what_happened(tmp_path):
    e = engine(tmp_path)
    start = {k: v.copy() for k, v in e.groups[0].params.items()}
    records = [e.run_round()[0] for _ in range(2)]
    assert [r.round for r in records] == [0, 1]
    assert all(r.applied and r.participants == r.selected == 10 for r in records)
    assert set(records[1].metrics) == {"hr10", "ndcg10"} and not records[0].metrics
    assert any(not np.array_equal(start[k], e.groups[0].params[k]) for k in start)
    table = e.metrics_table()
    assert table.num_rows == 2 and {"hr10", "ndcg10", "train_loss", "bytes_up"} <= set(table.column_names)


def test_a_robust_rule_resists_sign_flipping_devices_where_fedavg_does_not(tmp_path):
    """20 % adversarial devices send -10x their update: FedAvg walks uphill, the median keeps descending."""
    attack = ["faults.byzantine=0.2", "faults.byzantine_scale=10", "train.participants=20", "compression.method=none",
              "strategy.server_lr=10"]
    losses = {}
    for name in ("fedavg", "median"):
        e = engine(tmp_path, [*attack, f"strategy.name={name}"], name)
        losses[name] = [e.run_round()[0].train_loss for _ in range(6)]
    assert losses["median"][-1] < losses["median"][0]
    assert losses["fedavg"][-1] > losses["fedavg"][0]


class NodeLeavesFleet(InProcessFleet):
    """Host 1's node leaves before round 2: its devices' results are lost, it never answers again, and any later
    call on it fails the way a call on a node that is gone would (Ray's would hang)."""

    def collect(self, handle, timeout_s):
        if handle.round_ == 2 and not isinstance(self.hosts[1], Gone):
            self.hosts[1] = Gone()
        out = super().collect(handle, timeout_s)
        lost = [r for r in out.results if r.device in handle.by_host.get(1, [])]
        out.results = [r for r in out.results if r not in lost]
        out.lost, out.crashed = len(lost), {1} if lost else set()
        return out

    def recover(self, host, timeout_s):
        return not isinstance(self.hosts[host], Gone)


class Gone:
    """A host on a node that left: every call fails."""

    def __getattr__(self, name):
        raise AssertionError(f"called {name} on a device host whose node left")


def test_a_host_gone_for_good_is_retired_and_the_run_goes_on_without_its_devices(tmp_path):
    cfg = load_config(None, [*SMALL, "train.rounds=5", "checkpoint.every=1", "train.participants=8"])
    e = RoundEngine(to_plain(cfg), str(tmp_path / "run"), NodeLeavesFleet)
    e.setup()
    gone = np.flatnonzero(e.host_of == 1)
    records = [e.run_round()[0] for _ in range(5)]
    assert e.host_dead.tolist() == [False, True, False] and e.fleet.departed == {1}
    assert any(f"device host 1 is gone for good; its {len(gone)} devices leave" in line for line in e.messages())
    assert all(r.applied for r in records) and records[-1].participants == 8
    assert e.finish() == 5
    assert sorted(p.name for p in (tmp_path / "run" / "devices").iterdir()) == ["host-0000.parquet", "host-0002.parquet"]


class DiesWhileWriting(InProcessFleet):
    """Host 1 answers its round, then dies while writing its state of round 3 (`times` times in a row): its node
    left (it never recovers) or Ray restarts it (`comes_back`)."""

    times, comes_back = 1, False

    def checkpoint(self, round_, config_hash):
        if round_ != 3 or not self.times:
            return super().checkpoint(round_, config_hash)
        self.times -= 1
        for i, store, h in self._live():
            if i != 1:
                save_device_checkpoint(store, h, round_, config_hash)
        return {1}

    def recover(self, host, timeout_s):
        return self.comes_back


def writing_dies(tmp_path, times, comes_back):
    cfg = load_config(None, [*SMALL, "train.rounds=5", "checkpoint.every=1", "checkpoint.keep=10", "train.participants=8"])
    fleet = type("Fleet", (DiesWhileWriting,), {"times": times, "comes_back": comes_back})
    e = RoundEngine(to_plain(cfg), str(tmp_path / "run"), fleet)
    e.setup()
    return e, [e.run_round()[0] for _ in range(5)]


def test_a_host_that_dies_while_writing_a_checkpoint_leaves_and_the_others_checkpoint_without_it(tmp_path):
    from fedray.checkpoint import CheckpointStore

    e, records = writing_dies(tmp_path, times=1, comes_back=False)
    gone = int((e.host_of == 1).sum())
    assert f"round 3: device host 1 is gone for good; its {gone} devices leave" in e.messages()
    assert e.fleet.departed == {1} and all(r.applied for r in records) and records[-1].participants == 8
    assert CheckpointStore(str(tmp_path / "run" / "checkpoints")).list() == [1, 2, 3, 4, 5]
    assert CheckpointStore(str(tmp_path / "run" / "checkpoints" / "devices" / "host-0001")).list() == [1, 2]


def test_a_round_whose_hosts_keep_dying_while_writing_gets_no_checkpoint_and_the_earlier_one_stands(tmp_path):
    from fedray.checkpoint import CheckpointStore

    e, records = writing_dies(tmp_path, times=2, comes_back=True)
    assert "round 3: no checkpoint of this round: device hosts [1] died while writing it again; an earlier " \
           "checkpoint stands" in e.messages()
    assert [r.restarts for r in records] == [0, 0, 1, 0, 0]  # counted on the round whose checkpoint it hit
    assert CheckpointStore(str(tmp_path / "run" / "checkpoints")).list() == [1, 2, 4, 5]
    assert e.fleet.departed == set() and records[-1].participants == 8


def test_weighted_metrics_skip_nan_and_weigh_by_samples():
    out = weighted_metrics([Evaluation(1, {"auc": 0.5, "acc": 1.0}), Evaluation(3, {"auc": 1.0, "acc": float("nan")})])
    assert out == {"auc": pytest.approx(0.875), "acc": 1.0}


def test_widths_that_do_not_nest_cannot_be_shared():
    check_nesting({0: {"w": (4, 8)}, 1: {"w": (2, 4)}})
    with pytest.raises(ValueError, match="'w'.*do not nest"):
        check_nesting({0: {"w": (4, 8)}, 1: {"w": (2, 9)}})


def test_the_core_the_engine_the_strategies_the_tasks_and_privacy_never_import_ray():
    code = ("import sys\n"
            "import fedray.core.ternary, fedray.core.fusion, fedray.core.clock, fedray.core.grouping, fedray.core.validate\n"
            "import fedray.engine.engine, fedray.engine.fleet, fedray.engine.devices, fedray.strategies, fedray.tasks\n"
            "import fedray.tasks.recommender\n"
            "import fedray.privacy.secagg, fedray.privacy.quantize, fedray.privacy.dp, fedray.privacy.accounting\n"
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_private_parameters_are_checkpointed_by_their_hosts_never_by_the_driver(tmp_path):
    import pyarrow.parquet as pq

    from fedray.checkpoint import CheckpointStore, table_to_arrays

    e = engine(tmp_path, ["checkpoint.every=2", "train.rounds=2"])
    for _ in range(2):
        e.run_round()
    driver_ckpt = tmp_path / "run" / "checkpoints" / "ckpt-00000002"
    for f in driver_ckpt.glob("*.parquet"):
        names = pq.read_table(f).column_names if f.stem == "metrics" else list(table_to_arrays(pq.read_table(f)))
        assert not any("private" in n or n.endswith("/user") or n == "user" for n in names), f.name
    hosts = sorted((tmp_path / "run" / "checkpoints" / "devices").glob("host-*"))
    assert len(hosts) == len(e.fleet.hosts) == 3
    held = {}
    for h in hosts:
        held.update(CheckpointStore(str(h)).load(2).arrays("devices"))
    trained = {k for k in held if k.endswith("/private/user")}
    assert len(trained) >= 10  # every device that trained keeps its user vector, on its own host's side
    live = {k: v for h in e.fleet.hosts for k, v in h.export_state().items()}
    assert all(np.array_equal(held[k], live[k]) for k in trained)


def test_a_corrupt_host_checkpoint_makes_resume_fall_back_to_an_older_round(tmp_path):
    import shutil

    a = engine(tmp_path, ["checkpoint.every=2", "train.rounds=6"], "a")
    for _ in range(6):
        a.run_round()
    shutil.copytree(tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints")  # as a run killed in round 5 leaves it
    for newest in sorted((tmp_path / "b" / "checkpoints").rglob("ckpt-00000006")):
        shutil.rmtree(newest)
    blob = tmp_path / "b" / "checkpoints" / "devices" / "host-0001" / "ckpt-00000004" / "devices.parquet"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(data)
    c = RoundEngine(a.plain, str(tmp_path / "b"), InProcessFleet)
    c.setup()
    assert c.restore() == 2
    assert any("host-0001" in line and "ckpt-00000004" in line for line in c.messages())
    for _ in range(4):
        c.run_round()
    for k, v in a.groups[0].params.items():
        assert v.tobytes() == c.groups[0].params[k].tobytes()


def test_hosts_follow_the_clusters_cpus_unless_devices_per_actor_is_set():
    from fedray.engine.engine import host_plans

    one = [{"name": "default", "share": 1.0}]
    assert len(host_plans(671, one, None, 0, slots=2)) == 2  # a 2-core box does not start 7 hosts
    assert len(host_plans(671, one, 100, 0, slots=2)) == 7
    three = [{"name": "high", "share": 0.2}, {"name": "mid", "share": 0.3}, {"name": "low", "share": 0.5}]
    plans = host_plans(100, three, None, 0, slots=8)
    assert [sum(p.tier["name"] == t["name"] for p in plans) for t in three] == [2, 2, 4]
    assert sorted(np.concatenate([p.devices for p in plans]).tolist()) == list(range(100))
    assert len(host_plans(3, one, None, 0, slots=8)) == 3  # never more hosts than devices
