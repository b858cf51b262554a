"""Entry for a horizontal run: start the driver (the round engine made remote), drive its rounds, report."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import ray
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedray import placement
from fedray.checkpoint import CheckpointError
from fedray.config import to_plain
from fedray.engine.records import RoundRecord
from fedray.horizontal.driver import DriverLost, driver_name, start_driver
from fedray.metrics import plot_curves, summarize, summary_table
from fedray.runtime import ClusterError, check_tiers


def progress_status(records: list[RoundRecord], latest: dict[int, dict[str, float]]) -> str:
    """The progress line's text: each group's training loss and its latest evaluated metrics."""
    parts = []
    for r in records:
        latest[r.group] = {**latest.get(r.group, {}), **r.metrics}
        shown = "".join(f" {name} {value:.3f}" for name, value in sorted(latest[r.group].items()) if not math.isnan(value))
        spent = "" if math.isnan(r.epsilon) else f" eps {r.epsilon:.2f}"
        parts.append(f"g{r.group}: loss {r.train_loss:.3f}{shown}{spent}")
    return "  ".join(parts)


def start_early(cfg: DictConfig, plain: dict, run_dir: Path, loaded: tuple[Any, Any, Any]) -> tuple[Any, Any, list[Any]]:
    """The loaded task and data in the object store for the driver, the hosts' shared data there (held for the
    run: a restarted host is built from it again), and the device hosts started now, beside the driver, for the
    plans it will make: their processes start while the driver's does, not after it."""
    from fedray.engine.engine import host_plans
    from fedray.horizontal.fleet import cluster_slots, put_shared, start_hosts

    task, data, _ = loaded
    plans = host_plans(len(data), [dict(t) for t in plain["tiers"]], cfg.runtime.devices_per_actor, cfg.seed,
                       cluster_slots())
    shared_ref = put_shared(task, data)
    return ray.put((task, data)), shared_ref, start_hosts(plain, plans, str(run_dir), shared_ref)


def setup_line(phases: dict[str, float], total_s: float | None) -> str:
    """How long set-up took: in all (from the command, without ray.init) when known, and by phase."""
    parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items())
    return f"set-up {total_s:.1f} s beyond ray.init ({parts})" if total_s is not None else f"set-up: {parts}"


def run_horizontal(cfg: DictConfig, run_dir: Path, console: Console | None = None, resume: bool = False,
                   force: bool = False, setup_since: float | None = None, loaded: tuple[Any, Any, Any] | None = None,
                   preflight_s: float | None = None) -> list[dict]:
    """Run (or resume) every round of a horizontal job; returns the per-group summary rows. `setup_since` (a
    perf_counter time) is when the command began, shifted by ray.init's duration, for the set-up line;
    `loaded` is the (task, data, facts) `fedray run` loaded to check the job, which the driver and hosts reuse,
    and `preflight_s` how long that check took."""
    console = console or Console()
    check_tiers(t.name for t in cfg.tiers)  # before any actor: a missing tier node fails now, not as a hang
    plain = to_plain(cfg)
    loaded_ref, shared_ref, hosts = None, None, None
    try:
        if loaded is not None:
            loaded_ref, shared_ref, hosts = start_early(cfg, plain, run_dir, loaded)
    except BaseException:
        placement.release(run_dir, [t.name for t in cfg.tiers])
        raise
    driver_at = time.perf_counter()
    driver = start_driver(plain, str(run_dir), cfg.runtime.driver_cpus, loaded_ref, hosts,
                          None if loaded is None else loaded[2])
    try:
        try:
            info = ray.get(driver.setup.remote())
            setup_done = time.perf_counter()
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, ClusterError):  # the fleet's capacity check: surface its message, not a traceback
                raise e.cause from None
            raise
        console.print(f"[bold]{info.devices} devices[/] on {info.hosts} device host{'' if info.hosts == 1 else 's'}")
        for line in info.log:
            console.print(f"  {line}")
        start = ray.get(driver.restore.remote(force)) if resume else None
        if resume and start is None:
            raise CheckpointError(f"{run_dir}: no checkpoint under {cfg.checkpoint.uri or Path(run_dir) / 'checkpoints'} "
                                  "to resume from (the run stopped before its first checkpoint: run it again)")
        shown = ray.get(driver.messages.remote())
        for line in shown[len(info.log):]:
            console.print(f"[yellow]{line}[/]")
        if start is not None:
            console.print(f"resumed from the checkpoint of round {start}")
        start = start or 0
        # the driver's process start and imports: what its set-up call took beyond the phases it measured
        started = {"driver start": max(0.0, setup_done - driver_at - sum(info.phases.values()))}
        phases = {**({"preflight": preflight_s} if preflight_s is not None else {}), **started, **info.phases}
        console.print(setup_line(phases, None if setup_since is None else time.perf_counter() - setup_since))
        with Progress(TextColumn("[bold blue]round"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            bar = progress.add_task("rounds", total=cfg.train.rounds, completed=start, status="")
            latest: dict[int, dict[str, float]] = {}
            for round_ in range(start, cfg.train.rounds):
                try:
                    recs = ray.get(driver.run_round.remote())
                except ray.exceptions.RayActorError as e:
                    if isinstance(e, ray.exceptions.RayTaskError):  # the round raised one (shown as is): no death
                        raise
                    raise DriverLost(f"the driver actor {driver_name(run_dir)} died during round {round_}; the run "
                                     f"stopped. Continue it from its newest checkpoint: fedray resume {run_dir}") from None
                if not recs:  # the privacy budget stops the run before this round
                    log = ray.get(driver.messages.remote())
                    for line in log[len(shown):]:
                        progress.console.print(f"[yellow]{line}[/]")
                    break
                if any(r.failures or r.rejected or r.retries for r in recs):
                    log = ray.get(driver.messages.remote())
                    for line in log[len(shown):]:
                        progress.console.print(f"[yellow]{line}[/]")
                    shown = log
                progress.update(bar, advance=1, status=progress_status(recs, latest))
        ray.get(driver.finish.remote())
        records = ray.get(driver.metrics_table.remote()).to_pylist()
        rows = summarize(records)
        console.print(summary_table(rows, f"fedray horizontal run: {run_dir}"))
        plot_curves(records, Path(run_dir) / "curves.png")
        (Path(run_dir) / "summary.json").write_text(json.dumps(rows, indent=1))
        ray.get(driver.close.remote())
    finally:  # the driver (its name frees for a resume), hosts and placement groups go, however the run ended
        ray.kill(driver)
        for host in hosts or []:
            ray.kill(host)
        placement.release(run_dir, [t.name for t in cfg.tiers])
    return rows
