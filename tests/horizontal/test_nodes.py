"""Node faults on a real two-node `ray start` cluster (tests/clusters.py): a head stopped and restarted between a
run and its resume, and a worker node that leaves mid-run (in this order: the head's restart brings both nodes
back, so the worker test needs no restart of its own).

The head declares tier `default`, the worker tier `edge`, and each tier's device host runs on its tier's node.
The node-leaving job is submitted through the job server, so its entrypoint and driver actor run on the head
as on a real cluster. The driver goes to the head from a process on a device node too: a process attached to
the worker's raylet checks that (Ray attaches a process on this machine to the head's raylet unless it names
another node's temp dir).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clusters import BIN, TwoNodeCluster
from runs import wait_for_checkpoint
from fedray.checkpoint import table_to_arrays
from fedray.config import load_config, to_plain
from fedray.engine.engine import RoundEngine
from fedray.engine.fleet import InProcessFleet
from fedray.horizontal.driver import driver_name

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = str(ROOT / "conf/default.yaml")
TWO_TIERS = "tiers=[{name: default, share: 0.5}, {name: edge, share: 0.5}]"
JOB = ["data.synthetic.n_users=60", "data.synthetic.n_items=200", "train.participants=8", "train.eval_every=2",
       "runtime.devices_per_actor=30", "runtime.max_restarts=1", "checkpoint.every=1", "checkpoint.keep=10"]


@pytest.fixture
def cluster(two_nodes_to_break):
    """The session's two-node cluster (tests/conftest.py), both nodes up: shared with test_jobs.py, whose tests run
    first."""
    return two_nodes_to_break


def launch(cluster: TwoNodeCluster, run: Path, *overrides: str) -> subprocess.Popen:
    """`fedray run` as a process on this machine, connected to the cluster. It gives up on a lost GCS after 5 s
    (Ray's `gcs_rpc_server_reconnect_timeout_s`, 60 s by default) so that losing the head ends it quickly."""
    env = {**cluster.env, "RAY_gcs_rpc_server_reconnect_timeout_s": "5"}
    return subprocess.Popen([sys.executable, "-m", "fedray.cli", "run", DEFAULT, TWO_TIERS, *JOB, f"run_dir={run}",
                             f"runtime.address=127.0.0.1:{cluster.base}", *overrides], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def comparable(run: Path) -> dict[str, bytes | list]:
    """The final model, every device file and every metrics column but wall time: numbers as their bytes."""
    arrays = {f"model/{k}": v for k, v in table_to_arrays(pq.read_table(run / "models/group-0.parquet")).items()}
    for f in sorted((run / "devices").glob("*.parquet")):
        arrays.update({f"{f.name}/{k}": v for k, v in table_to_arrays(pq.read_table(f)).items()})
    metrics = pq.read_table(run / "metrics.parquet")
    arrays.update({f"metrics/{c}": metrics.column(c).to_numpy(zero_copy_only=False)
                   for c in metrics.column_names if c != "wall_s"})
    return {k: (str(v.dtype), v.tobytes()) if v.dtype.kind in "biuf" else v.tolist() for k, v in arrays.items()}


ON_A_DEVICE_NODE = """
import json, sys
import ray
from fedray.config import load_config, to_plain
from fedray.horizontal.driver import start_driver
ray.init(address=sys.argv[1], _temp_dir=sys.argv[2], logging_level="ERROR")
driver = start_driver(to_plain(load_config(None, [])), sys.argv[3], 0.1)
ran_on = ray.get(driver.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
tiers = {n["NodeID"]: [r for r in n["Resources"] if r.startswith("fedray_tier_")] for n in ray.nodes() if n["Alive"]}
print(json.dumps({"process": ray.get_runtime_context().get_node_id(), "driver": ran_on, "tiers": tiers}))
"""


@pytest.mark.ray
def test_the_driver_actor_goes_to_the_head_even_from_a_process_on_a_device_node(two_nodes, tmp_path):
    """As a job's entrypoint placed on a device node would start it. (On one machine Ray attaches every process to
    the head's raylet unless given a node's temp dir: hence `_temp_dir`, which puts this one on the worker.)"""
    r = subprocess.run([sys.executable, "-c", ON_A_DEVICE_NODE, f"127.0.0.1:{two_nodes.base}", str(two_nodes.dir / "w"),
                        str(tmp_path / "run")], cwd=ROOT, env=two_nodes.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["tiers"][seen["process"]] == ["fedray_tier_edge"]  # the process really is on the worker node
    assert seen["tiers"][seen["driver"]] == ["fedray_tier_default"]  # its driver actor is on the head


def test_restarting_the_head_then_resuming_from_shared_storage_is_bit_exact(cluster, tmp_path):
    reference = tmp_path / "reference"  # uninterrupted, in-process: the fleets agree bit for bit (test_fleet.py)
    cfg = to_plain(load_config(DEFAULT, [TWO_TIERS, *JOB, "train.rounds=6"]))
    engine = RoundEngine(cfg, str(reference), InProcessFleet)
    engine.setup()
    for _ in range(6):
        engine.run_round()
    engine.finish()

    run = tmp_path / "run"
    proc = launch(cluster, run, "train.rounds=6")
    wait_for_checkpoint(run, 3, proc)
    cluster.stop("head", kill=True)  # the head crashes: the job loses its cluster mid-run
    proc.communicate(timeout=120)
    assert proc.returncode != 0 and not (run / "models").exists()
    cluster.stop("worker", kill=True)  # without the head's GCS the worker cannot rejoin a new one: both come back
    cluster.start()

    resumed = subprocess.run([sys.executable, "-m", "fedray.cli", "resume", str(run),
                              f"runtime.address=127.0.0.1:{cluster.base}"], cwd=ROOT, env=cluster.env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    start = int(" ".join(resumed.stdout.split()).split("resumed from the checkpoint of round ")[1].split()[0])
    assert start >= 3
    a, b = comparable(run), comparable(reference)
    assert a.keys() == b.keys()
    assert [key for key in a if a[key] != b[key]] == []


def test_a_worker_node_leaving_mid_run_costs_only_its_devices(cluster, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([str(BIN / "fedray"), "submit", "conf/default.yaml", TWO_TIERS, *JOB,
                             "train.rounds=6", "runtime.round_timeout_s=12", f"run_dir={run}",
                             "--address", cluster.address, "--follow"], cwd=ROOT, env=cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_checkpoint(run, 2, proc)
    cluster.stop("worker")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "SUCCEEDED" in out, out[-4000:]

    grouping = pq.read_table(run / "grouping.parquet").to_pylist()
    edge = [d for d in grouping if d["tier"] == "edge"]
    edge_hosts, edge_nodes = {d["host"] for d in edge}, {d["node"] for d in edge}
    assert len(edge_hosts) == 1 and len(edge_nodes) == 1
    assert all(d["node"] not in edge_nodes for d in grouping if d["tier"] == "default")
    host = edge_hosts.pop()
    assert f"device host {host} is gone for good; its {len(edge)} devices leave" in " ".join(out.split()), out[-6000:]
    metrics = pq.read_table(run / "metrics.parquet").to_pylist()
    assert [m["round"] for m in metrics] == list(range(6))  # every round ran: the run lost devices, not rounds
    assert all(m["applied"] for m in metrics) and all(m["restarts"] == 0 for m in metrics)
    # the default tier's host stayed up: only the rounds around the departure lost updates
    assert sum(m["failures"] for m in metrics) <= len(edge)
    assert metrics[-1]["failures"] == 0 and metrics[-1]["participants"] == 8
    assert not (run / "devices" / f"host-{host:04d}.parquet").exists()  # the departed host wrote nothing at the end
    assert (run / "devices" / f"host-{1 - host:04d}.parquet").is_file()
    # The driver actor ran on the head, which is why the run outlived the worker node.
    listed = cluster.run([str(BIN / "ray"), "list", "actors", "--address", cluster.address, "--format", "json",
                          "--filter", f"name={driver_name(run)}"])
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    assert [a["node_id"] for a in json.loads(listed.stdout)] == [d["node"] for d in grouping if d["tier"] == "default"][:1]
