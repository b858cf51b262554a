"""Framework overhead: fedray's round time, set-up and whole process against the same rounds in a plain loop.

Run: .venv/bin/python bench/overhead.py [--rounds 20] [--e2e-rounds 30] [--repeats 3] [--config conf/movielens.yaml ...]
                                        [--setup-only] [key=value ...]
Each workload (by default MovieLens, conf/movielens.yaml: 671 devices, 64 per round, 10 local steps, ternary
updates; and the digits CNN, conf/digits_cnn.yaml) runs the same per-round work on both sides: select, train
each participant, encode, decode, fuse, server step. The plain loop calls fedray's pure core directly
(Devices, the ternary codec, the strategy) in this process, one torch thread, no Ray. fedray runs the real
driver actor and device-host actors on an embedded local Ray; "1 host" puts every device on one actor so
compute is as serial as the plain loop and only the framework differs; the default (one host per CPU, two
here) lets local training use both cores.
Round times exclude the first round (warm-up) and the last (it evaluates); medians over the rest.

End to end (the first workload only): the whole process of `fedray run` for --e2e-rounds rounds (default
hosts, evaluation of every device after the last round) against a process running the plain loop for the
same rounds and the same final evaluation, each timed from launch to exit, --repeats times each, medians;
and fedray's set-up as `fedray run` prints it (from the command to the first round, without ray.init), by
phase. `--setup-only` times only that set-up: --repeats processes of `fedray run` for one round each.
The machine is shared with other sessions: timings are noisy, so read the ratios taken in one run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
import subprocess
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
from fedray.engine.devices import Devices, decode_update, initial_params  # noqa: E402
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


def whole_processes(conf: Path, rounds: int, extra: list[str], tmp: Path, index: int) -> tuple[float, float, dict[str, float]]:
    """Launch-to-exit seconds of the plain loop's process and of `fedray run`'s, and the set-up fedray printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "240"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--plain-process", str(conf), str(rounds), *extra],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = fedray_process(conf, rounds, extra, tmp / f"e2e-{index}")
    fedray_s = time.perf_counter() - t0
    return plain_s, fedray_s, setup_phases(out)


def setup_phases(output: str) -> dict[str, float]:
    """The set-up line of `fedray run`'s output as {"set-up": total, phase: seconds, ...}."""
    found = re.search(r"set-up ([\d.]+) s beyond ray\.init \((.*?)\)", " ".join(output.split()))
    if found is None:
        raise SystemExit(f"fedray run printed no set-up line:\n{output[-2000:]}")
    phases = {"set-up": float(found.group(1))}
    for part in found.group(2).split(", "):
        name, seconds, _ = part.rsplit(" ", 2)
        phases[name] = float(seconds)
    return phases


def fedray_process(conf: Path, rounds: int, extra: list[str], run_dir: Path) -> str:
    """`fedray run` in a process of its own (as a user starts it) for `rounds` rounds; its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "240"}
    return subprocess.run([sys.executable, "-c", "import sys; from fedray.cli import main; sys.exit(main())", "run",
                           str(conf), f"train.rounds={rounds}", f"train.eval_every={rounds}", "checkpoint.every=0",
                           *extra, f"run_dir={run_dir}"], check=True, env=env, capture_output=True, text=True).stdout


def print_setup(setups: list[dict[str, float]], loads: list[float]) -> None:
    """fedray's set-up by phase: median, min and max over the processes, with the load average they ran under."""
    print(f"\nfedray set-up, from `fedray run` to the first round without ray.init (median of {len(setups)}; "
          f"1-minute load average {min(loads):.1f} to {max(loads):.1f}, {os.cpu_count()} CPUs)")
    head = f"{'phase':<34}{'median s':>10}{'min':>8}{'max':>8}"
    print(head)
    print("-" * len(head))
    for name in setups[0]:
        ts = [s[name] for s in setups]
        print(f"{name:<34}{statistics.median(ts):>10.2f}{min(ts):>8.2f}{max(ts):>8.2f}")


def setup_only(conf: Path, repeats: int, extra: list[str]) -> None:
    """Print fedray's set-up by phase over `repeats` processes of `fedray run` for one round each."""
    setups, loads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(repeats):
            loads.append(os.getloadavg()[0])
            setups.append(setup_phases(fedray_process(conf, 1, extra, Path(tmp) / f"setup-{index}")))
    print_setup(setups, loads)


def end_to_end(conf: Path, rounds: int, repeats: int, extra: list[str]) -> None:
    """Print whole-process medians of both sides, their ratio, and fedray's set-up by phase."""
    plain, fedray, setups, loads = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(repeats):
            loads.append(os.getloadavg()[0])
            p, f, phases = whole_processes(conf, rounds, extra, Path(tmp), index)
            plain.append(p)
            fedray.append(f)
            setups.append(phases)
    print(f"\nend to end: {conf.name}, {rounds} rounds and a final evaluation of every device; median of {repeats} "
          "processes each (launch to exit)")
    head = f"{'process':<34}{'median s':>10}{'min':>8}{'max':>8}{'vs plain':>10}"
    print(head)
    print("-" * len(head))
    base = statistics.median(plain)
    for name, ts in (("plain loop, 1 process", plain), ("fedray run, default hosts", fedray)):
        print(f"{name:<34}{statistics.median(ts):>10.2f}{min(ts):>8.2f}{max(ts):>8.2f}{statistics.median(ts) / base:>9.2f}x")
    print_setup(setups, loads)


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
    ap.add_argument("--e2e-rounds", type=int, default=30, help="rounds of the whole-process comparison (0: skip it)")
    ap.add_argument("--repeats", type=int, default=3, help="whole processes timed on each side")
    ap.add_argument("--setup-only", action="store_true",
                    help="only fedray's set-up by phase: --repeats processes of `fedray run` for one round each")
    ap.add_argument("--plain-process", nargs=2, metavar=("CONFIG", "ROUNDS"), help=argparse.SUPPRESS)
    ap.add_argument("--config", action="append", type=Path, help="a job config to measure (repeatable)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides for both sides")
    args = ap.parse_args(argv)
    if args.plain_process:  # the plain side of the end-to-end comparison, in a process of its own
        run = plain_run(Path(args.plain_process[0]), int(args.plain_process[1]), args.overrides)
        n = len(run.devices.device_ids)  # every device scored after the last round, as fedray's run does
        run.devices.evaluate(range(n), [0] * n, {0: run.params}, {0: 1.0}, run.rounds - 1)
        return
    if args.setup_only:
        setup_only((args.config or CONFIGS)[0], args.repeats, args.overrides)
        return
    if 0 < args.rounds < 4:
        raise SystemExit("--rounds must be 0 (skip round times) or at least 4 (first and last rounds are not timed)")
    for conf in (args.config or CONFIGS) if args.rounds else []:
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
    if args.e2e_rounds:
        end_to_end((args.config or CONFIGS)[0], args.e2e_rounds, args.repeats, args.overrides)


if __name__ == "__main__":
    main()
