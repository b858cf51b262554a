import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedray.data import DataError, eval_negatives, leave_one_out, read_ratings, synthetic_ratings

ROWS = [(1, 10, 4.0, 100), (1, 11, 3.0, 50), (1, 12, 5.0, 200), (2, 10, 1.0, 10), (2, 13, 2.0, 20), (2, 11, 2.0, 30)]


def write_layout(tmp_path, layout):
    if layout == "latest":
        text = "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)
        name = "ratings.csv"
    elif layout == "100k":
        text = "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS)
        name = "u.data"
    else:
        text = "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS)
        name = "ratings.dat"
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize("layout", ["latest", "100k", "1m"])
def test_each_layout_reads_the_same_ratings(tmp_path, layout):
    path = write_layout(tmp_path, layout)
    for target in (path, tmp_path):  # a file or the directory holding it
        t = read_ratings(target)
        assert t.column("user").to_pylist() == [r[0] for r in ROWS]
        assert t.column("item").to_pylist() == [r[1] for r in ROWS]
        assert t.column("timestamp").to_pylist() == [r[3] for r in ROWS]


def test_malformed_row_names_file_and_line(tmp_path):
    p = tmp_path / "ratings.csv"
    p.write_text("userId,movieId,rating,timestamp\n1,2,3.0,4\n1,x,3.0,5\n")
    with pytest.raises(DataError, match=r"ratings.csv:3: item is not a number"):
        read_ratings(p)
    p.write_text("userId,movieId,rating,timestamp\n1,2,3.0,4\n1,2,3.0\n")
    with pytest.raises(DataError, match=r"ratings.csv:3: expected 4 fields"):
        read_ratings(p)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "ratings.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_ratings(tmp_path / "ratings.csv")
    with pytest.raises(DataError, match="no such file"):
        read_ratings(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        read_ratings(tmp_path / "other")


def test_leave_one_out_holds_out_latest(tmp_path):
    d = leave_one_out(read_ratings(write_layout(tmp_path, "latest")), min_interactions=3)
    assert d.n_users == 2 and d.n_items == 4
    # user 1's latest is item 12, user 2's latest is item 11
    assert [d.item_ids[i] for i in d.test_items] == [12, 11]
    assert sorted(d.item_ids[d.positives(0)]) == [10, 11]


def test_movielens_small(movielens_dir):
    d = leave_one_out(read_ratings(movielens_dir))
    assert (d.n_users, d.n_items) == (671, 9066)
    assert len(d.items) + d.n_users == 100004


@settings(max_examples=20, deadline=None)
@given(users=st.integers(3, 30), items=st.integers(20, 80), seed=st.integers(0, 2**16))
def test_synthetic_is_seeded_and_negatives_are_unseen(users, items, seed):
    a = synthetic_ratings(users, items, 6, 4, 1.0, seed)
    b = synthetic_ratings(users, items, 6, 4, 1.0, seed)
    assert a.equals(b)
    d = leave_one_out(a)
    free = [d.n_items - len(set(d.positives(u)) | {d.test_items[u]}) for u in range(d.n_users)]
    if min(free) < 5:  # a catalogue too small to rank against is an error, never a silent short list
        with pytest.raises(DataError, match="unseen items"):
            eval_negatives(d, np.arange(d.n_users), 5, seed)
        return
    neg = eval_negatives(d, np.arange(d.n_users), 5, seed)
    for u in range(d.n_users):
        seen = set(d.positives(u)) | {d.test_items[u]}
        assert not seen & set(neg[u]) and len(set(neg[u])) == 5
