"""Resolve a user's "package.module:Name" import path (a task, a strategy), naming what is wrong when it fails."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any


class TargetError(ValueError):
    """An import path that cannot be resolved; the message names the config key, the path and the problem."""


def import_target(target: str, key: str) -> Any:
    """The object at "package.module:Name" (Name may be dotted); the working directory is importable, so a job's
    own module works (as with `python -m`). key is the config key that named it, for the message."""
    where = f"{key}={target!r}"
    module_name, colon, attribute = str(target).partition(":")
    if not colon or not module_name or not attribute:
        raise TargetError(f"{where}: expected 'package.module:Name'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise TargetError(f"{where}: no module named {module_name!r}") from e
        raise TargetError(f"{where}: importing module {module_name!r} failed: {e}") from e
    except Exception as e:  # the user's module raised while importing: name it, with the cause attached
        raise TargetError(f"{where}: importing module {module_name!r} raised {type(e).__name__}: {e}") from e
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise TargetError(f"{where}: module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    return found
