"""The README's quickstart, run exactly as a user would: `fedray run examples/quickstart/fedray.yaml`."""
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fedray.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart"


def glue_lines() -> int:
    """Code lines specific to fedray: the task file after its glue marker, and the config (no blanks, comments, docstrings)."""
    glue = (EXAMPLE / "task.py").read_text().split("# ---- fedray glue", 1)[1].splitlines()[1:]
    config = (EXAMPLE / "fedray.yaml").read_text().splitlines()
    code = [line for line in glue + config if line.strip() and not re.match(r"\s*(#|\"\"\")", line)]
    return len(code)


def test_the_glue_stays_under_40_lines():
    assert glue_lines() < 40


@pytest.mark.ray
def test_the_quickstart_runs_from_the_repository_root_and_learns(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    assert main(["run", str(EXAMPLE / "fedray.yaml"), f"run_dir={run}"]) == 0
    metrics = pq.read_table(run / "metrics.parquet").to_pylist()
    accuracy = [r["accuracy"] for r in metrics if r["accuracy"] == r["accuracy"]]
    assert len(metrics) == 20 and len(accuracy) == 4
    assert accuracy[-1] > 0.85 > accuracy[0] - 0.2  # it learned: a random guess scores 0.5
    assert os.path.isfile(run / "models" / "group-0.parquet")
