import numpy as np

from fedray.core.validate import check_result, check_tensors, clip_norm


def check(device=1, payload=b"x" * 10, samples=5, selected=(1, 2), seen=()):
    return check_result(device, samples, payload, set(selected), set(seen), 100)


def test_accepts_a_well_formed_result():
    assert check() is None


def test_each_defect_has_its_reason():
    assert check(device="1") == "unexpected_device"
    assert check(device=7) == "unexpected_device"
    assert check(seen=(1,)) == "duplicate"
    assert check(samples=0) == "bad_samples"
    assert check(samples=2.5) == "bad_samples"
    assert check(payload=np.zeros(3)) == "payload_type"
    assert check(payload=b"x" * 101) == "oversized"


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
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)  # the direction is kept, only the norm changes
