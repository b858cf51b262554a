"""DP under secure aggregation, in process: the noise on the unmasked sum (central: the driver's Gaussian;
distributed: the devices' integer shares, added before masking), and the trit cap that bounds what is summed."""
import math

import numpy as np
import pytest
from scipy import stats

from fedray.config import load_config, to_plain
from fedray.engine.engine import RoundEngine
from fedray.engine.fleet import InProcessFleet
from fedray.privacy import dp
from fedray.privacy.rounds import SecureRound, secure_input

SECURE_DP = ["data.synthetic.n_users=40", "data.synthetic.n_items=200", "data.eval_negatives=20", "model.dim=8",
             "train.participants=10", "train.eval_every=100", "runtime.devices_per_actor=20", "strategy.server_lr=1",
             "privacy.secure_aggregation=true", "compression.mode=dense", "privacy.clip=0.5",
             "privacy.noise_multiplier=2.0", "privacy.threshold=0.6"]


def engine(tmp_path, overrides, name):
    e = RoundEngine(to_plain(load_config(None, [*SECURE_DP, *overrides])), str(tmp_path / name), InProcessFleet)
    e.setup()
    return e


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_the_unmasked_mean_carries_the_configured_noise(tmp_path, mode):
    """Two runs with one seed unmask the same trits (masks cancel exactly): their models differ only by noise,
    of variance 2 (z clip)^2 / (q N)^2 per coordinate; distributed noise is drawn for the fewest survivors, so
    with all n survivors it carries n / ceil(threshold n) times that."""
    a, b = (engine(tmp_path, [f"privacy.dp={mode}"], name) for name in ("a", "b"))
    records = [e.run_round()[0] for e in (a, b)]
    assert all(r.applied for r in records) and records[0].participants == records[0].selected
    n = records[0].selected
    inflation = n / dp.noise_shares(n, 0.6) if mode == "distributed" else 1.0
    std = 2.0 * 0.5 / (0.25 * 40)
    diff = np.concatenate([(a.groups[0].params[k] - b.groups[0].params[k]).ravel() for k in a.groups[0].params])
    statistic = float(np.sum(diff.astype(np.float64) ** 2)) / (2 * std * std * inflation)
    assert stats.chi2.ppf(1e-5, diff.size) < statistic < stats.chi2.ppf(1 - 1e-5, diff.size), (statistic, diff.size)
    assert records[0].epsilon > 0 and records[0].noise_multiplier == 2.0


def test_a_device_contribution_under_dp_has_norm_at_most_the_clip_bound():
    rng = np.random.default_rng(0)
    update = [rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)]
    scales = (0.2, 0.5)
    plain = SecureRound(0.5, scales, {0: 1})
    capped = SecureRound(0.5, scales, {0: 1}, dp_bound=0.5)
    for seed in range(20):
        loose, _ = secure_input(update, None, False, plain, 1, np.random.default_rng(seed))
        values, _ = secure_input(update, None, False, capped, 1, np.random.default_rng(seed))
        parts = np.split(values, [400])
        assert dp.trit_norm(parts, scales) <= 0.5 + 1e-9
        assert np.all((values == loose) | (values == 0))
    assert dp.trit_norm(np.split(loose, [400]), scales) > 0.5  # without the cap the bound would not hold


def test_dp_under_secure_aggregation_needs_unit_weights():
    from fedray.config import ConfigError

    with pytest.raises(ConfigError, match="privacy.weight_levels=3 under privacy.dp"):
        load_config(None, [*SECURE_DP, "privacy.dp=distributed", "privacy.weight_levels=3"])
