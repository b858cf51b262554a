"""A party's own fill values and standardization."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fedray.vertical.preprocess import ColumnPrep

NAN = np.nan


def _train() -> np.ndarray:
    return np.array([[1.0, NAN, 5.0, 2.0],
                     [2.0, 4.0, 5.0, NAN],
                     [NAN, 6.0, 5.0, NAN],
                     [9.0, 8.0, 5.0, NAN]])


@pytest.mark.parametrize("missing, fill", [("zero", [0, 0, 5, 0]), ("mean", [4, 6, 5, 2]),
                                           ("median", [2, 6, 5, 2]), ("error", [0, 0, 5, 0])])
def test_fill_values_come_from_the_training_cells(missing, fill):
    prep = ColumnPrep.fit(_train(), missing, standardize=False)
    expected = np.array(fill, dtype=float)
    expected[2] = 0.0 if missing in ("zero", "error") else 5.0
    assert prep.fill.tolist() == expected.tolist()
    out = prep.apply(_train())
    assert not np.isnan(out).any() and out[2, 0] == expected[0] and out[0, 0] == 1.0


def test_all_missing_column_fills_zero_and_constant_column_keeps_scale_one():
    X = np.array([[NAN, 3.0, 1.0], [NAN, 3.0, 2.0], [NAN, 3.0, 4.0]])
    prep = ColumnPrep.fit(X, "mean", standardize=True)
    assert prep.fill[0] == 0.0 and prep.scale[0] == 1.0 and prep.scale[1] == 1.0
    Z = prep.apply(X)
    assert np.all(Z[:, :2] == 0.0)
    assert Z[:, 2].mean() == pytest.approx(0.0, abs=1e-12) and Z[:, 2].std() == pytest.approx(1.0)


def test_standardization_uses_training_statistics_on_new_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(10.0, 3.0, (200, 3))
    prep = ColumnPrep.fit(X, "mean", standardize=True)
    new = rng.normal(0.0, 1.0, (5, 3))
    assert np.allclose(prep.apply(new), (new - X.mean(0)) / X.std(0))
    with pytest.raises(ValueError, match="2 columns, the preparation was fitted on 3"):
        prep.apply(new[:, :2])


def test_table_round_trip_and_unknown_policy():
    prep = ColumnPrep.fit(_train(), "median", standardize=True)
    back = ColumnPrep.from_table(pa.table(prep.columns()))
    assert np.array_equal(back.apply(_train()), prep.apply(_train()))
    with pytest.raises(ValueError, match="missing='drop': allowed values are error, zero, mean, median"):
        ColumnPrep.fit(_train(), "drop", True)
