"""Connect to a Ray cluster, or start an embedded local one that declares every tier's resource."""
from __future__ import annotations

import os
from typing import Iterable

import ray

TIER_UNITS = 10_000  # units of a tier resource a node declares; each device host asks for one
TIER_REQUEST = 1.0


def tier_resource(name: str) -> str:
    """The Ray custom resource a tier's device actors ask for."""
    return f"fedray_tier_{name}"


class ClusterError(RuntimeError):
    """The cluster cannot host what the run needs; the message names the missing resource."""


def start(address: str | None, tier_names: Iterable[str], num_cpus: int | None = None) -> bool:
    """Connect to `address`, or start a local Ray declaring `fedray_tier_<name>` for each tier; True if started here."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        return False
    resources = {tier_resource(n): float(TIER_UNITS) for n in tier_names}
    ray.init(num_cpus=num_cpus, resources=resources, include_dashboard=False, logging_level="WARNING",
             configure_logging=True)
    return True


def check_tiers(tier_names: Iterable[str]) -> None:
    """Fail fast, naming the resource, when no node of the cluster declares a tier's resource."""
    have = ray.cluster_resources()
    missing = [tier_resource(n) for n in tier_names if have.get(tier_resource(n), 0) < TIER_REQUEST]
    if missing:
        raise ClusterError(
            f"no node in the Ray cluster declares {', '.join(missing)}; start a node for it with "
            f"`ray start --address=HEAD:6379 --resources='{{\"{missing[0]}\": {TIER_UNITS}}}'`")
