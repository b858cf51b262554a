"""Errors the command line turns into exit codes, in a module that imports nothing heavy: a typo in a config
fails in a second, without loading torch or Ray. Their home modules re-export them."""
from __future__ import annotations


class TaskError(ValueError):
    """A task target that cannot be used; the message names it and the problem."""


class ClusterError(RuntimeError):
    """The cluster cannot host what the run needs; the message names the missing resource."""


class DriverLost(RuntimeError):
    """The driver actor died mid-run; the message says which round and how to resume."""
