"""Placement groups for device hosts: one per tier, reserved whole, spread over or packed onto the tier's nodes."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from fedray.runtime import TIER_REQUEST, ClusterError, tier_resource

STRATEGIES = {"spread": "SPREAD", "pack": "PACK"}


def group_name(run_dir: str | Path, tier: str) -> str:
    """A run's placement-group name for one tier: derived from the run directory so the job can always remove it."""
    digest = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    return f"fedray-{digest}-{tier}"


def reserve(run_dir: str | Path, tier: str, hosts: int, cpus: float, policy: str, timeout_s: float) -> PlacementGroup:
    """Reserve one bundle per device host of a tier (its CPUs and tier resource) in a single all-or-nothing step.

    SPREAD puts the hosts on as many of the tier's nodes as it can (a node lost takes fewer devices, memory
    spreads); PACK puts them on as few as it can (less cross-node traffic). Fails naming the tier if the
    cluster cannot hold the whole tier within timeout_s, instead of starting part of the federation.
    """
    bundle = {"CPU": cpus, tier_resource(tier): TIER_REQUEST}
    pg = placement_group([dict(bundle) for _ in range(hosts)], strategy=STRATEGIES[policy],
                         name=group_name(run_dir, tier))
    if not pg.wait(timeout_s):
        remove_placement_group(pg)
        raise ClusterError(
            f"could not reserve placement group for tier {tier!r} ({hosts} device hosts of {bundle}) within "
            f"{timeout_s:g} s (runtime.placement={policy}); free or add nodes declaring {tier_resource(tier)}, "
            "or set runtime.placement=default")
    return pg


def host_strategy(pg: PlacementGroup, index: int) -> PlacementGroupSchedulingStrategy:
    """Scheduling strategy that puts a device host into its own bundle of the tier's group."""
    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index)


def release(run_dir: str | Path, tiers: Iterable[str]) -> None:
    """Remove a run's placement groups (a no-op for tiers that have none), even if its driver actor died."""
    for tier in tiers:
        try:
            pg = ray.util.get_placement_group(group_name(run_dir, tier))
        except ValueError:
            continue
        remove_placement_group(pg)
