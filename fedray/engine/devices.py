"""Simulated client devices hosted in one process: their data, private state, local training and encoding.

No Ray here: a DeviceHost actor (or the in-process fleet) holds a Devices and calls it. A device receives the
round's global weights, trains the user's task from them, and sends back only its encoded update (the delta of
the shared parameters); private parameters and the error-feedback residual stay in its DeviceState.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import warnings

import numpy as np

from fedray.core import rawcodec, ternary
from fedray.core.grouping import draw_profiles
from fedray.engine.streams import Stream, stream, torch_seed
from fedray.privacy.rounds import SecureRound, secure_input
from fedray.privacy.secagg import KeyAdvert, ProtocolViolation, SecAggClient
from fedray.strategies.base import DeviceConfig
from fedray.tasks.base import EvalContext, Evaluation, Task, TrainContext

if TYPE_CHECKING:  # torch is imported where a model is built: the driver imports this module and never needs it
    import torch

Params = Mapping[str, np.ndarray]

# Weights arrive read-only from the object store; load_state_dict only copies out of them, so torch's warning
# about tensors over non-writable arrays does not apply.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


@dataclass(frozen=True)
class DeviceUpdate:
    """What a device sends after training: its encoded update, sample count (fusion weight) and loss."""

    device: int
    payload: bytes
    samples: int
    loss: float
    flops: float  # estimated compute of its local training (for the simulated clock)
    advert: KeyAdvert | None = None  # secure rounds: its public keys (the payload is then empty)


@dataclass(frozen=True)
class DeviceFailure:
    """A device whose training raised: counted as a failure, the round goes on."""

    device: int
    error: str


@dataclass(frozen=True)
class DeviceEvaluation:
    """One device's metrics under its group's model."""

    device: int
    group: int
    evaluation: Evaluation


@dataclass(frozen=True)
class HostReport:
    """What a host tells the driver at start: its devices, their reported hardware and training-sample counts."""

    devices: np.ndarray
    profiles: np.ndarray
    samples: np.ndarray
    node: str = ""


@dataclass
class DeviceState:
    """What one device keeps between rounds; it never leaves the device except into its own checkpoint."""

    private: dict[str, np.ndarray] | None = None  # private parameters (never sent)
    residual: list[np.ndarray] | None = None  # error-feedback residual
    rounds: int = 0  # rounds this device has trained in


def encode_update(update: list[np.ndarray], residual: list[np.ndarray] | None, compression: Mapping,
                  modes: Sequence[str], rng: np.random.Generator) -> tuple[bytes, list[np.ndarray] | None]:
    """Wire payload for an update, and the device's new error-feedback residual (None when unused)."""
    if compression["method"] == "none":
        return rawcodec.pack_float32(update), None
    if compression["error_feedback"]:
        return ternary.error_feedback(update, residual, rng, clip_sigma=compression["clip_sigma"], mode=modes)
    payload, _ = ternary.encode(update, rng, clip_sigma=compression["clip_sigma"], mode=modes)
    return payload, None


def decode_update(payload: bytes, shapes: list[tuple[int, ...]], method: str) -> list[np.ndarray]:
    """Validated float32 tensors from a payload; raises ValueError (PayloadError for ternary) on any defect."""
    if method == "none":
        return rawcodec.unpack_float32(payload, shapes)
    return ternary.decode(payload, shapes)


def initial_params(task: Task, shared: Sequence[str], seed: int, gid: int, width: float) -> dict[str, np.ndarray]:
    """A group's initial global weights: the task's fresh model at the group's width, seeded by the group."""
    import torch

    torch.default_generator.manual_seed(torch_seed(seed, Stream.INIT, gid))
    state = task.model(width).state_dict()
    return {k: state[k].detach().numpy().astype(np.float32, copy=True) for k in shared}


def tensor_modes(names: Sequence[str], sparse: Sequence[str], mode: str) -> list[str]:
    """Codec mode per tensor: the configured mode for the task's sparse row tables; dense layers go dense under rows."""
    other = "dense" if mode == "rows" else mode
    return [mode if name in sparse else other for name in names]


class Devices:
    """Many simulated devices of one host, each with its own data slice and state, all running one task.

    State is sparse: only a device that has trained (or was restored from a checkpoint) holds a DeviceState,
    so a host of half a million registered devices holds their ids and hardware profiles as arrays and little else.
    """

    def __init__(self, cfg: Mapping[str, Any], task: Task, data: Sequence[Any] | Mapping[int, Any],
                 device_ids: np.ndarray, tier: Mapping[str, Any], host_index: int):
        self.cfg, self.task, self.data = cfg, task, data
        self.seed = int(cfg["seed"])
        self.device_ids = np.asarray(device_ids, np.int64)
        self._sorted_ids = np.sort(self.device_ids)
        self.states: dict[int, DeviceState] = {}
        self.secure: dict[int, SecAggClient] = {}  # secure rounds: each participant's protocol state (memory only)
        self.profiles, _ = draw_profiles([dict(tier)], [1.0], len(self.device_ids),
                                         stream(self.seed, Stream.HARDWARE, host_index))
        self._models: dict[float, torch.nn.Module] = {}
        faults = cfg["faults"]
        self.byzantine = ({int(d) for d in self.device_ids
                           if stream(self.seed, Stream.BYZANTINE, d).random() < faults["byzantine"]}
                          if faults["byzantine"] else set())

    def report(self, node: str = "") -> HostReport:
        """The hosted devices, their reported hardware and sample counts."""
        samples = np.asarray(self.task.sample_counts(self.data, self.device_ids), np.int64)
        return HostReport(self.device_ids, self.profiles, samples, node)

    def _state(self, device: int) -> DeviceState:
        """A hosted device's state, created empty when it first needs one; a device this host lacks raises."""
        st = self.states.get(device)
        if st is None:
            at = int(np.searchsorted(self._sorted_ids, device))
            if at == len(self._sorted_ids) or self._sorted_ids[at] != device:
                raise KeyError(f"device {device} is not hosted here")
            st = self.states[device] = DeviceState()
        return st

    def _model(self, width: float) -> torch.nn.Module:
        """This host's working model of one width (weights are loaded into it before every use)."""
        if width not in self._models:
            self._models[width] = self.task.model(width)
        return self._models[width]

    def _private(self, device: int, width: float) -> dict[str, np.ndarray]:
        """A device's private parameters, first drawn (seeded by the device) when it has none of this shape.

        A task that overrides init_private sets them on the working model; otherwise they come from a fresh
        model built under the device's seed.
        """
        import torch

        st = self._state(device)
        model = self._model(width)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k in self.task.private}
        if st.private is None or {k: v.shape for k, v in st.private.items()} != shapes:
            torch.default_generator.manual_seed(torch_seed(self.seed, Stream.PRIVATE, device))
            if type(self.task).init_private is Task.init_private:
                model = self.task.model(width)
            self.task.init_private(model, device, stream(self.seed, Stream.PRIVATE, device))
            st.private = {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if k in shapes}
        return st.private

    def _load(self, device: int, params: Params, width: float) -> torch.nn.Module:
        """The working model holding the global weights and the device's own private parameters."""
        import torch

        model = self._model(width)
        private = self._private(device, width) if self.task.private else {}
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in {**params, **private}.items()}
        model.load_state_dict(state, strict=True)
        return model

    def train(self, device: int, params: Params, width: float, round_: int, config: DeviceConfig,
              secure: SecureRound | None = None) -> DeviceUpdate:
        """Local training from the global weights, then the encoded update with sample count, loss and FLOPs.

        In a secure round the update never leaves: it becomes an integer vector held by the device's SecAgg client,
        and only the client's public keys go back (the masked vector follows in the protocol's phases)."""
        import torch

        t, comp = self.cfg["train"], self.cfg["compression"]
        st = self._state(device)
        model = self._load(device, params, width)
        ctx = TrainContext(round_, device, t["local_steps"] if t["local_epochs"] is None else None, t["local_epochs"],
                           t["batch_size"], t["lr"], stream(self.seed, Stream.TRAIN, round_, device),
                           config.proximal_mu,
                           {k: torch.from_numpy(np.asarray(v)) for k, v in params.items()} if config.proximal_mu else {})
        torch.default_generator.manual_seed(torch_seed(self.seed, Stream.TORCH, round_, device))
        data = self.data[device]
        flops = self.task.train_flops(model, data, ctx)
        result = self.task.train(model, data, ctx)
        state = model.state_dict()
        names = list(params)
        update = [np.subtract(state[k].detach().numpy(), params[k], dtype=np.float32) for k in names]
        if device in self.byzantine:
            update = self._attack(update)
        quant = stream(self.seed, Stream.QUANT, round_, device)
        if secure is not None:
            values, st.residual = secure_input(update, st.residual, comp["error_feedback"], secure,
                                               secure.weights[device], quant)
            self.secure = {d: c for d, c in self.secure.items() if c.round_ == round_}  # earlier rounds' state goes
            self.secure[device] = SecAggClient(device, round_, values)
        else:
            payload, st.residual = encode_update(update, st.residual, comp, tensor_modes(names, self.task.sparse, comp["mode"]),
                                                 quant)
        if self.task.private:
            st.private = {k: state[k].detach().numpy().copy() for k in self.task.private}
        st.rounds += 1
        if secure is not None:
            return DeviceUpdate(device, b"", int(result.samples), float(result.loss), float(flops),
                                self.secure[device].advertise())
        return DeviceUpdate(device, self._maybe_corrupt(payload, round_, device), int(result.samples),
                            float(result.loss), float(flops))

    def secure_step(self, phase: str, messages: Mapping[int, Any]) -> dict[int, Any]:
        """One secure-aggregation phase (share | mask | unmask) for the listed devices: device -> its reply, or a
        DeviceFailure when it has no state for the round (e.g. its host restarted) or refuses the message."""
        if phase not in ("share", "mask", "unmask"):
            raise ValueError(f"unknown secure aggregation phase {phase!r}")
        out: dict[int, Any] = {}
        for device, message in messages.items():
            client = self.secure.get(int(device))
            try:
                if client is None:
                    raise ProtocolViolation(f"device {device} holds no secure aggregation state for this round")
                out[int(device)] = getattr(client, phase)(message)
            except Exception as e:  # a refusal or a broken share drops this device from the round, nothing more
                out[int(device)] = DeviceFailure(int(device), f"{type(e).__name__}: {e}")
        return out

    def _attack(self, update: list[np.ndarray]) -> list[np.ndarray]:
        """An adversarial device's update: sign-flipped and scaled, or only scaled (faults.byzantine_mode)."""
        faults = self.cfg["faults"]
        factor = np.float32(faults["byzantine_scale"] * (-1 if faults["byzantine_mode"] == "sign_flip" else 1))
        return [u * factor for u in update]

    def _maybe_corrupt(self, payload: bytes, round_: int, device: int) -> bytes:
        """faults.corrupt: flip one byte of the payload in transit with that probability."""
        p = self.cfg["faults"]["corrupt"]
        if not p or not payload or stream(self.seed, Stream.FAULT, round_, device).random(2)[1] >= p:
            return payload
        damaged = bytearray(payload)
        damaged[len(damaged) // 2] ^= 0x5A
        return bytes(damaged)

    def evaluate(self, devices: Sequence[int], groups: Sequence[int], params: Mapping[int, Params],
                 widths: Mapping[int, float], round_: int) -> list[DeviceEvaluation]:
        """Each listed device's metrics under its group's global model (its stored state is left unchanged)."""
        import torch

        out = []
        for device, group in zip(devices, groups):
            device, group = int(device), int(group)
            model = self._load(device, params[group], widths[group])
            torch.default_generator.manual_seed(torch_seed(self.seed, Stream.TORCH, round_, device))
            ctx = EvalContext(round_, device, stream(self.seed, Stream.EVAL, round_, device))
            out.append(DeviceEvaluation(device, group, self.task.evaluate(model, self.data[device], ctx)))
        return out

    def export_state(self) -> dict[str, np.ndarray]:
        """Every hosted device's persistent state as named arrays (for the device-side checkpoint)."""
        out: dict[str, np.ndarray] = {}
        for d, st in sorted(self.states.items()):
            out[f"{d}/rounds"] = np.array(st.rounds, np.int64)
            for name, value in (st.private or {}).items():
                out[f"{d}/private/{name}"] = value
            for i, r in enumerate(st.residual or []):
                out[f"{d}/residual/{i}"] = r
        return out

    def import_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore state written by export_state (devices absent from it start fresh)."""
        self.states = {}
        residuals: dict[int, dict[int, np.ndarray]] = {}
        for key, value in arrays.items():
            device, kind, *rest = key.split("/", 2)
            try:
                st = self._state(int(device))
            except KeyError:
                continue
            if kind == "rounds":
                st.rounds = int(value)
            elif kind == "private":
                st.private = {**(st.private or {}), rest[0]: np.array(value, np.float32)}
            elif kind == "residual":
                residuals.setdefault(int(device), {})[int(rest[0])] = np.array(value, np.float32)
        for device, parts in residuals.items():
            self.states[device].residual = [parts[i] for i in sorted(parts)]

