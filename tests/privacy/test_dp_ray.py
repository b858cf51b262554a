"""A central-DP run through the CLI on the session's real local Ray: epsilon per round, in the summary, and the
budget stop."""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fedray.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["data.synthetic.n_users=60", "data.synthetic.n_items=200", "train.participants=16", "train.eval_every=2",
         "runtime.devices_per_actor=60", "checkpoint.every=0", "privacy.dp=central", "privacy.clip=1.0"]


@pytest.mark.ray
def test_a_dp_run_on_ray_records_epsilon_and_stops_at_its_target(ray_local, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", str(ROOT / "conf/default.yaml"), *SMALL, "train.rounds=6", "privacy.noise_multiplier=1.0",
                 "privacy.target_epsilon=5", f"run_dir={run}"]) == 0
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    eps = [r["epsilon"] for r in rows]
    assert 2 <= len(rows) < 6 and all(b > a > 0 for a, b in zip(eps, eps[1:])) and eps[-1] <= 5
    assert all(r["sampling_rate"] == pytest.approx(16 / 60) and r["noise_multiplier"] == 1.0 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary[0]["epsilon"] == pytest.approx(eps[-1])
    out = " ".join("".join(capsys.readouterr()).split())
    assert "epsilon" in out and "privacy budget" in out and "stops before it" in out
