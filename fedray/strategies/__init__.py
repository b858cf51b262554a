"""Server strategies by name (`strategy.name`) or by import path (`strategy.target: "pkg.module:Class"`)."""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from fedray.imports import TargetError, import_target
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
    try:
        found = import_target(target, "strategy.target")
    except TargetError as e:
        raise StrategyError(str(e)) from e.__cause__
    if not (inspect.isclass(found) and issubclass(found, Strategy)):
        raise StrategyError(f"strategy.target={target!r}: {target.partition(':')[2]!r} is not a subclass of "
                            f"fedray.strategies.Strategy (got {type(found).__name__} {found!r})")
    return found
