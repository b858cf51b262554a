"""SecureBoost through `fedray run` on the shared real Ray: per-tree checkpoints, resume, model files."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fedray.checkpoint import CheckpointStore
from fedray.cli import main

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]


def test_boost_run_checkpoints_every_tree_and_resumes(ray_local, data_dir, tmp_path, capsys):
    """Catches a resume that rebuilds scores in the new PSI row order without mapping them by id (the
    losses after the resume would differ), a lost split table, and trees without checkpoints."""
    run = tmp_path / "run"
    args = [str(ROOT / "conf/vertical_credit_boost.yaml"),
            f"vertical.business_path={data_dir / 'breast_hetero_guest.csv'}",
            f"vertical.provider_paths=[{data_dir / 'breast_hetero_host.csv'}]",
            "vertical.boost.trees=4", "vertical.boost.depth=2", "vertical.boost.bins=16",
            "checkpoint.keep=10", f"run_dir={run}"]
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert "validation AUC 0.9" in out and "after 4 trees" in out
    ref = pq.read_table(run / "metrics.parquet").to_pydict()
    store = CheckpointStore(str(run / "checkpoints"))
    assert store.list() == [1, 2, 3, 4]
    names = set(store.load_latest().names)
    assert {"party-business-trees", "party-business-scores", "party-provider0", "metrics"} == names
    shutil.rmtree(run / "checkpoints" / "ckpt-00000004")
    shutil.rmtree(run / "checkpoints" / "ckpt-00000003")
    (run / "metrics.parquet").unlink()
    assert main(["resume", str(run)]) == 0
    assert "resumed from the checkpoint of iteration 2" in capsys.readouterr().out
    got = pq.read_table(run / "metrics.parquet").to_pydict()
    assert got["iteration"] == [1, 2, 3, 4]
    assert got["val_loss"] == pytest.approx(ref["val_loss"], abs=1e-6)
    assert got["loss"] == pytest.approx(ref["loss"], abs=1e-6)
    trees = pq.read_table(run / "parties/business.parquet").to_pydict()
    splits = pq.read_table(run / "parties/provider0.parquet").to_pydict()
    assert sorted(set(trees["tree"])) == [0, 1, 2, 3]
    provider_nodes = sum(1 for o in trees["owner"] if o.startswith("provider0"))
    assert provider_nodes == len(splits["split_id"]) and "threshold" not in [k for k in trees if "provider" in k]
