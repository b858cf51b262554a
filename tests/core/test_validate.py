import numpy as np

from fedray.core.validate import check_result, check_tensors, clip_norm


def rec(device=1, payload=b"x" * 10, samples=5):
    return {"device": device, "payload": payload, "samples": samples, "loss": 0.1}


def test_accepts_a_well_formed_result():
    assert check_result(rec(), {1, 2}, set(), 100) is None


def test_each_defect_has_its_reason():
    assert check_result("junk", {1}, set(), 100) == "malformed_result"
    assert check_result({"device": 1}, {1}, set(), 100) == "malformed_result"
    assert check_result(rec(device=7), {1}, set(), 100) == "unexpected_device"
    assert check_result(rec(), {1}, {1}, 100) == "duplicate"
    assert check_result(rec(samples=0), {1}, set(), 100) == "bad_samples"
    assert check_result(rec(samples=2.5), {1}, set(), 100) == "bad_samples"
    assert check_result(rec(payload=np.zeros(3)), {1}, set(), 100) == "payload_type"
    assert check_result(rec(payload=b"x" * 101), {1}, set(), 100) == "oversized"


def test_tensor_checks():
    ok = [np.zeros((2, 3), np.float32)]
    assert check_tensors(ok, [(2, 3)]) is None
    assert check_tensors(ok, [(3, 2)]) == "shape_mismatch"
    assert check_tensors([np.array([np.nan], np.float32)], [(1,)]) == "non_finite"
    assert check_tensors([np.array([np.inf], np.float32)], [(1,)]) == "non_finite"


def test_clip_norm_scales_only_outliers():
    t = [np.array([3.0, 4.0], np.float32)]
    same, clipped = clip_norm(t, 10.0)
    assert not clipped and same[0] is t[0]
    out, clipped = clip_norm(t, 1.0)
    assert clipped
    np.testing.assert_allclose(np.linalg.norm(out[0]), 1.0, rtol=1e-6)
