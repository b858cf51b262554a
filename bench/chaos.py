"""Chaos benchmark: 50 rounds with 10% of participating devices crashing mid-round, against a fault-free run.

Run: .venv/bin/python bench/chaos.py [--rounds 50] [--crash 0.1]
A crash kills the device's host process (os._exit inside local training): Ray restarts it, it restores
its devices from the newest checkpoint, and the round goes on with the updates that did arrive.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedray.cli import main as fedray_main  # noqa: E402

JOB = ["data.synthetic.n_users=300", "data.synthetic.n_items=600", "train.participants=30", "train.eval_every=10",
       "runtime.devices_per_actor=20", "runtime.actor_cpus=0.1", "runtime.max_restarts=-1", "checkpoint.every=5"]


def run(rounds: int, crash: float, run_dir: Path) -> list[dict]:
    """One run of the chaos job; returns its per-round records."""
    with contextlib.redirect_stdout(io.StringIO()):
        code = fedray_main(["run", str(ROOT / "conf/default.yaml"), *JOB, f"train.rounds={rounds}",
                            f"faults.crash={crash}", f"run_dir={run_dir}"])
    if code != 0:
        raise SystemExit(f"chaos run (crash={crash}) failed with exit code {code}")
    return pq.read_table(run_dir / "metrics.parquet").to_pylist()


def main(argv: list[str] | None = None) -> None:
    """Run the faulty and the fault-free job and print what survived."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--crash", type=float, default=0.1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        faulty = run(args.rounds, args.crash, Path(tmp) / "faulty")
        clean = run(args.rounds, 0.0, Path(tmp) / "clean")
    def last_hr(recs: list[dict]) -> float:
        return [r["hr10"] for r in recs if r["hr10"] == r["hr10"]][-1]
    rows = [
        ("rounds completed", len(faulty), len(clean)),
        ("updates selected", sum(r["selected"] for r in faulty), sum(r["selected"] for r in clean)),
        ("updates lost to crashes", sum(r["failures"] for r in faulty), sum(r["failures"] for r in clean)),
        ("host restarts", sum(r["restarts"] for r in faulty), sum(r["restarts"] for r in clean)),
        ("rounds retried", sum(r["retries"] > 0 for r in faulty), sum(r["retries"] > 0 for r in clean)),
        ("updates fused", sum(r["participants"] for r in faulty), sum(r["participants"] for r in clean)),
        ("final HR@10", f"{last_hr(faulty):.4f}", f"{last_hr(clean):.4f}"),
    ]
    print(f"chaos: 300 synthetic devices on 15 hosts, 30 per round, {args.rounds} rounds, "
          f"P(crash) = {args.crash} per participating device and round")
    print(f"{'':<26}{'with crashes':>14}{'fault-free':>12}")
    for name, a, b in rows:
        print(f"{name:<26}{a!s:>14}{b!s:>12}")


if __name__ == "__main__":
    main()
