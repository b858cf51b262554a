"""Every built-in task works with tiers: narrower models for slower groups, HeteroFL sharing of the nested slices."""
from pathlib import Path

import numpy as np
import pytest

from fedray.config import load_config, to_plain
from fedray.engine.engine import RoundEngine
from fedray.engine.fleet import InProcessFleet

ROOT = Path(__file__).resolve().parents[2]
TIERS = [f"tiers_file={ROOT / 'conf/tiers/three_tier.yaml'}", "grouping.method=thresholds", "grouping.min_size=2",
         "grouping.share_across=true", "train.rounds=2", "train.eval_every=2", "checkpoint.every=0"]
TASKS = {
    "digits": ("conf/digits_cnn.yaml", ["task.devices=20", "train.participants=3", "train.local_steps=2"]),
    "credit": ("conf/credit_mlp.yaml", ["task.devices=20", "train.participants=3", "train.local_steps=2"]),
}


@pytest.mark.parametrize("name", list(TASKS))
def test_tier_groups_get_nested_narrower_models_and_share_the_overlap(name, tmp_path):
    conf, overrides = TASKS[name]
    if name == "digits":
        pytest.importorskip("sklearn")
    if name == "credit" and not (ROOT.parent / "shared" / "data" / "vertical").is_dir():
        pytest.skip("credit data not found")
    e = RoundEngine(to_plain(load_config(ROOT / conf, [*overrides, *TIERS])), str(tmp_path / "run"), InProcessFleet)
    e.setup()
    for _ in range(2):
        records = e.run_round()
    groups = sorted(e.groups, key=lambda g: -g.width)
    assert [g.width for g in groups] == [1.0, 0.5, 0.25]
    wide, narrow = groups[0].params, groups[-1].params
    sizes = [sum(v.size for v in g.params.values()) for g in groups]
    assert sizes[0] > sizes[1] > sizes[2]
    for key, small in narrow.items():  # after sharing, the narrow model is the wide one's leading slice
        np.testing.assert_array_equal(wide[key][tuple(slice(0, s) for s in small.shape)], small)
    assert all(r.applied and r.metrics for r in records)
