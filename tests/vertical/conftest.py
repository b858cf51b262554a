"""Fixtures for the vertical tests: the shared data and a message auditor (Ray comes from tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.data.vertical import read_party

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vertical"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared vertical data not found at {DATA}")
    return DATA


class Leak(AssertionError):
    pass


def _walk(x, path="payload"):
    """Yield (path, leaf) for every leaf of a nested payload."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _walk(k, f"{path}.key")
            yield from _walk(v, f"{path}[{k!r}]")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, x


def audit(messages, raw_columns: list[np.ndarray], public_ctx_bytes: bytes, n_rows: int, *,
          tags: set[str] | None = None, weights: list[np.ndarray] = (), batch_rows: int | None = None) -> dict[str, int]:
    """Raise Leak unless every leaf of every message is an allowed kind; return counts by kind.

    Allowed: 32-byte blinded PSI points; ciphertexts that deserialize under the public context;
    the public context itself; integer position/index arrays (unique values in range, so never a
    0/1 label column); scalars (counts, codes, loss, auc); strings among `tags` (party names and
    metric keys; any string when tags is None); short float arrays that are not close to any raw
    column nor to any party's weights, and hold neither one value per aligned row nor one per batch
    row (masked gradient sums). Raw columns come in file order and aligned order from the caller.
    """
    import tenseal as ts

    ctx = ts.context_from(public_ctx_bytes)
    kinds: dict[str, int] = {}

    def count(k):
        kinds[k] = kinds.get(k, 0) + 1

    for msg in messages:
        for path, leaf in _walk(msg.payload):
            where = f"{msg.src}->{msg.dst} {msg.method} {path}"
            if isinstance(leaf, str):
                if tags is not None and leaf not in tags:
                    raise Leak(f"{where}: string {leaf!r} is not a known tag")
                count("scalar")
            elif leaf is None or isinstance(leaf, bool):
                count("scalar")
            elif isinstance(leaf, (int, float, np.integer, np.floating)):
                count("scalar")
            elif isinstance(leaf, bytes):
                if len(leaf) == 32:
                    count("psi_point")
                elif leaf == public_ctx_bytes:
                    count("public_context")
                else:
                    try:
                        ts.ckks_vector_from(ctx, leaf)
                    except Exception as exc:  # noqa: BLE001
                        raise Leak(f"{where}: {len(leaf)} bytes that are not a ciphertext ({exc})")
                    count("ciphertext")
            elif isinstance(leaf, np.ndarray):
                if leaf.dtype.kind in "iu":
                    if leaf.size and (leaf.min() < 0 or len(np.unique(leaf)) != leaf.size):
                        raise Leak(f"{where}: integer array that is not a set of row positions")
                    count("positions")
                elif leaf.dtype.kind == "f":
                    for col in raw_columns:
                        if col.shape == leaf.shape and np.allclose(col, leaf, atol=1e-3):
                            raise Leak(f"{where}: float array equal to a raw column")
                    for w in weights:
                        if w.shape == leaf.shape and np.allclose(w, leaf, atol=1e-6):
                            raise Leak(f"{where}: float array equal to a party's weights")
                    if leaf.size >= n_rows or (batch_rows is not None and leaf.size == batch_rows):
                        raise Leak(f"{where}: float array with one value per row ({leaf.size})")
                    count("float_array")
                else:
                    raise Leak(f"{where}: array of dtype {leaf.dtype}")
            else:
                raise Leak(f"{where}: unexpected {type(leaf).__name__}")
    return kinds


@pytest.fixture
def auditor():
    return audit


def _pooled_predictions(run_parties, files: dict[str, str], missing: str) -> dict[str, float]:
    """The trained model applied to the pooled new rows, computed here from the model files alone."""
    tables = {p: read_party(f, missing=missing) for p, f in files.items()}
    common = set.intersection(*(set(t.ids) for t in tables.values()))
    z = {i: 0.0 for i in common}
    for party, t in tables.items():
        m = pq.read_table(run_parties[party]).to_pydict()
        pos = {i: k for k, i in enumerate(t.ids)}
        rows = [pos[i] for i in sorted(common)]
        for code, name, w, fill, center, scale in zip(*(m[c] for c in ("code", "name", "weight", "fill", "center", "scale"))):
            x = np.zeros(len(rows)) if code == -1 else t.features[rows, t.feature_names.index(name)]
            x = np.where(np.isnan(x), fill, x)
            contribution = w * (np.ones(len(rows)) if code == -1 else (x - center) / scale)
            for i, c in zip(sorted(common), contribution):
                z[i] += c
    return {i: 1 / (1 + np.exp(-v)) for i, v in z.items()}


@pytest.fixture
def pooled_predictions():
    return _pooled_predictions
