"""Shared helpers for task tests: a small synthetic binary table on disk, and one torch thread."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


def write_binary_table(path: Path, n_rows: int = 600, n_features: int = 5, seed: int = 0) -> Path:
    """A CSV `id,y,f0..` whose label follows a logistic model of the features (learnable, both classes)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, (n_rows, n_features))  # off-centre and wide, so standardization matters
    logits = (x - 2.0) @ rng.normal(size=n_features)
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logits))).astype(int)
    header = "id,y," + ",".join(f"f{j}" for j in range(n_features))
    lines = [f"{1000 + i},{y[i]}," + ",".join(f"{v:.6f}" for v in x[i]) for i in range(n_rows)]
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


@pytest.fixture
def binary_csv(tmp_path: Path) -> Path:
    return write_binary_table(tmp_path / "table.csv")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Train on one thread, as device hosts do: tiny models on a loaded shared machine run 50x slower on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
