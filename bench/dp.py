"""Quality under device-level differential privacy: no privacy against central DP at epsilon 1, 4 and 8.

Run: .venv/bin/python bench/dp.py [--workload movielens credit synthetic10k] [--rounds N] [overrides...]
Each row is one run through the in-process round engine (InProcessFleet: the same rounds as on Ray, without a
cluster). The DP rows set privacy.epsilon, so the noise multiplier is calibrated for the workload's rounds at
its sampling rate q = participants / devices, at delta 1e-5 (privacy.delta's default); the table prints the
calibrated z and the epsilon the run actually spent. Rounds are few to bound the runtime (printed per table).

bench/secagg.py imports WORKLOADS, EPSILONS and dp_overrides to add its "secure aggregation + DP" rows.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedray.config import load_config, to_plain  # noqa: E402
from fedray.engine.engine import RoundEngine  # noqa: E402
from fedray.engine.fleet import InProcessFleet  # noqa: E402

EPSILONS = (8.0, 4.0, 1.0)


@dataclass(frozen=True)
class Workload:
    """A job for the DP table: its config, overrides, the metric reported, rounds and the L2 clip bound."""

    conf: str
    overrides: list[str] = field(default_factory=list)
    metric: str = "hr10"
    label: str = "HR@10"
    rounds: int = 50
    clip: float = 1.0  # about the median update norm measured on the job's first rounds (float updates)


WORKLOADS = {
    "movielens": Workload("conf/movielens.yaml", ["train.eval_every=25"], rounds=50, clip=0.75),
    "credit": Workload("conf/credit_mlp.yaml", ["train.eval_every=25"], "server_auc", "AUC", rounds=50, clip=1.0),
    "synthetic10k": Workload("conf/default.yaml", ["data.synthetic.n_users=10000", "train.participants=1000",
                                                   "train.eval_users=1000", "runtime.devices_per_actor=2500"],
                             rounds=8, clip=1.0),
}


def dp_overrides(epsilon: float, clip: float) -> list[str]:
    """Central DP calibrated to spend epsilon over the run's rounds."""
    return ["privacy.dp=central", f"privacy.epsilon={epsilon:g}", f"privacy.clip={clip:g}"]


def run(work: Workload, extra: list[str], run_dir: Path) -> dict:
    """One job through the in-process engine: its final metric, calibrated z, spent epsilon and wall time."""
    import torch

    torch.set_num_threads(1)
    cfg = load_config(ROOT / work.conf, [*work.overrides, f"train.rounds={work.rounds}", f"train.eval_every={work.rounds}",
                                         *extra, f"run_dir={run_dir}", "checkpoint.every=0"])
    t0 = time.perf_counter()
    engine = RoundEngine(to_plain(cfg), str(run_dir), InProcessFleet)
    engine.setup()
    for _ in range(work.rounds):
        if not engine.run_round():
            break
    records = engine.metrics_table().to_pylist()
    values = [r[work.metric] for r in records if r.get(work.metric) is not None and not math.isnan(r[work.metric])]
    return {"metric": values[-1] if values else math.nan, "z": engine.groups[0].noise_multiplier,
            "epsilon": records[-1]["epsilon"], "rounds": len(records), "wall_s": time.perf_counter() - t0}


def table(name: str, work: Workload, rows: list[tuple[str, dict]]) -> None:
    """Print one workload's rows against its no-privacy row."""
    cfg = load_config(ROOT / work.conf, work.overrides)
    base = rows[0][1]["metric"]
    print(f"\n{name} ({work.conf}): {work.rounds} rounds, {cfg.train.participants:g} per round, clip {work.clip:g}, "
          f"delta 1e-5; {work.label} at the end")
    head = f"{'run':<28}{work.label:>9}{'vs none':>9}{'z':>8}{'epsilon':>9}{'rounds':>8}{'wall s':>8}"
    print(head)
    print("-" * len(head))
    for label, r in rows:
        eps = "-" if math.isnan(r["epsilon"]) else f"{r['epsilon']:.2f}"
        print(f"{label:<28}{r['metric']:>9.4f}{r['metric'] / base - 1:>+9.1%}{r['z']:>8.3f}{eps:>9}{r['rounds']:>8}"
              f"{r['wall_s']:>8.0f}")


def main(argv: list[str] | None = None) -> None:
    """One table per workload: no privacy, then central DP at each epsilon."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    ap.add_argument("--rounds", type=int, help="override every workload's rounds")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in args.workload:
            work = WORKLOADS[name]
            if args.rounds:
                work = Workload(work.conf, work.overrides, work.metric, work.label, args.rounds, work.clip)
            rows = [("no privacy", run(work, list(args.overrides), tmp / f"{name}-none"))]
            for eps in EPSILONS:
                rows.append((f"central DP, epsilon {eps:g}",
                             run(work, [*args.overrides, *dp_overrides(eps, work.clip)], tmp / f"{name}-{eps:g}")))
            table(name, work, rows)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
