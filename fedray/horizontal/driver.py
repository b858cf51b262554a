"""The Ray driver: the round engine with the Ray fleet, made a remote actor at launch (as Ray Train does)."""
from __future__ import annotations

from typing import Any

import ray

from fedray.engine.engine import RoundEngine
from fedray.horizontal.fleet import RayFleet


class Driver(RoundEngine):
    """The round engine reaching its devices through device-host actors."""

    def __init__(self, cfg: dict, run_dir: str):
        super().__init__(cfg, run_dir, RayFleet)


def start_driver(cfg: dict, run_dir: str, num_cpus: float) -> Any:
    """The Driver actor for a run (an ActorHandle; its methods are the engine's)."""
    return ray.remote(Driver).options(num_cpus=num_cpus).remote(cfg, run_dir)
