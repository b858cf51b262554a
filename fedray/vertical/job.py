"""``run_vertical``: build the party actors, align, code features, train M iterations, write results.

Assumes ``ray.init`` was done by the caller (``fedray.runtime``). Writes
``RUN_DIR/metrics.parquet`` (iteration, loss, auc, seconds) and each party's own final weights,
keyed by feature code, to ``RUN_DIR/parties/<party>.parquet`` (the business party's intercept has
code -1; with ``vertical.provider_workers`` > 1 a provider's path is a Parquet dataset directory,
one part per worker, read back whole by ``pyarrow.parquet.read_table``). Each party writes its
own file; weights never pass through the driver. Snapshots go to
``RUN_DIR/checkpoints/iteration-NNNNNN/`` every ``vertical.checkpoint_every`` (else
``checkpoint.every``) iterations; resuming a vertical run from them is not implemented.
"""
from __future__ import annotations

import pathlib
import statistics
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from fedray.data.vertical import VerticalDataError
from fedray.vertical.actors import BusinessParty, DataProvider, VerticalDriver
from fedray.vertical.config import _get
from fedray.vertical.protocol import BUSINESS, Settings


def _actor_cpus(cfg: Any) -> float:
    runtime = _get(cfg, "runtime")
    cpus = _get(runtime, "actor_cpus") if runtime is not None else None
    return float(cpus) if cpus else 0.25


def provider_names(v: Any) -> list[str]:
    names = list(_get(v, "provider_names") or [])
    return names or [f"provider{i}" for i in range(len(list(_get(v, "provider_paths"))))]


def write_metrics(history: list[dict], path: pathlib.Path) -> None:
    cols = ("iteration", "loss", "auc", "seconds")
    types = (pa.int64(), pa.float64(), pa.float64(), pa.float64())
    table = pa.table({c: pa.array([h[c] for h in history], t) for c, t in zip(cols, types)})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _cause(exc: BaseException) -> BaseException:
    """The party's own exception inside (possibly nested) Ray task errors."""
    while isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    return exc


def run_vertical(cfg: Any, run_dir: pathlib.Path, log: Callable[[str], None] = print,
                 record: bool = False) -> dict:
    """Run one vertical job. ``record=True`` (tests) adds the driver's message log under "messages"."""
    v = _get(cfg, "vertical")
    settings = Settings.from_config(v)
    seed = int(_get(cfg, "seed", 0) or 0)
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cpus = _actor_cpus(cfg)
    every = int(_get(v, "checkpoint_every") or 0)
    if not every:
        ck = _get(cfg, "checkpoint")
        every = int(_get(ck, "every", 0) or 0) if ck is not None else 0

    names = provider_names(v)
    paths = [str(pathlib.Path(p).resolve()) for p in _get(v, "provider_paths")]
    business = BusinessParty.options(num_cpus=cpus).remote(str(pathlib.Path(_get(v, "business_path")).resolve()),
                                                           settings)
    workers = int(_get(v, "provider_workers", 1) or 1)
    providers = {n: [DataProvider.options(num_cpus=cpus).remote(n, p, settings, (k, workers)) for k in range(workers)]
                 for n, p in zip(names, paths)}
    driver = VerticalDriver.options(num_cpus=cpus).remote(business, providers, settings, seed, record)
    actors = [driver, business, *(a for ws in providers.values() for a in ws)]
    try:
        try:
            info = ray.get(driver.setup.remote())
        except ray.exceptions.RayTaskError as exc:
            cause = _cause(exc)
            if isinstance(cause, (VerticalDataError, ValueError)):
                raise cause from None  # e.g. PSIError (duplicates, empty intersection), bad file
            raise
        for w in info["warnings"]:
            log(f"warning: {w}")
        log(f"vertical: {info['intersection']} aligned ids; feature codes {info['codes']} "
            f"(PSI {info['psi_seconds']:.1f} s)")
        history = []
        iterations = int(_get(v, "iterations"))
        for it in range(1, iterations + 1):
            m = ray.get(driver.iteration.remote())
            history.append({"iteration": it, **m})
            log(f"iteration {it}/{iterations}: loss {m['loss']:.5f} auc {m['auc']:.4f} ({m['seconds']:.2f} s)")
            if every and it % every == 0 and it < iterations:
                ray.get(driver.save.remote(str(run_dir / "checkpoints" / f"iteration-{it:06d}")))
        write_metrics(history, run_dir / "metrics.parquet")
        party_paths = ray.get(driver.save.remote(str(run_dir / "parties")))
        summary = {
            "job": "vertical",
            "intersection": info["intersection"],
            "codes": info["codes"],
            "iterations": iterations,
            "final_loss": history[-1]["loss"],
            "final_auc": history[-1]["auc"],
            "seconds_per_iteration": statistics.median(h["seconds"] for h in history),
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
        for a in actors:
            ray.kill(a)
