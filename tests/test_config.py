import re
from pathlib import Path

import pytest

from fedray.cli import main
from fedray.config import ConfigError, config_digest, diff_keys, load_config, result_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_overrides_merge(tmp_path):
    p = write(tmp_path, "train:\n  rounds: 7\n")
    cfg = load_config(p, ["train.local_steps=3", "compression.method=none"])
    assert cfg.train.rounds == 7 and cfg.train.local_steps == 3 and cfg.compression.method == "none"


def test_unknown_key_names_key_file_and_allowed(tmp_path):
    p = write(tmp_path, "train:\n  roundz: 7\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "train.roundz" in msg and str(p) in msg and "rounds" in msg


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "train:\n  rounds: many\n")
    with pytest.raises(ConfigError, match="train.rounds"):
        load_config(p)


def test_out_of_range_and_bad_choice_list_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.rounds=0", "compression.method=zip"])
    msg = str(e.value)
    assert "train.rounds=0: must be >= 1" in msg
    assert "compression.method='zip': allowed values are none, ternary" in msg


def test_malformed_yaml_reports_position(tmp_path):
    p = write(tmp_path, "train:\n  rounds: [1, 2\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: malformed YAML"):
        load_config(p)


def test_tier_shares_must_sum_to_one():
    with pytest.raises(ConfigError, match="shares must sum to 1"):
        load_config(None, ["tiers=[{name: a, share: 0.5}]"])


def test_tiers_file_replaces_tiers():
    cfg = load_config(None, [f"tiers_file={ROOT / 'conf/tiers/three_tier.yaml'}"])
    assert [t.name for t in cfg.tiers] == ["high", "mid", "low"]


def test_digest_ignores_paths_but_not_results():
    a = load_config(None, ["output_dir=/tmp/x"])
    b = load_config(None, ["output_dir=/tmp/y"])
    c = load_config(None, ["train.lr=0.5"])
    assert config_digest(a) == config_digest(b) != config_digest(c)
    assert diff_keys(result_config(a), result_config(c)) == ["task.personalize_lr", "train.lr"]  # the recommender reads it too


def test_cli_exits_2_before_creating_run_dir(tmp_path, capsys):
    p = write(tmp_path, "bogus: 1\n")
    code = main(["run", str(p), f"output_dir={tmp_path / 'runs'}"])
    assert code == 2
    assert "bogus" in "".join(capsys.readouterr())
    assert not (tmp_path / "runs").exists()


def test_cli_missing_data_path_exits_2(tmp_path, capsys):
    code = main(["run", str(ROOT / "conf/default.yaml"), f"data.path={tmp_path / 'nope'}", f"output_dir={tmp_path}/r"])
    assert code == 2
    assert "data.path" in "".join(capsys.readouterr())


def test_cli_too_few_items_for_negatives_exits_2(tmp_path, capsys):
    code = main(["run", str(ROOT / "conf/default.yaml"), "data.synthetic.n_users=40", "data.synthetic.n_items=60",
                 f"output_dir={tmp_path}/r"])
    assert code == 2
    assert "evaluation negatives" in "".join(capsys.readouterr())
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("overrides,expected", [
    (["privacy.dp=central"], "set exactly one of privacy.noise_multiplier"),
    (["privacy.dp=central", "privacy.noise_multiplier=1", "privacy.epsilon=4"], "set exactly one of"),
    (["privacy.dp=central", "privacy.noise_multiplier=1", "privacy.delta=1"], "privacy.delta=1.0: must be > 0 and < 1"),
    (["privacy.dp=central", "privacy.noise_multiplier=1", "privacy.delta=0"], "privacy.delta=0.0: must be > 0"),
    (["privacy.dp=distributed", "privacy.noise_multiplier=1"], "needs privacy.secure_aggregation=true"),
    (["privacy.dp=central", "privacy.epsilon=4", "strategy.name=krum"], "strategy.name='krum' under privacy.dp"),
    (["privacy.dp=central", "privacy.noise_multiplier=1", "privacy.clip=0"], "privacy.clip=0.0: must be > 0"),
    (["privacy.dp=laplace"], "privacy.dp='laplace': allowed values are none, central, distributed"),
    (["privacy.dp=central", "privacy.epsilon=4", "privacy.on_budget=ignore"], "allowed values are stop, warn"),
    (["privacy.noise_multiplier=1"], "privacy.dp=none"),
])
def test_dp_settings_that_cannot_work_are_refused_with_the_reason(overrides, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(None, overrides)


def test_a_dp_config_that_can_work_loads_and_changes_the_config_digest():
    cfg = load_config(None, ["privacy.dp=central", "privacy.epsilon=4", "privacy.target_epsilon=5"])
    assert cfg.privacy.epsilon == 4 and cfg.privacy.on_budget == "stop"
    assert config_digest(cfg) != config_digest(load_config(None, []))  # resuming under other DP settings is refused


def test_secure_aggregation_refuses_what_it_cannot_hide_or_sum():
    base = ["privacy.secure_aggregation=true", "compression.mode=dense"]
    assert load_config(None, base).privacy.secure_aggregation
    for override, why in [("compression.mode=auto", "compression.mode='auto' under privacy.secure_aggregation"),
                          ("compression.mode=sparse", "reveal which rows"),
                          ("compression.method=none", "set compression.method=ternary"),
                          ("strategy.name=krum", "only learns their sum"),
                          ("faults.corrupt=0.1", "cannot be detected"),
                          ("privacy.neighbours=0", "privacy.neighbours=0: must be >= 1"),
                          ("privacy.clip=0", "privacy.clip=0"),
                          ("privacy.threshold=1.2", "must be > 0.5 and <= 1.0")]:
        with pytest.raises(ConfigError, match=re.escape(why)):
            load_config(None, [*base, override])
    assert load_config(None, ["compression.mode=rows"]).compression.mode == "rows"  # fine without secure aggregation
