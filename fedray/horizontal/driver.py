"""The Ray driver: the round engine with the Ray fleet, made a remote actor at launch (as Ray Train does)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fedray.errors import DriverLost  # noqa: F401  (re-exported: its home module)
from fedray.engine.engine import RoundEngine
from fedray.horizontal.fleet import RayFleet
from fedray.tasks.loader import TaskFacts

HEAD_NODE_RESOURCE = "node:__internal_head__"


class Driver(RoundEngine):
    """The round engine reaching its devices through device-host actors."""

    def __init__(self, cfg: dict, run_dir: str, loaded: Any = None, hosts: list[Any] | None = None,
                 facts: TaskFacts | None = None):
        if facts is not None:  # `loaded` is [ObjectRef]: left in the object store (unresolved) until the task is needed
            if not hosts:
                raise ValueError("a driver handed only the task's facts needs device hosts already built from its data")
            (ref,) = loaded
            loaded = lambda: ray.get(ref)  # noqa: E731
        super().__init__(cfg, run_dir, lambda c, task, data, r: RayFleet(c, task, data, r, hosts), loaded, facts)


def driver_name(run_dir: str | Path) -> str:
    """The driver actor's name for a run, so operators (and tests) can find it with ray.get_actor."""
    return f"fedray-driver-{hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]}"


def head_node_id() -> str | None:
    """The id of the cluster's live head node (Ray gives it the `node:__internal_head__` resource), if any."""
    for node in ray.nodes():
        if node.get("Alive") and HEAD_NODE_RESOURCE in node.get("Resources", {}):
            return node["NodeID"]
    return None


def start_driver(cfg: dict, run_dir: str, num_cpus: float, loaded: Any = None, hosts: list[Any] | None = None,
                 facts: TaskFacts | None = None) -> Any:
    """The Driver actor for a run (an ActorHandle; its methods are the engine's), on the head node where it fits:
    only the head's loss ends a run anyway, so a device node that leaves mid-run costs only its devices. (Not
    "this process's node": a job's process may sit on a device node.) `loaded` (an ObjectRef of the loaded task
    and its data) and `hosts` (device hosts already started for the run) spare it both; with the task's `facts`
    as well, the driver does not even unpickle the task (nor import torch) unless server-side evaluation needs
    it: its process starts in a fraction of the time."""
    node = head_node_id() or ray.get_runtime_context().get_node_id()
    if facts is not None:
        loaded = [loaded]  # an ObjectRef inside a list is passed as is, not resolved before the actor starts
    return ray.remote(Driver).options(num_cpus=num_cpus, name=driver_name(run_dir),
                                      scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True),
                                      ).remote(cfg, run_dir, loaded, hosts, facts)
