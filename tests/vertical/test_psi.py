import random

import pytest

from fedray.vertical.psi import BlindingKey, BusinessPSI, ProviderPSI, PSIError, dedup, hash_to_point, intersect


def _ids(values):
    return [str(v) for v in values]


def test_x25519_blinding_commutes():
    a, b = BlindingKey(), BlindingKey()
    points = hash_to_point(_ids(range(2000)))
    ab = a.blind(b.blind(points))
    ba = b.blind(a.blind(points))
    assert ab == ba
    # and the blinding is keyed: another key gives different values, distinct ids stay distinct
    assert BlindingKey().blind(points[:50]) != a.blind(points[:50])
    assert len(set(ab)) == len(ab)


def _check(business, provider, mine, theirs):
    expected = set(business) & set(provider)
    got_b = [business[i] for i in mine]
    got_p = [provider[i] for i in theirs]
    assert got_b == got_p  # identical order on both sides
    assert set(got_b) == expected and len(got_b) == len(expected)


def test_overlapping_and_shuffled():
    rng = random.Random(1)
    business = _ids(range(0, 1000))
    provider = _ids(range(600, 1900))
    rng.shuffle(business)
    rng.shuffle(provider)
    mine, theirs = intersect(business, {"p": provider})
    assert len(mine) == 400
    _check(business, provider, mine, theirs["p"])


def test_identical_sets_different_order_give_full_alignment():
    ids = _ids(range(500))
    shuffled = ids[:]
    random.Random(2).shuffle(shuffled)
    mine, theirs = intersect(ids, {"p": shuffled})
    _check(ids, shuffled, mine, theirs["p"])
    assert len(mine) == 500
    # the common order is not the business file order (it is keyed by the blinded values)
    assert list(mine) != sorted(mine)


def test_disjoint_sets_error_names_sizes():
    with pytest.raises(PSIError) as e:
        intersect(_ids(range(100)), {"prov": _ids(range(1000, 1050))})
    msg = str(e.value)
    assert "100 ids" in msg and "prov has 50 ids" in msg and "0 ids" in msg and "min_intersection" in msg


def test_tiny_intersection_below_minimum_is_an_error():
    with pytest.raises(PSIError, match="intersection has 3 ids, need at least 10"):
        intersect(_ids(range(100)), {"p": _ids(range(97, 200))}, min_size=10)
    mine, _ = intersect(_ids(range(100)), {"p": _ids(range(97, 200))}, min_size=3)
    assert len(mine) == 3


def test_several_providers_intersect_all():
    b = _ids(range(0, 300))
    p1 = _ids(range(100, 400))
    p2 = _ids(list(range(150, 250)) + list(range(1000, 1100)))
    mine, theirs = intersect(b, {"p1": p1, "p2": p2})
    expected = set(b) & set(p1) & set(p2)
    assert {b[i] for i in mine} == expected
    assert [b[i] for i in mine] == [p1[i] for i in theirs["p1"]] == [p2[i] for i in theirs["p2"]]


def test_duplicates_are_reported_with_counts():
    ids = _ids([1, 2, 2, 3, 3, 3, 4])
    with pytest.raises(PSIError, match=r"2 id\(s\) occur more than once \(3 extra row\(s\) of 7\)"):
        dedup(ids, "provider0", "host.csv", "error")
    keep, rep = dedup(ids, "provider0", "host.csv", "keep_first")
    assert keep.tolist() == [0, 1, 3, 6]
    assert (rep.duplicated_ids, rep.extra_rows, rep.unique) == (2, 3, 4)
    keep, rep = dedup(_ids(range(5)), "b", "", "error")
    assert rep is None and keep.tolist() == [0, 1, 2, 3, 4]


def test_only_blinded_points_are_exchanged():
    ids = _ids(range(50))
    b = BusinessPSI(ids)
    p = ProviderPSI(ids)
    raw_hashes = set(hash_to_point(ids))
    sent = b.single + p.single() + p.reblind(b.single)
    assert all(len(x) == 32 for x in sent)
    assert not raw_hashes & set(sent)
    assert not {i.encode() for i in ids} & set(sent)


def test_each_party_blinds_with_its_own_fresh_key():
    """Shared ids give disjoint blinded points on the two sides (one key for both would let a provider test
    guessed ids against the business party's points), and a new run draws new keys."""
    ids = _ids(range(300))
    business, provider = BusinessPSI(ids), ProviderPSI(ids)
    assert not set(business.single) & set(provider.single())
    assert not set(business.single) & set(BusinessPSI(ids).single)
    assert not set(provider.single()) & set(ProviderPSI(ids).single())
