"""Device-side files: each host's checkpoints of its devices' state, and the state a finished run leaves behind.

Device state (private parameters, error-feedback residuals) never passes through the driver: every host
writes its own checkpoint under CHECKPOINTS/devices/host-NNNN/, next to the driver's, and the driver's
manifest of the same round is only valid for resuming when every host's is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fedray.checkpoint import CheckpointError, CheckpointStore, arrays_to_table, table_to_arrays
from fedray.engine.devices import Devices


def device_store(uri: str, keep: int, host_index: int) -> CheckpointStore:
    """The checkpoint store of one device host, inside the run's checkpoint store."""
    return CheckpointStore(uri, keep).child(f"devices/host-{host_index:04d}")


def save_device_checkpoint(store: CheckpointStore, devices: Devices, round_: int, config_hash: str) -> None:
    """Write one host's devices' state for a round (atomically, like every checkpoint)."""
    store.save(round_, {"devices": arrays_to_table(devices.export_state())}, config_hash=config_hash, rng_states={})


def device_checkpoint_problem(store: CheckpointStore, round_: int) -> str | None:
    """Why a host's state of a round cannot be resumed from (None when it can)."""
    if round_ not in store.list():
        return f"device host state {store.path(round_)} is missing"
    ok, why = store.verify(round_)
    return None if ok else f"device host state {store.path(round_)}: {why}"


def load_device_checkpoint(store: CheckpointStore, devices: Devices, round_: int | None, config_hash: str) -> int | None:
    """Restore one host's devices from its checkpoint of a round (None: its newest valid one); the round, or None."""
    try:
        ckpt = (store.load(round_, config_hash=config_hash) if round_ is not None
                else store.load_latest(config_hash=config_hash, warn=lambda message: None))
    except CheckpointError:
        if round_ is not None:
            raise
        return None
    if ckpt is None:
        return None
    devices.import_state(ckpt.arrays("devices"))
    return ckpt.round


def write_device_state(run_dir: str | Path, host_index: int, devices: Devices) -> Path:
    """Write one host's devices' persistent state where only the device side reads it (`fedray recommend`)."""
    out = Path(run_dir) / "devices" / f"host-{host_index:04d}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrays_to_table({**devices.export_state(), "_devices": devices.device_ids}), out)
    return out


def read_private_state(run_dir: str | Path, device: int) -> dict[str, np.ndarray]:
    """One device's private parameters from a finished run's device-side files (empty if it never trained)."""
    prefix = f"{int(device)}/private/"
    for f in sorted((Path(run_dir) / "devices").glob("host-*.parquet")):
        arrays = table_to_arrays(pq.read_table(f))
        found = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        if found:
            return found
    return {}
