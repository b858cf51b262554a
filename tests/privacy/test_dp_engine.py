"""Central DP through the in-process round engine (no Ray): the noise on the released mean, the epsilon column,
the budget stop, and the accountant across a resume."""
import math

import numpy as np
import pytest
from scipy import stats

from fedray.config import load_config, to_plain
from fedray.engine.engine import RoundEngine
from fedray.engine.fleet import InProcessFleet
from tests.privacy.test_accounting import reference_epsilon

SMALL = ["data.synthetic.n_users=40", "data.synthetic.n_items=200", "data.eval_negatives=20", "model.dim=8",
         "train.participants=10", "train.eval_every=50", "runtime.devices_per_actor=20", "strategy.server_lr=1",
         "privacy.dp=central", "privacy.clip=0.5"]


def engine(tmp_path, overrides=(), name="run"):
    cfg = load_config(None, [*SMALL, *overrides])
    e = RoundEngine(to_plain(cfg), str(tmp_path / name), InProcessFleet)
    e.setup()
    return e


def test_the_released_mean_carries_noise_of_std_z_clip_over_the_expected_participants(tmp_path):
    """Two runs with one seed train, clip and sum the same updates: their models differ only by the noise, and
    the difference has variance 2 (z * clip / (q * N))^2 (fresh entropy, not the seed, drives the noise)."""
    a, b = (engine(tmp_path, ["privacy.noise_multiplier=2.0"], name) for name in ("a", "b"))
    for e in (a, b):
        record = e.run_round()[0]
        assert record.applied and record.participants >= 1
    assert record.sampling_rate == pytest.approx(10 / 40)
    diff = np.concatenate([(a.groups[0].params[k] - b.groups[0].params[k]).ravel() for k in a.groups[0].params])
    std = 2.0 * 0.5 / (0.25 * 40)
    n = diff.size
    statistic = float(np.sum(diff.astype(np.float64) ** 2)) / (2 * std * std)
    assert stats.chi2.ppf(1e-5, n) < statistic < stats.chi2.ppf(1 - 1e-5, n), (statistic, n)


def test_every_round_records_the_epsilon_the_library_gives_for_its_rounds(tmp_path):
    e = engine(tmp_path, ["privacy.noise_multiplier=1.0"])
    records = [e.run_round()[0] for _ in range(3)]
    eps = [r.epsilon for r in records]
    assert all(b > a > 0 for a, b in zip(eps, eps[1:]))
    for i, r in enumerate(records):
        assert r.noise_multiplier == 1.0 and r.sampling_rate == pytest.approx(0.25)
        assert r.epsilon == pytest.approx(reference_epsilon([(0.25, 1.0, i + 1)], 1e-5), rel=1e-9)
    table = e.metrics_table()
    assert table.column("epsilon").to_pylist() == pytest.approx(eps)
    assert math.isnan(engine(tmp_path, ["privacy.dp=none"], "plain").run_round()[0].epsilon)


def test_a_run_stops_before_the_round_that_would_exceed_the_target(tmp_path):
    two, three = (reference_epsilon([(0.25, 1.0, n)], 1e-5) for n in (2, 3))
    target = (two + three) / 2
    e = engine(tmp_path, ["privacy.noise_multiplier=1.0", f"privacy.target_epsilon={target}"])
    assert e.run_round() and e.run_round()
    assert e.run_round() == [] and e.stopped_on_budget and e.round == 2
    assert [r.epsilon for r in e.records][-1] == pytest.approx(two) and two <= target
    assert any("privacy budget" in line and "stops" in line for line in e.messages())
    warn = engine(tmp_path, ["privacy.noise_multiplier=1.0", f"privacy.target_epsilon={target}",
                             "privacy.on_budget=warn"], "warn")
    records = [warn.run_round()[0] for _ in range(4)]
    assert records[-1].epsilon > target and not warn.stopped_on_budget
    assert sum("privacy.on_budget=warn" in line for line in warn.messages()) == 1


def test_a_calibrated_run_spends_at_most_its_epsilon_over_the_planned_rounds(tmp_path):
    e = engine(tmp_path, ["privacy.epsilon=3", "train.rounds=4"])
    z = e.groups[0].noise_multiplier
    assert reference_epsilon([(0.25, z, 4)], 1e-5) <= 3 < reference_epsilon([(0.25, z * 0.99, 4)], 1e-5)
    records = [e.run_round() for _ in range(5)]
    assert all(records[:4]) and records[4] == []  # the fifth round would exceed the budget
    assert e.records[-1].epsilon <= 3


def test_resume_rebuilds_the_accountant_from_the_rounds_done(tmp_path):
    overrides = ["privacy.noise_multiplier=1.0", "checkpoint.every=2", "train.rounds=4"]
    a = engine(tmp_path, overrides)
    for _ in range(2):
        a.run_round()
    b = RoundEngine(a.plain, str(tmp_path / "run"), InProcessFleet)
    b.setup()
    assert b.restore() == 2
    assert b.groups[0].accountant.epsilon() == pytest.approx(a.records[-1].epsilon)
    assert b.run_round()[0].epsilon == pytest.approx(reference_epsilon([(0.25, 1.0, 3)], 1e-5), rel=1e-9)


def test_the_summary_and_progress_line_show_epsilon_only_for_dp_runs(tmp_path):
    from rich.console import Console

    from fedray.horizontal.run import progress_status
    from fedray.metrics import summarize, summary_table

    e = engine(tmp_path, ["privacy.noise_multiplier=1.0"])
    e.run_round()
    plain = engine(tmp_path, ["privacy.dp=none"], "plain")
    plain.run_round()
    for run, shown in ((e, True), (plain, False)):
        rows = summarize(run.metrics_table().to_pylist())
        console = Console(width=200, record=True)
        console.print(summary_table(rows))
        assert ("epsilon" in console.export_text()) == shown
        assert ("eps " in progress_status(run.records, {})) == shown
    assert summarize(e.metrics_table().to_pylist())[0]["epsilon"] == pytest.approx(e.records[-1].epsilon)


def test_dp_rounds_draw_devices_independently_and_fuse_every_arrival(tmp_path):
    """Poisson sampling (the round's size varies around K = 10) and no first-K cutoff: a cutoff would let one
    device's presence push another's update out, which the accountant's sensitivity does not allow."""
    e = engine(tmp_path, ["privacy.noise_multiplier=1.0"])
    records = [e.run_round()[0] for _ in range(6)]
    assert len({r.selected for r in records}) > 1 and max(r.selected for r in records) > 10
    assert all(r.participants == r.selected and r.stragglers == 0 for r in records)


def test_runs_without_dp_do_not_pay_for_importing_the_accountant():
    import subprocess
    import sys

    code = "import sys, fedray.engine.engine, fedray.engine.devices\nassert 'dp_accounting' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)
