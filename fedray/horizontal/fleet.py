"""The Ray fleet: device-host actors on their tiers' nodes, reached by the round engine through the Fleet interface.

One `ray.put` of a group's weights per round; one streaming training call per host; results through the
object store; a deadline on every wait; crashed hosts restarted by Ray and awaited before the next round.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np
import ray

from fedray import placement
from fedray.engine.devices import DeviceEvaluation, HostReport
from fedray.engine.fleet import Arrivals, Exchange, Fleet, HostPlan, TrainOrder
from fedray.horizontal.host import DeviceHost
from fedray.runtime import TIER_REQUEST, check_tiers, tier_resource
from fedray.tasks.base import Task


def gather(calls: list[tuple[int, list[int], Any]], timeout_s: float) -> Arrivals:
    """Drain the hosts' result streams until they end or time out.

    A host whose stream breaks loses the devices it had not answered for (a dead host is reported, to be
    restarted); streams still running at the deadline are cancelled and their devices counted as unanswered.
    """
    deadline = time.monotonic() + timeout_s
    left = {gen: (host, len(devices)) for host, devices, gen in calls}
    out = Arrivals()
    while left:
        ready, _ = ray.wait(list(left), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        gen = ready[0]
        host, n = left.pop(gen)
        try:
            out.results.append(ray.get(next(gen)))
        except StopIteration:
            out.lost += n  # a stream that ended before its devices did (only a misbehaving host does that)
            continue
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.TaskCancelledError) as e:
            out.lost += n
            if isinstance(e, ray.exceptions.RayActorError):
                out.crashed.add(host)
            continue
        left[gen] = (host, n - 1)
    for gen in left:
        ray.cancel(gen)
    out.unanswered = sum(n for _, n in left.values())
    return out


def start_hosts(cfg: Mapping[str, Any], plans: Sequence[HostPlan], run_dir: str, shared_ref: Any) -> list[Any]:
    """Create the device-host actors of a run's plans, each asking for its tier's resource (in a placement group
    per tier when runtime.placement says so); `shared_ref` is the task's shared data in the object store (or None)."""
    rt = cfg["runtime"]
    by_tier: dict[str, list[HostPlan]] = {}
    for p in plans:
        by_tier.setdefault(p.tier["name"], []).append(p)
    # Fail now, naming the resource, rather than leave device hosts pending forever on a cluster that cannot hold them.
    check_tiers([t["name"] for t in cfg["tiers"]],
                {name: len(ps) * rt["actor_cpus"] for name, ps in by_tier.items()}, rt["driver_cpus"])
    handles: dict[int, Any] = {}
    try:
        for name, tier_plans in by_tier.items():
            pg = (placement.reserve(run_dir, name, len(tier_plans), rt["actor_cpus"], rt["placement"],
                                    rt["placement_timeout_s"]) if rt["placement"] != "default" else None)
            for i, p in enumerate(tier_plans):
                handles[p.index] = DeviceHost.options(
                    num_cpus=rt["actor_cpus"], resources={tier_resource(name): TIER_REQUEST},
                    max_restarts=rt["max_restarts"], max_task_retries=0,
                    scheduling_strategy=placement.host_strategy(pg, i) if pg else None,
                ).remote(dict(cfg), p.devices, dict(p.tier), p.index, run_dir, shared_ref)
    except BaseException:  # a tier that cannot be placed: the hosts of the tiers before it go too
        for handle in handles.values():
            ray.kill(handle)
        raise
    return [handles[i] for i in range(len(plans))]


def put_shared(task: Task, data: Sequence[Any]) -> Any:
    """The task's shared data put in the object store once (None when the task shares nothing)."""
    shared = task.share(data)
    return ray.put(shared) if shared is not None else None


def cluster_slots() -> int:
    """Host slots of the cluster: one per CPU it declares."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class RayFleet(Fleet):
    """DeviceHost actors, each asking for its tier's resource, optionally in a placement group per tier.

    `hosts` are actors already started for exactly the plans start() will get (by `fedray run`, beside the
    driver, so their processes start while the driver's does); without them start() creates the hosts itself.
    """

    def __init__(self, cfg: Mapping[str, Any], task: Task, data: Sequence[Any], run_dir: str,
                 hosts: Sequence[Any] | None = None):
        self.cfg, self.run_dir, self.task, self.data = cfg, run_dir, task, data
        self.hosts: list[Any] = list(hosts or [])
        self.departed: set[int] = set()

    def _live(self) -> list[Any]:
        """The hosts still in the federation (a departed host's calls would wait forever for its node)."""
        return [h for i, h in enumerate(self.hosts) if i not in self.departed]

    def host_slots(self) -> int:
        return cluster_slots()

    def start(self, plans: Sequence[HostPlan]) -> list[HostReport]:
        started = time.perf_counter()
        rt = self.cfg["runtime"]
        if not self.hosts:  # the shared data stays referenced for the run: a restarted host is built from it again
            self.shared_ref = put_shared(self.task, self.data)
            self.hosts = start_hosts(self.cfg, plans, self.run_dir, self.shared_ref)
        ray.get([h.ping.remote() for h in self.hosts], timeout=rt["round_timeout_s"])  # every host built its devices
        hosts_up = time.perf_counter()
        reports = ray.get([h.report.remote() for h in self.hosts], timeout=rt["round_timeout_s"])
        if len(reports) != len(plans) or any(not np.array_equal(r.devices, p.devices) for r, p in zip(reports, plans)):
            raise RuntimeError("the device hosts started for this run hold other devices than the driver planned")
        self.start_phases = {"host start": hosts_up - started, "reports": time.perf_counter() - hosts_up}
        return reports

    def initial_params(self, shared: Sequence[str], gid: int, width: float) -> Mapping[str, np.ndarray]:
        return ray.get(self._live()[0].initial_params.remote(list(shared), gid, width),
                       timeout=self.cfg["runtime"]["round_timeout_s"])

    def launch(self, order: TrainOrder) -> list[tuple[int, list[int], Any]]:
        ref = ray.put(dict(order.params))  # one broadcast object per group; hosts receive the ObjectRef
        return [(host, devices, self.hosts[host].train.options(num_returns="streaming").remote(
            devices, ref, order.width, order.round_, order.config, order.secure))
            for host, devices in sorted(order.by_host.items())]

    def collect(self, handle: list[tuple[int, list[int], Any]], timeout_s: float) -> Arrivals:
        return gather(handle, timeout_s)

    def exchange(self, phase: str, by_host: Mapping[int, Mapping[int, Any]], timeout_s: float) -> Exchange:
        """One call per host through the object store; a host that dies or misses the deadline drops its devices."""
        calls = {self.hosts[h].secure_step.remote(phase, dict(messages)): (h, len(messages))
                 for h, messages in sorted(by_host.items())}
        deadline = time.monotonic() + timeout_s
        out = Exchange()
        while calls:
            ready, _ = ray.wait(list(calls), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            host, n = calls.pop(ready[0])
            try:
                out.replies.update(ray.get(ready[0]))
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                out.lost += n
                if isinstance(e, ray.exceptions.RayActorError):
                    out.crashed.add(host)
        for ref, (_, n) in calls.items():
            ray.cancel(ref)
            out.lost += n
        return out

    def recover(self, host: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ray.get(self.hosts[host].ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
                return True
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.25)

    def retire(self, host: int) -> None:
        self.departed.add(host)
        ray.kill(self.hosts[host], no_restart=True)

    def evaluate(self, by_host: Mapping[int, tuple[list[int], list[int]]], params: Mapping[int, Any],
                 widths: Mapping[int, float], round_: int, timeout_s: float) -> list[DeviceEvaluation]:
        refs = {g: ray.put(dict(p)) for g, p in params.items()}
        calls = [self.hosts[h].evaluate.remote(refs, dict(widths), devices, groups, round_)
                 for h, (devices, groups) in sorted(by_host.items())]
        out: list[DeviceEvaluation] = []
        for call in calls:  # a host that crashed meanwhile just has no score this time
            try:
                out += ray.get(call, timeout=timeout_s)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                pass
        return out

    def checkpoint(self, round_: int, config_hash: str) -> set[int]:
        calls = {i: h.checkpoint.remote(round_, config_hash) for i, h in enumerate(self.hosts) if i not in self.departed}
        crashed = set()
        for host, call in calls.items():  # a host whose node leaves after its last round's answer dies here
            try:
                ray.get(call)
            except ray.exceptions.RayActorError:
                crashed.add(host)
        return crashed

    def checkpoint_problem(self, round_: int) -> str | None:
        return next((why for why in ray.get([h.checkpoint_problem.remote(round_) for h in self._live()]) if why), None)

    def restore(self, round_: int, config_hash: str) -> None:
        ray.get([h.restore.remote(round_, config_hash) for h in self._live()])

    def save_local(self, run_dir: str) -> None:
        ray.get([h.save_local.remote(run_dir) for h in self._live()])

    def close(self) -> None:
        for h in self.hosts:
            ray.kill(h)
        self.hosts = []
