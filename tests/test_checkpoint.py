import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedray.checkpoint import (
    CheckpointError,
    CheckpointStore,
    arrays_to_table,
    config_hash,
    table_to_arrays,
)

H = config_hash({"seed": 1, "model": {"dim": 8}})


def _model(r: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(r)
    return {
        "group0/emb": rng.standard_normal((5, 3)).astype(np.float32),
        "group0/step": np.array(r, dtype=np.int64),  # 0-d
        "residual": rng.integers(0, 255, size=7, dtype=np.uint8),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "ids": np.arange(4, dtype=np.int64) * r,
    }


def _save(store: CheckpointStore, r: int, h: str = H) -> str:
    metrics = pa.table({"round": pa.array([r], pa.int64()), "loss": [1.0 / (r + 1)]})
    return store.save(
        r,
        {"model": arrays_to_table(_model(r)), "metrics": metrics},
        config_hash=h,
        rng_states={"driver": {"state": 2**127 + r}},
        extra={"note": f"round {r}"},
    )


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _assert_model(ckpt, r: int) -> None:
    got = ckpt.arrays("model")
    want = _model(r)
    assert list(got) == list(want)
    for k in want:
        assert _same(got[k], want[k]), k


# ------------------------------------------------------------------ arrays_to_table

DTYPES = st.sampled_from(["<f4", "<f8", ">f8", "<f2", "<i8", "<i4", "|u1", "|i1", "<u8", "|b1", "<c8", "<M8[ns]", "|S3", "<U2"])


@settings(max_examples=60, deadline=None)
@given(st.lists(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)), max_size=4))
def test_arrays_table_roundtrip_bit_exact_through_parquet(arrs):
    named = {f"a{i}": a for i, a in enumerate(arrs)}
    sink = pa.BufferOutputStream()
    pq.write_table(arrays_to_table(named), sink)
    back = table_to_arrays(pq.read_table(pa.BufferReader(sink.getvalue())))
    assert list(back) == list(named)
    for k, a in named.items():
        assert _same(back[k], a), k
        assert back[k].flags.writeable


def test_arrays_table_nan_payloads_non_contiguous_and_refusals():
    nan = np.array([0x7FF8000000000123, 0xFFF0000000000001], dtype=np.uint64).view(np.float64)
    strided = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    back = table_to_arrays(arrays_to_table({"nan": nan, "strided": strided, "fortran": np.asfortranarray(strided)}))
    assert back["nan"].view(np.uint64).tolist() == nan.view(np.uint64).tolist()
    assert np.array_equal(back["strided"], strided) and np.array_equal(back["fortran"], strided)
    with pytest.raises(ValueError, match="obj"):
        arrays_to_table({"obj": np.array([object()])})
    t = arrays_to_table({"x": np.arange(3)})
    bad = t.set_column(3, "data", pa.array([b"\x00" * 5], pa.large_binary()))
    with pytest.raises(ValueError, match="'x'"):
        table_to_arrays(bad)


# ------------------------------------------------------------------ store basics


def test_save_load_roundtrip(tmp_path):
    store = CheckpointStore(str(tmp_path / "ck"))
    assert store.list() == [] and store.load_latest() is None
    p1 = _save(store, 1)
    p2 = _save(store, 2)
    assert p2 == str(tmp_path / "ck" / "ckpt-00000002") and os.path.isdir(p1)
    assert sorted(os.listdir(p2)) == ["manifest.json", "metrics.parquet", "model.parquet"]
    ck = store.load_latest(config_hash=H)
    assert ck.round == 2 and ck.path == p2
    _assert_model(ck, 2)
    assert ck.table("metrics").to_pydict() == {"round": [2], "loss": [1.0 / 3]}
    m = ck.manifest
    assert m["format"] == 1 and m["round"] == 2 and m["config_hash"] == H
    assert m["rng_states"] == {"driver": {"state": 2**127 + 2}} and m["extra"] == {"note": "round 2"}
    assert m["created"].startswith("20")
    for name, e in m["files"].items():
        assert e["bytes"] == os.path.getsize(os.path.join(p2, e["file"]))
        assert len(e["sha256"]) == 64
    assert store.verify(2) == (True, "ok")
    with pytest.raises(KeyError, match="nope"):
        ck.table("nope")


def test_file_uri_and_relative_path(tmp_path, monkeypatch):
    store = CheckpointStore("file://" + str(tmp_path / "u"))
    _save(store, 3)
    assert CheckpointStore(str(tmp_path / "u")).list() == [3]
    monkeypatch.chdir(tmp_path)
    assert CheckpointStore("u").load_latest().round == 3


def test_keep_n_pruning(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=2)
    for r in range(1, 6):
        _save(store, r)
    assert store.list() == [4, 5]
    _assert_model(store.load_latest(), 5)


def test_pruning_counts_only_valid_and_spares_newer(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=3)
    for r in (1, 2, 3):
        _save(store, r)
    with open(os.path.join(store.path(2), "manifest.json"), "w") as f:
        f.write("{")
    _save(store, 4)
    assert store.list() == [1, 3, 4]  # the invalid 2 goes and does not count towards keep
    _save(store, 9)
    _save(store, 6)  # an older round saved after a newer one: 9 is left alone
    assert store.list() == [4, 6, 9]


def test_stale_tmp_dir_ignored_then_removed(tmp_path):
    store = CheckpointStore(str(tmp_path))
    _save(store, 1)
    stale = tmp_path / ".tmp-ckpt-2-deadbeef"
    stale.mkdir()
    (stale / "model.parquet").write_bytes(b"half written")
    (stale / "manifest.json").write_text("{}")
    assert store.list() == [1]
    assert store.load_latest().round == 1
    _save(store, 2)
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == ["ckpt-00000001", "ckpt-00000002"]


class _FS:
    """Delegating filesystem wrapper used to simulate failures and object-store semantics."""

    def __init__(self, fail_on=None, dir_move=True):
        self._fs = pafs.LocalFileSystem()
        self.fail_on = fail_on
        self.dir_move = dir_move
        self.moves = 0

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def open_output_stream(self, path, *a, **k):
        if self.fail_on and path.endswith(self.fail_on):
            raise OSError(f"simulated crash writing {path}")
        return self._fs.open_output_stream(path, *a, **k)

    def move(self, src, dst):
        if not self.dir_move and self._fs.get_file_info(src).type == pafs.FileType.Directory:
            raise NotImplementedError("object stores cannot rename directories")
        self.moves += 1
        return self._fs.move(src, dst)


def test_crash_mid_save_leaves_previous(tmp_path):
    _save(CheckpointStore(str(tmp_path)), 1)
    crashing = CheckpointStore(str(tmp_path), filesystem=_FS(fail_on="manifest.json"))
    with pytest.raises(OSError, match="simulated crash"):
        _save(crashing, 2)
    store = CheckpointStore(str(tmp_path))
    assert store.list() == [1]
    assert any(n.startswith(".tmp-ckpt-2-") for n in os.listdir(tmp_path))
    _assert_model(store.load_latest(), 1)


def test_object_store_without_dir_rename(tmp_path):
    fs = _FS(dir_move=False)
    store = CheckpointStore(str(tmp_path), keep=2, filesystem=fs)
    for r in (1, 2, 3):
        _save(store, r)
    assert store.list() == [2, 3] and fs.moves == 0
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]
    _assert_model(store.load_latest(config_hash=H), 3)


def test_resave_existing_round_replaces_corrupt_copy(tmp_path):
    store = CheckpointStore(str(tmp_path))
    _save(store, 1)
    _save(store, 2)
    os.remove(os.path.join(store.path(2), "model.parquet"))
    _save(store, 2)
    assert store.verify(2) == (True, "ok")
    _assert_model(store.load_latest(), 2)


# ------------------------------------------------------------------ corruption fallback


def _truncate(d):
    p = os.path.join(d, "model.parquet")
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) - 10)


def _flip(d):
    p = os.path.join(d, "model.parquet")
    data = bytearray(open(p, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(p, "wb").write(bytes(data))


def _delete(d):
    os.remove(os.path.join(d, "metrics.parquet"))


def _garbage_manifest(d):
    open(os.path.join(d, "manifest.json"), "wb").write(b"\x00garbage{")


def _no_manifest(d):
    os.remove(os.path.join(d, "manifest.json"))


def _wrong_round(d):
    p = os.path.join(d, "manifest.json")
    m = json.load(open(p))
    m["round"] = 99
    json.dump(m, open(p, "w"))


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (_truncate, "truncated"),
        (_flip, "sha256 mismatch"),
        (_delete, "metrics.parquet (table 'metrics') is missing"),
        (_garbage_manifest, "does not parse"),
        (_no_manifest, "manifest.json missing"),
        (_wrong_round, "round 99"),
    ],
)
def test_corrupt_newest_falls_back_with_warning(tmp_path, corrupt, reason):
    store = CheckpointStore(str(tmp_path))
    _save(store, 1)
    _save(store, 2)
    corrupt(store.path(2))
    ok, why = store.verify(2)
    assert not ok and reason in why
    warned = []
    ck = store.load_latest(config_hash=H, warn=warned.append)
    assert ck.round == 1
    _assert_model(ck, 1)
    assert len(warned) == 1
    assert store.path(2) in warned[0] and reason in warned[0]


def test_default_warning_category(tmp_path):
    store = CheckpointStore(str(tmp_path))
    _save(store, 1)
    _save(store, 2)
    _flip(store.path(2))
    with pytest.warns(UserWarning, match="ckpt-00000002"):
        assert store.load_latest().round == 1


def test_all_corrupt_raises(tmp_path):
    store = CheckpointStore(str(tmp_path))
    _save(store, 1)
    _save(store, 2)
    _flip(store.path(1))
    _delete(store.path(2))
    warned = []
    with pytest.raises(CheckpointError) as e:
        store.load_latest(warn=warned.append)
    msg = str(e.value)
    assert store.path(1) in msg and store.path(2) in msg and "sha256" in msg and "missing" in msg
    assert len(warned) == 2


def test_config_hash_mismatch_raises_with_both_hashes(tmp_path):
    store = CheckpointStore(str(tmp_path))
    _save(store, 1)
    other = config_hash({"seed": 2, "model": {"dim": 8}})
    with pytest.raises(CheckpointError) as e:
        store.load_latest(config_hash=other)
    assert H in str(e.value) and other in str(e.value) and store.path(1) in str(e.value)
    assert store.load_latest().round == 1  # no hash given: no check


def test_table_read_rechecks_bytes(tmp_path):
    store = CheckpointStore(str(tmp_path))
    _save(store, 1)
    ck = store.load_latest()
    _flip(ck.path)
    with pytest.raises(CheckpointError, match="model.parquet"):
        ck.arrays("model")


def test_config_hash_canonical():
    a = config_hash({"b": 1, "a": {"y": [1, 2], "x": 0.1}})
    assert a == config_hash({"a": {"x": 0.1, "y": (1, 2)}, "b": np.int64(1)})
    assert a != config_hash({"b": 1, "a": {"y": [1, 2], "x": 0.10000000000000002}})
    assert len(a) == 64 and int(a, 16) >= 0


def test_save_rejects_bad_input(tmp_path):
    store = CheckpointStore(str(tmp_path))
    with pytest.raises(ValueError, match="table name"):
        store.save(1, {"../x": pa.table({"a": [1]})}, config_hash=H, rng_states={})
    with pytest.raises(ValueError, match="JSON"):
        store.save(1, {}, config_hash=H, rng_states={"g": np.random.default_rng(0)})
    assert store.list() == []
