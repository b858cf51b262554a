"""Horizontal runs on the session's real local Ray cluster."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["data.synthetic.n_users=60", "data.synthetic.n_items=200", "train.participants=16", "train.eval_every=4",
         "runtime.devices_per_actor=30", "checkpoint.every=0"]
ONE_HOST = ["runtime.devices_per_actor=60"]  # where a second host (a process importing torch) adds nothing to the claim


@pytest.fixture(scope="module")
def learned(ray_module, tmp_path_factory) -> tuple[Path, str]:
    """An 8-round run and what it printed, for the tests that read a finished run."""
    run = tmp_path_factory.mktemp("learned") / "run"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["run", str(ROOT / "conf/default.yaml"), *SMALL, "train.rounds=8", f"run_dir={run}"]) == 0
    return run, out.getvalue()


@pytest.mark.ray
def test_run_writes_artifacts_and_learns(learned):
    run, out = learned
    for name in ("config.yaml", "metrics.parquet", "grouping.parquet", "curves.png", "summary.json", "models/group-0.parquet"):
        assert (run / name).is_file(), name
    m = pq.read_table(run / "metrics.parquet").to_pylist()
    assert [r["round"] for r in m] == list(range(8))
    assert all(r["participants"] == 16 and r["rejected"] == 0 for r in m)
    assert all(0 < r["bits_per_element"] < 1.61 for r in m)  # ternary, sparse-coded
    assert all(r["bytes_up"] * 19.8 < r["bytes_up_float32"] for r in m)
    hr = [r["hr10"] for r in m if r["hr10"] == r["hr10"]]
    assert hr[-1] >= 0.2  # random ranking of 1 among 100 gives 0.1
    assert "HR@10" in out and "60 devices on 2 device hosts" in out


@pytest.mark.ray
def test_recommend_uses_the_run(learned, capsys):
    run, _ = learned
    assert main(["recommend", str(run), "--user", "5", "-k", "4", "--json"]) == 0
    rows = json.loads("".join(capsys.readouterr()))
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert np.all(np.diff([r["score"] for r in rows]) <= 0)
    assert main(["recommend", str(run), "--user", "99999"]) == 2


@pytest.mark.ray
def test_float_fedavg_and_fedadam_run(ray_local, tmp_path):
    run = tmp_path / "run"
    assert main(["run", str(ROOT / "conf/default.yaml"), *SMALL, *ONE_HOST, "train.rounds=4", "compression.method=none",
                 "strategy.name=fedadam", "strategy.server_lr=0.05", f"run_dir={run}"]) == 0
    m = pq.read_table(run / "metrics.parquet").to_pylist()
    assert all(r["bytes_up"] == r["bytes_up_float32"] for r in m)
    assert np.isfinite(pq.read_table(run / "models/group-0.parquet").num_rows)


@pytest.mark.ray
def test_ternary_broadcast_cuts_download_and_still_learns(ray_local, tmp_path):
    run = tmp_path / "run"
    assert main(["run", str(ROOT / "conf/default.yaml"), *SMALL, *ONE_HOST, "train.rounds=8", "compression.broadcast=ternary",
                 f"run_dir={run}"]) == 0
    m = pq.read_table(run / "metrics.parquet").to_pylist()
    float_down = 16 * 4 * (200 * 32 + 200)  # 16 devices x float32 model (item table + biases), upper bound
    assert all(0 < r["bytes_down"] < float_down / 16 for r in m)  # 1.6 bits/element dense, plus headers
    assert [r["hr10"] for r in m if r["hr10"] == r["hr10"]][-1] >= 0.2  # twice random ranking
