"""Framework overhead: fedray's round time on Ray against the same rounds in a plain single-process loop.

Run: .venv/bin/python bench/overhead.py [--rounds 20] [--config conf/movielens.yaml ...] [key=value ...]
Each workload (by default MovieLens, conf/movielens.yaml: 671 devices, 64 per round, 10 local steps, ternary
updates; and the digits CNN, conf/digits_cnn.yaml) runs the same per-round work on both sides: select, train
each participant, encode, decode, fuse, server step. The plain loop calls fedray's pure core directly
(Devices, the ternary codec, the strategy) in this process, one torch thread, no Ray. fedray runs the real
driver actor and device-host actors on an embedded local Ray; "1 host" puts every device on one actor so
compute is as serial as the plain loop and only the framework differs; the default (one host per CPU, two
here) lets local training use both cores.
Round times exclude the first round (warm-up) and the last (it evaluates); medians over the rest.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedray.cli import main as fedray_main  # noqa: E402
from fedray.config import load_config, to_plain  # noqa: E402
from fedray.core import selection  # noqa: E402
from fedray.engine.devices import Devices, decode_update  # noqa: E402
from fedray.engine.engine import initial_params  # noqa: E402
from fedray.engine.streams import Stream, stream  # noqa: E402
from fedray.strategies import build_strategy  # noqa: E402
from fedray.tasks import build_task, check_model  # noqa: E402

CONFIGS = [ROOT / "conf/movielens.yaml", ROOT / "conf/digits_cnn.yaml"]


def overrides(rounds: int, extra: list[str]) -> list[str]:
    """The measured job: no checkpoints and one evaluation at the end, so rounds are training only."""
    return [f"train.rounds={rounds}", f"train.eval_every={rounds}", "checkpoint.every=0", *extra]


@dataclass
class PlainRun:
    """A finished plain-loop run: seconds per round, when its first round began, and its final devices and weights."""

    times: list[float]
    first_round_at: float  # time.time() as round 0 began: set-up is everything before
    devices: Devices  # every device with the private state its training left
    params: dict[str, np.ndarray]  # the final global weights
    rounds: int


def plain_run(conf: Path, rounds: int, extra: list[str]) -> PlainRun:
    """The same federated rounds in one process through fedray's pure core, keeping what they ended with."""
    import torch

    torch.set_num_threads(1)  # as in every device host
    cfg = load_config(conf, overrides(rounds, extra))
    plain = to_plain(cfg)
    task = build_task(plain["task"])
    data = task.load(cfg.seed)
    n = len(data)
    devices = Devices(plain, task, data, np.arange(n), plain["tiers"][0], 0)
    params = initial_params(task, check_model(task), cfg.seed, 0, 1.0)
    s = plain["strategy"]
    strategy = build_strategy(s["name"], s["target"], {**s, "server_lr": s["server_lr"] or task.server_lr})
    rng, t = stream(cfg.seed, Stream.SELECT), cfg.train
    shapes = [v.shape for v in params.values()]
    times, first_round_at = [], time.time()
    for round_ in range(rounds):
        t0 = time.perf_counter()
        plan = strategy.configure(round_, np.arange(n), selection.participant_count(t.participants, n), t.over_select, rng)
        # trained and fused in device order, as the driver fuses
        results = [devices.train(int(d), params, 1.0, round_, plan.config) for d in np.sort(plan.devices)]
        updates = [dict(zip(params, decode_update(res.payload, shapes, cfg.compression.method))) for res in results]
        params = strategy.aggregate(round_, params, updates, [res.samples for res in results])
        times.append(time.perf_counter() - t0)
    return PlainRun(times, first_round_at, devices, params, rounds)


def plain_loop(conf: Path, rounds: int, extra: list[str]) -> tuple[list[float], int]:
    """Seconds per round of the same federated rounds in one process through fedray's pure core; and the device count."""
    run = plain_run(conf, rounds, extra)
    return run.times, len(run.devices.device_ids)


def fedray_rounds(conf: Path, rounds: int, per_actor: int | None, tmp: Path, extra: list[str]) -> list[float]:
    """Seconds per round of the real fedray job (driver and device-host actors on the embedded Ray);
    per_actor None keeps the default host count (one per CPU)."""
    run_dir = tmp / f"fedray-{conf.stem}-{per_actor}"
    hosts = [] if per_actor is None else [f"runtime.devices_per_actor={per_actor}"]
    with contextlib.redirect_stdout(io.StringIO()):
        code = fedray_main(["run", str(conf), *overrides(rounds, extra), *hosts, f"run_dir={run_dir}"])
    if code != 0:
        raise SystemExit(f"fedray run {conf} (devices_per_actor={per_actor}) failed with exit code {code}")
    return [r["wall_s"] for r in pq.read_table(run_dir / "metrics.parquet").to_pylist()]


def main(argv: list[str] | None = None) -> None:
    """Time both sides for each workload and print median round times and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--config", action="append", type=Path, help="a job config to measure (repeatable)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides for both sides")
    args = ap.parse_args(argv)
    if args.rounds < 4:
        raise SystemExit("--rounds must be at least 4 (first and last rounds are not timed)")
    for conf in args.config or CONFIGS:
        plain, n = plain_loop(conf, args.rounds, args.overrides)
        rows = [("plain loop, 1 process", plain[1:-1])]
        with tempfile.TemporaryDirectory() as tmp:
            for per_actor, name in ((n, "fedray, 1 device host"), (None, "fedray, default hosts")):
                rows.append((name, fedray_rounds(conf, args.rounds, per_actor, Path(tmp), args.overrides)[1:-1]))
        base = statistics.median(rows[0][1])
        print(f"\noverhead: {conf.name}, {n} devices; median of {args.rounds - 2} rounds"
              + (f"; {' '.join(args.overrides)}" if args.overrides else ""))
        head = f"{'run':<28}{'median s/round':>15}{'min':>8}{'max':>8}{'vs plain':>10}"
        print(head)
        print("-" * len(head))
        for name, ts in rows:
            print(f"{name:<28}{statistics.median(ts):>15.3f}{min(ts):>8.3f}{max(ts):>8.3f}"
                  f"{statistics.median(ts) / base:>9.2f}x")


if __name__ == "__main__":
    main()
