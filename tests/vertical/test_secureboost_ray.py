"""SecureBoost through `fedray run` on the shared real Ray: per-tree checkpoints, resume, model files."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
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


def _pooled_tree_scores(run: Path, files: dict[str, str]) -> dict[str, float]:
    """The trained trees applied to the pooled rows, here, from the two model files and the raw files."""
    from fedray.data.vertical import read_party

    trees = pq.read_table(run / "parties/business.parquet")
    base = float(trees.schema.metadata[b"base_score"])
    nodes = {(r["tree"], r["node"]): r for r in trees.to_pylist()}
    splits = {(r["worker"], r["split_id"]): r for r in pq.read_table(run / "parties/provider0.parquet").to_pylist()}
    tables = {p: read_party(f, missing="zero") for p, f in files.items()}
    rows = {p: {i: t.features[k] for k, i in enumerate(t.ids)} for p, t in tables.items()}
    names = {p: {n: j for j, n in enumerate(t.feature_names)} for p, t in tables.items()}
    out = {}
    for i in set(rows["business"]) & set(rows["provider0"]):
        z = base
        for tree in sorted({t for t, _ in nodes}):
            r = nodes[(tree, 0)]
            while r["owner"]:
                if r["owner"] == "business":
                    x, t, miss = rows["business"][i][names["business"][r["column_name"]]], r["threshold"], r["missing_left"]
                else:
                    s = splits[(int(r["owner"].partition(":")[2] or 0), r["split_id"])]
                    x, t, miss = rows["provider0"][i][names["provider0"][s["name"]]], s["threshold"], s["missing_left"]
                r = nodes[(tree, r["left"] if (x < t or (np.isnan(x) and miss)) else r["right"])]
            z += r["value"]
        out[i] = 1 / (1 + np.exp(-z))
    return out


def test_boost_predict_on_ray_equals_the_trees_on_pooled_rows(ray_local, data_dir, tmp_path):
    from fedray.vertical.predict import predict

    run = tmp_path / "run"
    assert main(["run", str(ROOT / "conf/vertical_credit_boost.yaml"),
                 f"vertical.business_path={data_dir / 'breast_hetero_guest.csv'}",
                 f"vertical.provider_paths=[{data_dir / 'breast_hetero_host.csv'}]",
                 "vertical.boost.trees=3", "vertical.boost.depth=3", f"run_dir={run}"]) == 0
    lines = (data_dir / "breast_hetero_host.csv").read_text().splitlines()
    host = tmp_path / "new_host.csv"
    host.write_text("\n".join([lines[0], *lines[1:400:2]]) + "\n")  # 200 of the customers
    guest = str(data_dir / "breast_hetero_guest.csv")
    summary = predict(run, guest, [str(host)], str(tmp_path / "scores.parquet"), log=lambda s: None)
    got = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    want = _pooled_tree_scores(run, {"business": guest, "provider0": str(host)})
    assert summary["scored"] == len(want) == 200 and set(got["id"]) == set(want)
    assert max(abs(s - want[i]) for i, s in zip(got["id"], got["score"])) < 1e-12
