"""`fedray predict` end to end on the shared real Ray: train through the CLI, then score new customers."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.cli import main
from fedray.data.vertical import read_party

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]


def _subset_csv(path: Path, src: Path, rows: np.ndarray, blank_every: int = 0) -> str:
    """Some rows of a FATE CSV (label column dropped), every ``blank_every``-th feature cell emptied."""
    lines = src.read_text().splitlines()
    head = lines[0].split(",")
    keep = [j for j, name in enumerate(head) if name != "y"]
    out = [",".join(head[j] for j in keep)]
    for k, r in enumerate(rows):
        cells = [lines[r + 1].split(",")[j] for j in keep]
        if blank_every and k % blank_every == 0:
            cells[1 + k % (len(cells) - 1)] = ""
        out.append(",".join(cells))
    path.write_text("\n".join(out) + "\n")
    return str(path)


def test_predict_scores_new_customers_like_the_pooled_model(ray_local, data_dir, tmp_path, auditor,
                                                           pooled_predictions):
    from fedray.vertical.predict import add_predict_parser, predict

    run = tmp_path / "run"
    assert main(["run", str(ROOT / "conf/vertical_breast.yaml"),
                 f"vertical.business_path={data_dir / 'breast_hetero_guest.csv'}",
                 f"vertical.provider_paths=[{data_dir / 'breast_hetero_host.csv'}]",
                 "vertical.iterations=3", f"run_dir={run}"]) == 0
    rng = np.random.default_rng(9)
    guest = _subset_csv(tmp_path / "new_guest.csv", data_dir / "breast_hetero_guest.csv",
                        rng.permutation(569)[:300], blank_every=7)
    host = _subset_csv(tmp_path / "new_host.csv", data_dir / "breast_hetero_host.csv",
                       rng.permutation(569)[:350], blank_every=5)
    summary = predict(run, guest, [host], str(tmp_path / "scores.parquet"), log=lambda s: None, record=True)
    out = pq.read_table(tmp_path / "scores.parquet")
    want = pooled_predictions({"business": run / "parties/business.parquet",
                               "provider0": run / "parties/provider0.parquet"},
                              {"business": guest, "provider0": host}, "mean")
    got = dict(zip(out["id"].to_pylist(), out["score"].to_pylist()))
    assert out.column_names == ["id", "score"] and set(got) == set(want) and summary["scored"] == len(want)
    assert max(abs(got[i] - want[i]) for i in want) < 1e-6  # CKKS precision

    msgs = summary["messages"]
    pub = next(m.payload for m in msgs if m.method == "public_context" and m.src == "business")
    cols = [np.nan_to_num(c) for f in (guest, host) for c in read_party(f, missing="mean").features.T]
    kinds = auditor(msgs, cols, pub, 1)
    assert "float_array" not in kinds and kinds["ciphertext"] >= 2

    parser = argparse.ArgumentParser()
    add_predict_parser(parser.add_subparsers(dest="command"))
    from rich.console import Console

    console = Console(width=200, record=True)
    args = parser.parse_args(["predict", str(run), "--business", guest, "--provider", host])
    assert args.func(args, console) == 0 and (run / "scores.parquet").is_file()
    bad = tmp_path / "bad_host.csv"
    bad.write_text("id,x0\n1,oops\n")
    args = parser.parse_args(["predict", str(run), "--business", guest, "--provider", str(bad)])
    assert args.func(args, console) == 2
    assert "bad_host.csv:2: column 'x0': non-numeric value 'oops'" in console.export_text()
