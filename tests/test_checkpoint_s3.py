"""CheckpointStore on a real S3 API: moto's S3 server on a free local port, started once per session.

The store is reached the way a user reaches a bucket, through the URI alone:
``s3://BUCKET/PREFIX?endpoint_override=127.0.0.1:PORT&scheme=http&region=us-east-1`` (query parameters
that ``pyarrow.fs.FileSystem.from_uri`` understands) with credentials from the standard AWS variables.
No fedray code knows about the endpoint. Every test checks what landed in the bucket with boto3, an
independent S3 client, so a URI that silently resolved to the local disk would fail.

The last test (marked ray) runs `fedray run` and `fedray resume` as processes on the shared Ray cluster (whose
nodes hold the bucket's keys) with `checkpoint.uri` on the bucket, kills the first run after a checkpoint, and
compares the resumed run with the session's uninterrupted run of the same job on local disk.
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import moto.server as moto_server
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import RESUME_JOB, S3_CREDENTIALS
from fedray.checkpoint import CheckpointError, CheckpointStore, arrays_to_table, config_hash, table_to_arrays

ROOT = Path(__file__).resolve().parents[1]
H = config_hash({"seed": 1, "model": {"dim": 8}})
CREDENTIALS = S3_CREDENTIALS  # the shared Ray cluster's nodes hold them too (tests/conftest.py)


@dataclass
class S3Server:
    """A local S3 endpoint and a boto3 client on it (the independent observer of the bucket)."""

    endpoint: str  # host:port
    client: object

    def query(self) -> str:
        return f"endpoint_override={self.endpoint}&scheme=http&region=us-east-1"


@dataclass
class S3Place:
    """One test's own bucket and the store URI under it."""

    server: S3Server
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}?{self.server.query()}"

    def keys(self) -> list[str]:
        pages = self.server.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.server.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"].read()

    def put(self, key: str, body: bytes) -> None:
        self.server.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in a thread of this process, with test credentials in the environment (restored after)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    try:
        yield S3Server(endpoint=f"127.0.0.1:{port}", client=client)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3(s3_server) -> S3Place:
    """A fresh bucket for one test (a user's bucket exists before the run: the store does not create it)."""
    bucket = f"fedray-{secrets.token_hex(6)}"
    s3_server.client.create_bucket(Bucket=bucket)
    return S3Place(server=s3_server, bucket=bucket, prefix="runs/a")


# ---------------------------------------------------------------------------- helpers


def _model(round_: int) -> dict[str, np.ndarray]:
    """Arrays of several dtypes and shapes, different in every round."""
    rng = np.random.default_rng(round_)
    return {
        "group0/emb": rng.standard_normal((6, 4)).astype(np.float32),
        "group0/step": np.array(round_, dtype=np.int64),
        "residual": rng.integers(0, 255, size=9, dtype=np.uint8),
        "empty": np.zeros((0, 3), dtype=np.float64),
    }


def _save(store: CheckpointStore, round_: int) -> str:
    metrics = pa.table({"round": pa.array([round_], pa.int64()), "loss": [1.0 / (round_ + 1)]})
    return store.save(round_, {"model": arrays_to_table(_model(round_)), "metrics": metrics}, config_hash=H,
                      rng_states={"driver": {"state": 2**127 + round_}}, extra={"note": f"round {round_}"})


def _assert_model(checkpoint, round_: int) -> None:
    got, want = checkpoint.arrays("model"), _model(round_)
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        assert got[name].tobytes() == want[name].tobytes(), name


def _load_latest(store: CheckpointStore):
    """load_latest and the warnings it gave."""
    warnings: list[str] = []
    return store.load_latest(config_hash=H, warn=warnings.append), warnings


# ---------------------------------------------------------------------------- store on S3


def test_save_list_load_round_trip_through_the_bucket(s3):
    store = CheckpointStore(s3.uri, keep=3)
    for round_ in (1, 2, 3):
        _save(store, round_)
    assert store.list() == [1, 2, 3]
    keys = [k for k in s3.keys() if not k.endswith("/")]  # pyarrow also writes empty "dir/" markers
    assert keys == [f"{s3.prefix}/ckpt-0000000{r}/{f}" for r in (1, 2, 3)
                    for f in ("manifest.json", "metrics.parquet", "model.parquet")]
    checkpoint, warnings = _load_latest(store)
    assert warnings == [] and checkpoint.round == 3
    _assert_model(checkpoint, 3)
    assert checkpoint.rng_states == {"driver": {"state": 2**127 + 3}} and checkpoint.extra == {"note": "round 3"}
    assert checkpoint.table("metrics").to_pylist() == [{"round": 3, "loss": 0.25}]
    # the bytes in the bucket are the ones the manifest describes
    table = pq.read_table(pa.BufferReader(s3.get("ckpt-00000002/model.parquet")))
    assert table_to_arrays(table)["group0/emb"].tobytes() == _model(2)["group0/emb"].tobytes()
    _assert_model(CheckpointStore(s3.uri).load(1, config_hash=H), 1)  # a second store on the same URI


def test_corrupt_object_is_skipped_with_a_warning(s3):
    store = CheckpointStore(s3.uri, keep=3)
    for round_ in (1, 2, 3):
        _save(store, round_)
    blob = bytearray(s3.get("ckpt-00000003/model.parquet"))
    blob[len(blob) // 2] ^= 0x01  # same size, one bit flipped
    s3.put("ckpt-00000003/model.parquet", bytes(blob))
    assert store.verify(3, deep=False) == (True, "ok")  # sizes alone cannot see it
    ok, why = store.verify(3)
    assert not ok and "model.parquet" in why and "sha256" in why
    checkpoint, warnings = _load_latest(store)
    assert checkpoint.round == 2
    _assert_model(checkpoint, 2)
    assert len(warnings) == 1 and "ckpt-00000003" in warnings[0] and "sha256" in warnings[0]
    with pytest.raises(CheckpointError, match="written by another config"):
        store.load_latest(config_hash=config_hash({"seed": 2}), warn=lambda _: None)


def test_object_rewritten_after_verification_is_refused_on_read(s3):
    store = CheckpointStore(s3.uri)
    _save(store, 1)
    checkpoint, _ = _load_latest(store)
    s3.put("ckpt-00000001/model.parquet", s3.get("ckpt-00000001/model.parquet")[:-1] + b"\0")
    with pytest.raises(CheckpointError, match="model.parquet"):
        checkpoint.arrays("model")


def test_object_cut_short_is_skipped(s3):
    store = CheckpointStore(s3.uri, keep=3)
    for round_ in (1, 2):
        _save(store, round_)
    whole = s3.get("ckpt-00000002/metrics.parquet")
    s3.put("ckpt-00000002/metrics.parquet", whole[: len(whole) // 2])
    ok, why = store.verify(2, deep=False)
    assert not ok and f"has {len(whole) // 2} bytes, manifest says {len(whole)}" in why
    checkpoint, warnings = _load_latest(store)
    assert checkpoint.round == 1 and "ckpt-00000002" in warnings[0] and "truncated" in warnings[0]
    _assert_model(checkpoint, 1)


def test_missing_manifest_and_only_invalid_checkpoints(s3):
    store = CheckpointStore(s3.uri, keep=3)
    _save(store, 1)
    s3.server.client.delete_object(Bucket=s3.bucket, Key=f"{s3.prefix}/ckpt-00000001/manifest.json")
    with pytest.raises(CheckpointError) as error:
        store.load_latest(warn=lambda _: None)
    assert "no valid checkpoint" in str(error.value) and "ckpt-00000001" in str(error.value)
    assert "manifest.json missing" in str(error.value)


# A writer that dies (SIGKILL) halfway through its DIE_AT-th object upload while saving round 2: the
# upload is opened and half written but never completed, exactly what a killed process leaves behind.
# It prints the path it died in. The model table holds 12 MB of random bytes, past S3's 5 MB part size.
_KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np, pyarrow as pa
    from fedray.checkpoint import CheckpointStore, arrays_to_table

    uri, die_at = sys.argv[1], int(sys.argv[2])
    real_write, calls = CheckpointStore._write, []

    def write(self, path, data):
        calls.append(path)
        if len(calls) == die_at:
            print(path, flush=True)
            stream = self.fs.open_output_stream(path)
            stream.write(data[: len(data) // 2])
            time.sleep(1.0)  # let the background part uploads reach the server
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(self, path, data)

    CheckpointStore._write = write
    blob = np.random.default_rng(0).integers(0, 256, size=12 << 20, dtype=np.uint8)
    CheckpointStore(uri, keep=3).save(2, {"model": arrays_to_table({"blob": blob}), "metrics": pa.table({"a": [1]})},
                                      config_hash=sys.argv[3], rng_states={})
""")


# A save of two tables makes six uploads: model, metrics, manifest into a temp dir, then again into ckpt-00000002
# (S3 cannot rename). Dying in the first, third, fourth and sixth leaves a pending 12 MB upload in the temp dir,
# a temp dir without a manifest, a pending upload in the final dir, and a final dir without a manifest.
@pytest.mark.parametrize("die_at", [1, 3, 4, 6])
def test_writer_killed_mid_upload_leaves_the_previous_checkpoint(s3, die_at):
    store = CheckpointStore(s3.uri, keep=3)
    _save(store, 1)
    proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, s3.uri, str(die_at), H], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # it died inside the die_at-th upload
    died_in = proc.stdout.strip()
    uploads = s3.server.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == [died_in.split("/", 1)[1]]  # begun, never completed
    checkpoint, warnings = _load_latest(store)
    assert checkpoint.round == 1, died_in
    _assert_model(checkpoint, 1)
    assert bool(warnings) == (2 in store.list()), died_in  # a half-published round 2 is named and skipped
    assert all("ckpt-00000002" in w for w in warnings)
    # a resumed run saves round 2 again: it lands whole and the dead writer's leftovers are gone
    _save(store, 2)
    assert store.list() == [1, 2]
    checkpoint, warnings = _load_latest(store)
    assert checkpoint.round == 2 and warnings == []
    _assert_model(checkpoint, 2)
    assert not [k for k in s3.keys() if ".tmp-ckpt-" in k]


def test_keep_n_prunes_old_objects_and_keeps_valid_ones(s3):
    store = CheckpointStore(s3.uri, keep=2)
    for round_ in (1, 2, 3, 4):
        _save(store, round_)
    assert store.list() == [3, 4]
    assert not [k for k in s3.keys() if "ckpt-00000001" in k or "ckpt-00000002" in k]
    # a corrupt checkpoint does not count towards keep: the newest valid older one survives it
    blob = bytearray(s3.get("ckpt-00000004/model.parquet"))
    blob[-10] ^= 0xFF
    s3.put("ckpt-00000004/model.parquet", bytes(blob))
    _save(store, 5)
    assert store.list() == [3, 5]
    assert {k.split("/")[2] for k in s3.keys() if k.count("/") >= 3} == {"ckpt-00000003", "ckpt-00000005"}


def test_endpoint_from_the_environment(s3, monkeypatch):
    """The other no-code way in: AWS_ENDPOINT_URL_S3 (read by pyarrow and boto) and a plain s3:// URI."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{s3.server.endpoint}")
    store = CheckpointStore(f"s3://{s3.bucket}/{s3.prefix}", keep=2)
    _save(store, 7)
    assert f"{s3.prefix}/ckpt-00000007/manifest.json" in s3.keys()
    _assert_model(store.load_latest(config_hash=H), 7)


# ---------------------------------------------------------------------------- a horizontal run on S3

JOB = RESUME_JOB  # tests/conftest.py runs it once, uninterrupted, for every kill-and-resume test to compare with


def _final_state(run: Path) -> dict[str, tuple[str, tuple, bytes]]:
    """Every global model and device file of a finished run, array by array, as dtype, shape and raw bytes."""
    out = {}
    for path in sorted([*(run / "models").glob("*.parquet"), *(run / "devices").glob("*.parquet")]):
        for name, array in table_to_arrays(pq.read_table(path)).items():
            out[f"{path.parent.name}/{path.name}/{name}"] = (array.dtype.str, array.shape, array.tobytes())
    return out


def _metrics(run: Path) -> list[dict]:
    """metrics.parquet without its wall-clock column (all a resume may change); NaN as a string, to compare."""
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    return [{k: "nan" if v != v else v for k, v in row.items() if k != "wall_s"} for row in rows]


def _wait_until_gone(name: str, timeout_s: float = 60) -> None:
    """Block until no live actor holds that name (a dead actor's name is released): a killed job's actors die
    after it, and a resume must not start while the old driver could still write a checkpoint."""
    import ray

    deadline = time.time() + timeout_s
    while name in {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}:
        assert time.time() < deadline, f"actor {name} still alive {timeout_s} s after its job was killed"
        time.sleep(0.2)


@pytest.mark.ray
def test_horizontal_run_killed_and_resumed_on_s3_is_bit_exact(resume_reference, ray_local, s3, tmp_path):
    """`fedray run checkpoint.uri=s3://...` SIGKILLed after a checkpoint, then `fedray resume`: same as never killed.
    Both are processes on the shared cluster, whose nodes hold the bucket's keys; the run writes nothing locally."""
    from fedray.horizontal.driver import driver_name

    fedray = [str(Path(sys.executable).parent / "fedray")]
    address = f"runtime.address={ray_local.get_runtime_context().gcs_address}"
    reference = resume_reference  # the same JOB on local disk
    run = tmp_path / "run"
    proc = subprocess.Popen([*fedray, "run", *JOB, f"run_dir={run}", f"checkpoint.uri={s3.uri}", address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and f"{s3.prefix}/ckpt-00000004/manifest.json" not in s3.keys():
            assert proc.poll() is None, "the run ended before its checkpoint of round 4 reached the bucket"
            time.sleep(0.1)
        time.sleep(0.3)  # somewhere inside a later round
        assert driver_name(run) in {a["name"] for a in ray_local.util.list_named_actors(all_namespaces=True)}
    finally:
        proc.kill()
        proc.wait()
    _wait_until_gone(driver_name(run))
    assert not (run / "models").exists(), "the run finished before it was killed"
    assert not (run / "checkpoints").exists(), "checkpoints went to the local disk, not to the bucket"
    newest = CheckpointStore(s3.uri).load_latest().round
    assert newest >= 4
    resumed = subprocess.run([*fedray, "resume", str(run), address], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from the checkpoint of round {newest}" in resumed.stdout, resumed.stdout
    assert _final_state(run) == _final_state(reference)
    assert _metrics(run) == _metrics(reference)
    assert [row["round"] for row in _metrics(run)] == list(range(9))
    assert CheckpointStore(s3.uri).list() == [6, 8, 9]  # every 2 rounds and the last, keep=3
