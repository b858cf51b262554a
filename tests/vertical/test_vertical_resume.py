"""Vertical checkpoints, resume and a party dying mid-run, through the CLI on the shared real Ray."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fedray.checkpoint import CheckpointStore
from fedray.cli import main

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]


def job(data_dir: Path, *extra: str) -> list[str]:
    return [str(ROOT / "conf/vertical_breast.yaml"),
            f"vertical.business_path={data_dir / 'breast_hetero_guest.csv'}",
            f"vertical.provider_paths=[{data_dir / 'breast_hetero_host.csv'}]", *extra]


def metrics(run: Path) -> dict:
    return pq.read_table(run / "metrics.parquet").to_pydict()


def test_checkpoints_hold_one_file_per_party_keyed_by_code(ray_local, data_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["run", *job(data_dir, "vertical.iterations=4", "checkpoint.every=2"), f"run_dir={run}"]) == 0
    store = CheckpointStore(str(run / "checkpoints"))
    assert store.list() == [2, 4]
    ck = store.load_latest()
    assert set(ck.names) == {"party-business", "party-provider0", "metrics"}
    b, p = ck.table("party-business").to_pydict(), ck.table("party-provider0").to_pydict()
    assert sorted(b["code"]) == [-1] + list(range(10)) and sorted(p["code"]) == list(range(10, 30))
    assert set(b) == {"code", "weight", "velocity", "second_moment", "steps"}
    assert ck.extra["iteration"] == 4 and ck.extra["intersection"] == 569
    assert ck.rng_states["trainer"]["iteration"] == 4
    model = pq.read_table(run / "parties/provider0.parquet")
    final = dict(zip(model["code"].to_pylist(), model["weight"].to_pylist()))
    assert final == dict(zip(p["code"], p["weight"]))  # the last checkpoint holds the final weights


def test_resume_continues_from_the_saved_iteration(ray_local, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = job(data_dir, "vertical.iterations=8", "checkpoint.every=2", "checkpoint.keep=10")
    assert main(["run", *args, f"run_dir={run}"]) == 0
    ref = metrics(run)
    # as if the run had stopped after iteration 4: drop the later checkpoints and outputs
    for r in (6, 8):
        import shutil

        shutil.rmtree(run / "checkpoints" / f"ckpt-{r:08d}")
    (run / "metrics.parquet").unlink()
    capsys.readouterr()
    assert main(["resume", str(run)]) == 0
    out = "".join(capsys.readouterr())
    assert "resumed from the checkpoint of iteration 4" in out and "iteration 5/8" in out
    assert "iteration 4/8" not in out
    got = metrics(run)
    assert got["iteration"] == list(range(1, 9))
    assert got["loss"][:4] == ref["loss"][:4]  # iterations 1-4 come from the checkpoint
    assert abs(got["auc"][-1] - ref["auc"][-1]) < 1e-3 and abs(got["loss"][-1] - ref["loss"][-1]) < 1e-4
    assert CheckpointStore(str(run / "checkpoints")).list()[-1] == 8


def _named(prefix: str, suffix: str, timeout: float = 60.0) -> str:
    import ray

    deadline = time.time() + timeout
    while time.time() < deadline:
        names = [a["name"] if isinstance(a, dict) else a for a in ray.util.list_named_actors(all_namespaces=False)]
        hits = [n for n in names if n.startswith(prefix) and n.endswith(suffix)]
        if hits:
            return hits[0]
        time.sleep(0.05)
    raise AssertionError(f"no actor {prefix}*{suffix}")


def test_killed_provider_stops_the_run_cleanly_and_it_resumes(ray_local, data_dir, tmp_path, capsys):
    import ray

    run = tmp_path / "run"
    args = job(data_dir, "vertical.iterations=40", "checkpoint.every=1")
    codes = []
    thread = threading.Thread(target=lambda: codes.append(main(["run", *args, f"run_dir={run}"])))
    thread.start()
    name = _named(f"fedray-vertical-{run.name}-", "-provider0")
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "ckpt-00000002").exists():
        time.sleep(0.02)
    ray.kill(ray.get_actor(name))
    thread.join(timeout=180)
    assert not thread.is_alive() and codes == [1]
    out = "".join(capsys.readouterr())
    assert "Traceback" not in out
    err = [line for line in out.splitlines() if "error:" in line]
    assert len(err) == 1 and "'provider0'" in err[0] and name in err[0] and "died during iteration" in err[0]
    last = CheckpointStore(str(run / "checkpoints")).load_latest().round
    assert 2 <= last < 40 and f"from the checkpoint of iteration {last}" in out.replace("\n", " ")
    assert not (run / "metrics.parquet").exists()

    assert main(["resume", str(run)]) == 0
    out = "".join(capsys.readouterr())
    assert f"resumed from the checkpoint of iteration {last}" in out
    m = metrics(run)
    assert m["iteration"] == list(range(1, 41)) and m["auc"][-1] > 0.99
    assert sorted(pq.read_table(run / "parties/provider0.parquet")["code"].to_pylist()) == list(range(10, 30))
