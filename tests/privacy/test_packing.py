import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedray.privacy.packing import PackingError, pack, packed_size, unpack


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 62).flatmap(lambda b: st.tuples(st.just(b), st.lists(st.integers(0, (1 << b) - 1), max_size=70))))
def test_pack_then_unpack_is_the_identity_at_every_width(case):
    bits, values = case
    body = pack(np.array(values, np.uint64), bits)
    assert len(body) == packed_size(len(values), bits)
    assert unpack(body, len(values), bits).tolist() == values


def test_elements_take_exactly_b_bits_least_significant_first():
    assert pack(np.array([1, 2, 3], np.uint64), 2) == bytes([0b111001])
    assert packed_size(10, 7) == 9


def test_a_value_too_wide_a_wrong_length_or_set_padding_is_refused():
    with pytest.raises(PackingError, match="does not fit"):
        pack(np.array([8], np.uint64), 3)
    with pytest.raises(PackingError, match="expected 2"):
        unpack(b"\0" * 3, 5, 3)
    with pytest.raises(PackingError, match="padding"):
        unpack(bytes([0, 0x80]), 5, 3)
