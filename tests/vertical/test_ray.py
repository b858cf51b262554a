"""One small real Ray run: actors, ObjectRef forwarding, output files, message audit."""

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from fedray.data.vertical import read_party
from fedray.vertical.config import VerticalConfig

pytestmark = pytest.mark.ray


def test_ray_run_writes_outputs_and_leaks_no_raw_data(ray_local, data_dir, tmp_path, auditor):
    from fedray.vertical.job import run_vertical

    v = VerticalConfig(business_path=str(data_dir / "breast_hetero_guest.csv"),
                       provider_paths=[str(data_dir / "breast_hetero_host.csv")], iterations=3)
    cfg = OmegaConf.create({"seed": 1, "runtime": {"actor_cpus": 0.25}, "vertical": OmegaConf.structured(v)})
    lines = []
    summary = run_vertical(cfg, tmp_path / "run", log=lines.append, record=True)
    assert summary["intersection"] == 569 and summary["iterations"] == 3
    assert summary["final_auc"] > 0.99 and any("iteration 3/3" in line for line in lines)
    assert summary["driver_context_private"] is False
    m = pq.read_table(tmp_path / "run" / "metrics.parquet").to_pydict()
    assert m["iteration"] == [1, 2, 3] and set(m) == {"iteration", "loss", "auc", "val_loss", "val_auc", "seconds"}
    assert summary["train_rows"] + summary["validation_rows"] == 569 and summary["final_val_auc"] > 0.97
    assert m["loss"][2] < m["loss"][0]
    b = pq.read_table(tmp_path / "run" / "parties" / "business.parquet").to_pydict()
    p = pq.read_table(tmp_path / "run" / "parties" / "provider0.parquet").to_pydict()
    assert sorted(b["code"]) == [-1] + list(range(10)) and sorted(p["code"]) == list(range(10, 30))

    g = read_party(data_dir / "breast_hetero_guest.csv", label_column="y")
    h = read_party(data_dir / "breast_hetero_host.csv")
    msgs = summary["messages"]
    pub = next(x.payload for x in msgs if x.method == "public_context" and x.src == "business")
    cols = [g.labels] + list(g.features.T) + list(h.features.T)
    # aligned orders too: rebuild them from the positions the business party sent
    positions = next(x.payload for x in msgs if x.method == "psi_finish" and x.src == "business")["provider0"]
    cols += list(h.features[positions].T)
    tags = {"business", "provider0", "loss", "auc", "val_loss", "val_auc",  # party names, metric keys, and
            *(str(tmp_path / "run" / "parties" / f"{p}.parquet") for p in ("business", "provider0"))}  # output paths
    kinds = auditor(msgs, cols, pub, 569, tags=tags)
    assert kinds["ciphertext"] >= 3 * 4 and kinds["psi_point"] >= 3 * 569


def test_ray_run_with_two_provider_workers(ray_local, data_dir, tmp_path):
    from fedray.vertical.job import run_vertical

    v = VerticalConfig(business_path=str(data_dir / "breast_hetero_guest.csv"),
                       provider_paths=[str(data_dir / "breast_hetero_host.csv")], iterations=2,
                       provider_workers=2, provider_names=["bank"])
    cfg = OmegaConf.create({"seed": 1, "vertical": OmegaConf.structured(v)})  # no runtime: 0.25 CPUs
    summary = run_vertical(cfg, tmp_path / "run", log=lambda s: None)
    assert summary["codes"] == {"business": [0, 10], "bank": [10, 20]}
    parts = sorted(p.name for p in (tmp_path / "run" / "parties" / "bank.parquet").iterdir())
    assert parts == ["part-0.parquet", "part-1.parquet"]
    assert sorted(pq.read_table(tmp_path / "run" / "parties" / "bank.parquet")["code"].to_pylist()) == list(range(10, 30))
    assert summary["final_auc"] > 0.98


def test_ray_run_reports_empty_intersection_as_data_error(ray_local, data_dir, tmp_path):
    from fedray.data.vertical import VerticalDataError
    from fedray.vertical.job import run_vertical

    host = tmp_path / "host.csv"
    host.write_text("id,x0\n" + "".join(f"z{i},{i / 10}\n" for i in range(30)))
    v = VerticalConfig(business_path=str(data_dir / "breast_hetero_guest.csv"), provider_paths=[str(host)])
    cfg = OmegaConf.create({"seed": 1, "vertical": OmegaConf.structured(v)})
    with pytest.raises(VerticalDataError, match="the intersection has 0 ids, need at least 10"):
        run_vertical(cfg, tmp_path / "run", log=lambda s: None)
