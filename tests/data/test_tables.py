"""Table reading and joining: formats by suffix, the id join, and errors that name file, column and line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedray.data.movielens import DataError
from fedray.data.tables import load_table, read_table

GUEST = "id,y,x0,x1\n3,1,0.5,1.0\n1,0,1.5,-2.0\n2,1,2.5,3e-1\n"
HOST = "id,x0,z\n1,10,100\n2,20,200\n3,30,300\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_join_follows_the_first_file_and_qualifies_shared_names(tmp_path):
    guest, host = write(tmp_path, "guest.csv", GUEST), write(tmp_path, "host.csv", HOST)
    ids, names, matrix = load_table([guest, host])
    assert list(ids) == ["3", "1", "2"]
    assert names == ["y", "guest.x0", "x1", "host.x0", "z"]
    assert np.allclose(matrix, [[1, 0.5, 1.0, 30, 300], [0, 1.5, -2.0, 10, 100], [1, 2.5, 0.3, 20, 200]])


def test_columns_pick_and_order(tmp_path):
    guest, host = write(tmp_path, "guest.csv", GUEST), write(tmp_path, "host.csv", HOST)
    _, names, matrix = load_table([guest, host], columns=["z", "y"])
    assert names == ["z", "y"]
    assert np.allclose(matrix, [[300, 1], [100, 0], [200, 1]])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_join_of_shuffled_files_matches_rows_by_id(tmp_path_factory, n_rows, seed):
    rng = np.random.default_rng(seed)
    tmp = tmp_path_factory.mktemp("join")
    ids = rng.choice(10**6, n_rows, replace=False)
    a, b = rng.normal(size=n_rows), rng.normal(size=n_rows)
    order = rng.permutation(n_rows)
    pq.write_table(pa.table({"id": ids, "a": a}), tmp / "left.parquet")
    pq.write_table(pa.table({"id": ids[order], "b": b[order]}), tmp / "right.parquet")
    got_ids, names, matrix = load_table([tmp / "left.parquet", tmp / "right.parquet"])
    assert names == ["a", "b"]
    assert np.array_equal(got_ids, ids.astype(str))
    assert np.array_equal(matrix, np.stack([a, b], axis=1))


def test_every_format_reads_the_same_table(tmp_path):
    table = pa.table({"id": [1, 2], "v": [0.25, -1.0]})
    pq.write_table(table, tmp_path / "t.parquet")
    with pa.ipc.new_file(tmp_path / "t.arrow", table.schema) as writer:
        writer.write_table(table)
    with pa.ipc.new_stream(tmp_path / "t.ipc", table.schema) as writer:
        writer.write_table(table)
    write(tmp_path, "t.csv", "id,v\n1,0.25\n2,-1.0\n")
    for name in ("t.parquet", "t.arrow", "t.ipc", "t.csv"):
        assert read_table(tmp_path / name).to_pydict() == table.to_pydict(), name


@pytest.mark.parametrize("files, message", [
    ({"g.csv": "id,y,x0\n1,0,0.5\n2,1,abc\n"}, r"g.csv:3: column 'x0': non-numeric value 'abc'"),
    ({"g.csv": "id,y,x0\n1,0,0.5\n2,1,\n"}, r"g.csv:3: column 'x0': missing value"),
    ({"g.csv": "id,y,x0\n1,0,0.5\n2,1,inf\n"}, r"g.csv:3: column 'x0': non-finite value inf"),
    ({"g.csv": "id,y,x0\n1,0,0.5\n2,1\n"}, r"g.csv:3: 2 fields, the header has 3"),
    ({"g.csv": "id,y\n1,0\n2,1\n", "h.csv": "id,x\n1,5\n3,6\n"}, r"h.csv: column 'id': 1 ids of .*g.csv do not join here \(first: id '2' at .*g.csv:3\)"),
    ({"g.csv": "id,y\n1,0\n", "h.csv": "id,x\n1,5\n7,6\n"}, r"g.csv: column 'id': 1 ids of .*h.csv do not join here \(first: id '7' at .*h.csv:3\)"),
    ({"g.csv": "id,y\n1,0\n1,1\n", "h.csv": "id,x\n1,5\n"}, r"g.csv:3: column 'id': id '1' repeats"),
    ({"g.csv": "key,y\n1,0\n", "h.csv": "id,x\n1,5\n"}, r"g.csv: no id column 'id'"),
    ({"g.txt": "id,y\n1,0\n"}, r"g.txt: unknown table format '.txt'"),
    ({"g.csv": "id,y\n"}, r"g.csv: no data rows"),
])
def test_bad_files_name_file_column_and_line(tmp_path, files, message):
    paths = [write(tmp_path, name, text) for name, text in files.items()]
    with pytest.raises(DataError, match=message):
        load_table(paths)


def test_missing_file_and_column(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.csv: no such file"):
        load_table(tmp_path / "nowhere.csv")
    guest = write(tmp_path, "g.csv", GUEST)
    with pytest.raises(DataError, match=r"g.csv: no column 'age'; columns are \['y', 'x0', 'x1'\]"):
        load_table(guest, columns=["y", "age"])


def test_parquet_missing_value_names_the_row(tmp_path):
    pq.write_table(pa.table({"id": [1, 2, 3], "v": [1.0, None, 2.0]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t.parquet: row 2: column 'v': missing value"):
        load_table(tmp_path / "t.parquet")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=2, max_size=2),
                min_size=1, max_size=20))
def test_csv_numbers_read_back_exactly(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    path.write_text("id,a,b\n" + "".join(f"{i},{a!r},{b!r}\n" for i, (a, b) in enumerate(rows)))
    ids, names, matrix = load_table(path)
    assert names == ["a", "b"] and list(ids) == [str(i) for i in range(len(rows))]
    assert np.array_equal(matrix, np.array(rows, dtype=np.float64).reshape(-1, 2))


def test_one_file_needs_no_id_column(tmp_path):
    ids, names, matrix = load_table(write(tmp_path, "plain.csv", "a,b\n1,2\n3,4\n"))
    assert list(ids) == ["0", "1"] and names == ["a", "b"]
    assert np.array_equal(matrix, [[1, 2], [3, 4]])
