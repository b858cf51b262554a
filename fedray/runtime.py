"""Connect to a Ray cluster, or start an embedded local one that declares every tier's resource."""
from __future__ import annotations

import os
from typing import Iterable, Mapping

import ray

from fedray.errors import ClusterError  # noqa: F401  (re-exported: its home module)

TIER_UNITS = 10_000  # units of a tier resource a node declares; each device host asks for one
TIER_REQUEST = 1.0


def tier_resource(name: str) -> str:
    """The Ray custom resource a tier's device actors ask for."""
    return f"fedray_tier_{name}"


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


def check_tiers(tier_names: Iterable[str], host_cpus: Mapping[str, float] | None = None,
                driver_cpus: float = 0.0) -> None:
    """Fail fast, naming the resource, when the cluster cannot host a tier's device hosts.

    Without `host_cpus` it checks that some live node declares each tier's resource. With `host_cpus`
    (tier name -> CPUs its device hosts ask for in all) it also checks that the nodes declaring a tier
    have that many CPUs, and that the whole cluster has them plus `driver_cpus`: otherwise Ray would
    leave the surplus actors pending forever and the run would hang instead of failing. The check is on
    declared capacity, not on what other jobs use now, so it never refuses a run that could ever start.
    """
    names = list(tier_names)
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
    missing = [tier_resource(n) for n in names if not any(r.get(tier_resource(n), 0) >= TIER_REQUEST for r in nodes)]
    if missing:
        raise ClusterError(
            f"no node in the Ray cluster declares {', '.join(missing)}; start a node for it with "
            f"`ray start --address=HEAD:6379 --resources='{{\"{missing[0]}\": {TIER_UNITS}}}'`")
    if not host_cpus:
        return
    hint = "raise runtime.devices_per_actor or lower runtime.actor_cpus"
    for name, need in host_cpus.items():
        have = sum(r.get("CPU", 0.0) for r in nodes if r.get(tier_resource(name), 0) >= TIER_REQUEST)
        if need > have + 1e-9:
            raise ClusterError(
                f"the device hosts of tier {name!r} need {need:g} CPUs but the nodes declaring "
                f"{tier_resource(name)} have {have:g}; add CPUs to those nodes or {hint}")
    need = sum(host_cpus.values()) + driver_cpus
    have = sum(r.get("CPU", 0.0) for r in nodes)
    if need > have + 1e-9:
        raise ClusterError(
            f"the run needs {need:g} CPUs ({sum(host_cpus.values()):g} for device hosts, {driver_cpus:g} for the "
            f"driver) but the Ray cluster has {have:g}; {hint} (or declare more with runtime.num_cpus)")
