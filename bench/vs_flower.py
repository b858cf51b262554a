"""fedray beside Flower's simulation engine and a plain single-process loop: one workload, one run of this script.

Run (it starts Ray, fedray's and Flower's own, one after the other):
  flock /tmp/fedray-ray.lock .venv/bin/python bench/vs_flower.py [--rounds 10] [--repeats 3] [key=value ...]

The workload is conf/movielens.yaml (671 devices, one per user, 64 per round, 10 local steps of MF; each user's
own vector stays on its device); after the last round the same seeded 200 devices are evaluated (HR@10, NDCG@10)
by all three (train.eval_users: in Flower each is a message round trip). All three
train the same model on the same data with the same local steps, seeded per (round, device) alike:
- plain loop: bench/overhead.py's loop over fedray's pure core in one process, one torch thread, no Ray;
- fedray: `fedray run` as its own process (driver and device hosts on an embedded Ray, one host per CPU);
- Flower: Flower's simulation engine (flwr 1.42.0, its own Ray; one ClientApp actor per CPU, one node per
  device, private vectors in Context.state) running FedAvg (FedAvgM with momentum 0 carries the task's server
  learning rate, as fedray's FedAvg does) with seeded sampling; its ClientApp calls the same task code
  (bench/flower_app.py). It lives in its own virtual environment, created on first use under --flower-venv.
Rows: float updates on all three (the like-for-like comparison), then ternary updates on the plain loop and
fedray (fedray's own wire format; Flower has none).

Each system runs as a fresh process. Set-up: from starting the process to its first round (interpreter, imports,
Ray, data, workers). End to end: the whole process. Median round: rounds 2 to R-1 (the first warms up, the last
evaluates in fedray). Every figure is the median over --repeats; ratios are to the plain loop with the same
updates, taken within each repeat, then the median.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import PlainRun, overrides, plain_run  # noqa: E402
from fedray.config import load_config, to_plain  # noqa: E402
from fedray.engine.engine import evaluation_devices, weighted_metrics  # noqa: E402

# Flower, and what the pure fedray modules its ClientApp imports need (fedray.engine pulls in the DP accountant)
FLOWER_PACKAGES = ["flwr[simulation]==1.42.0", "torch==2.13.0", "numpy", "pyarrow", "omegaconf", "dp-accounting>=0.6"]
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedray" / "flower-1.42.0"
SETUP_LINE = re.compile(r"\d+ devices on \d+ device hosts")  # fedray run prints it once set-up is done
FLOAT = ["compression.method=none"]
EVAL_USERS = "train.eval_users=200"  # after the last round all three evaluate the same seeded 200 devices


@dataclass
class Outcome:
    """One system's run: seconds per round, set-up and end to end, and its final metrics on the evaluated devices."""

    rounds: list[float]
    setup_s: float
    end_to_end_s: float
    metrics: dict[str, float]
    excluded_s: float = 0.0  # left out of set-up: Flower's query of every node's device id (for seeded sampling)

    @property
    def median_round(self) -> float:
        """Median over rounds 2..R-1: the first round warms up, and fedray's last one also evaluates."""
        return statistics.median(self.rounds[1:-1])


@dataclass
class Row:
    """A table row: its system and updates, the plain-loop row it is compared with, and one Outcome per repeat."""

    name: str
    base: str  # the plain-loop row with the same updates
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: str = ""  # why this row has no figures


def job_overrides(rounds: int, extra: list[str]) -> list[str]:
    """The measured job: overhead.py's (no checkpoints, one evaluation at the end) on a seeded sample of devices."""
    return overrides(rounds, [EVAL_USERS, *extra])


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None,
          mark: re.Pattern[str] | None = None) -> tuple[float, float, float | None]:
    """Run a process from the checkout with its output in `log`: (start, end, when a line matching `mark` came)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    marked = None
    start = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if marked is None and mark is not None and mark.search(line):
                marked = time.time()
            out.write(line)
        code = proc.wait()
    end = time.time()
    if code != 0:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {code}; the end of {log}:\n" + "\n".join(tail))
    return start, end, marked


def run_plain(conf: Path, rounds: int, extra: list[str], work: Path, tag: str) -> Outcome:
    """The plain loop in a fresh process (this script's --side plain)."""
    out = work / f"{tag}.json"
    start, end, _ = spawn([sys.executable, str(Path(__file__).resolve()), "--side", "plain", "--out", str(out),
                           "--config", str(conf), "--rounds", str(rounds), *extra], work / f"{tag}.log")
    got = json.loads(out.read_text())
    return Outcome(got["rounds"], got["first_round_at"] - start, end - start, got["metrics"])


def plain_metrics(run: PlainRun) -> dict[str, float]:
    """A finished plain loop's devices evaluated as fedray's engine evaluates them after the last round."""
    cfg = run.devices.cfg
    ids = evaluation_devices(len(run.devices.device_ids), cfg["train"]["eval_users"], run.devices.seed)
    evals = run.devices.evaluate(ids, np.zeros(len(ids), np.int64), {0: run.params}, {0: 1.0}, run.rounds - 1)
    return weighted_metrics([e.evaluation for e in evals])


def plain_side(conf: Path, rounds: int, extra: list[str], out: Path) -> None:
    """Inside the child: the plain loop's rounds and final metrics, as JSON."""
    run = plain_run(conf, rounds, [EVAL_USERS, *extra])
    out.write_text(json.dumps({"rounds": run.times, "first_round_at": run.first_round_at, "metrics": plain_metrics(run)}))


def run_fedray(conf: Path, rounds: int, extra: list[str], work: Path, tag: str) -> Outcome:
    """`fedray run` as its own process; set-up ends when it reports its devices and hosts."""
    run_dir = work / f"{tag}-run"
    start, end, ready = spawn([sys.executable, "-m", "fedray.cli", "run", str(conf), *job_overrides(rounds, extra),
                               f"run_dir={run_dir}"], work / f"{tag}.log", mark=SETUP_LINE)
    if ready is None:
        raise RuntimeError(f"fedray run never printed its set-up line ({SETUP_LINE.pattern}); see {work / f'{tag}.log'}")
    records = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    last = records[-1]
    metrics = {k: float(v) for k, v in last.items() if k in metric_names(last) and v is not None and not np.isnan(v)}
    return Outcome([r["wall_s"] for r in records], ready - start, end - start, metrics)


def metric_names(record: dict) -> list[str]:
    """The task's device metrics in a metrics.parquet row: the columns that are not RoundRecord fields."""
    from fedray.engine.records import COLUMNS

    return [k for k in record if k not in COLUMNS and not k.startswith("server_")]


def flower_python(venv: Path) -> tuple[Path | None, str]:
    """Python of Flower's virtual environment, created on first use; (None, why) when Flower cannot be installed."""
    python, ready = venv / "bin" / "python", venv / ".fedray-packages"
    if ready.is_file() and ready.read_text() == "\n".join(FLOWER_PACKAGES) and python.is_file():
        return python, ""
    print(f"creating Flower's virtual environment in {venv} ({' '.join(FLOWER_PACKAGES)}); this takes minutes", flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-q", *FLOWER_PACKAGES],
             [str(python), "-c", "import bench.flower_app"]]  # Flower and every fedray module the bench's app imports
    for cmd in steps:
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            lines = [l for l in detail.splitlines() if l.strip() and not l.startswith("WARNING: Location")]
            return None, f"`{' '.join(cmd[:4])} ...` failed: {' | '.join(lines[-3:]) or e}"
    ready.write_text("\n".join(FLOWER_PACKAGES))
    return python, ""


def run_flower(python: Path, conf: Path, rounds: int, extra: list[str], work: Path, tag: str) -> Outcome:
    """Flower's simulation engine in its own virtual environment (bench/flower_app.py) as its own process."""
    cfg = to_plain(load_config(conf, job_overrides(rounds, extra)))
    out, spec = work / f"{tag}.json", work / f"{tag}-spec.json"
    spec.write_text(json.dumps({"config": cfg, "rounds": rounds, "cpus": len(os.sched_getaffinity(0)), "out": str(out)}))
    start, end, _ = spawn([str(python), "-c", "from bench.flower_app import main; main()", str(spec)],
                          work / f"{tag}.log", env={"RAY_DEDUP_LOGS": "0"})
    got = json.loads(out.read_text())
    bounds = [got["first_round_at"], *got["round_ends"]]
    return Outcome(list(np.diff(bounds)), got["first_round_at"] - start - got["ordering_s"], end - start, got["metrics"],
                   got["ordering_s"])


def ratio(row: Row, base: Row, figure: str) -> float:
    """Median over repeats of the row's figure divided by the plain loop's in the same repeat."""
    return statistics.median(getattr(o, figure) / getattr(b, figure) for o, b in zip(row.outcomes, base.outcomes))


def print_table(rows: list[Row], title: str) -> None:
    """Medians over repeats and ratios to the plain loop with the same updates."""
    done = [r for r in rows if r.outcomes]
    names = sorted(set.intersection(*(set(o.metrics) for r in done for o in r.outcomes))) if done else []
    print(f"\n{title}")
    head = (f"{'run':<24}{'round s':>9}{'set-up s':>10}{'end to end s':>14}" + "".join(f"{m:>9}" for m in names)
            + f"{'round':>8}{'set-up':>8}{'e2e':>8}   (x plain loop)")
    print(head)
    print("-" * len(head))
    by_name = {r.name: r for r in rows}
    for r in rows:
        if not r.outcomes:
            print(f"{r.name:<24}skipped: {r.skipped}")
            continue
        med = statistics.median
        base = by_name[r.base]
        print(f"{r.name:<24}{med(o.median_round for o in r.outcomes):>9.3f}{med(o.setup_s for o in r.outcomes):>10.1f}"
              f"{med(o.end_to_end_s for o in r.outcomes):>14.1f}"
              + "".join(f"{med(o.metrics[m] for o in r.outcomes):>9.4f}" for m in names)
              + "".join(f"{ratio(r, base, f):>7.2f}x" if base.outcomes else f"{'-':>8}"
                        for f in ("median_round", "setup_s", "end_to_end_s")))
    for r in done:
        if any(o.excluded_s for o in r.outcomes):
            without = [o.end_to_end_s - o.excluded_s for o in r.outcomes]
            base = [o.end_to_end_s for o in by_name[r.base].outcomes] or [float("nan")] * len(without)
            print(f"{r.name}: set-up leaves out the median {statistics.median(o.excluded_s for o in r.outcomes):.1f} s its "
                  f"ServerApp spent asking every node for its device id (seeded sampling); end to end includes it. "
                  f"Without it, end to end is {statistics.median(without):.1f} s, "
                  f"{statistics.median(w / b for w, b in zip(without, base)):.2f}x the plain loop")


def main(argv: list[str] | None = None) -> None:
    """Run every system --repeats times, interleaved, and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", type=Path, default=ROOT / "conf/movielens.yaml")
    ap.add_argument("--flower-venv", type=Path, default=DEFAULT_VENV, help="Flower's virtual environment (made if absent)")
    ap.add_argument("--no-ternary", action="store_true", help="only the float rows")
    ap.add_argument("--side", choices=["plain"], help=argparse.SUPPRESS)  # internal: the plain loop's own process
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="key=value config overrides for every system")
    args = ap.parse_args(argv)
    if args.side == "plain":
        return plain_side(args.config, args.rounds, args.overrides, args.out)
    if args.rounds < 4:
        raise SystemExit("--rounds must be at least 4 (the first and last rounds are not in the median)")
    conf = args.config.resolve()
    python, why = flower_python(args.flower_venv)
    flower = f"Flower {FLOWER_PACKAGES[0].split('==')[1]}, float"
    rows = [Row("plain loop, float", "plain loop, float"), Row("fedray, float", "plain loop, float"),
            Row(flower, "plain loop, float", skipped=why)]
    if not args.no_ternary:
        rows += [Row("plain loop, ternary", "plain loop, ternary"), Row("fedray, ternary", "plain loop, ternary")]
    extra = {"float": [*FLOAT, *args.overrides], "ternary": list(args.overrides)}
    work = ROOT / "bench/out/vs_flower"  # each run's log, spec and results stay here for a look afterwards
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for repeat in range(args.repeats):
        for i, row in enumerate(rows):
            if row.skipped:
                continue
            updates = extra["float" if row.name.endswith("float") else "ternary"]
            tag = f"r{repeat}-{i}"
            print(f"repeat {repeat + 1}/{args.repeats}: {row.name}", flush=True)
            try:
                if row.name.startswith("plain"):
                    row.outcomes.append(run_plain(conf, args.rounds, updates, work, tag))
                elif row.name.startswith("fedray"):
                    row.outcomes.append(run_fedray(conf, args.rounds, updates, work, tag))
                else:
                    row.outcomes.append(run_flower(python, conf, args.rounds, updates, work, tag))
            except RuntimeError as e:  # one system failing leaves the others' rows
                row.skipped, row.outcomes = f"failed: {e}", []
                print(f"{row.name} {row.skipped}", file=sys.stderr)
    outcomes = {r.name: [asdict(o) for o in r.outcomes] or r.skipped for r in rows}
    (work / "outcomes.json").write_text(json.dumps(outcomes, indent=1))
    cfg = load_config(conf, job_overrides(args.rounds, args.overrides))
    print_table(rows, f"vs_flower: {conf.name}, {cfg.train.participants:g} devices per round, {cfg.train.local_steps} "
                      f"local steps, {args.rounds} rounds; medians of {args.repeats} repeats; one process per run, "
                      f"{len(os.sched_getaffinity(0))} CPUs" + (f"; {' '.join(args.overrides)}" if args.overrides else ""))


if __name__ == "__main__":
    main()
