"""Soak benchmark: many rounds with 1,000 synthetic devices; does the driver or the object store grow?

Runs the horizontal round loop (the real `fedray.horizontal.driver.Driver` actor, driven here round by
round) on an embedded local Ray and, every `--every` rounds, samples:

- driver RSS: resident memory of the Driver actor's process (psutil on the pid the actor reports);
- hosts RSS: the device-host actors' processes together;
- object store: bytes used and objects held in the plasma store (Ray's raylet memory stats);
- refs: ObjectRefs the Driver process still holds (its reference table: a retained ref is a leak);
- py objects: objects tracked by the Driver's garbage collector, and the length of its metrics list
  (one record per round and group: the only state that grows by design, a few hundred bytes a round).

It prints a table of these over rounds and the growth after warm-up (from the first sample at or after
`--warmup` rounds to the last), and writes bench/out/soak.png and bench/out/soak.json. Target: < 5 %.

Run: .venv/bin/python bench/soak.py [--rounds 500] [--devices 1000] [--participants 64] [--every 25]
(starts its own Ray: run it when no other Ray cluster is up on this machine).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
try:
    import fedray  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))


def _driver_probe(self) -> dict:
    """Runs inside the Driver actor (via __ray_call__): its pid and what it holds."""
    import gc as _gc

    import ray as _ray

    refs = _ray._private.worker.global_worker.core_worker.get_all_reference_counts()
    return {"pid": os.getpid(), "refs": len(refs), "py_objects": len(_gc.get_objects()),
            "records": len(self.records), "hosts": list(self.fleet.hosts)}


def _host_pid(self) -> int:
    return os.getpid()


def _store_stats() -> tuple[float, int]:
    """(MiB used, objects) in the plasma store across nodes; (nan, -1) if Ray's internal API moved."""
    import ray
    from ray._private import internal_api

    try:
        reply = internal_api.get_memory_info_reply(
            internal_api.get_state_from_address(ray.get_runtime_context().gcs_address))
        return reply.store_stats.object_store_bytes_used / 2**20, int(reply.store_stats.num_local_objects)
    except Exception:  # noqa: BLE001 - private API; report instead of failing the soak
        return float("nan"), -1


def _rss_mb(pids: list[int]) -> float:
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=500)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--participants", type=int, default=64)
    ap.add_argument("--every", type=int, default=25, help="sample memory every N rounds")
    ap.add_argument("--warmup", type=int, default=100, help="growth is measured from this round on")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--devices-per-actor", type=int, default=250)
    ap.add_argument("--num-cpus", type=int, default=None)
    args = ap.parse_args(argv)

    import ray
    from rich.console import Console
    from rich.table import Table

    from fedray import runtime
    from fedray.config import load_config, to_plain
    from fedray.horizontal.driver import start_driver

    run_dir = OUT / "soak-run"
    overrides = [f"data.synthetic.n_users={args.devices}", f"data.synthetic.n_items={args.items}",
                 f"model.dim={args.dim}", f"train.participants={args.participants}", f"train.rounds={args.rounds}",
                 f"train.eval_every={args.eval_every}", "train.eval_users=100", "train.local_steps=5",
                 "checkpoint.every=0", f"runtime.devices_per_actor={args.devices_per_actor}", f"run_dir={run_dir}"]
    cfg = load_config(ROOT / "conf/default.yaml", overrides)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # Ray's own warnings in the hosts
    started = runtime.start(None, [t.name for t in cfg.tiers], args.num_cpus)
    try:
        t0 = time.perf_counter()
        driver = start_driver(to_plain(cfg), str(run_dir), cfg.runtime.driver_cpus)
        info = ray.get(driver.setup.remote())
        probe = ray.get(driver.__ray_call__.remote(_driver_probe))
        host_pids = ray.get([h.__ray_call__.remote(_host_pid) for h in probe["hosts"]])
        del probe["hosts"]
        console.print(f"{info.devices} devices on {info.hosts} hosts, "
                      f"{args.participants} per round, setup {time.perf_counter() - t0:.1f} s; "
                      f"driver pid {probe['pid']}")
        samples = []

        def sample(round_: int, wall: float) -> None:
            gc.collect()
            p = ray.get(driver.__ray_call__.remote(_driver_probe))
            store_mb, store_n = _store_stats()
            samples.append({"round": round_, "driver_rss_mb": _rss_mb([p["pid"]]), "hosts_rss_mb": _rss_mb(host_pids),
                            "store_mb": store_mb, "store_objects": store_n, "driver_refs": p["refs"],
                            "driver_py_objects": p["py_objects"], "records": p["records"], "s_per_round": wall})

        sample(0, 0.0)
        t_last, r_last = time.perf_counter(), 0
        for r in range(1, args.rounds + 1):
            ray.get(driver.run_round.remote())
            if r % args.every == 0 or r == args.rounds:
                now = time.perf_counter()
                sample(r, (now - t_last) / (r - r_last))
                t_last, r_last = now, r
                s = samples[-1]
                console.print(f"round {r}: driver {s['driver_rss_mb']:.1f} MiB, store {s['store_mb']:.2f} MiB "
                              f"({s['store_objects']} objects), {s['driver_refs']} refs, "
                              f"{s['s_per_round']:.2f} s/round", highlight=False)
        ray.kill(driver)
    finally:
        if started:
            ray.shutdown()

    table = Table(title=f"soak: {args.devices} devices, {args.participants} per round, {args.rounds} rounds")
    cols = [("round", "{:d}"), ("driver_rss_mb", "{:.1f}"), ("hosts_rss_mb", "{:.0f}"), ("store_mb", "{:.2f}"),
            ("store_objects", "{:d}"), ("driver_refs", "{:d}"), ("driver_py_objects", "{:d}"), ("records", "{:d}"),
            ("s_per_round", "{:.2f}")]
    heads = {"round": "round", "driver_rss_mb": "driver RSS MiB", "hosts_rss_mb": "hosts RSS MiB",
             "store_mb": "store MiB", "store_objects": "store objs", "driver_refs": "driver refs",
             "driver_py_objects": "driver py objs", "records": "records", "s_per_round": "s/round"}
    for c, _ in cols:
        table.add_column(heads[c], justify="right")
    for s in samples:
        table.add_row(*[fmt.format(s[c]) for c, fmt in cols])
    console.print(table)

    base = next((s for s in samples if s["round"] >= args.warmup), samples[0])
    last = samples[-1]

    def growth(key: str) -> float:
        return 100.0 * (last[key] - base[key]) / base[key] if base[key] else float("nan")

    summary = {"devices": args.devices, "participants": args.participants, "rounds": args.rounds,
               "warmup_round": base["round"], "driver_rss_growth_pct": growth("driver_rss_mb"),
               "hosts_rss_growth_pct": growth("hosts_rss_mb"),
               "store_mb_delta": last["store_mb"] - base["store_mb"],
               "driver_refs_delta": last["driver_refs"] - base["driver_refs"],
               "driver_py_objects_growth_pct": growth("driver_py_objects"), "samples": samples}
    verdict = "OK" if summary["driver_rss_growth_pct"] < 5 else "GROWS"
    console.print(
        f"growth from round {base['round']} to {last['round']}: driver RSS {summary['driver_rss_growth_pct']:+.2f} % "
        f"({base['driver_rss_mb']:.1f} -> {last['driver_rss_mb']:.1f} MiB, target < 5 %: {verdict}); hosts RSS "
        f"{summary['hosts_rss_growth_pct']:+.2f} %; object store {summary['store_mb_delta']:+.2f} MiB "
        f"({base['store_objects']} -> {last['store_objects']} objects); driver refs "
        f"{base['driver_refs']} -> {last['driver_refs']}; driver py objects {summary['driver_py_objects_growth_pct']:+.2f} %",
        highlight=False)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(summary, indent=1))
    _plot(samples, base["round"], OUT / "soak.png", table.title)
    console.print(f"wrote {OUT / 'soak.png'} and {OUT / 'soak.json'}")
    return 0


def _plot(samples: list[dict], warmup: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [s["round"] for s in samples]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(rounds, [s["driver_rss_mb"] for s in samples], marker="o", label="driver RSS")
    axes[0].set_ylabel("MiB")
    axes[0].set_title("Driver actor RSS")
    axes[1].plot(rounds, [s["store_mb"] for s in samples], marker="o", color="tab:orange")
    axes[1].set_ylabel("MiB")
    axes[1].set_title("object store used")
    axes[2].plot(rounds, [s["driver_refs"] for s in samples], marker="o", color="tab:green", label="driver refs")
    axes[2].plot(rounds, [s["store_objects"] for s in samples], marker="x", color="tab:red", label="store objects")
    axes[2].set_title("ObjectRefs held / objects stored")
    axes[2].legend()
    for ax in axes:
        ax.axvline(warmup, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("round")
        ax.set_ylim(bottom=0)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
