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


# -- missing values ---------------------------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from fedray.data.vertical import MISSING_TOKENS  # noqa: E402


def test_missing_tokens_become_nan_when_filling(tmp_path):
    text = "id,y,x0,x1\n1,0,,2\n2,1,NA,NaN\n3,0,null,4\n4,1,5,nan\n5,0,NULL,6\n"
    t = read_party(_write(tmp_path, text), label_column="y", missing="mean")
    assert np.isnan(t.features).tolist() == [[True, False], [True, True], [True, False], [False, True], [True, False]]
    assert t.features[3, 0] == 5.0 and t.features[4, 1] == 6.0


@pytest.mark.parametrize("cell, why", [("", "missing value"), ("NaN", "non-finite value"), ("NA", "non-numeric")])
def test_error_policy_names_file_line_and_column(tmp_path, cell, why):
    path = _write(tmp_path, f"id,y,x0,x1\n1,0,1,2\n2,1,3,{cell}\n")
    with pytest.raises(VerticalDataError, match=rf"party\.csv:3: column 'x1': {why}"):
        read_party(path, label_column="y", missing="error")


def test_labels_ids_and_infinities_are_never_filled(tmp_path):
    with pytest.raises(VerticalDataError, match=r"party\.csv:3: column 'y': missing value$"):
        read_party(_write(tmp_path, "id,y,x0\n1,0,1\n2,,3\n"), label_column="y", missing="mean")
    with pytest.raises(VerticalDataError, match=r"party\.csv:2: column 'x0': non-finite value 'inf'"):
        read_party(_write(tmp_path, "id,y,x0\n1,0,inf\n2,1,3\n"), label_column="y", missing="median")
    with pytest.raises(VerticalDataError, match=r"party\.csv:3: column 'x0': non-numeric value 'oops'"):
        read_party(_write(tmp_path, "id,x0\n1,1\n2,oops\n"), missing="zero")
    with pytest.raises(ValueError, match="missing='drop'"):
        read_party(_write(tmp_path, "id,x0\n1,1\n"), missing="drop")


def test_parquet_nulls_and_nans_are_missing(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "y": [0, 1, 0], "x0": [1.0, None, float("nan")],
                             "x1": pa.array([None, 2, 3], pa.int64())}), path)
    t = read_party(path, label_column="y", missing="mean")
    assert np.isnan(t.features).tolist() == [[False, True], [True, False], [True, False]]
    with pytest.raises(VerticalDataError, match=r"p\.parquet: row 2: column 'x0': missing value"):
        read_party(path, label_column="y")
    pq.write_table(pa.table({"id": ["a", "b"], "y": pa.array([0, None], pa.int64()), "x0": [1.0, 2.0]}), path)
    with pytest.raises(VerticalDataError, match=r"row 2: column 'y': missing value"):
        read_party(path, label_column="y", missing="mean")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 4), st.data())
def test_csv_round_trip_with_random_missing_cells(tmp_path_factory, rows, cols, data):
    """Every missing token is NaN exactly where it was written; every other value reads back exactly."""
    values = np.array(data.draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=rows * cols,
                                         max_size=rows * cols))).reshape(rows, cols)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=rows * cols, max_size=rows * cols))).reshape(rows, cols)
    tokens = data.draw(st.lists(st.sampled_from(MISSING_TOKENS), min_size=rows * cols, max_size=rows * cols))
    lines = ["id," + ",".join(f"x{j}" for j in range(cols))]
    for i in range(rows):
        cells = [tokens[i * cols + j] if mask[i, j] else repr(float(values[i, j])) for j in range(cols)]
        lines.append(f"r{i}," + ",".join(cells))
    path = tmp_path_factory.mktemp("csv") / "h.csv"
    path.write_text("\n".join(lines) + "\n")
    t = read_party(path, missing="median")
    assert np.array_equal(np.isnan(t.features), mask)
    assert np.array_equal(t.features[~mask], values[~mask])


def test_check_party_files_follows_the_missing_policy(tmp_path):
    from types import SimpleNamespace

    from fedray.data.vertical import check_party_files

    g = _write(tmp_path, "id,y,x0\n1,0,\n2,1,3\n", "g.csv")
    h = _write(tmp_path, "id,x0\n1,NA\n2,4\n", "h.csv")
    v = SimpleNamespace(business_path=g, provider_paths=[h], id_column="id", label_column="y",
                        model="logistic", missing="mean")
    check_party_files(v)
    check_party_files(SimpleNamespace(**{**vars(v), "model": "secureboost"}))
    with pytest.raises(VerticalDataError, match=r"g\.csv:2: column 'x0': missing value"):
        check_party_files(SimpleNamespace(**{**vars(v), "missing": "error"}))
