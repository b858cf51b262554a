"""Scale benchmark: set-up, round time and memory for 1,000, 100,000 and 1,000,000 simulated devices, 100 per round.

Each size runs the default horizontal job (synthetic data, MF, ternary updates) on an embedded local Ray
with a fixed number of device hosts (`runtime.devices_per_actor = N / hosts`; the default 2 is the default
host count on a 2-core box), so the per-round work (100 trainings) and the parallelism are the same at every
size and what grows is the registry: devices, their profiles, sample counts and state. Synthetic users are
drawn lazily from their own seeds and only devices that trained hold state, so a million registered devices
cost compact arrays. Evaluation runs once, after the last round, on `train.eval_users` devices.

Reported per size:
- setup s: from creating the Driver actor to the end of Driver.setup (its process start, task load, host
  start, reports, grouping), and the phases the driver measured;
- round s: median wall time of rounds 2..R-1 as the driver measures it (round 1 warms up, and round R
  includes the final evaluation), and its ratio to the smallest size's in the same run;
- RSS: resident memory of the Driver actor's process and of the device hosts' processes together (psutil,
  found by their `ray::` titles), the largest seen after setup and after each round. Pages the hosts map
  from the object store count in their RSS, so shared data may be counted more than once.

The machine is shared with other sessions: timings are noisy; compare ratios within one run.
Run: .venv/bin/python bench/scale.py [--sizes 1000 100000 1000000] [--rounds 6] [--hosts 2]
(starts its own Ray: run it when no other Ray cluster is up on the machine). With --in-process the same runs go
through the round engine and the in-process fleet, without Ray: the core's own set-up, round and memory cost.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import fedray  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))


def _procs(title: str) -> list:
    """Live processes whose Ray process title starts with `ray::<title>` (actor processes rename themselves)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline", "name"]):
        try:
            cmd = " ".join(p.info["cmdline"] or []) or p.info["name"] or ""
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if cmd.startswith(f"ray::{title}"):
            out.append(p)
    return out


def _rss_mb(title: str) -> float:
    import psutil

    total = 0
    for p in _procs(title):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def run_size(n: int, rounds: int, hosts: int, participants: int, eval_users: int, run_dir: Path) -> dict:
    """One run at n devices; returns its timings and memory."""
    import ray

    from fedray.config import load_config, to_plain
    from fedray.horizontal.driver import start_driver

    overrides = [f"data.synthetic.n_users={n}", f"train.participants={participants}", f"train.rounds={rounds}",
                 "train.eval_every=1000000", f"train.eval_users={eval_users}", "checkpoint.every=0",
                 f"runtime.devices_per_actor={-(-n // hosts)}", f"run_dir={run_dir}"]
    cfg = load_config(ROOT / "conf/default.yaml", overrides)
    t0 = time.perf_counter()
    driver = start_driver(to_plain(cfg), str(run_dir), cfg.runtime.driver_cpus)
    info = ray.get(driver.setup.remote())
    setup_s = time.perf_counter() - t0
    rss = [_rss_mb("Driver")]
    hosts_rss = [_rss_mb("DeviceHost")]
    walls, participants_seen = [], []
    for _ in range(rounds):
        recs = ray.get(driver.run_round.remote())
        walls.append(recs[0].wall_s)
        participants_seen.append(sum(r.participants for r in recs))
        rss.append(_rss_mb("Driver"))
        hosts_rss.append(_rss_mb("DeviceHost"))
    ray.kill(driver)
    for _ in range(50):  # let the killed actors' processes go before the next size is measured
        if not _procs("Driver") and not _procs("DeviceHost"):
            break
        time.sleep(0.2)
    return {"devices": n, "hosts": info.hosts, "per_round": int(np.median(participants_seen)),
            "setup_s": setup_s, "round_s": float(np.median(walls[1:-1] if rounds > 2 else walls)),
            "first_round_s": walls[0], "last_round_s": walls[-1], "driver_rss_mb": max(rss),
            "driver_rss_setup_mb": rss[0], "hosts_rss_mb": max(hosts_rss),
            "total_rss_mb": max(d + h for d, h in zip(rss, hosts_rss)), "phases": info.phases}


def run_size_in_process(n: int, rounds: int, hosts: int, participants: int, eval_users: int, run_dir: Path) -> dict:
    """The same run through the round engine and the in-process fleet (no Ray): the core's own cost at n devices.
    Memory is this process's peak RSS (driver and hosts in one; sizes run in ascending order)."""
    import resource

    import torch

    from fedray.config import load_config, to_plain
    from fedray.engine.engine import RoundEngine
    from fedray.engine.fleet import InProcessFleet

    torch.set_num_threads(1)  # as in every device host
    overrides = [f"data.synthetic.n_users={n}", f"train.participants={participants}", f"train.rounds={rounds}",
                 "train.eval_every=1000000", f"train.eval_users={eval_users}", "checkpoint.every=0",
                 f"runtime.devices_per_actor={-(-n // hosts)}", f"run_dir={run_dir}"]
    cfg = load_config(ROOT / "conf/default.yaml", overrides)
    t0 = time.perf_counter()
    engine = RoundEngine(to_plain(cfg), str(run_dir), InProcessFleet)
    info = engine.setup()
    setup_s = time.perf_counter() - t0
    rss = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    walls, participants_seen = [], []
    for _ in range(rounds):
        recs = engine.run_round()
        walls.append(recs[0].wall_s)
        participants_seen.append(sum(r.participants for r in recs))
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"devices": n, "hosts": info.hosts, "per_round": int(np.median(participants_seen)),
            "setup_s": setup_s, "round_s": float(np.median(walls[1:-1] if rounds > 2 else walls)),
            "first_round_s": walls[0], "last_round_s": walls[-1], "driver_rss_mb": max(rss),
            "driver_rss_setup_mb": rss[0], "hosts_rss_mb": 0.0, "total_rss_mb": max(rss), "phases": info.phases}


def table(rows: list[dict]) -> str:
    """Sizes as rows: set-up and its phases, round times (and the ratio to the first size's), memory."""
    head = (f"{'devices':>9} {'hosts':>5} {'per round':>9} {'setup s':>8} {'load':>6} {'hosts':>6} {'reports':>7} "
            f"{'grouping':>8} {'round s':>8} {'vs first':>8} {'driver MB':>9} {'hosts MB':>9} {'total MB':>9}")
    lines = [head, "-" * len(head)]
    base = rows[0]["round_s"]
    for r in rows:
        p = r["phases"]
        lines.append(f"{r['devices']:>9,} {r['hosts']:>5} {r['per_round']:>9} {r['setup_s']:>8.2f} "
                     f"{p['task load']:>6.2f} {p['host start']:>6.2f} {p['reports']:>7.2f} {p['grouping']:>8.2f} "
                     f"{r['round_s']:>8.3f} {r['round_s'] / base:>7.2f}x {r['driver_rss_mb']:>9.0f} "
                     f"{r['hosts_rss_mb']:>9.0f} {r['total_rss_mb']:>9.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--hosts", type=int, default=2, help="device-host actors at every size")
    ap.add_argument("--participants", type=int, default=100)
    ap.add_argument("--eval-users", type=int, default=100)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench/out/scale"))
    ap.add_argument("--in-process", action="store_true",
                    help="the round engine with the in-process fleet (no Ray): driver and hosts in this process")
    args = ap.parse_args(argv)
    if args.in_process:
        out = Path(args.out)
        rows = [run_size_in_process(n, args.rounds, args.hosts, args.participants, args.eval_users, out / f"n{n}")
                for n in args.sizes]
        print(f"\nfedray scale, in process (no Ray; 'driver MB' is the one process): default job, {args.participants} "
              f"devices per round, {args.rounds} rounds, one torch thread (a shared machine: timings are noisy)")
        print(table(rows))
        return 0

    import ray

    from fedray import runtime

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runtime.start(None, ["default"], args.num_cpus)
    rows = []
    try:
        for n in args.sizes:
            rows.append(run_size(n, args.rounds, args.hosts, args.participants, args.eval_users, out / f"n{n}"))
            print(f"  {n} devices: setup {rows[-1]['setup_s']:.1f} s, round {rows[-1]['round_s']:.3f} s, "
                  f"driver + hosts RSS {rows[-1]['total_rss_mb']:.0f} MB", flush=True)
    finally:
        ray.shutdown()
    print(f"\nfedray scale: default job (synthetic, MF dim 32, 1000 items, ternary), {args.participants} devices "
          f"per round, {args.rounds} rounds, {args.num_cpus} CPUs (a shared machine: timings are noisy)")
    print(table(rows))
    (out / "scale.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
