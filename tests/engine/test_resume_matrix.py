"""Resume is bit-exact in every setting whose state a restore must bring back (in-process, no Ray).

Each setting runs once uninterrupted (6 rounds, checkpoints at 2, 4 and 6). A run killed in round 5 leaves what
that run left after round 4: its checkpoint directory without round 6 (the checkpoints are written atomically, and
the first five rounds are the same rounds). A fresh engine restores from that and finishes; everything must equal
the uninterrupted run: each group's weights, the strategy's state, the metrics (but wall time) and every device's
state. A variant corrupts the newest checkpoint first. The Ray path has its own SIGKILL test
(tests/horizontal/test_resume.py).
"""
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedray.config import load_config, to_plain
from fedray.engine.engine import RoundEngine
from fedray.engine.fleet import InProcessFleet

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "vertical"
SMALL = ["data.synthetic.n_users=45", "data.synthetic.n_items=150", "data.eval_negatives=20", "model.dim=8",
         "train.participants=8", "train.eval_every=3", "runtime.devices_per_actor=16", "checkpoint.every=2",
         "train.rounds=6", "checkpoint.keep=3"]
SETTINGS = {
    "fedadam": ["strategy.name=fedadam", "strategy.server_lr=0.05"],
    "fedavgm": ["strategy.name=fedavgm", "strategy.server_lr=20"],
    "ternary broadcast": ["compression.broadcast=ternary"],
    "three tiers sharing": [f"tiers_file={ROOT / 'conf/tiers/three_tier.yaml'}", "grouping.method=thresholds",
                            "grouping.share_across=true", "grouping.min_size=3", "train.participants=4"],
    "error feedback": ["compression.error_feedback=true"],
    "secure aggregation": ["privacy.secure_aggregation=true", "compression.mode=dense", "privacy.weight_levels=2",
                           "train.over_select=1.5"],
    "tabular task": [f"--conf={ROOT / 'conf/credit_mlp.yaml'}", "task.devices=12", "train.participants=4",
                     "train.local_steps=2", "runtime.devices_per_actor=6"],
}


def build(overrides: list[str], run_dir: Path) -> RoundEngine:
    conf = next((o.split("=", 1)[1] for o in overrides if o.startswith("--conf=")), None)
    rest = [o for o in overrides if not o.startswith("--conf=")]
    base = SMALL if conf is None else [o for o in SMALL if not o.startswith(("data.", "model.", "train.participants",
                                                                              "runtime.devices_per_actor"))]
    e = RoundEngine(to_plain(load_config(conf, [*base, *rest])), str(run_dir), InProcessFleet)
    e.setup()
    return e


def snapshot(e: RoundEngine) -> dict[str, np.ndarray]:
    """Every group's weights and strategy state, and every device's state."""
    out = {}
    for g in e.groups:
        out.update({f"g{g.gid}/{k}": v for k, v in g.params.items()})
        out.update({f"g{g.gid}/strategy/{k}": v for k, v in g.strategy.state().items()})
        out.update({f"g{g.gid}/clock": np.array(g.clock.now)})
    for h in e.fleet.hosts:
        out.update({f"device/{k}": v for k, v in h.export_state().items()})
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run of each setting, made once for both variants."""
    runs: dict[str, RoundEngine] = {}

    def get(setting: str) -> RoundEngine:
        if setting not in runs:
            runs[setting] = build(SETTINGS[setting], tmp_path_factory.mktemp("whole"))
            for _ in range(6):
                runs[setting].run_round()
        return runs[setting]

    return get


def killed_in_round_5(whole: RoundEngine, run_dir: Path) -> None:
    """What a run killed in round 5 leaves: the uninterrupted run's checkpoints without round 6's, driver and hosts."""
    shutil.copytree(whole.run_dir / "checkpoints", run_dir / "checkpoints")
    newest = sorted((run_dir / "checkpoints").rglob("ckpt-00000006"))
    assert len(newest) == 1 + len(whole.fleet.hosts)
    for path in newest:
        shutil.rmtree(path)


@pytest.mark.parametrize("corrupt", [False, True], ids=["killed", "newest-corrupt"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_resume_ends_bit_identical(setting, corrupt, uninterrupted, tmp_path):
    if setting == "tabular task" and not SHARED.is_dir():
        pytest.skip(f"credit data not found at {SHARED}")
    whole = uninterrupted(setting)
    killed_in_round_5(whole, tmp_path / "cut")
    expected_round = 4
    if corrupt:
        blob = tmp_path / "cut" / "checkpoints" / "ckpt-00000004" / "group-0.parquet"
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(data)
        expected_round = 2
    resumed = RoundEngine(whole.plain, str(tmp_path / "cut"), InProcessFleet)
    resumed.setup()
    assert resumed.restore() == expected_round
    for _ in range(expected_round, 6):
        resumed.run_round()
    a, b = snapshot(whole), snapshot(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    ta, tb = whole.metrics_table().drop(["wall_s"]), resumed.metrics_table().drop(["wall_s"])
    assert ta.column_names == tb.column_names
    for name in ta.column_names:
        np.testing.assert_array_equal(np.array(ta.column(name).to_pylist()), np.array(tb.column(name).to_pylist()),
                                      err_msg=name)
    assert [r.round for r in resumed.records] == sorted(r.round for r in whole.records)
