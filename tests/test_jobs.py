"""Ray Jobs: `fedray submit | status | logs | stop` and `ray job submit` against a real two-node cluster.

The cluster is tests/clusters.py's TwoNodeCluster: `ray start --head` plus one `ray start --address` worker
on this machine, with Ray token authentication on.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clusters import BIN
from fedray import jobs

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.synthetic.n_users=60", "data.synthetic.n_items=200", "train.participants=8", "train.eval_every=2",
         "runtime.devices_per_actor=60", "checkpoint.every=0"]  # one device host: the claims are about the job


# ---- no cluster: address, token and entrypoint rules ------------------------------------------------------------
def test_normalize_address():
    assert jobs.normalize_address("10.0.0.5:8265") == "http://10.0.0.5:8265"
    assert jobs.normalize_address("https://head.example:443/") == "https://head.example:443"
    with pytest.raises(jobs.JobError, match="dashboard"):
        jobs.normalize_address("ray://head:10001")


def test_token_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-default\n")
    (tmp_path / "t").write_text(" from-file \n")
    local, remote = "http://127.0.0.1:8265", "http://head.example:8265"
    assert jobs.resolve_token(local, "flag", str(tmp_path / "t"), env={}) == ("flag", "--token")
    assert jobs.resolve_token(local, None, str(tmp_path / "t"), env={})[0] == "from-file"
    env = {"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")}
    assert jobs.resolve_token(remote, env=env)[0] == "from-env"
    assert jobs.resolve_token(remote, env={"RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")})[0] == "from-file"
    # the default file: for a job server on this machine, or anywhere when RAY_AUTH_MODE=token
    assert jobs.resolve_token(local, env={})[0] == "from-default"
    assert jobs.resolve_token(remote, env={}) == (None, "none")
    assert jobs.resolve_token(remote, env={"RAY_AUTH_MODE": "token"})[0] == "from-default"
    assert jobs.resolve_token(local, env={"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "x"})[0] is None
    with pytest.raises(jobs.JobError, match="RAY_AUTH_TOKEN_PATH"):
        jobs.resolve_token(remote, env={"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})


def test_entrypoint_picks_the_job_script_and_validates():
    cmd = jobs.entrypoint(str(ROOT / "conf/default.yaml"), ["train.rounds=5", "name=a b"], str(ROOT))
    assert cmd == "python jobs/horizontal.py conf/default.yaml train.rounds=5 'name=a b'"
    vert = jobs.entrypoint(str(ROOT / "conf/vertical_breast.yaml"), [], str(ROOT), validate=False)
    assert vert.startswith("python jobs/vertical.py conf/vertical_breast.yaml")
    from fedray.config import ConfigError

    with pytest.raises(ConfigError, match="roundz"):
        jobs.entrypoint(str(ROOT / "conf/default.yaml"), ["train.roundz=5"], str(ROOT))


def test_submit_refuses_a_config_outside_the_working_dir(tmp_path, capsys):
    from fedray.cli import main

    conf = tmp_path / "c.yaml"
    shutil.copy(ROOT / "conf/default.yaml", conf)
    assert main(["submit", str(conf), "--address", "http://127.0.0.1:9", "--working-dir", str(ROOT)]) == 2
    assert "must lie inside --working-dir" in "".join(capsys.readouterr())
    assert main(["submit", str(ROOT / "conf/default.yaml"), "--address", "http://127.0.0.1:9",
                 "--working-dir", str(ROOT)]) == 2  # nothing listens on port 9
    assert "no Ray job server answers" in "".join(capsys.readouterr())


# ---- a real cluster ---------------------------------------------------------------------------------------------
@pytest.fixture
def cluster(two_nodes):
    """The session's two-node cluster (tests/conftest.py): started once for these tests and test_nodes.py."""
    return two_nodes


def _artifacts(run: Path, rounds: int) -> None:
    for name in ("config.yaml", "metrics.parquet", "grouping.parquet", "summary.json", "curves.png",
                 "models/group-0.parquet"):
        assert (run / name).is_file(), name
    assert [r["round"] for r in pq.read_table(run / "metrics.parquet").to_pylist()] == list(range(rounds))


@pytest.mark.ray
def test_fedray_submit_follow_status_logs(cluster, tmp_path):
    run = tmp_path / "run"
    env = {**cluster.plain_env, "RAY_AUTH_TOKEN": cluster.token}  # the token the way Ray documents it: env
    r = cluster.fedray("submit", "conf/default.yaml", *SMALL, "train.rounds=3", f"run_dir={run}",
                       "--address", cluster.address, "--follow", env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job_id = r.stdout.splitlines()[0].strip()
    assert job_id.startswith("raysubmit_")
    assert "60 devices on 1 device host" in r.stdout and f"job {job_id}: SUCCEEDED" in r.stderr
    _artifacts(run, 3)
    s = cluster.fedray("status", job_id, "--address", cluster.address, "--token", cluster.token)
    assert s.returncode == 0 and f"{job_id}: SUCCEEDED" in s.stdout, s.stdout + s.stderr
    lg = cluster.fedray("logs", job_id, "--address", cluster.address, "--token", cluster.token)
    assert lg.returncode == 0 and "run directory:" in lg.stdout


@pytest.mark.ray
def test_ray_job_submit_runs_the_job_unchanged_on_tier_nodes(cluster, tmp_path):
    """The plain Ray CLI: the device hosts ask for fedray_tier_edge, which only the worker node declares."""
    run = tmp_path / "run"
    conf = tmp_path / "edge.yaml"
    conf.write_text((ROOT / "conf/default.yaml").read_text() + "tiers:\n  - {name: edge, share: 1.0}\n")
    r = cluster.run([str(BIN / "ray"), "job", "submit", "--address", cluster.address, "--working-dir", ".", "--",
                     "python", "jobs/horizontal.py", str(conf), *SMALL, "train.rounds=2", f"run_dir={run}"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in (r.stdout + r.stderr)
    _artifacts(run, 2)
    grouping = pq.read_table(run / "grouping.parquet")
    assert set(grouping.column("tier").to_pylist()) == {"edge"}
    nodes = cluster.run([str(BIN / "ray"), "list", "nodes", "--address", cluster.address, "--format", "json"])
    assert nodes.returncode == 0, nodes.stdout[-2000:] + nodes.stderr[-2000:]
    edge = [n["node_id"] for n in json.loads(nodes.stdout) if "fedray_tier_edge" in n.get("resources_total", {})]
    head = [n["node_id"] for n in json.loads(nodes.stdout) if n.get("is_head_node")]
    assert len(edge) == 1 and edge != head
    assert set(grouping.column("node").to_pylist()) == set(edge)  # every device host ran on the edge node


@pytest.mark.ray
def test_failed_job_exits_nonzero(cluster, tmp_path):
    r = cluster.fedray("submit", "conf/default.yaml", "data.path=/nonexistent/ratings.csv", f"run_dir={tmp_path / 'r'}",
                       "--no-validate", "--address", cluster.address, "--token", cluster.token, "--follow")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "FAILED" in r.stderr and "data.path" in r.stdout


@pytest.mark.ray
def test_stop_a_running_job(cluster, tmp_path):
    r = cluster.fedray("submit", "conf/default.yaml", *SMALL, "train.rounds=100000", f"run_dir={tmp_path / 'r'}",
                       "--address", cluster.address, "--token", cluster.token)
    assert r.returncode == 0, r.stderr[-2000:]
    job_id = r.stdout.strip().splitlines()[0]
    c = jobs.client(cluster.address, cluster.token)
    deadline = time.time() + 60
    while str(jobs.status(c, job_id).status) != "RUNNING" and time.time() < deadline:
        time.sleep(0.5)
    s = cluster.fedray("stop", job_id, "--wait", "--address", cluster.address, "--token", cluster.token)
    assert s.returncode == 0 and f"{job_id}: STOPPED" in s.stdout, s.stdout + s.stderr


@pytest.mark.ray
def test_auth_failures_say_what_to_do(cluster, tmp_path):
    wrong = cluster.fedray("status", "raysubmit_x", "--address", cluster.address, "--token", "not-the-token")
    out = " ".join((wrong.stdout + wrong.stderr).split())  # rich wraps long lines; errors go to stderr
    assert wrong.returncode == 2 and "the token from --token was sent" in out and "RAY_AUTH_TOKEN" in out, out
    none = cluster.fedray("status", "raysubmit_x", "--address", cluster.address,
                          env={**cluster.plain_env, "HOME": str(tmp_path)})  # no ~/.ray/auth_token either
    out = " ".join((none.stdout + none.stderr).split())
    assert none.returncode == 2 and "no token was sent" in out and "ray get-auth-token" in out, out


@pytest.mark.ray
def test_vertical_job_through_submit(cluster, tmp_path):
    """jobs/vertical.py: data paths outside the uploaded working directory are passed as absolute overrides."""
    data = ROOT.parent / "shared" / "data" / "vertical"
    if not (data / "breast_hetero_guest.csv").is_file():
        pytest.skip(f"vertical data not found at {data}")
    run = tmp_path / "run"
    r = cluster.fedray("submit", "conf/vertical_breast.yaml", f"vertical.business_path={data / 'breast_hetero_guest.csv'}",
                       f"vertical.provider_paths=[{data / 'breast_hetero_host.csv'}]", "vertical.iterations=2",
                       f"run_dir={run}", "--address", cluster.address, "--token", cluster.token, "--follow")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "jobs/vertical.py" in r.stdout and "iteration 2/2" in r.stdout
    assert (run / "metrics.parquet").is_file() and (run / "parties").is_dir()
