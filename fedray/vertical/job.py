"""``run_vertical``: build the party actors, align, code features, train M iterations, write results.

Assumes ``ray.init`` was done by the caller (``fedray.runtime``). Writes
``RUN_DIR/metrics.parquet`` (iteration; training loss and auc; val_loss and val_auc on the held-out
ids; seconds) and each party's own final model, keyed by feature code, to
``RUN_DIR/parties/<party>.parquet``: code, name, weight, and the party's fill value, centre and
scale of each column (the business party's intercept has code -1; with
``vertical.provider_workers`` > 1 a provider's path is a Parquet dataset directory, one part per
worker, read back whole by ``pyarrow.parquet.read_table``). Each party writes its own file;
weights never pass through the driver. With ``vertical.early_stopping.patience`` > 0 the run
stops once the validation loss has not improved for that many iterations; the files then hold the
last iteration's weights.

Checkpoints. Every ``vertical.checkpoint_every`` (else ``checkpoint.every``) iterations, and after
the last one, a ``fedray.checkpoint.CheckpointStore`` checkpoint goes to ``checkpoint.uri`` (else
``RUN_DIR/checkpoints``), keeping ``checkpoint.keep``. It holds one table per party,
``party-<name>``: that party's weights and optimizer state keyed by feature code (all workers of
a provider together, so a resume may use another ``provider_workers``); ``metrics`` (the iterations
so far); and in the manifest the iteration, the driver's batch generator state, the intersection
size and the code blocks. Privacy: in a real deployment each party checkpoints its own state to its
own storage. This simulation gathers the parties' tables in the job process (never in the
coordinating driver actor) and writes them into one checkpoint directory, one file per party.

Resume (``resume=True``, ``fedray resume RUN_DIR``) redoes PSI and feature coding, which give the
same intersection and codes for the same files, makes a fresh CKKS key pair (ciphertexts never
outlive an iteration), loads every party's state by feature code and continues after the
checkpoint's iteration. PSI orders the aligned rows by a fresh blinding key, so mini-batches after
a resume are drawn with the saved generator over a new row order; vertical runs are not
bit-reproducible anyway (CKKS noise, random masks).

SecureBoost (``vertical.model: secureboost``, ``fedray.vertical.secureboost``) runs through the
same loop with boosting actors: one iteration is one tree (``vertical.boost.trees`` of them), the
business party's model file holds the trees and each provider's its split lookup table; its
checkpoint holds ``party-business-trees``, ``party-business-scores`` (scores keyed by id) and each
provider's split tables (a resume needs the same ``provider_workers``).

Faults. Party actors are named ``fedray-vertical-<run>-<party>`` (``-<k>`` per provider worker).
If one dies, or rejects a message (a ``CKKSError``: a ciphertext of another context), the run
stops with a ``VerticalPartyError`` naming the party and the last checkpoint to resume from.
"""
from __future__ import annotations

import dataclasses
import pathlib
import secrets
import statistics
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from fedray.checkpoint import Checkpoint, CheckpointError, CheckpointStore, config_hash
from fedray.data.vertical import VerticalDataError
from fedray.vertical.actors import (BoostBusinessParty, BoostProviderParty, BusinessParty, DataProvider,
                                    VerticalDriver)
from fedray.vertical.ckks import CKKSError
from fedray.vertical.config import _get
from fedray.vertical.errors import VerticalPartyError
from fedray.vertical.protocol import BUSINESS, Settings, progress

ACTOR_PREFIX = "fedray-vertical"
PING_TIMEOUT_S = 30.0
# Keys of the vertical section that do not change results: the checkpoint cadence, how many
# processes a provider's features are split over (its state is keyed by feature code), and the
# providers' plaintext cache.
NON_RESULT_KEYS = ("checkpoint_every", "provider_workers", "plaintext_cache_mb")


def _actor_cpus(cfg: Any) -> float:
    runtime = _get(cfg, "runtime")
    cpus = _get(runtime, "actor_cpus") if runtime is not None else None
    return float(cpus) if cpus else 0.25


def provider_names(v: Any) -> list[str]:
    names = list(_get(v, "provider_names") or [])
    return names or [f"provider{i}" for i in range(len(list(_get(v, "provider_paths"))))]


def write_metrics(history: list[dict], path: pathlib.Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(metrics_table(history), tmp)
    tmp.replace(path)


METRIC_COLUMNS = ("iteration", "loss", "auc", "val_loss", "val_auc", "seconds")


def metrics_table(history: list[dict]) -> pa.Table:
    cols = METRIC_COLUMNS
    types = (pa.int64(),) + (pa.float64(),) * (len(cols) - 1)
    return pa.table({c: pa.array([h[c] for h in history], t) for c, t in zip(cols, types)})


def _plain(x: Any) -> Any:
    """A plain dict of a vertical section given as DictConfig, dataclass or dict."""
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(x, DictConfig):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(x)


def vertical_digest(cfg: Any) -> str:
    """sha256 of what changes a vertical run's results: the seed and the vertical section."""
    v = _plain(_get(cfg, "vertical"))
    for key in NON_RESULT_KEYS:
        v.pop(key, None)
    return config_hash({"job": "vertical", "seed": int(_get(cfg, "seed", 0) or 0), "vertical": v})


def _cause(exc: BaseException) -> BaseException:
    """The party's own exception inside (possibly nested) Ray task errors."""
    while isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Parties:
    """The run's actors by party: names, handles, liveness."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.actors: dict[str, tuple[str, Any]] = {}  # actor name -> (party, handle)

    def name(self, party: str, worker: Optional[int] = None) -> str:
        return f"{ACTOR_PREFIX}-{self.run_id}-{party}" + ("" if worker is None else f"-{worker}")

    def add(self, party: str, name: str, handle: Any) -> Any:
        self.actors[name] = (party, handle)
        return handle

    def handles(self) -> list:
        return [h for _, h in self.actors.values()]

    def dead(self) -> list[tuple[str, str]]:
        """(party, actor name) of every actor that no longer answers (died or was killed)."""
        refs = {name: h.__ray_ready__.remote() for name, (_, h) in self.actors.items()}
        out = []
        for name, ref in refs.items():
            try:
                ray.get(ref, timeout=PING_TIMEOUT_S)
            except ray.exceptions.RayActorError:
                out.append((self.actors[name][0], name))
            except ray.exceptions.GetTimeoutError:
                pass  # busy, not dead
        return out


def run_vertical(cfg: Any, run_dir: pathlib.Path, log: Callable[[str], None] = print,
                 record: bool = False, resume: bool = False, force: bool = False) -> dict:
    """Run one vertical job. ``record=True`` (tests) adds the driver's message log under "messages".

    ``resume=True``: continue from the newest valid checkpoint (a fresh start if there is none).
    It must have been written under the same result-affecting config (else CheckpointError), unless
    ``force``.
    """
    v = _get(cfg, "vertical")
    settings = Settings.from_config(v)
    seed = int(_get(cfg, "seed", 0) or 0)
    run_dir = pathlib.Path(run_dir)
    cpus = _actor_cpus(cfg)
    every = int(_get(v, "checkpoint_every") or 0)
    ck = _get(cfg, "checkpoint")
    if not every:
        every = int(_get(ck, "every", 0) or 0) if ck is not None else 0
    keep = int(_get(ck, "keep", 3) or 3) if ck is not None else 3
    uri = (_get(ck, "uri") if ck is not None else None) or str(run_dir / "checkpoints")
    store = CheckpointStore(uri, keep=keep)
    digest = vertical_digest(cfg)
    iterations = settings.boost.trees if settings.model == "secureboost" else int(_get(v, "iterations"))

    # A checkpoint of another config fails here, before any actor or PSI.
    ckpt = store.load_latest(config_hash=None if force else digest,
                             warn=lambda m: log(f"warning: {m}")) if resume else None
    if resume and ckpt is None:
        log(f"no checkpoint under {uri}: starting from iteration 1")
    run_dir.mkdir(parents=True, exist_ok=True)

    names = provider_names(v)
    paths = [str(pathlib.Path(p).resolve()) for p in _get(v, "provider_paths")]
    workers = int(_get(v, "provider_workers", 1) or 1)
    parties = _Parties(f"{run_dir.name}-{secrets.token_hex(3)}")
    boost = settings.model == "secureboost"
    business_path = str(pathlib.Path(_get(v, "business_path")).resolve())
    options = BoostBusinessParty.options if boost else BusinessParty.options
    business = parties.add(BUSINESS, parties.name(BUSINESS), options(num_cpus=cpus, name=parties.name(BUSINESS)).remote(
        business_path, settings, *([seed] if boost else [])))
    providers = {}
    for n, p in zip(names, paths):
        providers[n] = []
        for k in range(workers):
            actor = parties.name(n, k if workers > 1 else None)
            options = BoostProviderParty.options if boost else DataProvider.options
            providers[n].append(parties.add(n, actor, options(num_cpus=cpus, name=actor).remote(
                n, p, settings, (k, workers))))
    driver = parties.add("driver", parties.name("driver"), VerticalDriver.options(
        num_cpus=cpus, name=parties.name("driver")).remote(business, providers, settings, seed, record))
    workers_of = {BUSINESS: [business], **providers}
    stage = {"where": "setup (PSI and feature coding)", "iteration": 0, "checkpoint": ckpt.round if ckpt else None}

    def failure(exc: BaseException) -> BaseException:
        """The error to raise for an exception out of the parties: a VerticalPartyError naming the party
        when an actor died or rejected a message, else the original."""
        cause = _cause(exc)
        where, last = stage["where"], stage["checkpoint"]
        if last is not None:
            hint = f"resume with `fedray resume {run_dir}` from the checkpoint of iteration {last}"
        elif every:
            hint = "no checkpoint was written yet; run it again"
        else:
            hint = "checkpoints are off (checkpoint.every=0); run it again"
        dead = parties.dead()
        if dead:
            who = ", ".join(f"'{p}' (actor {a})" for p, a in dead)
            return VerticalPartyError(f"vertical party {who} died during {where}; the run stopped: {hint}",
                                      party=dead[0][0], iteration=stage["iteration"], checkpoint=last)
        if isinstance(cause, CKKSError):
            return VerticalPartyError(f"during {where}: {_first_line(cause)}; the run stopped: {hint}",
                                      party=str(cause).split(":")[0], iteration=stage["iteration"], checkpoint=last)
        if isinstance(cause, ray.exceptions.RayActorError):
            return VerticalPartyError(f"a vertical party actor died during {where} ({_first_line(cause)}); "
                                      f"the run stopped: {hint}", iteration=stage["iteration"], checkpoint=last)
        return exc

    def call(ref: Any) -> Any:
        try:
            return ray.get(ref)
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
            err = failure(exc)
            if err is exc:
                raise
            raise err from None

    def checkpoint(it: int, history: list[dict], info: dict) -> str:
        """One file per party, its state keyed by feature code, gathered here (see the module doc)."""
        stage["where"] = f"the checkpoint of iteration {it}"
        tstate = call(driver.state.remote())
        refs = {p: [h.export_state.remote() for h in hs] for p, hs in workers_of.items()}
        files = {}
        for p, rs in refs.items():
            states = [call(r) for r in rs]
            if isinstance(states[0], dict):  # a party with several tables (SecureBoost's business party)
                files.update({f"party-{p}-{name}": table for name, table in states[0].items()})
            else:
                files[f"party-{p}"] = pa.concat_tables(states)
        files["metrics"] = metrics_table(history)
        path = store.save(it, files, config_hash=digest, rng_states={"trainer": tstate},
                          extra={"iteration": it, "intersection": info["intersection"], "codes": info["codes"],
                                 "parties": sorted(workers_of)})
        stage["checkpoint"] = it
        return path

    def restore(ck: Checkpoint, info: dict) -> list[dict]:
        extra = ck.extra
        if extra.get("intersection") != info["intersection"] or extra.get("codes") != info["codes"]:
            raise CheckpointError(
                f"checkpoint {ck.path} was written for {extra.get('intersection')} aligned ids and codes "
                f"{extra.get('codes')}, but the parties' files now give {info['intersection']} ids and codes "
                f"{info['codes']}: the data changed")
        loads = []
        for p, hs in workers_of.items():
            if f"party-{p}" in ck.names:
                state = ck.table(f"party-{p}")
            else:
                prefix = f"party-{p}-"
                state = {n[len(prefix):]: ck.table(n) for n in ck.names if n.startswith(prefix)}
            loads += [h.import_state.remote(state) for h in hs]  # straight to the party, not via the driver
        try:
            ray.get(loads)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(_cause(exc), ValueError):  # a party lacks weights for some of its codes
                raise CheckpointError(f"checkpoint {ck.path}: {_first_line(_cause(exc))}") from None
            call(loads)  # a dead party: raise its VerticalPartyError
        call(driver.load_state.remote(ck.rng_states["trainer"]))
        return ck.table("metrics").to_pylist()

    try:
        try:
            info = ray.get(driver.setup.remote())
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
            cause = _cause(exc)
            if isinstance(cause, (VerticalDataError, ValueError)) and not isinstance(cause, CKKSError):
                raise cause from None  # e.g. PSIError (duplicates, empty intersection), bad file
            err = failure(exc)
            if err is exc:
                raise
            raise err from None
        for w in info["warnings"]:
            log(f"warning: {w}")
        log(f"vertical: {info['intersection']} aligned ids; feature codes {info['codes']} "
            f"(PSI {info['psi_seconds']:.1f} s)")
        history: list[dict] = []
        start = 0
        if ckpt is not None:
            stage["where"] = f"loading the checkpoint of iteration {ckpt.round}"
            history = restore(ckpt, info)
            start = ckpt.round
            log(f"resumed from the checkpoint of iteration {start} ({ckpt.path})")
        stopped = None
        if ckpt is not None and call(driver.stopping.remote())[0]:
            stopped = start  # the checkpointed run had already stopped early
            log(f"early stopping had ended this run after iteration {start}")
        for it in range(start + 1, iterations + 1 if stopped is None else start + 1):
            stage.update(where=f"iteration {it}", iteration=it)
            m = call(driver.iteration.remote())
            history.append({"iteration": it, **m})
            log(f"{'tree' if boost else 'iteration'} {it}/{iterations}: {progress(m)}")
            stop, best = call(driver.stopping.remote())
            if stop:
                stopped = it
                log(f"early stopping after iteration {it}: the validation loss last improved at iteration {best}")
            if every and (it % every == 0 or it == iterations or stop):
                checkpoint(it, history, info)
            if stop:
                break
        if history:
            unit = "trees" if boost else "iterations"
            log(f"validation AUC {history[-1]['val_auc']:.4f} (loss {history[-1]['val_loss']:.5f}) on "
                f"{info['validation_rows']} held-out ids after {len(history)} {unit}")
        stage["where"] = "writing the results"
        write_metrics(history, run_dir / "metrics.parquet")
        party_paths = call(driver.save.remote(str(run_dir / "parties")))
        seconds = [h["seconds"] for h in history[start:]] or [h["seconds"] for h in history] or [0.0]
        summary = {
            "job": "vertical",
            "intersection": info["intersection"],
            "train_rows": info["train_rows"],
            "validation_rows": info["validation_rows"],
            "codes": info["codes"],
            "iterations": iterations,
            "stopped_early_at": stopped,
            "resumed_from": start if ckpt is not None else None,
            "final_loss": history[-1]["loss"] if history else float("nan"),
            "final_auc": history[-1]["auc"] if history else float("nan"),
            "final_val_loss": history[-1]["val_loss"] if history else float("nan"),
            "final_val_auc": history[-1]["val_auc"] if history else float("nan"),
            "seconds_per_iteration": statistics.median(seconds),
            "psi_seconds": info["psi_seconds"],
            "metrics_path": str(run_dir / "metrics.parquet"),
            "party_paths": party_paths,
            "warnings": info["warnings"],
        }
        if record:
            summary["messages"] = ray.get(driver.messages.remote())
            summary["driver_context_private"] = ray.get(driver.context_is_private.remote())
        return summary
    finally:
        for a in parties.handles():
            ray.kill(a)
