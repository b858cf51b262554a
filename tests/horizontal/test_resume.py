"""Checkpoints and resume against the shared real Ray cluster: SIGKILL mid-run, corrupt checkpoints."""
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runs import sigkill_after_checkpoint, wait_for_checkpoint
from tests.conftest import RESUME_JOB as JOB
from fedray.checkpoint import table_to_arrays
from fedray.cli import main


def final_state(run: Path) -> dict:
    """Final global model and every device's private state, as arrays."""
    out = {f"model/{k}": v for k, v in table_to_arrays(pq.read_table(run / "models/group-0.parquet")).items()}
    for f in sorted((run / "devices").glob("*.parquet")):
        out.update({f"dev/{k}": v for k, v in table_to_arrays(pq.read_table(f)).items()})
    return out


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


@pytest.fixture(scope="module")
def reference(resume_reference):
    """The uninterrupted run of JOB (once per session, tests/conftest.py): every resumed run ends bit-identical."""
    return final_state(resume_reference)


@pytest.mark.ray
def test_sigkill_mid_run_then_resume_is_bit_identical(ray_local, reference, tmp_path):
    address = ray_local.get_runtime_context().gcs_address
    run = tmp_path / "run"
    sigkill_after_checkpoint([*JOB, f"runtime.address={address}"], run, 4)
    assert list((run / "checkpoints").glob("ckpt-*")), "the run never checkpointed"
    assert not (run / "models").exists(), "the run finished before it was killed"
    assert main(["resume", str(run), f"runtime.address={address}"]) == 0
    assert_bit_identical(final_state(run), reference)
    rounds = [r["round"] for r in pq.read_table(run / "metrics.parquet").to_pylist()]
    assert rounds == list(range(9))


@pytest.mark.ray
def test_corrupt_newest_checkpoint_falls_back_and_still_matches(ray_local, reference, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", *JOB, "train.rounds=6", f"run_dir={run}"]) == 0
    ckpts = sorted((run / "checkpoints").glob("ckpt-*"))
    assert [c.name for c in ckpts] == ["ckpt-00000002", "ckpt-00000004", "ckpt-00000006"]
    blob = bytearray((ckpts[-1] / "group-0.parquet").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (ckpts[-1] / "group-0.parquet").write_bytes(blob)
    capsys.readouterr()
    assert main(["resume", str(run), "train.rounds=9", "--force"]) == 0
    out = "".join(capsys.readouterr())
    assert "ckpt-00000006" in out and "resumed from the checkpoint of round 4" in out
    assert_bit_identical(final_state(run), reference)


@pytest.mark.ray
def test_resume_refuses_result_changing_overrides(resume_reference, tmp_path, capsys):
    run = shutil.copytree(resume_reference, tmp_path / "run")
    capsys.readouterr()
    assert main(["resume", str(run), "train.lr=0.3"]) == 2
    assert "train.lr" in "".join(capsys.readouterr())


@pytest.mark.ray
def test_a_killed_driver_actor_ends_the_run_with_one_line_and_resume_is_bit_identical(ray_local, reference, tmp_path,
                                                                                      capsys):
    import threading

    from fedray.horizontal.driver import driver_name

    run = tmp_path / "run"
    codes = []
    job = threading.Thread(target=lambda: codes.append(main(["run", *JOB, f"run_dir={run}"])))
    job.start()
    wait_for_checkpoint(run, 4)
    ray_local.kill(ray_local.get_actor(driver_name(run)))
    job.join(timeout=120)
    assert not job.is_alive() and codes == [1]
    out = "".join(capsys.readouterr())
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and "driver actor" in errors[0] and "Traceback" not in out
    assert f"fedray resume {run}" in " ".join(out.split())
    assert main(["resume", str(run)]) == 0
    assert "resumed from the checkpoint of round" in "".join(capsys.readouterr())
    assert_bit_identical(final_state(run), reference)
