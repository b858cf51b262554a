"""How the round engine reaches devices: the Fleet interface, and the in-process fleet for tests and notebooks.

The Ray fleet (fedray.horizontal.fleet) implements the same interface with device-host actors; the same seed
gives bit-identical global weights through both, because every random draw is keyed by (seed, round, device)
and the engine fuses updates in device order, whatever order they arrive in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fedray.checkpoint import CheckpointStore
from fedray.engine.device_files import (device_checkpoint_problem, device_store, load_device_checkpoint,
                                        save_device_checkpoint, write_device_state)
from fedray.engine.devices import DeviceEvaluation, DeviceFailure, Devices, DeviceUpdate, HostReport, initial_params
from fedray.privacy.rounds import SecureRound
from fedray.strategies.base import DeviceConfig
from fedray.tasks.base import Task

Params = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class HostPlan:
    """One device host to start: its index, its tier (a plain dict of TierConfig) and the devices it holds."""

    index: int
    tier: Mapping[str, Any]
    devices: np.ndarray


@dataclass(frozen=True)
class TrainOrder:
    """One group's training call of a round: its participants by host, the weights they start from."""

    group: int
    round_: int
    width: float
    params: Params
    config: DeviceConfig
    by_host: Mapping[int, list[int]]  # host index -> its participating devices, in draw order
    secure: SecureRound | None = None  # secure aggregation: the round's clip bound, scales and integer weights


@dataclass
class Exchange:
    """Replies to one secure-aggregation phase: device -> reply (or DeviceFailure), hosts that crashed, devices
    whose host did not answer in time."""

    replies: dict[int, Any] = field(default_factory=dict)
    crashed: set[int] = field(default_factory=set)
    lost: int = 0


@dataclass
class Arrivals:
    """What came back for one order: results, devices lost to crashes, hosts that crashed, devices unanswered."""

    results: list[DeviceUpdate | DeviceFailure] = field(default_factory=list)
    lost: int = 0
    crashed: set[int] = field(default_factory=set)
    unanswered: int = 0


class Fleet:
    """The engine's view of the device hosts."""

    start_phases: dict[str, float] = {}  # seconds start took, by phase (set by start: host start, reports)

    def host_slots(self) -> int:
        """How many hosts the fleet can run side by side (the default host count: one per CPU)."""
        return 1

    def start(self, plans: Sequence[HostPlan]) -> list[HostReport]:
        """Start the hosts and return what each reports."""
        raise NotImplementedError

    def initial_params(self, shared: Sequence[str], gid: int, width: float) -> Params:
        """A group's initial global weights, built where the task's model lives (after start): the engine itself
        never builds a model for training, so the Ray driver needs no torch."""
        raise NotImplementedError

    def launch(self, order: TrainOrder) -> Any:
        """Start a group's local training (asynchronously where the fleet can); returns a handle for collect."""
        raise NotImplementedError

    def collect(self, handle: Any, timeout_s: float) -> Arrivals:
        """Wait (up to timeout_s) for what a launched order returns."""
        raise NotImplementedError

    def recover(self, host: int, timeout_s: float) -> bool:
        """Wait until a crashed host answers again; False if it never does (it leaves the federation)."""
        raise NotImplementedError

    def retire(self, host: int) -> None:
        """A host that is gone for good (its node left): released, and left out of every later call."""
        raise NotImplementedError

    def exchange(self, phase: str, by_host: Mapping[int, Mapping[int, Any]], timeout_s: float) -> Exchange:
        """Deliver one secure-aggregation phase's messages (host -> device -> message), gather the replies."""
        raise NotImplementedError

    def evaluate(self, by_host: Mapping[int, tuple[list[int], list[int]]], params: Mapping[int, Params],
                 widths: Mapping[int, float], round_: int, timeout_s: float) -> list[DeviceEvaluation]:
        """Metrics of the listed devices ((devices, groups) per host) under their groups' models."""
        raise NotImplementedError

    def checkpoint(self, round_: int, config_hash: str) -> set[int]:
        """Every live host writes its own devices' state for a round (it never passes through the driver); returns
        the hosts that died meanwhile, whose state of that round is missing."""
        raise NotImplementedError

    def checkpoint_problem(self, round_: int) -> str | None:
        """Why some host's state of a round cannot be resumed from (None when every host's can)."""
        raise NotImplementedError

    def restore(self, round_: int, config_hash: str) -> None:
        """Every host restores its devices from its own checkpoint of a round."""
        raise NotImplementedError

    def save_local(self, run_dir: str) -> None:
        """Each host writes its devices' private state under RUN_DIR/devices/ (device-side files)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the fleet holds (actors, placement groups)."""


class InProcessFleet(Fleet):
    """Every host's devices in this process, trained one after another when collected: no Ray, no timeouts."""

    def __init__(self, cfg: Mapping[str, Any], task: Task, data: Sequence[Any], run_dir: str):
        self.cfg, self.task, self.data, self.run_dir = cfg, task, data, run_dir
        self.hosts: list[Devices] = []
        self.stores: list[CheckpointStore] = []
        self.departed: set[int] = set()

    def start(self, plans: Sequence[HostPlan]) -> list[HostReport]:
        started = time.perf_counter()
        shared = self.task.share(self.data)  # the same seam as the Ray hosts', minus the object store
        self.hosts = [Devices(self.cfg, self.task, self.data if shared is None else self.task.take(shared, p.devices),
                              p.devices, p.tier, p.index) for p in plans]
        ck = self.cfg["checkpoint"]
        uri = ck["uri"] or str(Path(self.run_dir) / "checkpoints")
        self.stores = [device_store(uri, ck["keep"], p.index) for p in plans]
        hosts_up = time.perf_counter()
        reports = [h.report() for h in self.hosts]
        self.start_phases = {"host start": hosts_up - started, "reports": time.perf_counter() - hosts_up}
        return reports

    def initial_params(self, shared: Sequence[str], gid: int, width: float) -> Params:
        return initial_params(self.task, shared, int(self.cfg["seed"]), gid, width)

    def launch(self, order: TrainOrder) -> TrainOrder:
        return order

    def collect(self, handle: TrainOrder, timeout_s: float) -> Arrivals:
        out = Arrivals()
        for host, devices in sorted(handle.by_host.items()):
            for device in devices:
                try:
                    out.results.append(self.hosts[host].train(device, handle.params, handle.width, handle.round_,
                                                              handle.config, handle.secure))
                except Exception as e:  # one device's failure is counted, the round goes on
                    out.results.append(DeviceFailure(device, f"{type(e).__name__}: {e}"))
        return out

    def recover(self, host: int, timeout_s: float) -> bool:
        return True

    def retire(self, host: int) -> None:
        self.departed.add(host)

    def _live(self) -> list[tuple[int, CheckpointStore, Devices]]:
        """(index, checkpoint store, devices) of the hosts still in the federation."""
        return [(i, s, h) for i, (s, h) in enumerate(zip(self.stores, self.hosts)) if i not in self.departed]

    def exchange(self, phase: str, by_host: Mapping[int, Mapping[int, Any]], timeout_s: float) -> Exchange:
        out = Exchange()
        for host, messages in sorted(by_host.items()):
            out.replies.update(self.hosts[host].secure_step(phase, messages))
        return out

    def evaluate(self, by_host: Mapping[int, tuple[list[int], list[int]]], params: Mapping[int, Params],
                 widths: Mapping[int, float], round_: int, timeout_s: float) -> list[DeviceEvaluation]:
        out: list[DeviceEvaluation] = []
        for host, (devices, groups) in sorted(by_host.items()):
            out += self.hosts[host].evaluate(devices, groups, params, widths, round_)
        return out

    def checkpoint(self, round_: int, config_hash: str) -> set[int]:
        for _, store, h in self._live():
            save_device_checkpoint(store, h, round_, config_hash)
        return set()

    def checkpoint_problem(self, round_: int) -> str | None:
        return next((why for why in (device_checkpoint_problem(s, round_) for _, s, _ in self._live()) if why), None)

    def restore(self, round_: int, config_hash: str) -> None:
        for _, store, h in self._live():
            load_device_checkpoint(store, h, round_, config_hash)

    def save_local(self, run_dir: str) -> None:
        for index, _, h in self._live():
            write_device_state(run_dir, index, h)


# (plain config, task, data, run directory) -> fleet; task and data are None when the engine holds only the task's
# facts (the Ray driver handed hosts already built from the data)
FleetFactory = Callable[[Mapping[str, Any], Task | None, Sequence[Any] | None, str], Fleet]
