"""The command line as a user meets it: `fedray run | resume | submit` as processes, on bad input.

Each case must exit with status 2, say what is wrong on one `error:` line without a traceback, start no
Ray session and leave no run directory. The message details are checked in-process by
tests/test_cli_errors.py; here it is the process contract: the exit status, the streams, and "before Ray
starts". Ray's temp dir is made private to each test (RAY_TMPDIR, which Ray reads for its default
`<tmp>/ray/session_*`), so a session started by the command is seen even while other Ray clusters run
on the machine; `test_the_session_check_sees_a_started_ray` shows the check would see one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "conf/default.yaml")
SMALL = ["data.synthetic.n_users=60", "data.synthetic.n_items=200", "train.participants=12", "train.rounds=2"]


def fedray_command() -> list[str]:
    """The installed console script next to this Python, else the module."""
    script = Path(sys.executable).parent / "fedray"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fedray.cli"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The `error:` message, whichever stream carries it, with rich's line wrapping undone."""
        text = self.out + self.err
        assert "error:" in text, text
        return " ".join(text[text.index("error:"):].split())


@pytest.fixture
def ray_tmp():
    """A private, short Ray temp dir (Ray's socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="frcli-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sessions(ray_tmp: Path) -> list[str]:
    """Ray session directories under the private temp dir (not the session_latest link to the newest)."""
    return sorted(p.name for p in (ray_tmp / "ray").glob("session_*") if not p.is_symlink())


@pytest.fixture
def fedray(tmp_path, ray_tmp):
    """Run the fedray command in tmp_path with the private Ray temp dir; check it started no Ray session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no address of another cluster
    env["RAY_TMPDIR"] = str(ray_tmp)

    def run(*argv: str) -> Result:
        proc = subprocess.run([*fedray_command(), *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert sessions(ray_tmp) == [], f"`fedray {' '.join(argv)}` started Ray: {sessions(ray_tmp)}"
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


def assert_nothing_left(tmp_path: Path, *expected: str) -> None:
    """Only the test's own inputs are in the command's working directory: no run directory, no runs/."""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)


def snapshot(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in sorted(run.rglob("*"))}


# ---------------------------------------------------------------------------- fedray run


def test_run_malformed_yaml(fedray, tmp_path, runs):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  rounds: 3\n  lr: [1, 2\n")
    result = fedray("run", str(config), f"output_dir={runs}")
    assert result.code == 2 and "malformed YAML" in result.error and str(config) in result.error
    assert_nothing_left(tmp_path, "bad.yaml")


def test_run_unknown_key(fedray, tmp_path, runs):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  roundz: 3\n")
    result = fedray("run", str(config), f"output_dir={runs}")
    assert result.code == 2 and "train.roundz" in result.error
    assert_nothing_left(tmp_path, "c.yaml")


def test_run_out_of_range_value(fedray, tmp_path, runs):
    result = fedray("run", DEFAULT, "train.rounds=0", f"output_dir={runs}")
    assert result.code == 2 and "train.rounds=0" in result.error and ">= 1" in result.error
    assert_nothing_left(tmp_path)


def test_run_missing_data_path(fedray, tmp_path, runs):
    result = fedray("run", DEFAULT, f"data.path={tmp_path / 'ml'}", f"output_dir={runs}")
    assert result.code == 2 and "data.path" in result.error and str(tmp_path / "ml") in result.error
    assert_nothing_left(tmp_path)


def test_run_without_a_config_is_a_usage_error(fedray, tmp_path):
    result = fedray("run")
    assert result.code == 2 and "usage: fedray run" in result.err and "config" in result.err
    assert_nothing_left(tmp_path)


# ---------------------------------------------------------------------------- fedray resume


def test_resume_of_a_missing_run_dir(fedray, tmp_path):
    result = fedray("resume", str(tmp_path / "nope"))
    assert result.code == 2 and str(tmp_path / "nope") in result.error and "config.yaml" in result.error
    assert_nothing_left(tmp_path)


def test_resume_that_changes_results_is_refused_and_touches_nothing(fedray, tmp_path):
    from fedray.config import load_config, save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(DEFAULT, [*SMALL, f"run_dir={run}"]), run)  # what `fedray run` leaves before Ray
    before = snapshot(run)
    result = fedray("resume", str(run), "train.lr=0.3")
    assert result.code == 2 and "train.lr" in result.error and "--force" in result.error
    assert snapshot(run) == before
    assert_nothing_left(tmp_path, "run")


def test_resume_with_every_checkpoint_corrupt_fails_before_ray_and_touches_nothing(fedray, tmp_path):
    import pyarrow as pa

    from fedray.checkpoint import CheckpointStore
    from fedray.config import load_config, save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(DEFAULT, [*SMALL, f"run_dir={run}"]), run)
    store = CheckpointStore(str(run / "checkpoints"))
    for round_ in (2, 4):
        store.save(round_, {"metrics": pa.table({"round": [round_]})}, config_hash="h", rng_states={})
    for manifest in (run / "checkpoints").glob("ckpt-*/manifest.json"):
        manifest.write_text("{not json")
    before = snapshot(run)
    result = fedray("resume", str(run))
    assert result.code == 2 and "no valid checkpoint" in result.error, result.error
    assert "ckpt-00000002" in result.error and "ckpt-00000004" in result.error  # each one named
    assert snapshot(run) == before
    assert_nothing_left(tmp_path, "run")


# ---------------------------------------------------------------------------- fedray submit


def test_submit_bad_config_fails_before_contacting_the_cluster(fedray, tmp_path):
    # nothing listens on the discard port: reaching the network would fail with another message
    result = fedray("submit", DEFAULT, "train.roundz=5", "--address", "http://127.0.0.1:9", "--working-dir", str(ROOT))
    assert result.code == 2 and "train.roundz" in result.error, result.error
    assert "job server" not in result.error
    assert_nothing_left(tmp_path)


# ---------------------------------------------------------------------------- the checks themselves


def test_errors_are_written_to_stderr(fedray, tmp_path):
    result = fedray("resume", str(tmp_path / "nope"))
    assert result.code == 2 and "error:" in result.err and "error:" not in result.out


@pytest.mark.ray
def test_the_session_check_sees_a_started_ray(own_cluster, ray_tmp, tmp_path):
    """fedray's own way of starting Ray, under the same environment, leaves a session where the check looks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_TMPDIR"] = str(ray_tmp)
    code = "import ray; from fedray import runtime; assert runtime.start(None, ['default'], 1); ray.shutdown()"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=180,
                   capture_output=True)
    assert len(sessions(ray_tmp)) == 1


def test_a_config_error_fails_without_loading_torch_or_ray(tmp_path):
    """A typo costs a second, not the seconds torch and Ray take to import: the error path imports neither."""
    code = ("import sys; from fedray.cli import main; rc = main(['run', sys.argv[1], 'train.roundz=3']); "
            "print(rc, sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, DEFAULT], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.split("\n")[-2] == "2 []", proc.stdout + proc.stderr
