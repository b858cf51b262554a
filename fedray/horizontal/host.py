"""DeviceHost: the Ray actor that hosts one or more simulated client devices of one hardware tier."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import ray

from fedray.checkpoint import arrays_to_table, table_to_arrays
from fedray.core.grouping import draw_profiles
from fedray.data import load_recdata
from fedray.horizontal.device import DeviceFleet, stream
from fedray.models.recommender import ModelSpec

STREAM_HW, STREAM_FAULT = 4, 5


@ray.remote(max_restarts=0)
class DeviceHost:
    """Holds its devices' local data and private state; trains and evaluates them on request."""

    def __init__(self, cfg: dict, device_ids: list[int], tier: dict, host_index: int, run_dir: str):
        import torch

        torch.set_num_threads(1)
        from fedray.config import from_plain

        typed = from_plain(cfg)
        self.cfg = cfg
        self.host_index = host_index
        self.run_dir = run_dir
        self.fleet = DeviceFleet(cfg, load_recdata(typed.data, typed.seed), np.asarray(device_ids, np.int64))
        self.profiles, _ = draw_profiles([tier], [1.0], len(device_ids), stream(cfg["seed"], STREAM_HW, host_index))
        with warnings.catch_warnings():  # Ray's own accessor trips its deprecated `actor_id` property
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if restarted:
            self._restore_from_checkpoint(typed)

    def _restore_from_checkpoint(self, typed) -> None:
        """After a crash Ray restarts this host: its devices take their state from the newest valid checkpoint."""
        from fedray.checkpoint import CheckpointStore
        from fedray.config import config_digest

        store = CheckpointStore(typed.checkpoint.uri or str(Path(self.run_dir) / "checkpoints"))
        ckpt = store.load_latest(config_hash=config_digest(typed), warn=lambda msg: None)
        if ckpt is not None:
            mine = {int(d) for d in self.fleet.device_ids}
            self.fleet.import_state({k: v for k, v in ckpt.arrays("devices").items() if int(k.split("/")[0]) in mine})

    def report(self) -> dict:
        """Device ids, their reported hardware profiles and sample counts (what the driver groups by), and the node id."""
        return {"devices": self.fleet.device_ids, "profiles": self.profiles, "samples": self.fleet.sample_counts(),
                "node": ray.get_runtime_context().get_node_id()}

    def ping(self) -> int:
        """Liveness check (the host index)."""
        return self.host_index

    def train(self, devices: list[int], params: Mapping[str, np.ndarray], spec: ModelSpec,
              round_: int) -> Iterator[dict]:
        """Local training of this host's participants in turn, from the round's global parameters (resolved once
        from the driver's ObjectRef); each result streams back as soon as it is done.

        One streaming call per host and round costs the driver far less than a call per device. A device whose
        training raises yields {"device", "error"} and the others still train; a crash ends the stream.
        """
        for device in devices:
            try:
                yield self._train_one(device, params, spec, round_)
            except Exception as e:  # one device's failure is counted, the round goes on
                yield {"device": device, "error": f"{type(e).__name__}: {e}"}

    def _train_one(self, device: int, params: Mapping[str, np.ndarray], spec: ModelSpec, round_: int) -> dict:
        """One device's local training and encoded update, with the configured fault injection."""
        faults = self.cfg["faults"]
        if faults["crash"] or faults["corrupt"]:
            crash, corrupt = stream(self.cfg["seed"], STREAM_FAULT, round_, device).random(2)
        else:
            crash = corrupt = 1.0
        if crash < faults["crash"]:
            os._exit(1)  # simulated device failure: the whole host process dies mid-round
        out = self.fleet.train(device, params, spec, round_)
        if corrupt < faults["corrupt"] and out["payload"]:
            damaged = bytearray(out["payload"])
            damaged[len(damaged) // 2] ^= 0x5A
            out["payload"] = bytes(damaged)
        return out

    def evaluate(self, params_refs: dict[int, ray.ObjectRef], specs: dict[int, ModelSpec], devices: list[int],
                 groups: list[int], round_: int) -> dict:
        """HR@10 / NDCG@10 for the listed hosted devices, each under its group's model."""
        devices = np.asarray(devices, np.int64)
        groups = np.asarray(groups, np.int64)
        hits = np.zeros(len(devices))
        ndcg = np.zeros(len(devices))
        for g in np.unique(groups):
            sel = groups == g
            h, n = self.fleet.evaluate(devices[sel], ray.get(params_refs[int(g)]), specs[int(g)], round_)
            hits[sel], ndcg[sel] = h, n
        return {"devices": devices, "groups": groups, "hits": hits, "ndcg": ndcg}

    def export_state(self) -> dict[str, np.ndarray]:
        """Persistent state of every hosted device."""
        return self.fleet.export_state()

    def import_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore hosted devices' state from a checkpoint."""
        self.fleet.import_state(arrays)

    def save_local(self, run_dir: str) -> str:
        """Write hosted devices' private state where only the device side reads it (used by `fedray recommend`)."""
        import pyarrow.parquet as pq

        out = Path(run_dir) / "devices" / f"host-{self.host_index:04d}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays = {**self.fleet.export_state(), "_devices": self.fleet.device_ids}
        pq.write_table(arrays_to_table(arrays), out)
        return str(out)


def load_local_state(run_dir: str | Path) -> dict[int, np.ndarray]:
    """Private user vectors saved by the device hosts of a finished run, by device id."""
    import pyarrow.parquet as pq

    users = {}
    for f in sorted((Path(run_dir) / "devices").glob("host-*.parquet")):
        for key, value in table_to_arrays(pq.read_table(f)).items():
            if key.endswith("/user"):
                users[int(key.split("/")[0])] = value
    return users
