"""Bad input at the edges: each case exits with code 2, names the file, key or line, and leaves no
half-written run directory behind. Real files in tmp_path, `fedray.cli.main` in-process."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from fedray.cli import main

ROOT = Path(__file__).resolve().parents[1]
VERTICAL = ROOT.parent / "shared" / "data" / "vertical"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, "".join(capsys.readouterr())


def error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert lines, out
    assert "Traceback" not in out
    return " ".join(out[out.index("error:"):].split())  # rich may wrap a long line


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


def assert_no_run_dir(runs: Path) -> None:
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


# ---------------------------------------------------------------------------- config


def test_malformed_yaml_names_file_and_line(tmp_path, runs, capsys):
    cfg = write(tmp_path / "bad.yaml", "train:\n  rounds: 3\n  lr: [1, 2\nmodel: {dim: 8}\n")
    code, out = run_cli(capsys, "run", str(cfg), f"output_dir={runs}")
    msg = error_line(out)
    assert code == 2 and str(cfg) in msg and "line " in msg and "malformed YAML" in msg
    assert_no_run_dir(runs)


def test_yaml_that_is_not_a_mapping(tmp_path, runs, capsys):
    cfg = write(tmp_path / "list.yaml", "- a\n- b\n")
    code, out = run_cli(capsys, "run", str(cfg), f"output_dir={runs}")
    assert code == 2 and str(cfg) in error_line(out) and "mapping" in error_line(out)
    assert_no_run_dir(runs)


def test_unknown_keys_in_file_and_on_the_command_line(tmp_path, runs, capsys):
    cfg = write(tmp_path / "c.yaml", "train:\n  roundz: 3\n")
    code, out = run_cli(capsys, "run", str(cfg), f"output_dir={runs}")
    msg = error_line(out)
    assert code == 2 and "train.roundz" in msg and str(cfg) in msg and "rounds" in msg
    code, out = run_cli(capsys, "run", str(ROOT / "conf/default.yaml"), "vertical.ckks.scale=3", f"output_dir={runs}")
    msg = error_line(out)
    assert code == 2 and "vertical.ckks.scale" in msg and "command line" in msg and "global_scale_bits" in msg
    assert_no_run_dir(runs)


@pytest.mark.parametrize("override,why", [
    ("compression.mode=rows", "reveal which rows or elements a device touched"),
    ("strategy.name=median", "needs each device's update"),
    ("privacy.threshold=0.5", "privacy.threshold=0.5: must be > 0.5 and <= 1.0"),
])
def test_secure_aggregation_with_what_would_leak_or_break_it_exits_2(tmp_path, runs, capsys, override, why):
    code, out = run_cli(capsys, "run", str(ROOT / "conf/default.yaml"), "privacy.secure_aggregation=true",
                        "compression.mode=dense", override, f"output_dir={runs}")
    assert code == 2 and why in error_line(out)
    assert_no_run_dir(runs)


def test_missing_config_file(tmp_path, runs, capsys):
    code, out = run_cli(capsys, "run", str(tmp_path / "nope.yaml"), f"output_dir={runs}")
    assert code == 2 and str(tmp_path / "nope.yaml") in error_line(out)
    assert_no_run_dir(runs)


# ---------------------------------------------------------------------------- data: MovieLens


def test_missing_data_path(tmp_path, runs, capsys):
    code, out = run_cli(capsys, "run", str(ROOT / "conf/default.yaml"), f"data.path={tmp_path / 'ml'}",
                        f"output_dir={runs}")
    assert code == 2 and "data.path" in error_line(out) and str(tmp_path / "ml") in error_line(out)
    assert_no_run_dir(runs)


@pytest.mark.parametrize("text", ["", "\n\n", "userId,movieId,rating,timestamp\n"])
def test_empty_movielens_file(tmp_path, runs, capsys, text):
    ratings = write(tmp_path / "ratings.csv", text)
    code, out = run_cli(capsys, "run", str(ROOT / "conf/default.yaml"), f"data.path={ratings}", f"output_dir={runs}")
    assert code == 2 and str(ratings) in error_line(out)
    assert_no_run_dir(runs)


@pytest.mark.parametrize("row,where,what", [
    ("3,x,4.0,964982703", ":4:", "item is not a number: 'x'"),
    ("3,50,4.0", ":4:", "expected 4 fields"),
    ("3,50,4.0,964982703,7", ":4:", "expected 4 fields"),
    ("3,50,,964982703", ":4:", "rating"),
])
def test_malformed_movielens_row_names_file_and_line(tmp_path, runs, capsys, row, where, what):
    good = "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n2,20,3.5,964982704\n"
    ratings = write(tmp_path / "ratings.csv", good + row + "\n4,30,5.0,964982705\n")
    code, out = run_cli(capsys, "run", str(ROOT / "conf/default.yaml"), f"data.path={ratings}", f"output_dir={runs}")
    msg = error_line(out)
    assert code == 2 and f"{ratings}{where}" in msg and what in msg, msg
    assert_no_run_dir(runs)


# ---------------------------------------------------------------------------- data: vertical


def vjob(guest: Path, host: Path, runs: Path) -> list[str]:
    return [str(ROOT / "conf/vertical_breast.yaml"), f"vertical.business_path={guest}",
            f"vertical.provider_paths=[{host}]", f"output_dir={runs}"]


def good_vertical(tmp_path: Path, n: int = 30) -> tuple[Path, Path]:
    guest = write(tmp_path / "guest.csv", "id,y,x0,x1\n" + "".join(f"u{i},{i % 2},{i / 10},{-i / 7}\n" for i in range(n)))
    host = write(tmp_path / "host.csv", "id,x0,x1\n" + "".join(f"u{i},{i / 3},{i % 5}\n" for i in range(n)))
    return guest, host


def test_vertical_missing_party_file(tmp_path, runs, capsys):
    guest, _ = good_vertical(tmp_path)
    code, out = run_cli(capsys, "run", *vjob(guest, tmp_path / "nohost.csv", runs))
    msg = error_line(out)
    assert code == 2 and "vertical.provider_paths[0]" in msg and "nohost.csv" in msg
    assert_no_run_dir(runs)


def test_vertical_empty_file(tmp_path, runs, capsys):
    guest, _ = good_vertical(tmp_path)
    for text in ("", "id,x0,x1\n"):
        host = write(tmp_path / "host.csv", text)
        code, out = run_cli(capsys, "run", *vjob(guest, host, runs))
        msg = error_line(out)
        assert code == 2 and str(host) in msg and ("empty" in msg or "no data rows" in msg), msg
    assert_no_run_dir(runs)


@pytest.mark.parametrize("party,line,column,value", [
    ("host", 5, "x1", "abc"), ("guest", 3, "x0", "1.2.3"), ("guest", 7, "y", "2")])
def test_vertical_malformed_value_names_file_line_and_column(tmp_path, runs, capsys, party, line, column, value):
    guest, host = good_vertical(tmp_path)
    path = guest if party == "guest" else host
    rows = path.read_text().splitlines()
    header = rows[0].split(",")
    cells = rows[line - 1].split(",")
    cells[header.index(column)] = value
    rows[line - 1] = ",".join(cells)
    write(path, "\n".join(rows) + "\n")
    code, out = run_cli(capsys, "run", *vjob(guest, host, runs))
    msg = error_line(out)
    assert code == 2 and f"{path}:{line}:" in msg and f"column '{column}'" in msg and value in msg, msg
    assert_no_run_dir(runs)


def test_vertical_ragged_row(tmp_path, runs, capsys):
    guest, host = good_vertical(tmp_path)
    write(host, host.read_text() + "u99,1\n")
    code, out = run_cli(capsys, "run", *vjob(guest, host, runs))
    assert code == 2 and f"{host}:32:" in error_line(out) and "fields" in error_line(out)
    assert_no_run_dir(runs)


def test_vertical_file_that_is_not_utf8_or_not_parquet(tmp_path, runs, capsys):
    guest, host = good_vertical(tmp_path)
    host.write_bytes(b"id,x0,x1\nu0,1,2\nu1,\xff\xfe,3\n")
    code, out = run_cli(capsys, "run", *vjob(guest, host, runs))
    assert code == 2 and f"{host}:3:" in error_line(out) and "UTF-8" in error_line(out)
    fake = write(tmp_path / "host.parquet", "id,x0\nu0,1\n")
    code, out = run_cli(capsys, "run", *vjob(guest, fake, runs))
    assert code == 2 and str(fake) in error_line(out) and "Parquet" in error_line(out)
    assert_no_run_dir(runs)


def test_movielens_too_few_interactions_names_the_file(tmp_path, runs, capsys):
    ratings = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,1\n2,10,4.0,2\n")
    code, out = run_cli(capsys, "run", str(ROOT / "conf/default.yaml"), f"data.path={ratings}", f"output_dir={runs}")
    assert code == 2 and str(ratings) in error_line(out) and "data.min_interactions" in error_line(out)
    assert_no_run_dir(runs)


@pytest.mark.ray
def test_vertical_disjoint_ids_fail_inside_ray_and_leave_nothing(ray_local, tmp_path, runs, capsys):
    guest, host = good_vertical(tmp_path)
    write(host, host.read_text().replace("u", "z"))
    code, out = run_cli(capsys, "run", *vjob(guest, host, runs))
    assert code == 2 and "intersection has 0 ids" in error_line(out)
    assert_no_run_dir(runs)


# ---------------------------------------------------------------------------- checkpoints of another config


def _files(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in sorted(run.rglob("*")) if p.is_file()}


def _edit_saved_config(run: Path, section: str, key: str, value) -> None:
    saved = yaml.safe_load((run / "config.yaml").read_text())
    node = saved
    for part in section.split("."):
        node = node[part]
    node[key] = value
    (run / "config.yaml").write_text(yaml.safe_dump(saved))


@pytest.mark.ray
def test_horizontal_resume_under_another_config_is_refused(ray_local, resume_reference, tmp_path, capsys):
    run = shutil.copytree(resume_reference, tmp_path / "run")  # a finished run, checkpoints of rounds 6, 8 and 9
    code, out = run_cli(capsys, "resume", str(run), "train.lr=0.3")
    assert code == 2 and "train.lr" in error_line(out) and "--force" in error_line(out)
    # a run directory whose checkpoints were written under another config hash
    _edit_saved_config(run, "train", "lr", 0.3)
    before = {k: v for k, v in _files(run).items()}
    code, out = run_cli(capsys, "resume", str(run))
    msg = error_line(out)
    assert code == 2 and "written by another config" in msg and "ckpt-00000009" in msg, msg
    assert _files(run).keys() == before.keys()
    assert {k: v for k, v in _files(run).items() if k.startswith(("checkpoints", "metrics", "models"))} == \
        {k: v for k, v in before.items() if k.startswith(("checkpoints", "metrics", "models"))}


@pytest.mark.ray
@pytest.mark.skipif(not VERTICAL.is_dir(), reason="shared vertical data not found")
def test_vertical_resume_under_another_config_is_refused(ray_local, tmp_path, capsys):
    run = tmp_path / "run"
    args = vjob(VERTICAL / "breast_hetero_guest.csv", VERTICAL / "breast_hetero_host.csv", tmp_path)
    assert main(["run", *args, "vertical.iterations=2", "checkpoint.every=1", f"run_dir={run}"]) == 0
    before = _files(run)
    code, out = run_cli(capsys, "resume", str(run), "vertical.lr=0.5")
    assert code == 2 and "vertical.lr" in error_line(out)
    code, out = run_cli(capsys, "resume", str(run), "train.lr=0.5")
    assert code == 2 and "train.lr" in error_line(out)
    assert _files(run) == before
    _edit_saved_config(run, "vertical", "lr", 0.5)
    before = _files(run)
    code, out = run_cli(capsys, "resume", str(run))
    msg = error_line(out)
    assert code == 2 and "written by another config" in msg and "ckpt-00000002" in msg, msg
    assert _files(run) == before  # refused before any actor started: nothing written


def test_distributed_dp_without_secure_aggregation_exits_2_before_anything_starts(runs, capsys):
    code, out = run_cli(capsys, "run", str(ROOT / "conf/default.yaml"), "privacy.dp=distributed",
                        "privacy.epsilon=4", f"output_dir={runs}")
    msg = error_line(out)
    assert code == 2 and "privacy.dp=distributed" in msg and "privacy.secure_aggregation=true" in msg
    assert_no_run_dir(runs)
