"""Hardware tiers on real Ray clusters: placement by tier resource, fail-fast checks, grouping, per-group models."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from fedray.cli import main
from fedray.runtime import TIER_UNITS, tier_resource

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.synthetic.n_users=40", "data.synthetic.n_items=300", "data.synthetic.mean_interactions=20",
        "train.participants=4", "train.local_steps=2", "train.rounds=2", "train.eval_every=2",
        "train.personalize_steps=2", "model.dim=16", "runtime.devices_per_actor=40", "checkpoint.every=0",
        "grouping.method=thresholds", "grouping.thresholds=[20.0,100.0]", "grouping.min_size=3"]


def _tier(name: str, share: float, gflops: float, width: float) -> dict:
    """Slower compute comes with slower links and longer latency, as in conf/tiers/three_tier.yaml."""
    return {"name": name, "share": share, "gflops": gflops, "width": width, "up_mbps": gflops / 2,
            "down_mbps": gflops, "latency_ms": 4000.0 / gflops}


def three_tiers(tmp_path: Path, low: str = "low") -> Path:
    """high / mid / `low`, far enough apart that thresholds 20 and 100 GFLOP/s separate them."""
    path = tmp_path / f"tiers-{low}.yaml"
    path.write_text(yaml.safe_dump({"tiers": [_tier("high", 0.25, 200.0, 1.0), _tier("mid", 0.25, 40.0, 0.5),
                                              _tier(low, 0.5, 5.0, 0.25)]}))
    return path


def _run(tmp_path: Path, *overrides: str, name: str = "run", low: str = "low") -> tuple[int, Path]:
    run = tmp_path / name
    code = main(["run", str(ROOT / "conf/tiered.yaml"), "data.path=null",
                 f"tiers_file={three_tiers(tmp_path, low)}", *TINY, f"run_dir={run}", *overrides])
    return code, run


def test_tiered_conf_and_three_tier_file_load(monkeypatch):
    """conf/tiered.yaml with its tiers file (paths relative to the repository root, as documented)."""
    from fedray.config import load_config

    monkeypatch.chdir(ROOT)
    cfg = load_config("conf/tiered.yaml", ["data.path=null"])
    assert [(t.name, t.width) for t in cfg.tiers] == [("high", 1.0), ("mid", 0.5), ("low", 0.25)]
    assert sum(t.share for t in cfg.tiers) == pytest.approx(1.0)
    assert cfg.grouping.method == "thresholds" and list(cfg.grouping.thresholds) == [20.0, 100.0]


# ---- a real multi-node cluster on this machine, one for these tests (they run after the shared-cluster ones) ---
@dataclass
class TierCluster:
    """A `ray.cluster_utils.Cluster` whose head declares no CPUs, and the tiers each worker node declares."""

    cluster: object
    node_tiers: dict[str, set[str]]

    @property
    def address(self) -> str:
        return self.cluster.address


@pytest.fixture(scope="module")
def tier_cluster(_ray_session):
    """Two `high` nodes and one declaring both `mid` and `low` (2 CPUs each), and a head with no CPUs and no tier."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # one Ray cluster at a time: the shared one goes first
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        node_tiers = {}
        for tiers in (("high",), ("high",), ("mid", "low")):
            node = cluster.add_node(num_cpus=2, resources={tier_resource(tier): TIER_UNITS for tier in tiers})
            node_tiers[node.node_id] = set(tiers)
        cluster.wait_for_nodes()
        yield TierCluster(cluster, node_tiers)
    finally:
        ray.shutdown()  # Cluster refuses to remove the node a connected driver uses
        cluster.shutdown()


@pytest.mark.ray
def test_device_hosts_run_on_nodes_of_their_tier(tier_cluster, tmp_path, capsys):
    """Every host lands on a node of its own tier; the head (no CPUs, no tier) runs none."""
    code, run = _run(tmp_path, f"runtime.address={tier_cluster.address}", "runtime.devices_per_actor=10")
    assert code == 0, "".join(capsys.readouterr())
    g = pq.read_table(run / "grouping.parquet").to_pylist()
    assert len(g) == 40 and len({r["host"] for r in g}) == 4  # 10 high, 10 mid, 20 low devices
    for row in g:
        assert row["tier"] in tier_cluster.node_tiers.get(row["node"], ()), row  # placed by its tier's resource
    assert {r["tier"] for r in g} == {"high", "mid", "low"}
    # Grouping by reported gflops recovers the tiers.
    by_group = {}
    for row in g:
        by_group.setdefault(row["group"], set()).add(row["tier"])
    assert sorted(by_group.items()) == [(0, {"high"}), (1, {"mid"}), (2, {"low"})]


@pytest.mark.ray
def test_a_tier_no_node_can_host_fails_fast_naming_it(tier_cluster, tmp_path, capsys):
    """A tier without a node exits with code 2 within seconds, naming the resource; so does a tier without CPUs."""
    t0 = time.monotonic()
    code, run = _run(tmp_path, f"runtime.address={tier_cluster.address}", low="tiny")
    out = "".join(capsys.readouterr())
    assert code == 2 and time.monotonic() - t0 < 30, out
    assert "fedray_tier_tiny" in out and "ray start --address=HEAD:6379" in out
    assert "Traceback" not in out and not run.exists()  # no half-written run directory

    # A node declares the tier but has no CPU for its device hosts: still a clear error, not a hang.
    tier_cluster.cluster.add_node(num_cpus=0, resources={tier_resource("tiny"): TIER_UNITS})
    tier_cluster.cluster.wait_for_nodes()
    t0 = time.monotonic()
    code, run = _run(tmp_path, f"runtime.address={tier_cluster.address}", name="run2", low="tiny")
    out = "".join(capsys.readouterr())
    assert code == 2 and time.monotonic() - t0 < 60, out
    assert "tier 'tiny'" in out and "fedray_tier_tiny have 0" in out and "Traceback" not in out


@pytest.mark.ray
def test_placement_groups_spread_or_pack_a_tier_and_fail_fast_when_unreservable(tier_cluster, tmp_path, capsys):
    """runtime.placement: SPREAD puts a tier's hosts on distinct nodes of the tier, PACK on one; a tier whose
    group cannot be reserved fails with exit 2 naming it; no run leaves a placement group behind."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    address = tier_cluster.address
    hosts_per_node = {}
    high_only = tmp_path / "high.yaml"  # placement is per tier: one tier shows it, without hosts of the others
    high_only.write_text(yaml.safe_dump({"tiers": [_tier("high", 1.0, 200.0, 1.0)]}))
    small = ("data.synthetic.n_users=20", "runtime.devices_per_actor=10", f"tiers_file={high_only}")  # 2 hosts
    for policy in ("spread", "pack"):
        code, run = _run(tmp_path, f"runtime.address={address}", *small, f"runtime.placement={policy}", name=policy)
        assert code == 0, "".join(capsys.readouterr())
        g = pq.read_table(run / "grouping.parquet").to_pylist()
        assert all(r["tier"] in tier_cluster.node_tiers.get(r["node"], ()) for r in g)
        high = {(r["host"], r["node"]) for r in g if r["tier"] == "high"}
        assert len(g) == 20 and len({h for h, _ in high}) == 2  # 20 high devices, 10 per host
        hosts_per_node[policy] = len({n for _, n in high})
    assert hosts_per_node == {"spread": 2, "pack": 1}

    if not ray.is_initialized():  # the runs above leave this process connected to the cluster
        ray.init(address=address, logging_level="ERROR")
    assert {p["state"] for p in placement_group_table().values()} <= {"REMOVED"}
    # Another job holds most of both high nodes: the run cannot reserve its high tier and says so.
    blocker = placement_group([{"CPU": 1.9, tier_resource("high"): 1.0}] * 2, strategy="STRICT_SPREAD")
    assert blocker.wait(30)
    try:
        t0 = time.monotonic()
        code, run = _run(tmp_path, f"runtime.address={address}", *small, "runtime.placement=spread",
                         "runtime.placement_timeout_s=3", name="blocked")
        out = "".join(capsys.readouterr())
        assert code == 2 and time.monotonic() - t0 < 60, out
        assert "tier 'high'" in out and "runtime.placement" in out and "Traceback" not in out
        assert not run.exists()
    finally:
        if not ray.is_initialized():
            ray.init(address=address, logging_level="ERROR")
        remove_placement_group(blocker)
    states = [p["state"] for p in placement_group_table().values() if p["name"].startswith("fedray-")]
    assert states and set(states) == {"REMOVED"}


# ---- on the shared local cluster ---------------------------------------------------------------------------
@pytest.mark.ray
def test_more_device_hosts_than_cpus_fails_fast(ray_local, tmp_path, capsys):
    t0 = time.monotonic()
    code, run = _run(tmp_path, "runtime.actor_cpus=1.0", "runtime.devices_per_actor=5")
    out = "".join(capsys.readouterr())
    assert code == 2 and time.monotonic() - t0 < 30, out
    assert "CPUs" in out and "runtime.devices_per_actor" in out and "Traceback" not in out


def _check_tier_groups(run: Path, log: str) -> None:
    """Three groups, one per tier, each with its own model sized for the tier, its own clock, evaluated."""
    from fedray.checkpoint import table_to_arrays

    g = pq.read_table(run / "grouping.parquet").to_pylist()
    assert {"device", "tier", "host", "node", "group", "gflops", "up_mbps"} <= set(g[0])
    assert sorted({(r["group"], r["tier"]) for r in g}) == [(0, "high"), (1, "mid"), (2, "low")]
    m = pq.read_table(run / "metrics.parquet").to_pylist()
    assert sorted((r["round"], r["group"]) for r in m) == [(r, gid) for r in range(2) for gid in range(3)]
    assert all(r["participants"] == 4 for r in m)
    widths = json.loads((run / "models/groups.json").read_text())
    assert {gid: g["width"] for gid, g in widths.items()} == {"0": 1.0, "1": 0.5, "2": 0.25}
    dims = {gid: table_to_arrays(pq.read_table(run / f"models/group-{gid}.parquet"))["item_emb"].shape[1] for gid in widths}
    assert dims == {"0": 16, "1": 8, "2": 4}  # the model sized for each tier
    # Each group keeps its own simulated clock: the phones' group is the slowest, the servers' the fastest.
    last = {r["group"]: r["sim_time_s"] for r in m if r["round"] == 1}
    assert 0 < last[0] < last[1] < last[2]
    assert all(r["hr10"] == r["hr10"] for r in m if r["round"] == 1)  # every group evaluated
    assert "group 0: 10 devices" in log and "model width 0.25" in log


@pytest.mark.ray
def test_groups_train_concurrently_with_models_sized_by_tier(ray_local, tmp_path, capsys):
    code, run = _run(tmp_path)
    out = "".join(capsys.readouterr())
    assert code == 0, out
    _check_tier_groups(run, out)


# ---- the engine's grouping in process (what the Ray run above does with it, without the cluster) ------------
def _run_in_process(tmp_path: Path, tiers: Path, *overrides: str) -> tuple[Path, str]:
    """TINY with `tiers` through the round engine and its in-process fleet: the run directory and the log."""
    from fedray.config import load_config, to_plain
    from fedray.engine.engine import RoundEngine
    from fedray.engine.fleet import InProcessFleet

    run = tmp_path / "run"
    cfg = to_plain(load_config(ROOT / "conf/tiered.yaml", ["data.path=null", f"tiers_file={tiers}", *TINY,
                                                           f"run_dir={run}", *overrides]))
    engine = RoundEngine(cfg, str(run), InProcessFleet)
    engine.setup()
    for _ in range(cfg["train"]["rounds"]):
        engine.run_round()
    engine.finish()
    return run, "\n".join(engine.messages())


def test_kmeans_finds_the_same_groups_and_sizes_their_models(tmp_path):
    run, log = _run_in_process(tmp_path, three_tiers(tmp_path), "grouping.method=kmeans")
    _check_tier_groups(run, log)


def test_small_groups_are_merged_and_the_log_says_so(tmp_path):
    """A fourth tier of 2 very fast devices (below min_size 3) is merged into its nearest group."""
    tiers = tmp_path / "four.yaml"
    tiers.write_text(yaml.safe_dump({"tiers": [
        _tier("default", 0.05, 2000.0, 1.0), _tier("high", 0.2, 200.0, 1.0), _tier("mid", 0.25, 40.0, 0.5),
        _tier("low", 0.5, 5.0, 0.25)]}))
    run, log = _run_in_process(tmp_path, tiers, "grouping.thresholds=[20.0,100.0,1000.0]", "train.rounds=1",
                               "train.eval_every=1")
    assert "had fewer than 3 devices: merged into group 1" in log
    g = pq.read_table(run / "grouping.parquet").to_pylist()
    fast = [r for r in g if r["tier"] == "default"]
    assert len(fast) == 2 and {r["group"] for r in fast} == {0}  # joined the high tier's group, now group 0
    assert sorted({r["group"] for r in g}) == [0, 1, 2]


def test_share_across_averages_the_overlap_and_moves_groups_in_lockstep(tmp_path):
    from fedray.checkpoint import table_to_arrays

    run, _ = _run_in_process(tmp_path, three_tiers(tmp_path), "grouping.share_across=true")
    arrays = {gid: table_to_arrays(pq.read_table(run / f"models/group-{gid}.parquet")) for gid in range(3)}
    low = arrays[2]["item_emb"]
    assert low.shape[1] == 4
    for gid in (0, 1):
        np.testing.assert_array_equal(arrays[gid]["item_emb"][:, :4], low)
        np.testing.assert_array_equal(arrays[gid]["item_bias"], arrays[2]["item_bias"])
    np.testing.assert_array_equal(arrays[0]["item_emb"][:, :8], arrays[1]["item_emb"])
    m = pq.read_table(run / "metrics.parquet").to_pylist()
    for r in range(2):
        assert len({rec["sim_time_s"] for rec in m if rec["round"] == r}) == 1  # one barrier per round
