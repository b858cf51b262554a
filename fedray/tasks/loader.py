"""Build the user's task from config (`task.target: "pkg.module:Class"` plus its keyword arguments) and check it.

Every problem becomes a TaskError naming the target and what is wrong, raised before Ray starts.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from fedray.errors import TaskError  # noqa: F401  (re-exported: its home module)
from fedray.imports import TargetError, import_target
from fedray.tasks.base import Task

# name -> (positional parameters after self) the engine calls it with
METHODS = {"load": 1, "model": 1, "train": 3, "evaluate": 3}


def build_task(section: Mapping[str, Any]) -> Task:
    """Instantiate the task a config's `task` section names, with the section's other keys as keyword arguments."""
    kwargs = dict(section)
    target = kwargs.pop("target", None)
    if not target:
        raise TaskError("task.target is not set: name your task class as 'package.module:Class'")
    try:
        cls = import_target(target, "task.target")
    except TargetError as e:
        raise TaskError(str(e)) from e.__cause__
    if not (inspect.isclass(cls) and issubclass(cls, Task)):
        raise TaskError(f"task.target={target!r}: {cls!r} is not a subclass of fedray.tasks.Task")
    for name, arity in METHODS.items():
        method = getattr(cls, name)
        if method is getattr(Task, name):
            raise TaskError(f"task.target={target!r}: {cls.__name__} does not implement {name}()")
        params = [p for p in inspect.signature(method).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]
        if len(params) != arity:
            raise TaskError(f"task.target={target!r}: {cls.__name__}.{name} takes {len(params)} arguments after self, "
                            f"fedray calls it with {arity}")
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise TaskError(f"task.target={target!r}: the task section's keys do not fit {cls.__name__}(): {e}") from None
    try:
        return cls(**kwargs)
    except Exception as e:
        raise TaskError(f"task.target={target!r}: {cls.__name__}(...) raised {type(e).__name__}: {e}") from None


def check_model(task: Task, width: float = 1.0) -> list[str]:
    """Build the task's model and check its state_dict; returns the names of the parameters that are shared."""
    import torch

    name = type(task).__name__
    model = task.model(width)
    if not isinstance(model, torch.nn.Module):
        raise TaskError(f"{name}.model({width}) returned {type(model).__name__}, not a torch.nn.Module")
    state = model.state_dict()
    bad = [f"{k} ({v.dtype})" for k, v in state.items() if not torch.is_floating_point(v)]
    if bad:
        raise TaskError(f"{name}.model(): state_dict holds tensors that are not float: {', '.join(bad)}; "
                        "fedray federates float tensors only (drop the buffer or register it with persistent=False)")
    private_missing = [k for k in task.private if k not in state]
    if private_missing:
        raise TaskError(f"{name}.private names {private_missing}, which are not in the model's state_dict "
                        f"(keys: {', '.join(state)})")
    shared = [k for k in state if k not in task.private]
    if not shared:
        raise TaskError(f"{name}.model(): every parameter is private, nothing to federate")
    return shared


@dataclass(frozen=True)
class TaskFacts:
    """What the round engine needs of a loaded, checked task, without the task itself (nor torch): the Ray
    driver gets these from `fedray run`'s check and leaves building models to the device hosts."""

    devices: int  # len(data): one id per device
    shared: tuple[str, ...]  # the model's parameters that are federated (not private), in state_dict order
    server_lr: float
    server_eval: bool  # the task overrides evaluate_server: scoring the global model needs the task and its data


def task_facts(task: Task, data: Sequence[Any]) -> TaskFacts:
    """The facts of a loaded task; its model is checked on the way (check_model)."""
    return TaskFacts(len(data), tuple(check_model(task)), task.server_lr,
                     type(task).evaluate_server is not Task.evaluate_server)
