"""Device faults and bad updates against the shared real Ray cluster: what survives, what is rejected."""
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.checkpoint import CheckpointStore, table_to_arrays
from fedray.cli import main
from fedray.config import load_config, to_plain
from fedray.engine.devices import initial_params
from fedray.tasks import build_task, check_model

ROOT = Path(__file__).resolve().parents[2]
SMALL = [str(ROOT / "conf/default.yaml"), "data.synthetic.n_users=40", "data.synthetic.n_items=300",
         "train.participants=12", "train.eval_every=3", "checkpoint.every=2", "model.dim=8",
         "runtime.devices_per_actor=40"]  # one device host: what these runs check happens on the driver


def metrics(run: Path) -> list[dict]:
    return pq.read_table(run / "metrics.parquet").to_pylist()


def model(run: Path) -> dict:
    return table_to_arrays(pq.read_table(run / "models/group-0.parquet"))


@pytest.mark.ray
def test_crashing_hosts_cost_only_their_updates_and_rejoin(ray_local, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", *SMALL, "train.rounds=4", "faults.crash=0.04", "runtime.devices_per_actor=10",
                 "runtime.actor_cpus=0.1", "runtime.max_restarts=-1", f"run_dir={run}"]) == 0
    m = metrics(run)
    assert [r["round"] for r in m] == list(range(4))
    assert sum(r["failures"] for r in m) > 0 and sum(r["restarts"] for r in m) > 0
    assert all(r["participants"] > 0 for r in m)  # every round went on with the surviving devices
    assert all(np.isfinite(v).all() for v in model(run).values())
    store = CheckpointStore(str(run / "checkpoints"))
    assert store.list() and all(store.verify(c)[0] for c in store.list())
    assert "restarted" in "".join(capsys.readouterr())


@pytest.mark.ray
def test_corrupted_payloads_are_rejected_with_their_reason(ray_local, tmp_path):
    run = tmp_path / "run"
    assert main(["run", *SMALL, "train.rounds=3", "faults.corrupt=0.3", f"run_dir={run}"]) == 0
    m = metrics(run)
    reasons = {}
    for r in m:
        for k, v in json.loads(r["reject_reasons"]).items():
            reasons[k] = reasons.get(k, 0) + v
    assert sum(r["rejected"] for r in m) == sum(reasons.values()) > 0
    assert set(reasons) <= {"checksum", "bad_header", "truncated", "overlong", "bad_trit", "bad_scale", "bad_index",
                            "version", "shape_mismatch"}
    assert all(r["participants"] + r["rejected"] == r["selected"] for r in m)


@pytest.mark.ray
def test_a_round_without_enough_valid_updates_is_retried_and_never_touches_the_model(ray_local, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", *SMALL, "train.rounds=2", "faults.corrupt=1.0", "train.max_round_retries=2",
                 "checkpoint.every=0", f"run_dir={run}"]) == 0
    m = metrics(run)
    assert all(not r["applied"] and r["retries"] == 2 and r["participants"] == 0 for r in m)
    assert all(r["selected"] == 3 * 12 for r in m)  # the first try and two retries
    init = initial_model(run)
    final = model(run)
    assert all(final[k].tobytes() == init[k].tobytes() for k in init)


def initial_model(run: Path) -> dict:
    """Group 0's initial global weights, rebuilt from the run's config."""
    cfg = load_config(run / "config.yaml")
    task = build_task(to_plain(cfg)["task"])
    task.load(cfg.seed)
    return initial_params(task, check_model(task), cfg.seed, 0, 1.0)


@pytest.mark.ray
def test_update_norm_clipping_is_counted_and_bounds_the_step(ray_local, tmp_path):
    run = tmp_path / "run"
    assert main(["run", *SMALL, "train.rounds=2", "train.clip_update_norm=0.01", "compression.method=none",
                 "checkpoint.every=0", "strategy.server_lr=40", f"run_dir={run}"]) == 0
    assert all(r["clipped"] == r["participants"] > 0 for r in metrics(run))
    init, final = initial_model(run), model(run)
    moved = np.sqrt(sum(float(np.square(final[k] - init[k]).sum()) for k in init))
    assert 0 < moved <= 2 * 40 * 0.01 * (1 + 1e-4)  # two rounds of server_lr x a mean of updates of norm <= 0.01
