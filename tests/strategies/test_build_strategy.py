import sys
import textwrap

import numpy as np
import pytest

from fedray.strategies import STRATEGIES, FedAvg, FedAvgM, Strategy, StrategyError, TrimmedMean, build_strategy

SECTION = dict(server_lr=2.0, momentum=0.5, beta1=0.8, beta2=0.95, tau=0.01, proximal_mu=0.1, trim_fraction=0.1,
               byzantine=2, keep=None)
READS = {
    "fedavg": {"server_lr"}, "fedavgm": {"server_lr", "momentum"}, "fedprox": {"server_lr", "proximal_mu"},
    "fedadam": {"server_lr", "beta1", "beta2", "tau"}, "fedyogi": {"server_lr", "beta1", "beta2", "tau"},
    "fedadagrad": {"server_lr", "beta1", "tau"}, "median": {"server_lr"}, "trimmed_mean": {"server_lr", "trim_fraction"},
    "krum": {"server_lr", "byzantine", "keep"},
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_name_builds_its_class_from_the_settings_it_reads(name):
    strategy = build_strategy(name, None, SECTION)
    assert type(strategy) is STRATEGIES[name]
    for setting in READS[name]:
        assert getattr(strategy, setting) == SECTION[setting], setting
    for setting in set(SECTION) - READS[name]:
        assert not hasattr(strategy, setting), setting


def test_no_name_is_fedavg_and_unset_settings_keep_the_defaults():
    assert type(build_strategy(None, None, {})) is FedAvg
    strategy = build_strategy("fedavgm", None, dict(server_lr=None, momentum=None))
    assert (strategy.server_lr, strategy.momentum) == (FedAvgM().server_lr, FedAvgM().momentum)
    assert build_strategy("krum", None, SECTION).keep is None


@pytest.mark.parametrize("name, target, settings, message", [
    ("fedsgd", None, {}, "strategy.name='fedsgd': allowed values are fedavg, fedavgm"),
    ("krum", "pkg.mod:Cls", {}, "give one, not both"),
    ("krum", None, dict(byzantine=-1), r"strategy.name='krum' .*byzantine must be a whole number >= 0, got -1"),
    ("fedavgm", None, dict(momentum=1.5), r"strategy.name='fedavgm' .*momentum must be in \[0, 1\), got 1.5"),
    ("trimmed_mean", None, dict(trim_fraction=0.5), "trim_fraction must be in"),
    ("fedadam", None, dict(tau="big"), "strategy.name='fedadam'"),
    (None, None, dict(server_lr=0.0), "server_lr must be finite and > 0"),
])
def test_bad_names_and_values_name_what_is_wrong(name, target, settings, message):
    with pytest.raises(StrategyError, match=message):
        build_strategy(name, target, settings)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A working directory for a user's modules; the import path and module cache are restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(sys.modules)
    yield tmp_path
    for module in set(sys.modules) - before:
        del sys.modules[module]


USER_MODULE = textwrap.dedent("""
    import numpy as np
    from fedray.strategies import Strategy, TrimmedMean

    class Scaled(Strategy):
        def __init__(self, server_lr=1.0, trim_fraction=0.0):
            super().__init__(server_lr)
            self.trim_fraction = trim_fraction

        def aggregate(self, round_, params, updates, weights):
            return {k: p + self.server_lr * updates[0][k] for k, p in params.items()}

    class Anything(Strategy):
        def __init__(self, **settings):
            super().__init__()
            self.settings = settings

    class Nested:
        Inner = Scaled

    class NotAStrategy:
        pass

    def factory():
        return Scaled()

    class Picky(Strategy):
        def __init__(self, server_lr, window):
            super().__init__(server_lr)
""")


def test_a_user_strategy_from_the_working_directory(user_dir):
    (user_dir / "my_strategies.py").write_text(USER_MODULE)
    strategy = build_strategy(None, "my_strategies:Scaled", SECTION)
    assert type(strategy).__name__ == "Scaled" and isinstance(strategy, Strategy)
    assert (strategy.server_lr, strategy.trim_fraction) == (2.0, 0.1)
    params = {"w": np.ones(2, np.float32)}
    out = strategy.aggregate(0, params, [{"w": np.full(2, 0.5, np.float32)}], [1])
    np.testing.assert_array_equal(out["w"], [2.0, 2.0])
    section = {"name": None, "target": "my_strategies:Anything", **SECTION}  # the whole config section
    assert build_strategy(None, section["target"], section).settings == {
        k: v for k, v in SECTION.items() if v is not None}
    assert type(build_strategy(None, "my_strategies:Nested.Inner", {})).__name__ == "Scaled"


def test_a_user_strategy_in_a_package_subclassing_a_builtin(user_dir):
    (user_dir / "bank").mkdir()
    (user_dir / "bank" / "__init__.py").write_text("")
    (user_dir / "bank" / "rules.py").write_text(
        "from fedray.strategies import TrimmedMean\nclass Wider(TrimmedMean):\n    pass\n")
    strategy = build_strategy(None, "bank.rules:Wider", SECTION)
    assert isinstance(strategy, TrimmedMean) and strategy.trim_fraction == 0.1


@pytest.mark.parametrize("target, message", [
    ("my_strategies.Scaled", "expected 'package.module:Name'"),
    ("my_strategies:", "expected 'package.module:Name'"),
    ("missing_pkg.mod:Cls", "strategy.target='missing_pkg.mod:Cls': no module named 'missing_pkg.mod'"),
    ("my_strategies:Absent", "strategy.target='my_strategies:Absent': module 'my_strategies' has no attribute 'Absent'"),
    ("my_strategies:NotAStrategy", "'NotAStrategy' is not a subclass of fedray.strategies.Strategy"),
    ("my_strategies:factory", "'factory' is not a subclass of fedray.strategies.Strategy .got function"),
    ("my_strategies:Picky", r"strategy.target='my_strategies:Picky' with .*missing 1 required .*'window'"),
    ("broken:Cls", "importing module 'broken' raised ZeroDivisionError"),
    ("needs_dep:Cls", "importing module 'needs_dep' failed: No module named 'a_dependency_nobody_has'"),
])
def test_bad_targets_name_what_is_wrong(user_dir, target, message):
    (user_dir / "my_strategies.py").write_text(USER_MODULE)
    (user_dir / "broken.py").write_text("1 / 0\n")
    (user_dir / "needs_dep.py").write_text("import a_dependency_nobody_has\n")
    with pytest.raises(StrategyError, match=message):
        build_strategy(None, target, SECTION)


def test_strategy_error_is_a_value_error():
    with pytest.raises(ValueError, match="strategy.name='fedsgd'"):
        build_strategy("fedsgd", None, {})
