"""Hardware-tier benchmark on MovieLens: one global model vs tier groups vs tier groups + HeteroFL sharing.

    flock /tmp/fedray-ray.lock .venv/bin/python bench/tiers.py                 # 120 rounds, eval every 10
    flock /tmp/fedray-ray.lock .venv/bin/python bench/tiers.py --rounds 20     # smoke run
    bench/tiers.py --configs global; bench/tiers.py --configs tiered shared    # one at a time (short Ray locks)

All three runs use conf/tiered.yaml with the three tiers of conf/tiers/three_tier.yaml (20 % servers,
30 % tablets, 50 % phones) and the same devices, seed and fraction of devices per round:
- global:  grouping.method=none, one full-width model over every device;
- tiered:  devices grouped by reported gflops (thresholds 20 / 100), each group its own model of its
           tier's width (1.0 / 0.5 / 0.25), groups running concurrently on their own simulated clocks;
- shared:  tiered + grouping.share_across (HeteroFL): the overlapping slices are averaged after every
           round, which makes the groups move in lockstep (each round lasts as long as the slowest group's).

Time is *simulated*: a device's round takes compute / its GFLOP/s + download / downlink + upload / uplink
+ latency; a round lasts as long as its slowest accepted device. The table gives, per group and for the
whole config ("all": device-weighted HR over all groups, time = the slowest group's clock), the final
HR@10 / NDCG@10, the bytes moved, and the simulated time to reach 90 % of the global model's final
HR@10. The PNG plots HR@10 against simulated time. Runs go to bench/out/tiers/<config>/; `--configs`
picks which to (re)run, and the table takes the others from their finished runs there (same rounds only).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedray.checkpoint import table_to_arrays  # noqa: E402
from fedray.cli import main  # noqa: E402

OUT = ROOT / "bench" / "out"
DATA = ROOT.parent / "shared" / "data" / "movielens-small"
CONFIGS = {
    "global": ["grouping.method=none"],
    "tiered": ["grouping.method=thresholds"],
    "shared": ["grouping.method=thresholds", "grouping.share_across=true"],
}


def run_config(name: str, args: argparse.Namespace) -> Path:
    """One run through the CLI on the already started local Ray; returns its run directory."""
    run = OUT / "tiers" / name
    shutil.rmtree(run, ignore_errors=True)
    overrides = [f"data.path={DATA}", f"tiers_file={ROOT / 'conf/tiers/three_tier.yaml'}",
                 f"train.rounds={args.rounds}", f"train.eval_every={args.eval_every}",
                 f"train.participants={args.participants}", "checkpoint.every=0",
                 f"runtime.devices_per_actor={args.devices_per_actor}", f"run_dir={run}", *CONFIGS[name]]
    t0 = time.perf_counter()
    code = main(["run", str(ROOT / "conf/tiered.yaml"), *overrides])
    if code != 0:
        raise SystemExit(f"{name}: fedray run exited with {code}")
    print(f"{name}: {time.perf_counter() - t0:.0f} s wall")
    return run


def curves(run: Path) -> dict:
    """Per group: devices, dim, evaluated (sim time, hr, ndcg, round) points, bytes moved, final clock."""
    m = pq.read_table(run / "metrics.parquet").to_pylist()
    g = pq.read_table(run / "grouping.parquet").to_pylist()
    out = {}
    for gid in sorted({r["group"] for r in m}):
        rs = sorted((r for r in m if r["group"] == gid), key=lambda r: r["round"])
        out[gid] = {
            "devices": sum(1 for row in g if row["group"] == gid),
            "tiers": sorted({row["tier"] for row in g if row["group"] == gid}),
            "dim": table_to_arrays(pq.read_table(run / f"models/group-{gid}.parquet"))["item_emb"].shape[1],
            "points": [(r["sim_time_s"], r["hr10"], r["ndcg10"], r["round"]) for r in rs if r["hr10"] == r["hr10"]],
            "bytes": sum(r["bytes_up"] + r["bytes_down"] for r in rs),
            "sim_s": rs[-1]["sim_time_s"],
        }
    return out


def overall(groups: dict) -> dict:
    """The whole config as one row: HR weighted by devices (every device is evaluated), the slowest clock."""
    n = sum(c["devices"] for c in groups.values())
    rounds = [p[3] for p in next(iter(groups.values()))["points"]]
    points = []
    for i, rnd in enumerate(rounds):
        pts = [c["points"][i] for c in groups.values()]
        points.append((max(p[0] for p in pts),
                       sum(p[1] * c["devices"] for p, c in zip(pts, groups.values())) / n,
                       sum(p[2] * c["devices"] for p, c in zip(pts, groups.values())) / n, rnd))
    return {"devices": n, "tiers": ["all"], "dim": "-", "points": points,
            "bytes": sum(c["bytes"] for c in groups.values()), "sim_s": max(c["sim_s"] for c in groups.values())}


def time_to(points: list, target: float) -> float | None:
    """Simulated seconds at the first evaluation reaching target HR@10 (None: never)."""
    return next((t for t, hr, _, _ in points if hr >= target), None)


def table(results: dict) -> list[dict]:
    target = 0.9 * results["global"][0]["points"][-1][1]
    rows = []
    for cfg, groups in results.items():
        entries = list(groups.items()) + ([("all", overall(groups))] if len(groups) > 1 else [])
        for gid, c in entries:
            t90 = time_to(c["points"], target)
            rows.append({"config": cfg, "group": gid, "tiers": "+".join(c["tiers"]), "devices": c["devices"],
                         "dim": c["dim"], "hr10": c["points"][-1][1], "ndcg10": c["points"][-1][2],
                         "mb_moved": c["bytes"] / 1e6, "t90_s": t90, "sim_s": c["sim_s"]})
    return rows, target


def print_table(rows: list[dict], target: float) -> str:
    head = ("config", "group", "tiers", "devices", "dim", "HR@10", "NDCG@10", "MB up+down", "sim s to 90%", "sim s total")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        t90 = "never" if r["t90_s"] is None else f"{r['t90_s']:.1f}"
        lines.append(f"| {r['config']} | {r['group']} | {r['tiers']} | {r['devices']} | {r['dim']} | {r['hr10']:.4f} | "
                     f"{r['ndcg10']:.4f} | {r['mb_moved']:.1f} | {t90} | {r['sim_s']:.1f} |")
    text = "\n".join(lines) + f"\n\n90% target: {target:.4f} HR@10 (0.9 x the global model's final HR@10)"
    print(text)
    return text


def plot(results: dict, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    colors = {"global": "tab:blue", "tiered": "tab:orange", "shared": "tab:green"}
    dashes = {0: "--", 1: "-.", 2: ":"}
    for cfg, groups in results.items():
        entries = list(groups.items()) + ([("all", overall(groups))] if len(groups) > 1 else [])
        for gid, c in entries:
            whole = gid == "all" or len(groups) == 1
            label = (f"{cfg}: one model, dim {c['dim']}" if len(groups) == 1 else f"{cfg}: all devices (weighted)"
                     if gid == "all" else f"{cfg}: g{gid} {'+'.join(c['tiers'])}, dim {c['dim']}")
            ax.plot([p[0] for p in c["points"]], [p[1] for p in c["points"]], "-" if whole else dashes.get(gid, "--"),
                    color=colors[cfg], marker="o", ms=3 if whole else 2, lw=2.5 if whole else 1.0,
                    alpha=1.0 if whole else 0.6, label=label)
    ax.axhline(target, color="grey", lw=0.8, ls="-.", label="90% of global final HR@10")
    ax.set_xscale("log")
    ax.set_xlabel("simulated time (s, log scale)")
    ax.set_ylabel("HR@10 (leave-one-out, 99 negatives)")
    ax.set_title("MovieLens, three hardware tiers: HR@10 vs simulated time")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main_bench() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=120)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--participants", type=float, default=0.1, help="per round and group (fraction < 1 or count)")
    p.add_argument("--devices-per-actor", type=int, default=170)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                   help="configs to (re)run; the others are read from their finished runs in bench/out/tiers")
    args = p.parse_args()
    if not (DATA / "ratings.csv").is_file():
        raise SystemExit(f"MovieLens data not found at {DATA}")
    OUT.mkdir(parents=True, exist_ok=True)

    from fedray import runtime
    from fedray.config import load_config

    tiers = [t.name for t in load_config(ROOT / "conf/tiered.yaml", [f"data.path={DATA}",
                                          f"tiers_file={ROOT / 'conf/tiers/three_tier.yaml'}"]).tiers]
    started = runtime.start(None, tiers)  # one embedded Ray for all runs (fedray run joins it)
    try:
        ran = {name: curves(run_config(name, args)) for name in args.configs}
    finally:
        if started:
            import ray

            ray.shutdown()
    results = {}
    for name in CONFIGS:  # in table order; configs not run now come from earlier runs with the same rounds
        run = OUT / "tiers" / name
        if name in ran:
            results[name] = ran[name]
        elif (run / "metrics.parquet").is_file() and load_config(run / "config.yaml").train.rounds == args.rounds:
            results[name] = curves(run)
            print(f"{name}: from the earlier run in {run}")
    if "global" not in results:
        print("no finished 'global' run (the reference for the 90% target) yet: run --configs global")
        return
    rows, target = table(results)
    text = print_table(rows, target)
    plot(results, target, OUT / "tiers.png")
    (OUT / "tiers.md").write_text(text + "\n")
    (OUT / "tiers.json").write_text(json.dumps({"rows": rows, "target": target, "args": vars(args)}, indent=1))
    print(f"wrote {OUT / 'tiers.png'}, {OUT / 'tiers.md'}")


if __name__ == "__main__":
    main_bench()
