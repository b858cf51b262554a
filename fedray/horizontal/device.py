"""Simulated client devices hosted in one process: local data, private state, local training, encoding.

No Ray here: the DeviceHost actor holds a DeviceFleet and calls it, so the device logic is tested in-process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from fedray.core import rawcodec, ternary
from fedray.data.partition import RecData, eval_negatives
from fedray.models.recommender import ModelSpec, init_user, local_train, personalize, rank_metrics, top_k

# Stream tags mixed into (seed, round, device) so every random draw has its own reproducible generator.
STREAM_TRAIN, STREAM_QUANT, STREAM_EVAL, STREAM_USER = 0, 1, 2, 3


def stream(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined only by the run seed and the given integer keys."""
    return np.random.default_rng([seed, *[int(k) for k in keys]])


def encode_update(update: list[np.ndarray], residual: list[np.ndarray] | None, comp: Mapping,
                  rng: np.random.Generator) -> tuple[bytes, list[np.ndarray] | None]:
    """Wire payload for an update, and the device's new error-feedback residual (None when unused)."""
    if comp["method"] == "none":
        return rawcodec.pack_float32(update), None
    if comp["error_feedback"]:
        return ternary.error_feedback(update, residual, rng, clip_sigma=comp["clip_sigma"], mode=comp["mode"])
    payload, _ = ternary.encode(update, rng, clip_sigma=comp["clip_sigma"], mode=comp["mode"])
    return payload, None


def decode_update(payload: bytes, shapes: list[tuple[int, ...]], method: str) -> list[np.ndarray]:
    """Validated float32 tensors from a payload; raises ValueError (PayloadError for ternary) on any defect."""
    if method == "none":
        return rawcodec.unpack_float32(payload, shapes)
    return ternary.decode(payload, shapes)


@dataclass
class DeviceState:
    """What one device keeps between rounds; it never leaves the device except into its own checkpoint."""

    user: np.ndarray | None = None  # private user vector
    residual: list[np.ndarray] | None = None  # error-feedback residual
    rounds: int = 0  # rounds this device has trained in


@dataclass
class DeviceFleet:
    """Many simulated devices of one host, each with its own data slice and state."""

    cfg: Mapping  # plain config dict (the run's resolved config)
    data: RecData
    device_ids: np.ndarray  # user indices hosted here
    states: dict[int, DeviceState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device_ids = np.asarray(self.device_ids, np.int64)
        self.states = {int(d): DeviceState() for d in self.device_ids}
        self.seed = int(self.cfg["seed"])
        self._eval_neg = eval_negatives(self.data, self.device_ids, self.cfg["data"]["eval_negatives"], self.seed)
        self._row = {int(d): i for i, d in enumerate(self.device_ids)}

    def sample_counts(self) -> np.ndarray:
        """Training positives per hosted device (fusion weights)."""
        return self.data.counts()[self.device_ids]

    def _user(self, device: int, spec: ModelSpec) -> np.ndarray:
        st = self.states[device]
        if st.user is None or len(st.user) != spec.user_dim:
            st.user = init_user(spec, self.cfg["model"]["init_std"], stream(self.seed, STREAM_USER, device))
        return st.user

    def train(self, device: int, params: Mapping[str, np.ndarray], spec: ModelSpec, round_: int) -> dict:
        """t local steps from the global parameters, then the encoded update (bytes) with sample count and loss."""
        t = self.cfg["train"]
        comp = self.cfg["compression"]
        st = self.states[device]
        res = local_train(params, self._user(device, spec), self.data.positives(device), spec,
                          steps=t["local_steps"], batch=t["batch_size"], lr=t["lr"], negatives=t["negatives"],
                          l2=t["l2"], rng=stream(self.seed, STREAM_TRAIN, round_, device), update=comp["update"])
        update = [res.update[k] for k in spec.shapes()]
        payload, st.residual = encode_update(update, st.residual, comp, stream(self.seed, STREAM_QUANT, round_, device))
        st.user = res.user
        st.rounds += 1
        return {"device": device, "payload": payload, "samples": res.samples, "loss": res.loss}

    def personalized_users(self, devices: np.ndarray, params: Mapping[str, np.ndarray], spec: ModelSpec,
                           round_: int) -> np.ndarray:
        """User vectors refined against the frozen global model (devices keep their stored vectors unchanged)."""
        t = self.cfg["train"]
        users = np.stack([self._user(int(d), spec) for d in devices]) if len(devices) else np.zeros((0, spec.user_dim), np.float32)
        return personalize(params, users, [self.data.positives(int(d)) for d in devices], spec,
                           steps=t["personalize_steps"], batch=t["batch_size"], lr=t["lr"], negatives=t["negatives"],
                           rng=stream(self.seed, STREAM_EVAL, round_, int(devices[0]) if len(devices) else 0))

    def evaluate(self, devices: np.ndarray, params: Mapping[str, np.ndarray], spec: ModelSpec,
                 round_: int) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out HR@10 and NDCG@10 of the given hosted devices under the global model."""
        devices = np.asarray(devices, np.int64)
        users = self.personalized_users(devices, params, spec, round_)
        rows = np.array([self._row[int(d)] for d in devices], np.int64)
        return rank_metrics(params, users, self.data.test_items[devices], self._eval_neg[rows], spec)

    def recommend(self, device: int, params: Mapping[str, np.ndarray], spec: ModelSpec, k: int,
                  round_: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k unseen items for one hosted device's user: what the device shows its local user."""
        user = self.personalized_users(np.array([device]), params, spec, round_)[0]
        seen = np.append(self.data.positives(device), self.data.test_items[device])
        return top_k(params, user, spec, k, seen)

    def export_state(self) -> dict[str, np.ndarray]:
        """Every hosted device's persistent state as named arrays (for the device-side checkpoint)."""
        out: dict[str, np.ndarray] = {}
        for d, st in self.states.items():
            out[f"{d}/rounds"] = np.array(st.rounds, np.int64)
            if st.user is not None:
                out[f"{d}/user"] = st.user
            for i, r in enumerate(st.residual or []):
                out[f"{d}/residual/{i}"] = r
        return out

    def import_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore state written by export_state (devices absent from it start fresh)."""
        self.states = {int(d): DeviceState() for d in self.device_ids}
        residuals: dict[int, dict[int, np.ndarray]] = {}
        for key, value in arrays.items():
            parts = key.split("/")
            d = int(parts[0])
            if d not in self.states:
                continue
            if parts[1] == "rounds":
                self.states[d].rounds = int(value)
            elif parts[1] == "user":
                self.states[d].user = np.array(value, np.float32)
            elif parts[1] == "residual":
                residuals.setdefault(d, {})[int(parts[2])] = np.array(value, np.float32)
        for d, parts_ in residuals.items():
            self.states[d].residual = [parts_[i] for i in sorted(parts_)]
