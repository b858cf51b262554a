import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedray.data.vertical import VerticalDataError, read_party


def _write(tmp_path, text, name="party.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_reads_guest_and_host_layouts(tmp_path):
    g = read_party(_write(tmp_path, "id,y,x0,x1\n7,1,0.5,-1\n8,0,1e-3,2\n", "g.csv"), label_column="y")
    assert g.ids.tolist() == ["7", "8"] and g.feature_names == ["x0", "x1"]
    assert g.labels.tolist() == [1.0, 0.0] and g.features.tolist() == [[0.5, -1.0], [0.001, 2.0]]
    h = read_party(_write(tmp_path, "id,x0\na1,3\nb2,4\n", "h.csv"))
    assert h.labels is None and h.ids.tolist() == ["a1", "b2"]


def test_missing_id_column(tmp_path):
    p = _write(tmp_path, "uid,y,x0\n1,0,1\n")
    with pytest.raises(VerticalDataError, match=r"party\.csv:1: no id column 'id'"):
        read_party(p, label_column="y")


def test_missing_label_column(tmp_path):
    p = _write(tmp_path, "id,x0\n1,1\n")
    with pytest.raises(VerticalDataError, match="no label column 'y'"):
        read_party(p, label_column="y")


def test_non_numeric_value_names_file_line_column(tmp_path):
    p = _write(tmp_path, "id,y,x0,x1\n1,0,1,2\n2,1,3,4\n3,0,5,abc\n")
    with pytest.raises(VerticalDataError) as e:
        read_party(p, label_column="y")
    msg = str(e.value)
    assert str(p) in msg and ":4:" in msg and "column 'x1'" in msg and "'abc'" in msg


def test_missing_and_nonfinite_values(tmp_path):
    with pytest.raises(VerticalDataError, match=r":3: column 'x0': missing value"):
        read_party(_write(tmp_path, "id,x0\n1,1\n2,\n"))
    with pytest.raises(VerticalDataError, match=r":2: column 'x0': non-finite"):
        read_party(_write(tmp_path, "id,x0\n1,inf\n"))


def test_label_not_binary(tmp_path):
    p = _write(tmp_path, "id,y,x0\n1,0,1\n2,1,1\n3,2,1\n")
    with pytest.raises(VerticalDataError, match=r"party\.csv:4: column 'y': label '2' not in \{0,1\}"):
        read_party(p, label_column="y")
    # real-valued labels are fine for linear regression
    assert read_party(p, label_column="y", label_kind="real").labels.tolist() == [0, 1, 2]


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(VerticalDataError, match="empty file"):
        read_party(_write(tmp_path, "", "empty.csv"))
    with pytest.raises(VerticalDataError, match="no data rows"):
        read_party(_write(tmp_path, "id,y,x0\n", "header.csv"), label_column="y")
    with pytest.raises(VerticalDataError, match="no such file"):
        read_party(tmp_path / "nope.csv")


def test_ragged_row(tmp_path):
    with pytest.raises(VerticalDataError, match=r":3: 2 fields, header has 3"):
        read_party(_write(tmp_path, "id,y,x0\n1,0,1\n2,1\n"), label_column="y")


def test_parquet(tmp_path):
    t = pa.table({"id": [10, 11], "y": [0, 1], "x0": [0.5, 1.5]})
    pq.write_table(t, tmp_path / "g.parquet")
    g = read_party(tmp_path / "g.parquet", label_column="y")
    assert g.ids.tolist() == ["10", "11"] and g.features[:, 0].tolist() == [0.5, 1.5]
    pq.write_table(pa.table({"id": ["a", "b"], "x0": ["1.0", "oops"]}), tmp_path / "bad.parquet")
    with pytest.raises(VerticalDataError, match=r"bad\.parquet: row 2: column 'x0': non-numeric value 'oops'"):
        read_party(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"id": ["a"], "y": [3], "x0": [1.0]}), tmp_path / "lab.parquet")
    with pytest.raises(VerticalDataError, match=r"row 1: column 'y': label"):
        read_party(tmp_path / "lab.parquet", label_column="y")


def test_roundtrip_arrow_and_real_file(tmp_path):
    from pathlib import Path

    real = Path(__file__).resolve().parents[2].parent / "shared/data/vertical/breast_hetero_guest.csv"
    if not real.exists():
        pytest.skip("shared data missing")
    g = read_party(real, label_column="y")
    assert g.features.shape == (569, 10) and set(np.unique(g.labels)) == {0.0, 1.0}
    pq.write_table(g.to_arrow(), tmp_path / "g.parquet")
    g2 = read_party(tmp_path / "g.parquet", label_column="y")
    assert (g2.ids == g.ids).all() and np.array_equal(g2.features, g.features)
