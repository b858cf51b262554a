"""Quality of every built-in task: centralized vs float FedAvg vs ternary FedAvg (and FedProx) at equal rounds,
and a robustness table: FedAvg against median, trimmed mean and multi-Krum with 20 % sign-flipping devices.

Run: .venv/bin/python bench/quality.py [--task movielens|credit|digits ...] [--rounds N] [--seeds N] [--robust]
Federated runs go through the in-process round engine (InProcessFleet), which gives bit-identical weights to
the Ray fleet for the same seed (tests/horizontal/test_fleet.py) without a cluster. MovieLens's centralized
row is `conf/centralized.yaml` (20 epochs on pooled data, on Ray); a table task's centralized row is the same
model trained on one device that holds every row, for the same rounds and the same samples per round.
Writes bench/out/quality-<task>.png (the metric against rounds).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedray.config import load_config, to_plain  # noqa: E402
from fedray.engine.engine import RoundEngine  # noqa: E402
from fedray.engine.fleet import InProcessFleet  # noqa: E402

OUT = ROOT / "bench" / "out"


@dataclass(frozen=True)
class Workload:
    """A built-in task's job config, the metric its table reports and whether its devices are non-IID."""

    conf: str
    metric: str
    label: str
    non_iid: bool


WORKLOADS = {
    "movielens": Workload("conf/movielens.yaml", "hr10", "HR@10", False),
    "credit": Workload("conf/credit_mlp.yaml", "server_auc", "AUC", True),
    "digits": Workload("conf/digits_cnn.yaml", "server_accuracy", "accuracy", True),
}


def run_engine(conf: str, overrides: list[str], run_dir: Path) -> list[dict]:
    """Every round of one job through the in-process engine; its metrics.parquet rows."""
    import torch

    torch.set_num_threads(1)
    cfg = load_config(ROOT / conf, [*overrides, f"run_dir={run_dir}", "checkpoint.every=0"])
    engine = RoundEngine(to_plain(cfg), str(run_dir), InProcessFleet)
    engine.setup()
    for _ in range(cfg.train.rounds):
        engine.run_round()
    return engine.metrics_table().to_pylist()


def run_centralized_movielens(run_dir: Path) -> list[dict]:
    """conf/centralized.yaml on an embedded Ray (the recommender's pooled-data reference)."""
    from fedray.cli import main as fedray_main

    with contextlib.redirect_stdout(io.StringIO()):
        code = fedray_main(["run", str(ROOT / "conf/centralized.yaml"), f"run_dir={run_dir}"])
    if code != 0:
        raise SystemExit(f"fedray run conf/centralized.yaml failed with exit code {code}")
    return pq.read_table(run_dir / "metrics.parquet").to_pylist()


def centralized_overrides(conf: str, extra: list[str]) -> list[str]:
    """One device holding every row, trained as many samples per round as the federation's participants are."""
    cfg = load_config(ROOT / conf, extra)
    steps = cfg.train.local_steps * int(cfg.train.participants)
    return [*extra, "task.devices=1", "train.participants=1", f"train.local_steps={steps}",
            "compression.method=none", "strategy.name=fedavg", "strategy.server_lr=1.0"]


def final(records: list[dict], metric: str) -> dict:
    """The last evaluated value of the metric, traffic totals and wall time."""
    values = [r[metric] for r in records if r.get(metric) is not None and not math.isnan(r[metric])]
    up = sum(r.get("bytes_up", 0.0) for r in records)
    up32 = sum(r.get("bytes_up_float32", 0.0) for r in records)
    bits = [r["bits_per_element"] for r in records if r.get("bits_per_element")]
    return {"metric": values[-1] if values else math.nan, "mb_up": up / 1e6, "ratio": up32 / up if up else 1.0,
            "bits": statistics.mean(bits) if bits else 32.0, "wall_s": sum(r.get("wall_s", 0.0) for r in records)}


def print_table(title: str, label: str, rows: list[tuple[str, dict]], reference: str, short: str) -> None:
    """A fixed-width table of the final metric (and its ratio to a reference row, named short) and the traffic."""
    base = dict(rows)[reference]["metric"]
    print(title)
    head = f"{'run':<34}{label:>10}{'vs ' + short:>12}{'MB up':>10}{'vs f32':>8}{'bits/el':>9}{'wall s':>8}"
    print(head)
    print("-" * len(head))
    for name, f in rows:
        print(f"{name:<34}{f['metric']:>10.4f}{f['metric'] / base - 1:>+11.1%} {f['mb_up']:>9.1f}{f['ratio']:>7.1f}x"
              f"{f['bits']:>9.3f}{f['wall_s']:>8.1f}")


def plot(curves: dict[str, list[dict]], metric: str, label: str, out: Path) -> None:
    """The metric against rounds for each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, recs in curves.items():
        ev = [r for r in recs if r.get(metric) is not None and not math.isnan(r[metric])]
        ax.plot([r["round"] + 1 for r in ev], [r[metric] for r in ev], marker="o", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def quality(name: str, work: Workload, extra: list[str], tmp: Path, seed: int) -> dict[str, dict]:
    """The task's table: centralized, float and ternary FedAvg, FedProx where devices are non-IID."""
    extra = [*extra, f"seed={seed}"]
    curves = {}
    if name == "movielens":
        curves["centralized (20 epochs)"] = run_centralized_movielens(tmp / f"{name}-central")
    else:
        curves["centralized (one device, all rows)"] = run_engine(work.conf, centralized_overrides(work.conf, extra),
                                                                  tmp / f"{name}-central")
    curves["float FedAvg"] = run_engine(work.conf, [*extra, "compression.method=none"], tmp / f"{name}-float")
    curves["ternary FedAvg"] = run_engine(work.conf, [*extra, "compression.method=ternary"], tmp / f"{name}-ternary")
    if work.non_iid:
        curves["ternary FedProx (mu 0.01)"] = run_engine(work.conf, [*extra, "strategy.name=fedprox"], tmp / f"{name}-prox")
    plot(curves, work.metric, work.label, OUT / f"quality-{name}.png")
    return {run: final(recs, work.metric) for run, recs in curves.items()}


def robustness(name: str, work: Workload, extra: list[str], tmp: Path) -> list[tuple[str, dict]]:
    """Float updates, 20 % of devices send -4x their update; FedAvg against the robust rules (f = 20 % of K)."""
    cfg = load_config(ROOT / work.conf, extra)
    f = max(1, int(0.2 * cfg.train.participants))
    attack = ["compression.method=none", "faults.byzantine=0.2", "faults.byzantine_mode=sign_flip",
              "faults.byzantine_scale=4"]
    rows = [("FedAvg, no attack", run_engine(work.conf, [*extra, "compression.method=none"], tmp / f"{name}-clean"))]
    for rule, more in (("FedAvg", []), ("median", []), ("trimmed_mean", ["strategy.trim_fraction=0.25"]),
                       ("krum", [f"strategy.byzantine={f}"])):
        rows.append((f"{rule}, 20 % sign-flip x4", run_engine(
            work.conf, [*extra, *attack, f"strategy.name={rule.lower()}", *more], tmp / f"{name}-{rule}")))
    return [(run, final(recs, work.metric)) for run, recs in rows]


def main(argv: list[str] | None = None) -> None:
    """Print one quality table per task (several seeds: the mean ternary-vs-float gap) and the robustness table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", action="append", choices=list(WORKLOADS), help="default: every task")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--robust", action="store_true", help="add the robustness table (on the non-IID tasks)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in args.task or list(WORKLOADS):
            work = WORKLOADS[name]
            gaps = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                rows = quality(name, work, list(args.overrides), tmp, seed)
                cfg = load_config(ROOT / work.conf, args.overrides)
                print_table(f"\n{name} ({work.conf}, seed {seed}): {cfg.train.rounds} rounds, "
                            f"{cfg.train.participants:g} devices per round; {work.label} at the end "
                            f"({time.perf_counter() - t0:.0f} s)", work.label, list(rows.items()), "float FedAvg", "float")
                gaps.append(rows["ternary FedAvg"]["metric"] / rows["float FedAvg"]["metric"] - 1)
            if args.seeds > 1:
                print(f"{name}: ternary vs float over {args.seeds} seeds: mean {statistics.mean(gaps):+.2%}, "
                      f"sd {statistics.stdev(gaps):.2%}")
            if args.robust and work.non_iid:
                print_table(f"\n{name}: robustness, 20 % of devices sign-flip their update x4 (float updates)",
                            work.label, robustness(name, work, list(args.overrides), tmp), "FedAvg, no attack", "clean")


if __name__ == "__main__":
    main()
