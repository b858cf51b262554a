"""Driver actor: device registry, tier groups, and the round loop (select, broadcast, collect, fuse, step).

The maths (selection, decoding, fusion, server optimizers, grouping, the simulated clock) lives in
fedray.core and fedray.models; this actor holds state and moves ObjectRefs.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from fedray import placement
from fedray.checkpoint import CheckpointStore, arrays_to_table
from fedray.config import config_digest, from_plain
from fedray.core import clock, fusion, grouping, selection, ternary, validate
from fedray.core.grouping import HW_FIELDS
from fedray.data import load_recdata
from fedray.horizontal.device import decode_update, stream
from fedray.horizontal.host import DeviceHost
from fedray.models.recommender import ModelSpec, init_global, scaled_spec
from fedray.runtime import TIER_REQUEST, check_tiers, tier_resource

STREAM_SELECT, STREAM_TIERS, STREAM_INIT, STREAM_GROUP, STREAM_BCAST = 10, 11, 12, 13, 15


@dataclass
class Group:
    """One group of devices with its own model shape, global parameters, optimizer and simulated clock."""

    gid: int
    devices: np.ndarray
    spec: ModelSpec
    params: dict
    opt: fusion.ServerOptimizer
    clock: clock.SimClock
    gflops: float  # median reported compute of its devices
    replica: dict | None = None  # the model as devices reconstruct it from ternary broadcasts (None: float32)

    def device_model(self) -> dict:
        """The parameters devices hold: the replica under ternary broadcast, else the global model itself."""
        return self.params if self.replica is None else self.replica


def split_by_share(n: int, shares: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Device ids per tier: a seeded permutation cut by the tiers' shares (largest remainders)."""
    raw = np.asarray(shares) * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    perm = rng.permutation(n)
    return [np.sort(part) for part in np.split(perm, np.cumsum(counts)[:-1])]


def gather(calls: list, timeout_s: float) -> tuple[list, int, set[int], int]:
    """Drain the hosts' result streams until they end or time out -> (results, lost, crashed hosts, unanswered).

    results holds each answering device's record ({"device", "error"} when its training raised). A host whose
    stream breaks loses the devices it had not answered for (a dead host is also returned, to be restarted);
    streams still running at the deadline are cancelled and their devices counted as unanswered.
    """
    deadline = time.monotonic() + timeout_s
    left = {gen: (h, len(devices)) for h, devices, gen in calls}
    results, lost, crashed = [], 0, set()
    while left:
        ready, _ = ray.wait(list(left), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        gen = ready[0]
        h, n = left.pop(gen)
        try:
            results.append(ray.get(next(gen)))
        except StopIteration:
            lost += n  # a stream that ended before its devices did (only a misbehaving host does that)
            continue
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.TaskCancelledError) as e:
            lost += n
            if isinstance(e, ray.exceptions.RayActorError):
                crashed.add(h)
            continue
        left[gen] = (h, n - 1)
    for gen in left:
        ray.cancel(gen)
    return results, lost, crashed, sum(n for _, n in left.values())


@ray.remote
class Driver:
    """Coordinates a horizontal run: it never sees device data or private user vectors, only encoded updates."""

    def __init__(self, cfg: dict, run_dir: str):
        self.plain = cfg
        self.cfg = from_plain(cfg)
        self.run_dir = Path(run_dir)
        self.round = 0
        self.records: list[dict] = []
        self.rng = stream(self.cfg.seed, STREAM_SELECT)
        self.store = CheckpointStore(self.cfg.checkpoint.uri or str(self.run_dir / "checkpoints"), keep=self.cfg.checkpoint.keep)
        self.log: list[str] = []
        self.tier_names = [t.name for t in self.cfg.tiers]
        self.tier_latency = np.array([t.latency_ms / 1000 for t in self.cfg.tiers])

    # ---- setup -------------------------------------------------------------------------------------------
    def setup(self) -> dict:
        """Start device hosts on their tiers' nodes, collect reported hardware, form groups, size their models."""
        cfg = self.cfg
        data = load_recdata(cfg.data, cfg.seed)  # the simulation enumerates devices and the item catalogue only
        n_users, n_items = data.n_users, data.n_items
        del data
        tiers = [dict(t) for t in cfg.tiers]
        per_tier = split_by_share(n_users, [t["share"] for t in tiers], stream(cfg.seed, STREAM_TIERS))
        chunks = [[c for c in np.array_split(devices, max(1, -(-len(devices) // cfg.runtime.devices_per_actor))) if len(c)]
                  for devices in per_tier]
        # Fail now, naming the resource, rather than leave device hosts pending forever on a cluster that cannot hold them.
        check_tiers(self.tier_names, {t["name"]: len(c) * cfg.runtime.actor_cpus for t, c in zip(tiers, chunks) if c},
                    cfg.runtime.driver_cpus)
        self.hosts, self.host_of = [], np.zeros(n_users, np.int32)
        self.tier_of = np.zeros(n_users, np.int16)
        rt = cfg.runtime
        for ti, (tier, devices, tier_chunks) in enumerate(zip(tiers, per_tier, chunks)):
            self.tier_of[devices] = ti
            pg = (placement.reserve(self.run_dir, tier["name"], len(tier_chunks), rt.actor_cpus, rt.placement,
                                    rt.placement_timeout_s) if rt.placement != "default" and tier_chunks else None)
            for i, chunk in enumerate(tier_chunks):
                self.host_of[chunk] = len(self.hosts)
                self.hosts.append(DeviceHost.options(
                    num_cpus=rt.actor_cpus, resources={tier_resource(tier["name"]): TIER_REQUEST},
                    max_restarts=rt.max_restarts, max_task_retries=0,
                    scheduling_strategy=placement.host_strategy(pg, i) if pg else None,
                ).remote(self.plain, chunk.tolist(), tier, len(self.hosts), str(self.run_dir)))
        reports = ray.get([h.report.remote() for h in self.hosts], timeout=cfg.runtime.round_timeout_s)
        self.profiles = np.zeros((n_users, len(HW_FIELDS)))
        self.samples = np.zeros(n_users, np.int64)
        for rep in reports:
            self.profiles[rep["devices"]] = rep["profiles"]
            self.samples[rep["devices"]] = rep["samples"]
        self.host_node = [rep.get("node", "") for rep in reports]  # the Ray node each host runs on
        self._form_groups(n_items, tiers)
        self.bytes_float32 = {g.gid: 4 * sum(int(np.prod(s)) for s in g.spec.shapes().values()) for g in self.groups}
        self.group_of = np.zeros(n_users, np.int32)
        for g in self.groups:
            self.group_of[g.devices] = g.gid
        self.specs = {g.gid: g.spec for g in self.groups}
        self.host_dead = np.zeros(len(self.hosts), bool)
        self._write_grouping()
        return {"devices": n_users, "items": n_items, "hosts": len(self.hosts), "log": self.log,
                "groups": [{"group": g.gid, "devices": len(g.devices), "dim": g.spec.dim, "gflops": g.gflops}
                           for g in self.groups]}

    def _form_groups(self, n_items: int, tiers: list[dict]) -> None:
        """Group devices by reported hardware and give each group a model sized for it."""
        gc, mc = self.cfg.grouping, self.cfg.model
        if gc.method == "none":
            labels = np.zeros(len(self.profiles), np.int64)
        else:
            labels, merges = grouping.group_devices(
                self.profiles, gc.method, thresholds=list(gc.thresholds), k=gc.k, min_size=gc.min_size,
                rng=stream(self.cfg.seed, STREAM_GROUP), field=gc.by)
            self.log += [f"group {a} had fewer than {gc.min_size} devices: merged into group {b}" for a, b in merges]
        tier_gflops = np.array([t["gflops"] for t in tiers])
        self.groups = []
        for gid in np.unique(labels):
            devices = np.flatnonzero(labels == gid)
            gflops = float(np.median(self.profiles[devices, HW_FIELDS.index("gflops")]))
            width = 1.0 if gc.method == "none" else tiers[int(np.argmin(np.abs(np.log(tier_gflops / gflops))))]["width"]
            spec = scaled_spec(n_items, mc.dim, list(mc.hidden), mc.kind, width)
            t = self.cfg.train
            self.groups.append(Group(
                int(gid), devices, spec, init_global(spec, mc.init_std, stream(self.cfg.seed, STREAM_INIT, int(gid))),
                fusion.ServerOptimizer(t.server_opt, t.server_lr, t.adam_beta1, t.adam_beta2, t.adam_tau),
                clock.SimClock(), gflops))
            if self.cfg.compression.broadcast == "ternary":
                self.groups[-1].replica = dict(self.groups[-1].params)
            self.log.append(f"group {gid}: {len(devices)} devices, median {gflops:.1f} GFLOP/s, embedding dim {spec.dim}")

    def _write_grouping(self) -> None:
        """Record which tier, host and group every device got, with its reported hardware."""
        group_of = self.group_of
        cols = {"device": np.arange(len(self.profiles)), "tier": [self.tier_names[i] for i in self.tier_of],
                "host": self.host_of, "node": [self.host_node[h] for h in self.host_of], "group": group_of,
                "samples": self.samples}
        cols.update({f: self.profiles[:, i] for i, f in enumerate(HW_FIELDS)})
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), self.run_dir / "grouping.parquet")

    # ---- one round -----------------------------------------------------------------------------------------
    def run_round(self) -> list[dict]:
        """One federated round for every group concurrently; returns a metrics record per group."""
        t0 = time.perf_counter()
        r = self.round
        cfg = self.cfg
        launched = []
        for g in self.groups:
            model, down = self._broadcast(g, r)
            ref = ray.put(model)  # one broadcast object per group; devices receive the ObjectRef
            launched.append((g, down, ref, *self._launch(g, ref, r)))
        records, crashed = [], set()
        for g, down, ref, k, chosen, calls in launched:
            rec = self._collect(g, k, chosen, calls, r, down, crashed)
            retries = 0
            while not rec["applied"] and retries < cfg.train.max_round_retries:  # too few valid updates: again
                retries += 1
                self._recover(crashed)
                again = self._collect(g, *self._launch(g, ref, r), r, down, crashed)
                for key in ("selected", "failures", "rejected", "stragglers", "bytes_up", "bytes_down", "bytes_up_float32"):
                    again[key] += rec[key]
                rec = again
            rec["retries"] = retries
            records.append(rec)
        restarts = self._recover(crashed)
        for rec in records:
            rec["restarts"] = restarts
        self.round += 1
        if cfg.grouping.share_across and len(self.groups) > 1:
            shared = fusion.share_overlap([g.params for g in self.groups])
            for g, p in zip(self.groups, shared):
                g.params = p
            # Sharing needs every group's round, so the groups move in lockstep: each waits for the slowest
            # (as in HeteroFL, where all widths train in the same round). Without sharing the clocks stay apart.
            now = max(g.clock.now for g in self.groups)
            for g, rec in zip(self.groups, records):
                g.clock.advance(now - g.clock.now)
                rec["sim_time_s"] = g.clock.now
        if self.round % cfg.train.eval_every == 0 or self.round == cfg.train.rounds:
            self._evaluate(records, r)
        wall = time.perf_counter() - t0
        for rec in records:
            rec["wall_s"] = wall
        self.records.extend(records)
        if cfg.checkpoint.every and (self.round % cfg.checkpoint.every == 0 or self.round == cfg.train.rounds):
            self.checkpoint()
        return records

    def _broadcast(self, g: Group, r: int) -> tuple[dict, int]:
        """The model devices train from this round, and the bytes each one downloads for it.

        Under ternary broadcast the driver ternarizes (global - replica); the replica advances by exactly what
        devices decode, so quantization error is carried into the next round's difference (error feedback).
        The simulation hands hosts the reconstructed replica; bytes down count the ternary payload.
        """
        if g.replica is None:
            return g.params, self.bytes_float32[g.gid]
        names = list(g.params)
        payload, sent = ternary.encode([g.params[k] - g.replica[k] for k in names], stream(self.cfg.seed, STREAM_BCAST, r, g.gid),
                                       mode=self.cfg.compression.mode, rounding="threshold")
        g.replica = {k: (g.replica[k] + s).astype(np.float32) for k, s in zip(names, sent)}
        return g.replica, len(payload)

    def _launch(self, g: Group, ref: ray.ObjectRef, r: int) -> tuple[int, np.ndarray, list]:
        """Draw the round's participants among the group's live devices and start their local training:
        one streaming call per host -> (K, chosen, [(host, its devices, result stream)])."""
        alive = g.devices[~self.host_dead[self.host_of[g.devices]]]
        if len(alive) == 0:
            raise RuntimeError(f"group {g.gid} has no live device hosts left (all exceeded runtime.max_restarts)")
        k = selection.participant_count(self.cfg.train.participants, len(alive))
        chosen = selection.select(alive, k, self.cfg.train.over_select, self.rng)
        hosts = self.host_of[chosen]
        calls = []
        for h in np.unique(hosts):
            devices = [int(d) for d in chosen[hosts == h]]
            gen = self.hosts[h].train.options(num_returns="streaming").remote(devices, ref, g.spec, r)
            calls.append((int(h), devices, gen))
        return k, chosen, calls

    def _recover(self, crashed: set[int]) -> int:
        """Count the device hosts Ray restarted after a crash (each restores its devices from the newest
        checkpoint itself); hosts past runtime.max_restarts leave the federation with their devices."""
        restarted = 0
        for h in sorted(crashed):
            n = int((self.host_of == h).sum())
            if self._await_restart(h):
                restarted += 1
                self.log.append(f"round {self.round}: device host {h} restarted; its {n} devices rejoin from the last checkpoint")
            else:
                self.host_dead[h] = True
                self.log.append(f"round {self.round}: device host {h} is gone for good; its {n} devices leave")
        crashed.clear()
        return restarted

    def _await_restart(self, h: int) -> bool:
        """Wait until a crashed host answers again (calls fail while Ray restarts it); False if it never does."""
        deadline = time.monotonic() + min(self.cfg.runtime.round_timeout_s, 120.0)
        while True:
            try:
                ray.get(self.hosts[h].ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
                return True
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.25)

    def _collect(self, g: Group, k: int, chosen: np.ndarray, calls: list, r: int, down: int, crashed: set[int]) -> dict:
        """Wait for a group's updates, accept the first K by simulated arrival, validate, decode, fuse and step."""
        cfg = self.cfg
        arrived, failures, dead, unanswered = gather(calls, cfg.runtime.round_timeout_s)
        crashed |= dead  # they restart and rejoin after the round
        results, reasons = [], {}
        selected, seen = {int(d) for d in chosen}, set()
        max_bytes = self.bytes_float32[g.gid] + validate.HEADER_SLACK
        for res in arrived:
            if isinstance(res, dict) and set(res) == {"device", "error"}:  # the device's training raised
                failures += 1
                self.log.append(f"round {r}: device {res['device']} failed: {res['error']}")
                continue
            why = validate.check_result(res, selected, seen, max_bytes)
            if why is not None:
                reasons[why] = reasons.get(why, 0) + 1
                continue
            seen.add(int(res["device"]))
            results.append(res)
        devices = np.array([res["device"] for res in results], np.int64)
        bytes_up = np.array([len(res["payload"]) for res in results], np.float64)
        gi = [HW_FIELDS.index(f) for f in ("gflops", "up_mbps", "down_mbps")]
        prof = self.profiles[devices][:, gi] if len(devices) else np.zeros((0, 3))
        t = cfg.train
        flops = np.array([clock.mf_flops(int(self.samples[d]), t.local_steps, t.batch_size * (1 + t.negatives),
                                         g.spec.dim, g.spec.mlp_hidden) for d in devices])
        times = clock.device_round_time(flops, prof[:, 0], bytes_up, down, prof[:, 1], prof[:, 2],
                                        self.tier_latency[self.tier_of[devices]])
        accepted = clock.accept_by_deadline(times, k, t.deadline_s)
        shapes = list(g.spec.shapes().values())
        updates, weights, losses, clipped = [], [], [], 0
        for i in sorted(accepted, key=lambda i: devices[i]):  # fuse in device order: reproducible sums
            try:
                tensors = decode_update(results[i]["payload"], shapes, cfg.compression.method)
                why = validate.check_tensors(tensors, shapes)
            except ValueError as e:
                why = getattr(e, "reason", "invalid")
            if why is not None:  # rejected: it never touches the global model
                reasons[why] = reasons.get(why, 0) + 1
                continue
            tensors, was_clipped = validate.clip_norm(tensors, t.clip_update_norm)
            clipped += was_clipped
            updates.append(dict(zip(g.spec.shapes(), tensors)))
            weights.append(results[i]["samples"])
            losses.append(results[i]["loss"])
        applied = len(updates) >= t.min_updates
        if applied:
            fused = fusion.weighted_mean(updates, weights)
            if cfg.compression.update == "gradient":
                fused = {name: -v for name, v in fused.items()}
            g.params = g.opt.step(g.params, fused)
        g.clock.advance(clock.round_time(times[accepted]) if len(accepted) else 0.0)
        elements = sum(int(np.prod(s)) for s in shapes)
        up_acc = float(bytes_up[accepted].sum()) if len(accepted) else 0.0
        return {
            "round": r, "group": g.gid, "selected": len(chosen), "participants": len(updates),
            "stragglers": len(results) - len(accepted) + unanswered, "failures": failures,
            "rejected": int(sum(reasons.values())), "reject_reasons": json.dumps(reasons, sort_keys=True),
            "clipped": clipped, "applied": applied,
            "bytes_up": float(bytes_up.sum()), "bytes_down": down * len(chosen),
            "bytes_up_float32": float(4 * elements * len(results)),
            "bits_per_element": 8 * up_acc / max(1, elements * len(accepted)),
            "train_loss": float(np.average(losses, weights=weights)) if losses else float("nan"),
            "sim_round_s": clock.round_time(times[accepted]) if len(accepted) else 0.0, "sim_time_s": g.clock.now,
            "hr10": float("nan"), "ndcg10": float("nan"),
        }

    def _evaluate(self, records: list[dict], r: int) -> None:
        """HR@10 and NDCG@10 per group, computed on the devices (they hold the held-out items)."""
        n_eval = self.cfg.train.eval_users
        devices = np.arange(len(self.host_of))
        if n_eval and n_eval < len(devices):
            devices = np.sort(stream(self.cfg.seed, 14).choice(devices, n_eval, replace=False))
        refs = {g.gid: ray.put(g.device_model()) for g in self.groups}
        devices = devices[~self.host_dead[self.host_of[devices]]]
        calls = []
        for h in np.unique(self.host_of[devices]):
            mine = devices[self.host_of[devices] == h]
            calls.append(self.hosts[h].evaluate.remote(refs, self.specs, mine.tolist(), self.group_of[mine].tolist(), r))
        outs = []
        for call in calls:  # a host that crashed meanwhile just has no score this time
            try:
                outs.append(ray.get(call, timeout=self.cfg.runtime.round_timeout_s))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                pass
        if not outs:
            return
        groups = np.concatenate([o["groups"] for o in outs])
        hits = np.concatenate([o["hits"] for o in outs])
        ndcg = np.concatenate([o["ndcg"] for o in outs])
        for rec in records:
            sel = groups == rec["group"]
            if sel.any():
                rec["hr10"], rec["ndcg10"] = float(hits[sel].mean()), float(ndcg[sel].mean())

    # ---- results and checkpoints ---------------------------------------------------------------------------
    def metrics_table(self) -> pa.Table:
        """All per-round records so far."""
        return pa.Table.from_pylist(self.records)

    def finish(self) -> dict:
        """Write the run's models, metrics and device-side state; return a summary."""
        models = self.run_dir / "models"
        models.mkdir(parents=True, exist_ok=True)
        for g in self.groups:
            pq.write_table(arrays_to_table(g.params), models / f"group-{g.gid}.parquet")
        (models / "specs.json").write_text(json.dumps(
            {str(g.gid): {"n_items": g.spec.n_items, "dim": g.spec.dim, "hidden": list(g.spec.hidden),
                          "kind": g.spec.kind} for g in self.groups}))
        pq.write_table(self.metrics_table(), self.run_dir / "metrics.parquet")
        ray.get([h.save_local.remote(str(self.run_dir)) for h in self.hosts])
        return {"rounds": self.round, "groups": len(self.groups), "log": self.log}

    def checkpoint(self) -> str:
        """Atomically write every group's model and optimizer, RNG state, device state and metrics."""
        files = {}
        for g in self.groups:
            files[f"group-{g.gid}"] = arrays_to_table(g.params)
            files[f"optimizer-{g.gid}"] = arrays_to_table(g.opt.state())
            if g.replica is not None:
                files[f"replica-{g.gid}"] = arrays_to_table(g.replica)
        states = ray.get([h.export_state.remote() for h in self.hosts])
        files["devices"] = arrays_to_table({k: v for s in states for k, v in s.items()})
        files["metrics"] = self.metrics_table() if self.records else pa.table({"round": pa.array([], pa.int64())})
        rng_states = {"select": self.rng.bit_generator.state,
                      "clocks": {str(g.gid): g.clock.state() for g in self.groups}}
        return self.store.save(self.round, files, config_hash=config_digest(self.cfg), rng_states=rng_states,
                               extra={"round": self.round})

    def restore(self, force: bool = False) -> int | None:
        """Continue from the newest valid checkpoint (falling back past corrupt ones); None when there is none."""
        ckpt = self.store.load_latest(config_hash=None if force else config_digest(self.cfg), warn=self.log.append)
        if ckpt is None:
            return None
        for g in self.groups:
            g.params = ckpt.arrays(f"group-{g.gid}")
            g.opt.load_state(ckpt.arrays(f"optimizer-{g.gid}"))
            if g.replica is not None:
                g.replica = ckpt.arrays(f"replica-{g.gid}")
            g.clock = clock.SimClock.from_state(ckpt.rng_states["clocks"][str(g.gid)])
        self.rng.bit_generator.state = ckpt.rng_states["select"]
        devices = ckpt.arrays("devices")
        ray.get([h.import_state.remote(devices) for h in self.hosts])
        self.records = ckpt.table("metrics").to_pylist()
        self.round = ckpt.round
        return self.round

    def messages(self) -> list[str]:
        """Log lines gathered so far (grouping merges, checkpoint fallbacks)."""
        return list(self.log)
