"""Recommendation quality on MovieLens: centralized vs float FedAvg vs ternary FedAvg at equal rounds.

Run: .venv/bin/python bench/quality.py [--rounds 200] [--data ../shared/data/movielens-small]
Prints a table and writes bench/out/quality.png (HR@10 against rounds).
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

OUT = ROOT / "bench" / "out"


def run_job(conf: str, overrides: list[str], run_dir: Path) -> list[dict]:
    """Run one fedray job quietly and return its per-round metric records."""
    with contextlib.redirect_stdout(io.StringIO()):
        code = fedray_main(["run", str(ROOT / conf), *overrides, f"run_dir={run_dir}"])
    if code != 0:
        raise SystemExit(f"fedray run {conf} {overrides} failed with exit code {code}")
    return pq.read_table(run_dir / "metrics.parquet").to_pylist()


def federated(data: str, rounds: int, method: str, tmp: Path, extra: tuple[str, ...] = (), seed: int = 0) -> list[dict]:
    """671 MovieLens devices, 64 per round, float or ternary updates."""
    return run_job("conf/movielens.yaml", [f"data.path={data}", f"train.rounds={rounds}", "train.eval_every=25",
                                           f"compression.method={method}", f"seed={seed}", *extra],
                   tmp / f"{method}-{seed}")


def final(records: list[dict]) -> dict:
    """Last evaluated record, plus traffic totals."""
    ev = [r for r in records if r["hr10"] == r["hr10"]]
    up = sum(r.get("bytes_up", 0.0) for r in records)
    up32 = sum(r.get("bytes_up_float32", 0.0) for r in records)
    bits = [r["bits_per_element"] for r in records]
    return {"hr10": ev[-1]["hr10"], "ndcg10": ev[-1]["ndcg10"], "mb_up": up / 1e6, "ratio": up32 / up if up else 1.0,
            "bits": sum(bits) / len(bits), "wall_s": sum(r.get("wall_s", 0.0) for r in records)}


def table(rows: list[tuple[str, dict]], central: dict) -> str:
    """Fixed-width table of final quality and traffic."""
    head = f"{'run':<28}{'HR@10':>8}{'NDCG@10':>9}{'HR/central':>11}{'MB up':>9}{'vs f32':>8}{'bits/el':>8}{'wall s':>8}"
    lines = [head, "-" * len(head)]
    for name, f in rows:
        lines.append(f"{name:<28}{f['hr10']:>8.4f}{f['ndcg10']:>9.4f}{f['hr10'] / central['hr10']:>10.1%}"
                     f"{f['mb_up']:>9.1f}{f['ratio']:>7.1f}x{f['bits']:>8.3f}{f['wall_s']:>8.1f}")
    return "\n".join(lines)


def plot(curves: dict[str, list[dict]], out: Path) -> None:
    """HR@10 against rounds for each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, recs in curves.items():
        ev = [r for r in recs if r["hr10"] == r["hr10"]]
        ax.plot([r["round"] + 1 for r in ev], [r["hr10"] for r in ev], marker="o", label=name)
    ax.set_xlabel("round (centralized: epoch)")
    ax.set_ylabel("HR@10")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> None:
    """Run the three jobs and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "movielens-small"))
    ap.add_argument("--seeds", type=int, default=1, help="repeat float and ternary over this many seeds")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.seeds > 1:
        return seed_study(args)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        curves = {
            "centralized (20 epochs)": run_job("conf/centralized.yaml", [f"data.path={args.data}"], tmp / "central"),
            "float FedAvg": federated(args.data, args.rounds, "none", tmp),
            "ternary FedAvg": federated(args.data, args.rounds, "ternary", tmp),
        }
    finals = {name: final(recs) for name, recs in curves.items()}
    central = finals["centralized (20 epochs)"]
    print(f"MovieLens ml-latest-small, 671 devices, 64 per round, {args.rounds} rounds, t=10 local steps; "
          "leave-one-out HR@10/NDCG@10 against 99 sampled negatives")
    print(table(list(finals.items()), central))
    t, f = finals["ternary FedAvg"], finals["float FedAvg"]
    print(f"ternary vs float at equal rounds: HR@10 {t['hr10'] / f['hr10'] - 1:+.1%}, NDCG@10 {t['ndcg10'] / f['ndcg10'] - 1:+.1%}")
    plot(curves, OUT / "quality.png")
    print(f"wrote {OUT / 'quality.png'}")


def seed_study(args: argparse.Namespace) -> None:
    """Float and ternary FedAvg over several seeds: the per-seed ratio separates the codec from sampling noise."""
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for seed in range(args.seeds):
            f = final(federated(args.data, args.rounds, "none", Path(tmp_name), seed=seed))
            t = final(federated(args.data, args.rounds, "ternary", Path(tmp_name), seed=seed))
            rows.append((seed, f, t))
            print(f"seed {seed}: float HR@10 {f['hr10']:.4f} NDCG@10 {f['ndcg10']:.4f} | ternary HR@10 {t['hr10']:.4f} "
                  f"NDCG@10 {t['ndcg10']:.4f} | {t['ratio']:.1f}x smaller, {t['bits']:.3f} bits/el", flush=True)
    for key, name in (("hr10", "HR@10"), ("ndcg10", "NDCG@10")):
        ratio = np.array([t[key] / f[key] - 1 for _, f, t in rows])
        print(f"{name}: float {np.mean([f[key] for _, f, _ in rows]):.4f}, ternary {np.mean([t[key] for _, _, t in rows]):.4f}, "
              f"ternary vs float {ratio.mean():+.1%} (seed sd {ratio.std(ddof=1):.1%}, {args.seeds} seeds, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
