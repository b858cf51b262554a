"""The horizontal round engine: selection, admission, decoding, the strategy's aggregation, the simulated clock,
evaluation, records and checkpoints, as a plain class. It never imports Ray: it reaches devices through a Fleet,
and the Ray driver is this class made remote at launch with the Ray fleet.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow.parquet as pq

from fedray.checkpoint import CheckpointStore, arrays_to_table
from fedray.config import config_digest, from_plain
from fedray.core import clock, fusion, grouping, selection, ternary, validate
from fedray.core.grouping import HW_FIELDS
from fedray.engine.devices import DeviceFailure, DeviceUpdate, decode_update
from fedray.engine.fleet import Arrivals, Fleet, FleetFactory, HostPlan, TrainOrder
from fedray.engine.records import RoundRecord, records_from_table, records_table
from fedray.engine.streams import Stream, stream
from fedray.privacy import dp, packing, quantize
from fedray.privacy.rounds import SecureRound
from fedray.privacy.secagg import SecAggAborted, SecAggServer
from fedray.strategies import build_strategy
from fedray.strategies.base import DeviceConfig, RoundPlan, Strategy
from fedray.tasks import Evaluation, Task, TaskFacts, build_task, task_facts

if TYPE_CHECKING:  # dp-accounting takes seconds to import: only DP runs load it (in _setup_dp)
    from fedray.privacy.accounting import Accountant

Params = dict[str, np.ndarray]


@dataclass
class Group:
    """One group of devices with its own model width, global weights, strategy and simulated clock."""

    gid: int
    devices: np.ndarray
    width: float
    params: Params
    strategy: Strategy
    clock: clock.SimClock
    gflops: float  # median reported compute of its devices
    replica: Params | None = None  # the model as devices rebuild it from ternary broadcasts (None: float32)
    accountant: Accountant | None = None  # DP: the rounds this group released and their epsilon
    noise_multiplier: float = 0.0  # DP: z, the noise std on the sum in units of privacy.clip
    sampling_rate: float = 0.0  # DP: q of the round being planned

    def device_model(self) -> Params:
        """The weights devices hold: the replica under ternary broadcast, else the global model itself."""
        return self.params if self.replica is None else self.replica


@dataclass
class SetupInfo:
    """What setup() reports: devices, hosts, groups and the log lines it produced."""

    devices: int
    hosts: int
    groups: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds: task load, host start, reports, grouping


@dataclass
class Admitted:
    """The updates that passed admission, with the reasons the others were turned away."""

    updates: list[DeviceUpdate]
    reasons: dict[str, int]
    failures: int


def split_by_share(n: int, shares: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Device ids per tier: a seeded permutation cut by the tiers' shares (largest remainders)."""
    raw = np.asarray(shares) * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    perm = rng.permutation(n)
    return [np.sort(part) for part in np.split(perm, np.cumsum(counts)[:-1])]


def host_plans(n_devices: int, tiers: list[dict], devices_per_actor: int | None, seed: int,
               slots: int = 1) -> list[HostPlan]:
    """Devices split over tiers by share, then each tier's devices cut into hosts of at most devices_per_actor
    (unset: the fleet's host slots, one per CPU of the cluster, shared out by the tiers' shares)."""
    plans: list[HostPlan] = []
    for tier, devices in zip(tiers, split_by_share(n_devices, [t["share"] for t in tiers], stream(seed, Stream.TIERS))):
        hosts = (-(-len(devices) // devices_per_actor) if devices_per_actor
                 else min(len(devices), max(1, round(slots * tier["share"]))))
        for chunk in np.array_split(devices, max(1, hosts)):
            if len(chunk):
                plans.append(HostPlan(len(plans), tier, chunk))
    return plans


def admit(results: Sequence[DeviceUpdate | DeviceFailure | object], selected: set[int], max_bytes: int,
          log: list[str], round_: int) -> Admitted:
    """Separate failed devices and malformed, unexpected, duplicate or oversized results from admissible updates."""
    updates, reasons, failures, seen = [], {}, 0, set()
    for res in results:
        if isinstance(res, DeviceFailure):
            failures += 1
            log.append(f"round {round_}: device {res.device} failed: {res.error}")
            continue
        why = (validate.check_result(res.device, res.samples, res.payload, selected, seen, max_bytes)
               if isinstance(res, DeviceUpdate) else "malformed_result")
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
            continue
        seen.add(int(res.device))
        updates.append(res)
    return Admitted(updates, reasons, failures)


def arrival_times(updates: Sequence[DeviceUpdate], profiles: np.ndarray, latency_s: np.ndarray,
                  bytes_down: float, bytes_up: np.ndarray | None = None) -> np.ndarray:
    """Simulated seconds each device took: compute on its reported speed, download, upload (its payload unless
    bytes_up says otherwise), latency."""
    gi = [HW_FIELDS.index(f) for f in ("gflops", "up_mbps", "down_mbps")]
    prof = profiles[:, gi] if len(updates) else np.zeros((0, 3))
    flops = np.array([u.flops for u in updates], np.float64)
    if bytes_up is None:
        bytes_up = np.array([len(u.payload) for u in updates], np.float64)
    return clock.device_round_time(flops, prof[:, 0], bytes_up, bytes_down, prof[:, 1], prof[:, 2], latency_s)


def decode_accepted(updates: Sequence[DeviceUpdate], names: list[str], shapes: list[tuple[int, ...]], method: str,
                    clip_norm: float | None, reasons: dict[str, int]) -> tuple[list[Params], list[float], list[float], int]:
    """Decode and check the accepted updates in device order (reproducible sums) -> (updates, weights, losses, clipped).

    A payload that fails to decode or holds the wrong shapes or NaN/Inf is counted in reasons and never fused.
    """
    fused, weights, losses, clipped = [], [], [], 0
    for upd in sorted(updates, key=lambda u: u.device):
        try:
            tensors = decode_update(upd.payload, shapes, method)
            why = validate.check_tensors(tensors, shapes)
        except ValueError as e:
            why = getattr(e, "reason", "invalid")
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
            continue
        tensors, was_clipped = validate.clip_norm(tensors, clip_norm)
        clipped += was_clipped
        fused.append(dict(zip(names, tensors)))
        weights.append(upd.samples)
        losses.append(upd.loss)
    return fused, weights, losses, clipped


def weighted_metrics(evaluations: Sequence[Evaluation]) -> dict[str, float]:
    """Each metric averaged over evaluations weighted by samples, skipping NaN values (e.g. AUC of one class)."""
    out: dict[str, float] = {}
    for name in sorted({k for e in evaluations for k in e.metrics}):
        pairs = [(float(e.metrics[name]), e.samples) for e in evaluations
                 if name in e.metrics and np.isfinite(e.metrics[name]) and e.samples > 0]
        if pairs:
            values, weights = zip(*pairs)
            out[name] = float(np.average(values, weights=weights))
    return out


def evaluation_devices(n_devices: int, eval_users: int, seed: int) -> np.ndarray:
    """The devices every evaluation covers: all of them, or train.eval_users drawn once from the run's seed."""
    devices = np.arange(n_devices)
    if eval_users and eval_users < n_devices:
        devices = np.sort(stream(seed, Stream.EVAL_DEVICES).choice(devices, eval_users, replace=False))
    return devices


def check_nesting(shapes_by_group: Mapping[int, Mapping[str, tuple[int, ...]]]) -> None:
    """HeteroFL sharing needs every narrower model's tensors to be leading slices of the wider ones'."""
    groups = sorted(shapes_by_group, key=lambda g: [int(np.prod(s)) for s in shapes_by_group[g].values()])
    for small, large in zip(groups, groups[1:]):
        for name, shape in shapes_by_group[small].items():
            other = shapes_by_group[large].get(name)
            if other is None or len(other) != len(shape) or any(a > b for a, b in zip(shape, other)):
                raise ValueError(f"grouping.share_across: parameter {name!r} has shape {shape} in group {small} and "
                                 f"{other} in group {large}; the task's widths do not nest, so they cannot be shared")


class RoundEngine:
    """Coordinates a horizontal run: it never sees device data or private parameters, only encoded updates."""

    def __init__(self, cfg: dict, run_dir: str, fleet_factory: FleetFactory,
                 loaded: tuple[Task, Sequence[Any]] | Callable[[], tuple[Task, Sequence[Any]]] | None = None,
                 facts: TaskFacts | None = None):
        """`loaded` is the (task, data) `fedray run` loaded to check the job (None: load them here); or, with
        `facts` (what that check found), a function that fetches them: the engine then fetches the task only if
        server-side evaluation needs it, and the fleet, already holding hosts, gets None for both."""
        self.plain = cfg
        self.cfg = from_plain(cfg)
        self.run_dir = Path(run_dir)
        self.round = 0
        self.records: list[RoundRecord] = []
        self.rng = stream(self.cfg.seed, Stream.SELECT)
        self.store = CheckpointStore(self.cfg.checkpoint.uri or str(self.run_dir / "checkpoints"), keep=self.cfg.checkpoint.keep)
        self.log: list[str] = []
        self.tier_names = [t.name for t in self.cfg.tiers]
        self.tier_latency = np.array([t.latency_ms / 1000 for t in self.cfg.tiers])
        started = time.perf_counter()
        self._loaded: tuple[Task, Sequence[Any]] | None = None
        if facts is None:
            if loaded is None:
                task = build_task(cfg["task"])
                loaded = task, task.load(self.cfg.seed)
            self._loaded = loaded  # the task as `fedray run` loaded it to check the job: not read a second time
            facts = task_facts(*loaded)
        else:
            self._fetch = loaded
        self.load_s = time.perf_counter() - started
        self.facts = facts
        self.fleet: Fleet = fleet_factory(cfg, *(self._loaded or (None, None)), str(self.run_dir))
        self.dp_on = self.cfg.privacy.dp != "none"
        self.noise_rng = dp.fresh_rng() if self.dp_on else None  # never the run seed: see fedray/privacy/dp.py
        self.budget = self.cfg.privacy.target_epsilon or self.cfg.privacy.epsilon
        self.budget_warned: set[int] = set()
        self.stopped_on_budget = False
        self.secure_view: list[Any] | None = None  # set to a list to record every secure-round message the driver gets

    @property
    def task(self) -> Task:
        """The task itself, fetched on first use when the engine was handed only its facts."""
        if self._loaded is None:
            self._loaded = self._fetch()
        return self._loaded[0]

    # ---- setup -------------------------------------------------------------------------------------------
    def setup(self) -> SetupInfo:
        """Start the device hosts, collect reported hardware, form groups and give each a model sized for it."""
        cfg = self.cfg
        n = self.facts.devices
        tiers = [dict(t) for t in self.plain["tiers"]]
        plans = host_plans(n, tiers, cfg.runtime.devices_per_actor, cfg.seed, self.fleet.host_slots())
        self.host_of = np.zeros(n, np.int32)
        self.tier_of = np.zeros(n, np.int16)
        for p in plans:
            self.host_of[p.devices] = p.index
            self.tier_of[p.devices] = self.tier_names.index(p.tier["name"])
        reports = self.fleet.start(plans)
        started = time.perf_counter()
        self.profiles = np.zeros((n, len(HW_FIELDS)))
        self.samples = np.zeros(n, np.int64)
        for rep in reports:
            self.profiles[rep.devices] = rep.profiles
            self.samples[rep.devices] = rep.samples
        self.host_node = [rep.node for rep in reports]
        self._form_groups(tiers)
        self.host_dead = np.zeros(len(plans), bool)
        if self.dp_on:
            self._setup_dp()
        self.group_of = np.zeros(n, np.int32)
        for g in self.groups:
            self.group_of[g.devices] = g.gid
        self.secure_weight = np.zeros(n, np.int64)
        for g in self.groups:  # integer FedAvg weights, from the sample counts the devices reported at setup
            self.secure_weight[g.devices] = quantize.integer_weights(self.samples[g.devices], cfg.privacy.weight_levels)
        self._write_grouping()
        phases = {"task load": self.load_s, **self.fleet.start_phases, "grouping": time.perf_counter() - started}
        return SetupInfo(n, len(plans), [{"group": g.gid, "devices": len(g.devices), "width": g.width,
                                          "gflops": g.gflops} for g in self.groups], list(self.log), phases)

    def _form_groups(self, tiers: list[dict]) -> None:
        """Group devices by reported hardware and give each group a model sized for it."""
        gc = self.cfg.grouping
        if gc.method == "none":
            labels = np.zeros(len(self.profiles), np.int64)
        else:
            labels, merges = grouping.group_devices(
                self.profiles, gc.method, thresholds=list(gc.thresholds), k=gc.k, min_size=gc.min_size,
                rng=stream(self.cfg.seed, Stream.GROUP), field=gc.by)
            self.log += [f"group {a} had fewer than {gc.min_size} devices: merged into group {b}" for a, b in merges]
        tier_gflops = np.array([t["gflops"] for t in tiers])
        s = self.plain["strategy"]
        self.groups = []
        for gid in np.unique(labels):
            devices = np.flatnonzero(labels == gid)
            gflops = float(np.median(self.profiles[devices, HW_FIELDS.index("gflops")]))
            width = 1.0 if gc.method == "none" else float(tiers[int(np.argmin(np.abs(np.log(tier_gflops / gflops))))]["width"])
            params = self.fleet.initial_params(self.facts.shared, int(gid), width)
            strategy = build_strategy(s["name"], s["target"], {**s, "server_lr": s["server_lr"] or self.facts.server_lr})
            group = Group(int(gid), devices, width, params, strategy, clock.SimClock(), gflops)
            if self.cfg.compression.broadcast == "ternary":
                group.replica = dict(group.params)
            self.groups.append(group)
            self.log.append(f"group {gid}: {len(devices)} devices, median {gflops:.1f} GFLOP/s, model width {width:g}")
        if gc.share_across and len(self.groups) > 1:
            check_nesting({g.gid: {k: v.shape for k, v in g.params.items()} for g in self.groups})
        self.bytes_float32 = {g.gid: 4 * sum(v.size for v in g.params.values()) for g in self.groups}

    def _setup_dp(self) -> None:
        """Each group's accountant and noise multiplier: privacy.noise_multiplier, or the one calibrated so that
        train.rounds rounds at the group's sampling rate spend privacy.epsilon."""
        from fedray.privacy import accounting

        p = self.cfg.privacy
        for g in self.groups:
            g.accountant = accounting.Accountant(p.delta)
            q = self._sampling_rate(g)
            if p.epsilon is not None:
                g.noise_multiplier = accounting.calibrate_noise(p.epsilon, p.delta, q, self.cfg.train.rounds)
                self.log.append(f"group {g.gid}: DP noise multiplier {g.noise_multiplier:.4f} spends epsilon "
                                f"{p.epsilon:g} at delta {p.delta:g} over {self.cfg.train.rounds} rounds at sampling rate {q:.4f}")
            else:
                g.noise_multiplier = float(p.noise_multiplier)

    def _sampling_rate(self, g: Group) -> float:
        """q under DP: a live device's chance of being drawn, ceil(K * over_select) / live devices (at most 1)."""
        alive = int((~self.host_dead[self.host_of[g.devices]]).sum())
        k = selection.participant_count(self.cfg.train.participants, alive)
        return min(1.0, math.ceil(k * self.cfg.train.over_select) / max(1, alive))

    def _over_budget(self) -> bool:
        """Whether the next round would take a group past the privacy budget (then the run stops, or warns once)."""
        if not self.dp_on or self.budget is None:
            return False
        p = self.cfg.privacy
        for g in self.groups:
            after = g.accountant.epsilon_after(self._sampling_rate(g), g.noise_multiplier)
            if after <= self.budget:
                continue
            line = (f"round {self.round}: privacy budget: group {g.gid} would reach epsilon {after:.3f} > {self.budget:g} "
                    f"at delta {p.delta:g} (spent {g.accountant.epsilon():.3f} so far)")
            if p.on_budget == "stop":
                self.log.append(f"{line}; the run stops before it")
                self.stopped_on_budget = True
                return True
            if g.gid not in self.budget_warned:
                self.budget_warned.add(g.gid)
                self.log.append(f"{line}; going on (privacy.on_budget=warn): the guarantee is weaker than the budget")
        return False

    def _rebuild_accountants(self) -> None:
        """The accountants from the rounds done (a resume): every released round's (q, z) is in its record."""
        from fedray.privacy import accounting

        for g in self.groups:
            if g.accountant is not None:
                g.accountant = accounting.Accountant(self.cfg.privacy.delta)
                for rec in self.records:
                    if rec.group == g.gid and rec.applied and rec.noise_multiplier > 0:
                        g.accountant.spend(rec.sampling_rate, rec.noise_multiplier)

    def _write_grouping(self) -> None:
        """Record which tier, host and group every device got, with its reported hardware."""
        import pyarrow as pa

        # tier and node as dictionary columns: a million devices cost indices, not a million Python strings
        cols = {"device": np.arange(len(self.profiles)),
                "tier": pa.DictionaryArray.from_arrays(self.tier_of.astype(np.int32), self.tier_names),
                "host": self.host_of,
                "node": pa.DictionaryArray.from_arrays(self.host_of, self.host_node),
                "group": self.group_of, "samples": self.samples}
        cols.update({f: self.profiles[:, i] for i, f in enumerate(HW_FIELDS)})
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), self.run_dir / "grouping.parquet")

    # ---- one round -----------------------------------------------------------------------------------------
    def run_round(self) -> list[RoundRecord]:
        """One federated round for every group, their training in flight together; a record per group.

        Under a DP budget, a round that would take a group past it is not run (privacy.on_budget=stop): no
        records, stopped_on_budget is set and the log says why.
        """
        if self._over_budget():
            return []
        t0 = time.perf_counter()
        round_, cfg = self.round, self.cfg
        launched = []
        for g in self.groups:
            model, down = self._broadcast(g, round_)
            plan, order = self._plan(g, model, round_)
            launched.append((g, model, down, plan, self.fleet.launch(order)))
        records, crashed = [], set()
        for g, model, down, plan, handle in launched:
            rec = self._collect(g, plan, handle, round_, down, crashed)
            while not rec.applied and rec.retries < cfg.train.max_round_retries:  # too few valid updates: again
                self._recover(crashed)
                plan, order = self._plan(g, model, round_)
                again = self._collect(g, plan, self.fleet.launch(order), round_, down, crashed)
                again.absorb(rec)
                again.retries = rec.retries + 1
                rec = again
            records.append(rec)
        restarts = self._recover(crashed)
        for rec in records:
            rec.restarts = restarts
        self.round += 1
        if cfg.grouping.share_across and len(self.groups) > 1:
            self._share(records)
        if self.round % cfg.train.eval_every == 0 or self.round == cfg.train.rounds:
            self._evaluate(records, round_)
        wall = time.perf_counter() - t0
        for rec in records:
            rec.wall_s = wall
        self.records.extend(records)
        if cfg.checkpoint.every and (self.round % cfg.checkpoint.every == 0 or self.round == cfg.train.rounds):
            self.checkpoint()
        return records

    def _share(self, records: list[RoundRecord]) -> None:
        """HeteroFL: average overlapping slices; the groups then move in lockstep, each waiting for the slowest."""
        for g, p in zip(self.groups, fusion.share_overlap([g.params for g in self.groups])):
            g.params = p
        now = max(g.clock.now for g in self.groups)
        for g, rec in zip(self.groups, records):
            g.clock.advance(now - g.clock.now)
            rec.sim_time_s = g.clock.now

    def _broadcast(self, g: Group, round_: int) -> tuple[Params, int]:
        """The weights devices train from this round, and the bytes each one downloads for them.

        Under ternary broadcast the driver ternarizes (global - replica); the replica advances by exactly what
        devices decode, so quantization error is carried into the next round's difference (error feedback).
        """
        if g.replica is None:
            return g.params, self.bytes_float32[g.gid]
        names = list(g.params)
        payload, sent = ternary.encode([g.params[k] - g.replica[k] for k in names],
                                       stream(self.cfg.seed, Stream.BROADCAST, round_, g.gid),
                                       mode=self.cfg.compression.mode, rounding="threshold")
        g.replica = {k: (g.replica[k] + s).astype(np.float32) for k, s in zip(names, sent)}
        return g.replica, len(payload)

    def _plan(self, g: Group, model: Params, round_: int) -> tuple[RoundPlan, TrainOrder]:
        """The strategy draws the round's participants among the group's live devices; group them by host."""
        alive = g.devices[~self.host_dead[self.host_of[g.devices]]]
        if len(alive) == 0:
            raise RuntimeError(f"group {g.gid} has no live device hosts left (all exceeded runtime.max_restarts)")
        if self.dp_on:  # Poisson sampling, as the accountant assumes; the strategy orders them and sets their config
            g.sampling_rate = self._sampling_rate(g)
            drawn = selection.poisson(alive, g.sampling_rate, self.rng)
            plan = (g.strategy.configure(round_, drawn, len(drawn), 1.0, self.rng) if len(drawn)
                    else RoundPlan(drawn, DeviceConfig()))
        else:
            k = selection.participant_count(self.cfg.train.participants, len(alive))
            plan = g.strategy.configure(round_, alive, k, self.cfg.train.over_select, self.rng)
        hosts = self.host_of[plan.devices]
        by_host = {int(h): [int(d) for d in plan.devices[hosts == h]] for h in np.unique(hosts)}
        secure = None
        if self.cfg.privacy.secure_aggregation:
            secure = SecureRound(float(self.cfg.privacy.clip), tuple(float(s) for s in self._scales(g)),
                                 {int(d): int(self.secure_weight[d]) for d in plan.devices}, **self._secure_dp(g, plan))
        return plan, TrainOrder(g.gid, round_, g.width, model, plan.config, by_host, secure)

    def _secure_dp(self, g: Group, plan: RoundPlan) -> dict[str, Any]:
        """DP instructions of a secure round: cap the trits at the clip bound; in distributed mode each device's
        share of integer noise (z * clip in float units once summed over the fewest survivors unmasked)."""
        p = self.cfg.privacy
        if not self.dp_on:
            return {}
        out: dict[str, Any] = {"dp_bound": float(p.clip)}
        if p.dp == "distributed":
            stds = dp.integer_noise_stds(g.noise_multiplier, p.clip, self._scales(g))
            out.update(noise_stds=tuple(float(s) for s in stds), noise_kind=p.noise,
                       noise_shares=dp.noise_shares(len(plan.devices), p.threshold))
        return out

    def _scales(self, g: Group) -> np.ndarray:
        """The common per-tensor ternary scales of a group's secure rounds, derived from the clip bound."""
        p = self.cfg.privacy
        return quantize.tensor_scales([v.size for v in g.params.values()], p.clip, p.coordinate_clip)

    def _recover(self, crashed: set[int]) -> int:
        """Count the device hosts that came back after a crash (they restore their devices from the newest
        checkpoint themselves); hosts that do not come back leave the federation with their devices."""
        restarted = 0
        for h in sorted(crashed):
            n = int((self.host_of == h).sum())
            if self.fleet.recover(h, min(self.cfg.runtime.round_timeout_s, 120.0)):
                restarted += 1
                self.log.append(f"round {self.round}: device host {h} restarted; its {n} devices rejoin from the last checkpoint")
            else:
                self.host_dead[h] = True
                self.fleet.retire(h)
                self.log.append(f"round {self.round}: device host {h} is gone for good; its {n} devices leave")
        crashed.clear()
        return restarted

    def _collect(self, g: Group, plan: RoundPlan, handle: Any, round_: int, down: int, crashed: set[int]) -> RoundRecord:
        """Wait for a group's updates, admit them, accept the first K by simulated arrival, decode, aggregate."""
        if self.cfg.privacy.secure_aggregation:
            return self._collect_secure(g, plan, handle, round_, down, crashed)
        cfg, t = self.cfg, self.cfg.train
        arrivals: Arrivals = self.fleet.collect(handle, cfg.runtime.round_timeout_s)
        crashed |= arrivals.crashed  # they restart and rejoin after the round
        alive = int((~self.host_dead[self.host_of[g.devices]]).sum())
        # Under DP every arrival within the deadline counts: capping at the first K would let one device's
        # presence push another's update out, doubling the sensitivity.
        k = len(plan.devices) if self.dp_on else selection.participant_count(t.participants, alive)
        ok = admit(arrivals.results, {int(d) for d in plan.devices}, self.bytes_float32[g.gid] + validate.HEADER_SLACK,
                   self.log, round_)
        devices = np.array([u.device for u in ok.updates], np.int64)
        times = arrival_times(ok.updates, self.profiles[devices], self.tier_latency[self.tier_of[devices]], down)
        accepted = clock.accept_by_deadline(times, k, t.deadline_s)
        names = list(g.params)
        updates, weights, losses, clipped = decode_accepted(
            [ok.updates[i] for i in accepted], names, [g.params[k_].shape for k_ in names], cfg.compression.method,
            t.clip_update_norm, ok.reasons)
        applied = len(updates) >= max(t.min_updates, g.strategy.required_updates())
        if applied and self.dp_on:
            p = cfg.privacy
            mean, clipped = dp.central_mean(updates, p.clip, g.noise_multiplier, g.sampling_rate * alive, self.noise_rng)
            g.params = g.strategy.aggregate(round_, g.params, [mean], [1.0])
            g.accountant.spend(g.sampling_rate, g.noise_multiplier)
        elif applied:
            g.params = g.strategy.aggregate(round_, g.params, updates, weights)
        sim_round = clock.round_time(times[accepted])
        g.clock.advance(sim_round)
        elements = sum(v.size for v in g.params.values())
        bytes_up = np.array([len(u.payload) for u in ok.updates], np.float64)
        up_accepted = float(bytes_up[accepted].sum())
        return RoundRecord(
            round=round_, group=g.gid, selected=len(plan.devices), participants=len(updates),
            stragglers=len(ok.updates) - len(accepted) + arrivals.unanswered, failures=arrivals.lost + ok.failures,
            rejected=int(sum(ok.reasons.values())), reject_reasons=json.dumps(ok.reasons, sort_keys=True),
            clipped=clipped, applied=applied, bytes_up=float(bytes_up.sum()), bytes_down=float(down * len(plan.devices)),
            bytes_up_float32=float(4 * elements * len(ok.updates)),
            bits_per_element=8 * up_accepted / max(1, elements * len(accepted)),
            train_loss=float(np.average(losses, weights=weights)) if losses else float("nan"),
            sim_round_s=sim_round, sim_time_s=g.clock.now,
            epsilon=g.accountant.epsilon() if self.dp_on else math.nan,
            noise_multiplier=g.noise_multiplier if self.dp_on and applied else 0.0,
            sampling_rate=g.sampling_rate if self.dp_on else 0.0)

    def _collect_secure(self, g: Group, plan: RoundPlan, handle: Any, round_: int, down: int,
                        crashed: set[int]) -> RoundRecord:
        """A secure round: the first K key adverts by simulated arrival start SecAgg+; the driver routes the
        phases through the fleet and learns only the exact sum of the survivors' weighted trits, which becomes
        one mean update for the strategy. Stragglers, failures and crashed hosts at any phase count as dropped;
        below privacy.threshold the round fails and the model is left as it was."""
        cfg, t, p = self.cfg, self.cfg.train, self.cfg.privacy
        arrivals: Arrivals = self.fleet.collect(handle, cfg.runtime.round_timeout_s)
        crashed |= arrivals.crashed
        alive = int((~self.host_dead[self.host_of[g.devices]]).sum())
        k = len(plan.devices) if self.dp_on else selection.participant_count(t.participants, alive)
        ok = admit(arrivals.results, {int(d) for d in plan.devices}, validate.HEADER_SLACK, self.log, round_)
        keyed = [u for u in ok.updates if u.advert is not None and u.advert.device == u.device]
        if len(keyed) < len(ok.updates):
            ok.reasons["no_keys"] = len(ok.updates) - len(keyed)
            ok.updates = keyed
        self._record_view(ok.updates)
        names = list(g.params)
        shapes = [g.params[n].shape for n in names]
        length = sum(v.size for v in g.params.values())
        devices = np.array([u.device for u in ok.updates], np.int64)
        bits = quantize.modulus_bits(int(self.secure_weight[devices].sum()), self._noise_room(g, plan))
        masked_bytes = packing.packed_size(length, bits)
        times = arrival_times(ok.updates, self.profiles[devices], self.tier_latency[self.tier_of[devices]], down,
                              np.full(len(ok.updates), float(masked_bytes)))
        accepted = clock.accept_by_deadline(times, k, t.deadline_s)
        joined = [ok.updates[i] for i in accepted]
        server = SecAggServer(round_, length, bits, p.threshold, p.neighbours)
        dropped, traffic, survivors = [arrivals.lost + ok.failures], 0.0, []
        try:
            requests = server.route_keys([u.advert for u in joined], stream(cfg.seed, Stream.SECAGG_GRAPH, round_, g.gid))
            shares = self._phase("share", requests, crashed, dropped)
            traffic += sum(len(s.ciphertext) for v in shares.values() for s in v)
            masked = self._phase("mask", server.route_shares(shares), crashed, dropped)
            traffic += sum(len(m.payload) for m in masked.values())
            responses = self._phase("unmask", server.route_masked(masked.values()), crashed, dropped)
            total = server.finish(responses.values())
            survivors = server.survivors()
        except SecAggAborted as e:
            self.log.append(str(e))
            ok.reasons["secagg_aborted"] = 1
        applied = len(survivors) >= max(t.min_updates, g.strategy.required_updates())
        if applied and self.dp_on:  # sum * scales (+ central noise) over the expected participant count
            summed = quantize.mean_update(total, 1, self._scales(g), shapes)
            if p.dp == "central":
                summed = [s + self.noise_rng.normal(0.0, g.noise_multiplier * p.clip, s.shape) for s in summed]
            mean = [(s / (g.sampling_rate * alive)).astype(np.float32) for s in summed]
            g.params = g.strategy.aggregate(round_, g.params, [dict(zip(names, mean))], [1.0])
            g.accountant.spend(g.sampling_rate, g.noise_multiplier)
        elif applied:
            weight = int(self.secure_weight[survivors].sum())
            mean = quantize.mean_update(total, weight, self._scales(g), shapes)
            g.params = g.strategy.aggregate(round_, g.params, [dict(zip(names, mean))], [1.0])
        sim_round = clock.round_time(times[accepted])
        g.clock.advance(sim_round)
        kept = [u for u in joined if u.device in set(survivors)]
        losses = [u.loss for u in kept]
        return RoundRecord(
            round=round_, group=g.gid, selected=len(plan.devices), participants=len(survivors),
            stragglers=len(ok.updates) - len(accepted) + arrivals.unanswered, failures=sum(dropped),
            rejected=int(sum(ok.reasons.values())), reject_reasons=json.dumps(ok.reasons, sort_keys=True),
            applied=applied, bytes_up=traffic + 64.0 * len(joined),  # + two 32-byte public keys each
            bytes_down=float(down * len(plan.devices)), bytes_up_float32=float(4 * length * len(joined)),
            bits_per_element=8 * masked_bytes / max(1, length),
            train_loss=float(np.average(losses, weights=[u.samples for u in kept])) if losses else float("nan"),
            sim_round_s=sim_round, sim_time_s=g.clock.now,
            epsilon=g.accountant.epsilon() if self.dp_on else math.nan,
            noise_multiplier=g.noise_multiplier if self.dp_on and applied else 0.0,
            sampling_rate=g.sampling_rate if self.dp_on else 0.0)

    def _noise_room(self, g: Group, plan: RoundPlan) -> int:
        """Distributed DP: the integer magnitude the summed noise stays within, at most every selected device's
        share summed (variance selected / shares times the target)."""
        instructions = self._secure_dp(g, plan)
        if not instructions.get("noise_stds"):
            return 0
        spread = math.sqrt(len(plan.devices) / instructions["noise_shares"])
        return dp.noise_room(max(instructions["noise_stds"]) * spread)

    def _phase(self, phase: str, messages: Mapping[int, Any], crashed: set[int], dropped: list[int]) -> dict[int, Any]:
        """Send one phase's messages to the devices' hosts; the replies of the devices that answered (the count of
        those that did not is appended to `dropped`)."""
        by_host: dict[int, dict[int, Any]] = {}
        for device, message in messages.items():
            by_host.setdefault(int(self.host_of[device]), {})[int(device)] = message
        got = self.fleet.exchange(phase, by_host, self.cfg.runtime.round_timeout_s)
        crashed |= got.crashed
        replies = {d: r for d, r in got.replies.items() if d in messages and not isinstance(r, DeviceFailure)}
        for d, r in got.replies.items():
            if isinstance(r, DeviceFailure):
                self.log.append(f"round {self.round}: device {d} dropped out of secure aggregation ({phase}): {r.error}")
        self._record_view(list(replies.values()))
        dropped.append(len(messages) - len(replies))
        return replies

    def _record_view(self, messages: Sequence[Any]) -> None:
        """Keep what the driver received, when a test or an audit asked for it (secure_view is a list)."""
        if self.secure_view is not None:
            self.secure_view.extend(messages)

    def _evaluate(self, records: list[RoundRecord], round_: int) -> None:
        """The task's metrics per group: on the devices' held-out data, and on the server's test set if it has one."""
        devices = evaluation_devices(len(self.host_of), self.cfg.train.eval_users, self.cfg.seed)
        devices = devices[~self.host_dead[self.host_of[devices]]]
        by_host = {int(h): (devices[self.host_of[devices] == h].tolist(), self.group_of[devices[self.host_of[devices] == h]].tolist())
                   for h in np.unique(self.host_of[devices])}
        evals = self.fleet.evaluate(by_host, {g.gid: g.device_model() for g in self.groups},
                                    {g.gid: g.width for g in self.groups}, round_, self.cfg.runtime.round_timeout_s)
        for g, rec in zip(self.groups, records):
            rec.metrics.update(weighted_metrics([e.evaluation for e in evals if e.group == g.gid]))
            rec.metrics.update({f"server_{k}": v for k, v in self._server_metrics(g, round_).items()})

    def _server_metrics(self, g: Group, round_: int) -> dict[str, float]:
        """The task's optional central evaluation and the strategy's own, of a group's global model."""
        out = {}
        if self.facts.server_eval:  # only then does the engine build a model (and import torch)
            import torch

            model = self.task.model(g.width)
            model.load_state_dict({k: torch.from_numpy(v) for k, v in g.params.items()}, strict=False)
            ev = self.task.evaluate_server(model, round_)
            if ev is not None:
                out.update(ev.metrics)
        out.update(g.strategy.evaluate(round_, g.params) or {})
        return out

    # ---- results and checkpoints ---------------------------------------------------------------------------
    def metrics_table(self):
        """All per-round records so far, as metrics.parquet's table."""
        return records_table(self.records)

    def messages(self) -> list[str]:
        """Log lines gathered so far (grouping merges, device failures, restarts, checkpoint fallbacks)."""
        return list(self.log)

    def finish(self) -> int:
        """Write the run's models, metrics and device-side state; returns the rounds done."""
        models = self.run_dir / "models"
        models.mkdir(parents=True, exist_ok=True)
        for g in self.groups:
            pq.write_table(arrays_to_table(g.params), models / f"group-{g.gid}.parquet")
        (models / "groups.json").write_text(json.dumps({str(g.gid): {"width": g.width} for g in self.groups}))
        pq.write_table(self.metrics_table(), self.run_dir / "metrics.parquet")
        self.fleet.save_local(str(self.run_dir))
        return self.round

    def close(self) -> None:
        """Release the fleet."""
        self.fleet.close()

    def checkpoint(self) -> str | None:
        """Atomically write every group's model and strategy state, RNG state and metrics; each host writes its
        devices' state itself, so private parameters never reach the driver. A host that dies while writing
        restarts (or leaves) as after a crash in training, and the live hosts write again; if one dies again the
        round gets no checkpoint (None), the previous one stands."""
        files = {}
        for g in self.groups:
            files[f"group-{g.gid}"] = arrays_to_table(g.params)
            files[f"optimizer-{g.gid}"] = arrays_to_table(g.strategy.state())
            if g.replica is not None:
                files[f"replica-{g.gid}"] = arrays_to_table(g.replica)
        digest = config_digest(self.cfg)
        crashed = self.fleet.checkpoint(self.round, digest)  # the hosts first: the manifest vouches for a round they hold
        if crashed:
            restarted = self._recover(crashed)
            for rec in self.records:
                if rec.round == self.round - 1:  # the round just run: its record counts these restarts too
                    rec.restarts += restarted
            failed = self.fleet.checkpoint(self.round, digest)
            if failed:
                self.log.append(f"round {self.round}: no checkpoint of this round: device hosts "
                                f"{sorted(failed)} died while writing it again; an earlier checkpoint stands")
                return None
        files["metrics"] = self.metrics_table()
        rng_states = {"select": self.rng.bit_generator.state,
                      "clocks": {str(g.gid): g.clock.state() for g in self.groups}}
        return self.store.save(self.round, files, config_hash=digest, rng_states=rng_states,
                               extra={"round": self.round})

    def restore(self, force: bool = False) -> int | None:
        """Continue from the newest valid checkpoint (falling back past corrupt ones); None when there is none."""
        ckpt = self.store.load_latest(config_hash=None if force else config_digest(self.cfg), warn=self.log.append,
                                      accept=self.fleet.checkpoint_problem)
        if ckpt is None:
            return None
        for g in self.groups:
            g.params = ckpt.arrays(f"group-{g.gid}")
            g.strategy.load_state(ckpt.arrays(f"optimizer-{g.gid}"))
            if g.replica is not None:
                g.replica = ckpt.arrays(f"replica-{g.gid}")
            g.clock = clock.SimClock.from_state(ckpt.rng_states["clocks"][str(g.gid)])
        self.rng.bit_generator.state = ckpt.rng_states["select"]
        self.fleet.restore(ckpt.round, ckpt.manifest["config_hash"])
        self.records = records_from_table(ckpt.table("metrics"))
        self._rebuild_accountants()
        self.round = ckpt.round
        return self.round
