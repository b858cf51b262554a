"""bench/vs_flower.py's plain loop: the baseline its quality and time ratios rest on (pure, no Ray)."""
from pathlib import Path

import numpy as np
import pytest

from bench.overhead import overrides, plain_run
from bench.vs_flower import Outcome, Row, plain_metrics, ratio
from fedray.config import load_config, to_plain
from fedray.engine.engine import RoundEngine
from fedray.engine.fleet import InProcessFleet

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf/default.yaml"
SMALL = ["data.synthetic.n_users=40", "data.synthetic.n_items=200", "data.eval_negatives=20", "model.dim=8",
         "train.participants=10", "train.eval_users=15"]


@pytest.mark.parametrize("updates", [["compression.method=none"], []], ids=["float", "ternary"])
def test_the_plain_loop_ends_where_the_round_engine_ends(tmp_path, updates):
    """Same seed and config: the same final weights bit for bit, and the same metrics on the same sampled devices."""
    rounds = 3
    run = plain_run(CONF, rounds, [*SMALL, *updates])
    engine = RoundEngine(to_plain(load_config(CONF, overrides(rounds, [*SMALL, *updates]))), str(tmp_path), InProcessFleet)
    engine.setup()
    for _ in range(rounds):
        engine.run_round()
    final = engine.groups[0].params
    assert list(run.params) == list(final)
    assert all(np.array_equal(run.params[k], final[k]) for k in final)
    assert len(run.times) == rounds
    assert plain_metrics(run) == engine.records[-1].metrics


def test_ratios_pair_each_repeat_with_the_plain_loop_of_the_same_repeat():
    """The median of per-repeat ratios, not a ratio of medians: repeats 2/1, 9/3, 4/4 -> median of 2, 3, 1."""
    def outcome(seconds):
        return Outcome([seconds] * 4, seconds, seconds, {})

    row = Row("fedray", "plain", [outcome(2.0), outcome(9.0), outcome(4.0)])
    base = Row("plain", "plain", [outcome(1.0), outcome(3.0), outcome(4.0)])
    assert ratio(row, base, "median_round") == ratio(row, base, "setup_s") == 2.0
