"""Device-side files of a finished run: each host's devices' private state under RUN_DIR/devices/."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fedray.checkpoint import arrays_to_table, table_to_arrays
from fedray.engine.devices import Devices


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
