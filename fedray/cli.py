"""`fedray run | resume | recommend | predict | submit | status | logs | stop`: the command line over config, runtime and the jobs."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console

from fedray.config import ConfigError, diff_keys, load_config, result_config, save_config, to_plain

EXIT_USAGE = 2


def _run_dir(cfg) -> Path:
    """The run directory a config names, or OUTPUT_DIR/NAME-<timestamp>."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return Path(cfg.output_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _preflight(cfg) -> tuple | None:
    """Read the job's input once before anything is created, so bad data stops the run with exit code 2; a
    horizontal job's loaded (task, data, facts), which the run then reuses."""
    loaded = None
    if cfg.job == "vertical":
        from fedray.data.vertical import check_party_files

        check_party_files(cfg.vertical)  # with the run's missing-value policy and the model's label kind
    elif cfg.job == "centralized":
        from fedray.data import load_recdata
        from fedray.data.partition import check_negatives

        check_negatives(load_recdata(cfg.data, cfg.seed), cfg.data.eval_negatives)
    else:
        loaded = check_horizontal(to_plain(cfg))
    if cfg.checkpoint.uri:  # a missing bucket or an unreachable endpoint fails now, not at the first checkpoint
        from fedray.checkpoint import CheckpointStore

        CheckpointStore(cfg.checkpoint.uri, cfg.checkpoint.keep).probe()
    return loaded


def check_horizontal(plain: dict) -> tuple:
    """Build the task, load its data, check its model and strategy: a bad target stops here, before Ray starts.
    Returns the loaded (task, data) and the task's facts (what the Ray driver needs instead of the task)."""
    from fedray.data import DataError
    from fedray.strategies import build_strategy
    from fedray.tasks import TaskError, build_task, task_facts

    task = build_task(plain["task"])
    name = type(task).__name__
    try:
        data = task.load(plain["seed"])
    except (DataError, TaskError):
        raise
    except Exception as e:
        raise TaskError(f"task.target={plain['task']['target']!r}: {name}.load(seed) raised {type(e).__name__}: {e}") from None
    if len(data) == 0:
        raise TaskError(f"task.target={plain['task']['target']!r}: {name}.load(seed) returned no devices")
    try:
        facts = task_facts(task, data)
    except TaskError:
        raise
    except Exception as e:
        raise TaskError(f"task.target={plain['task']['target']!r}: {name}.model(1.0) raised {type(e).__name__}: {e}") from None
    s = plain["strategy"]
    build_strategy(s["name"], s["target"], {**s, "server_lr": s["server_lr"] or task.server_lr})
    return task, data, facts


def execute(cfg, run_dir: Path, console: Console, resume: bool = False, force: bool = False,
            since: float | None = None, loaded: tuple | None = None, preflight_s: float | None = None) -> object:
    """Start or join Ray and run the configured job in run_dir; `since` (a perf_counter time) is when the command
    began, for the set-up time a horizontal run reports; `loaded` the preflight's (task, data, facts), reused."""
    from fedray import runtime

    init_at = time.perf_counter()
    started = runtime.start(cfg.runtime.address, [t.name for t in cfg.tiers], cfg.runtime.num_cpus)
    ray_init_s = time.perf_counter() - init_at
    try:
        if cfg.job == "horizontal":
            from fedray.horizontal.run import run_horizontal

            return run_horizontal(cfg, run_dir, console, resume=resume, force=force,
                                  setup_since=None if since is None else since + ray_init_s, loaded=loaded,
                                  preflight_s=preflight_s)
        if cfg.job == "centralized":
            from fedray.horizontal.centralized import run_centralized

            return run_centralized(cfg, run_dir, console)
        from fedray.vertical.job import run_vertical

        return run_vertical(cfg, run_dir, log=console.print, resume=resume, force=force)
    finally:
        if started:
            import ray

            ray.shutdown()


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Validate the config and its data, create the run directory, run the job."""
    since = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    resume = bool(cfg.resume)
    run_dir = _run_dir(cfg)
    if resume and not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"resume=true: {run_dir} holds no run to resume (set run_dir to an existing run)")
    checked = time.perf_counter()
    loaded = _preflight(cfg)
    preflight_s = time.perf_counter() - checked
    fresh = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir)
    console.print(f"run directory: {run_dir}")
    try:
        execute(cfg, run_dir, console, resume=resume, since=since, loaded=loaded, preflight_s=preflight_s)
    except BaseException:
        if fresh and not any((run_dir / p).exists() for p in ("checkpoints", "metrics.parquet")):
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping: leave no half-written run behind
        raise
    return 0


def _check_checkpoints(cfg, run_dir: Path, force: bool) -> None:
    """A run whose checkpoints are all invalid, or were written under another config (unless forced), is refused
    before Ray starts: CheckpointError names each checkpoint and what is wrong with it."""
    from fedray.checkpoint import CheckpointStore
    from fedray.config import config_digest

    store = CheckpointStore(cfg.checkpoint.uri or str(run_dir / "checkpoints"), cfg.checkpoint.keep)
    # the run itself warns about each checkpoint it skips
    store.load_latest(config_hash=None if force else config_digest(cfg), warn=lambda message: None)


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    """Continue a run from its newest valid checkpoint, under the config saved in its directory."""
    run_dir = Path(args.run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"{run_dir}: not a fedray run directory (no config.yaml)")
    before = load_config(saved)
    cfg = load_config(saved, [*args.overrides, f"run_dir={run_dir}", "resume=true"])
    changed = diff_keys(result_config(before), result_config(cfg))
    if changed and not args.force:
        raise ConfigError(f"{saved}: the overrides change results ({', '.join(changed)}); "
                          "resume refused (pass --force to resume anyway)")
    if cfg.job == "horizontal":
        _check_checkpoints(cfg, run_dir, force=bool(changed))
    execute(cfg, run_dir, console, resume=True, force=bool(changed))
    return 0


def cmd_recommend(args: argparse.Namespace, console: Console) -> int:
    """Print the top-k products for one user, computed device-side from the run's global model and the user's vector."""
    from fedray.recommend import recommend

    rows = recommend(Path(args.run_dir), args.user, args.k)
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.table import Table

    table = Table(title=f"top {args.k} for user {args.user}")
    for col in rows[0] if rows else ("rank", "item", "score"):
        table.add_column(str(col))
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The fedray argument parser."""
    parser = argparse.ArgumentParser(prog="fedray", description="Federated learning on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job from a YAML config with key=value overrides")
    run.add_argument("config")
    run.add_argument("overrides", nargs="*")
    run.set_defaults(func=cmd_run)
    res = sub.add_parser("resume", help="continue a run from its newest valid checkpoint")
    res.add_argument("run_dir")
    res.add_argument("overrides", nargs="*")
    res.add_argument("--force", action="store_true", help="resume even if the overrides change results")
    res.set_defaults(func=cmd_resume)
    rec = sub.add_parser("recommend", help="top-k products for a user of a finished run")
    rec.add_argument("run_dir")
    rec.add_argument("--user", type=int, required=True, help="the user's id in the data (e.g. MovieLens userId)")
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--json", action="store_true")
    rec.set_defaults(func=cmd_recommend)
    from fedray.vertical.predict import add_predict_parser

    add_predict_parser(sub)  # predict: joint scoring of new customers with a vertical run's model
    from fedray.jobs import add_commands

    add_commands(sub)  # submit | status | logs | stop: jobs on a Ray cluster (fedray/jobs.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 2 for bad configs, data or usage, with a message naming what is wrong."""
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    errors = Console(stderr=True, width=None if console.is_terminal else 140)  # errors go to stderr, results to stdout
    from fedray.checkpoint import CheckpointError
    from fedray.data import DataError
    from fedray.data.vertical import VerticalDataError
    from fedray.errors import ClusterError, DriverLost, TaskError
    from fedray.vertical.errors import VerticalPartyError
    from fedray.jobs import JobError
    from fedray.strategies import StrategyError

    try:
        return args.func(args, console)
    except (ConfigError, DataError, VerticalDataError, CheckpointError, JobError, ClusterError, TaskError,
            StrategyError) as e:
        from rich.markup import escape

        errors.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        return EXIT_USAGE
    except (VerticalPartyError, DriverLost) as e:  # a party or the driver died: a fault, resumable (exit 1)
        from rich.markup import escape

        errors.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
