import numpy as np
import pytest

from fedray.vertical.coding import CodeBlock, LocalFeatureMap, assign_codes


def test_blocks_are_contiguous_and_business_first():
    blocks = assign_codes([("business", 10), ("p0", 20), ("p1", 3)])
    assert blocks["business"].codes().tolist() == list(range(10))
    assert blocks["p0"].codes().tolist() == list(range(10, 30))
    assert blocks["p1"].codes().tolist() == [30, 31, 32]
    allc = np.concatenate([b.codes() for b in blocks.values()])
    assert len(set(allc.tolist())) == len(allc)


def test_errors_and_local_map():
    with pytest.raises(ValueError):
        assign_codes([("a", 1), ("a", 2)])
    with pytest.raises(ValueError):
        LocalFeatureMap(["x0", "x1"], CodeBlock("p", 5, 3))
    fm = LocalFeatureMap(["x0", "x1", "x2"], CodeBlock("p", 5, 3))
    assert fm.code("x2") == 7 and fm.name(6) == "x1"
