"""Server strategies by name (`strategy.name`) or by import path (`strategy.target: "pkg.module:Class"`)."""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Mapping

from fedray.strategies.adaptive import FedAdagrad, FedAdam, FedYogi
from fedray.strategies.base import DeviceConfig, RoundPlan, Strategy
from fedray.strategies.fedavg import FedAvg, FedAvgM, FedProx
from fedray.strategies.robust import Krum, Median, TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg, "fedavgm": FedAvgM, "fedprox": FedProx,
    "fedadam": FedAdam, "fedyogi": FedYogi, "fedadagrad": FedAdagrad,
    "median": Median, "trimmed_mean": TrimmedMean, "krum": Krum,
}

__all__ = ["STRATEGIES", "DeviceConfig", "RoundPlan", "Strategy", "StrategyError", "build_strategy",
           "FedAvg", "FedAvgM", "FedProx", "FedAdam", "FedYogi", "FedAdagrad", "Median", "TrimmedMean", "Krum"]


class StrategyError(ValueError):
    """A strategy setting that cannot be honoured: unknown name, bad import path, not a Strategy, bad parameter."""


def build_strategy(name: str | None, target: str | None, params: Mapping[str, Any]) -> Strategy:
    """The strategy named (or imported; neither given: fedavg), built from the entries of params its constructor takes.

    params is the strategy section's numeric settings; a None value means "the strategy's default".
    """
    if name is not None and target is not None:
        raise StrategyError(f"strategy.name={name!r} and strategy.target={target!r}: give one, not both")
    if target is not None:
        where, cls = f"strategy.target={target!r}", import_strategy(target)
    else:
        name = "fedavg" if name is None else name
        if name not in STRATEGIES:
            raise StrategyError(f"strategy.name={name!r}: allowed values are {', '.join(STRATEGIES)}")
        where, cls = f"strategy.name={name!r}", STRATEGIES[name]
    kwargs = constructor_arguments(cls, params)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise StrategyError(f"{where} with {kwargs}: {e}") from e


def constructor_arguments(cls: type[Strategy], params: Mapping[str, Any]) -> dict[str, Any]:
    """The set (not None) settings in params that cls's constructor names; all of them if it takes **kwargs.

    `name` and `target` pick the class, so they are never settings (the whole strategy section may be passed).
    """
    signature = inspect.signature(cls.__init__)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    return {k: v for k, v in params.items()
            if v is not None and k not in ("name", "target") and (takes_any or k in signature.parameters)}


def import_strategy(target: str) -> type[Strategy]:
    """The Strategy subclass at "pkg.module:Class", importable from the working directory too (as `python -m` is)."""
    where = f"strategy.target={target!r}"
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise StrategyError(f"{where}: expected 'package.module:Class'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise StrategyError(f"{where}: no module named {module_name!r}") from e
        raise StrategyError(f"{where}: importing module {module_name!r} failed: {e}") from e
    except Exception as e:  # the user's module raised while importing: name it, with the cause attached
        raise StrategyError(f"{where}: importing module {module_name!r} raised {type(e).__name__}: {e}") from e
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise StrategyError(f"{where}: module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not (inspect.isclass(found) and issubclass(found, Strategy)):
        raise StrategyError(f"{where}: {attribute!r} is not a subclass of fedray.strategies.Strategy "
                            f"(got {type(found).__name__} {found!r})")
    return found
