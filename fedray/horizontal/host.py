"""DeviceHost: the Ray actor that hosts one or more simulated client devices of one hardware tier.

It holds a Devices (fedray.engine.devices, no Ray) and calls it; what Ray adds is the process, the tier
resource, restarts after a crash, and streaming each device's result back as soon as it is done.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import ray

from fedray.engine.device_files import (device_checkpoint_problem, device_store, load_device_checkpoint,
                                        save_device_checkpoint, write_device_state)
from fedray.engine.devices import DeviceEvaluation, DeviceFailure, Devices, DeviceUpdate, HostReport, initial_params
from fedray.engine.streams import Stream, stream
from fedray.privacy.rounds import SecureRound
from fedray.strategies.base import DeviceConfig


@ray.remote(max_restarts=0)
class DeviceHost:
    """Holds its devices' local data and private state; trains and evaluates them on request."""

    def __init__(self, cfg: dict, device_ids: np.ndarray, tier: dict, host_index: int, run_dir: str,
                 shared: Any = None):
        import torch

        torch.set_num_threads(1)
        from fedray.tasks import build_task

        self.cfg, self.host_index, self.run_dir = cfg, host_index, run_dir
        task = build_task(cfg["task"])
        device_ids = np.asarray(device_ids, np.int64)
        # `shared` arrives resolved from the driver's one ray.put (arrays zero-copy); without it, load as a user task would
        data = task.take(shared, device_ids) if shared is not None else task.load(int(cfg["seed"]))
        self.devices = Devices(cfg, task, data, device_ids, tier, host_index)
        ck = cfg["checkpoint"]
        self.store = device_store(ck["uri"] or str(Path(run_dir) / "checkpoints"), ck["keep"], host_index)
        with warnings.catch_warnings():  # Ray's own accessor trips its deprecated `actor_id` property
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if restarted:
            self._restore_from_checkpoint()

    def _restore_from_checkpoint(self) -> None:
        """After a crash Ray restarts this host: its devices take their state from its newest valid checkpoint."""
        from fedray.config import config_digest, from_plain

        load_device_checkpoint(self.store, self.devices, None, config_digest(from_plain(self.cfg)))

    def report(self) -> HostReport:
        """Device ids, their reported hardware and sample counts (what the driver groups by), and the node id."""
        return self.devices.report(ray.get_runtime_context().get_node_id())

    def ping(self) -> int:
        """Liveness check (the host index)."""
        return self.host_index

    def initial_params(self, shared: list[str], gid: int, width: float) -> dict[str, np.ndarray]:
        """A group's initial global weights from this host's task (the driver builds no model itself)."""
        return initial_params(self.devices.task, shared, int(self.cfg["seed"]), gid, width)

    def train(self, devices: list[int], params: Mapping[str, np.ndarray], width: float, round_: int,
              config: DeviceConfig, secure: SecureRound | None = None) -> Iterator[DeviceUpdate | DeviceFailure]:
        """Local training of this host's participants in turn, from the round's global weights (resolved once
        from the driver's ObjectRef); each result streams back as soon as it is done.

        One streaming call per host and round costs the driver far less than a call per device. A device whose
        training raises yields a DeviceFailure and the others still train; a crash ends the stream.
        """
        crash = self.cfg["faults"]["crash"]
        for device in devices:
            if crash and stream(self.cfg["seed"], Stream.FAULT, round_, device).random(2)[0] < crash:
                os._exit(1)  # simulated device failure: the whole host process dies mid-round
            try:
                yield self.devices.train(device, params, width, round_, config, secure)
            except Exception as e:  # one device's failure is counted, the round goes on
                yield DeviceFailure(device, f"{type(e).__name__}: {e}")

    def secure_step(self, phase: str, messages: dict[int, Any]) -> dict[int, Any]:
        """Forward one secure-aggregation phase to the hosted devices; their round secrets stay in this process."""
        return self.devices.secure_step(phase, messages)

    def evaluate(self, params_refs: dict[int, Any], widths: dict[int, float], devices: list[int], groups: list[int],
                 round_: int) -> list[DeviceEvaluation]:
        """The listed hosted devices' metrics, each under its group's model."""
        params = {g: ray.get(params_refs[g]) for g in sorted(set(groups))}
        return self.devices.evaluate(devices, groups, params, widths, round_)

    def export_state(self) -> dict[str, np.ndarray]:
        """Persistent state of every hosted device (for tests that compare it with a checkpoint)."""
        return self.devices.export_state()

    def checkpoint(self, round_: int, config_hash: str) -> None:
        """Write this host's devices' state for a round to its own checkpoint store."""
        save_device_checkpoint(self.store, self.devices, round_, config_hash)

    def checkpoint_problem(self, round_: int) -> str | None:
        """Why this host's state of a round cannot be resumed from (None when it can)."""
        return device_checkpoint_problem(self.store, round_)

    def restore(self, round_: int, config_hash: str) -> None:
        """Restore this host's devices from its own checkpoint of a round."""
        load_device_checkpoint(self.store, self.devices, round_, config_hash)

    def save_local(self, run_dir: str) -> str:
        """Write hosted devices' private state where only the device side reads it (used by `fedray recommend`)."""
        return str(write_device_state(run_dir, self.host_index, self.devices))
