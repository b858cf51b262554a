"""Secure aggregation: upload per device, round time by phase, and quality with and without it.

Run: .venv/bin/python bench/secagg.py [--upload] [--phases] [--round-time] [--quality movielens credit synthetic]
     [--ks 64 256 1000] [--rounds N] [--sweep]
(no section flag: all of them). Prints one table per section.

- Upload: bytes per device and bits per element of the MovieLens MF update (9,066 x 32 + 9,066 elements), for
  plain float32, plain dense ternary (the real codec on a real-sized Gaussian update), secure ternary at b bits
  (the masked vector plus the device's sealed shares and keys, measured from a protocol run) and int64 masks
  (what Flower's SecAgg+ sends: 8 bytes per element).
- Phases: the pure protocol (fedray.privacy.secagg, no Ray, no training) for K participants on one core,
  d = --length elements; device time is the sum over devices divided by K (devices run in parallel for real),
  driver time is the driver's own work.
- Round time: the in-process engine (MovieLens, K = 64, training included), plain dense ternary vs secure;
  medians of --timing-rounds rounds after one warm-up round, in the same run.
- Quality: the in-process engine (bit-identical to the Ray fleet for a seed) for a bounded number of rounds
  (--rounds; MovieLens 671 devices / 64 per round, the credit MLP 100 devices / 30, a synthetic 10,000-device
  job with 1,000 per round); each setting is a row of SETTINGS.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedray.config import load_config, to_plain  # noqa: E402
from fedray.core import ternary  # noqa: E402
from fedray.engine.engine import RoundEngine  # noqa: E402
from fedray.engine.fleet import InProcessFleet  # noqa: E402
from fedray.privacy import packing  # noqa: E402
from fedray.privacy.graph import default_degree  # noqa: E402
from fedray.privacy.quantize import modulus_bits  # noqa: E402
from fedray.privacy.secagg import SecAggClient, SecAggServer  # noqa: E402

ML_ELEMENTS = 9066 * 32 + 9066
KEY_BYTES = 64  # two X25519 public keys
SECURE = ["privacy.secure_aggregation=true", "compression.mode=dense"]

# Quality rows: (label, overrides).
SETTINGS: list[tuple[str, list[str]]] = [
    ("no privacy (dense ternary)", ["compression.mode=dense"]),
    ("secure aggregation", SECURE),
    *[(f"secure aggregation + distributed DP, eps {eps:g}",  # noise calibrated to spend eps over the run's rounds
       [*SECURE, "privacy.dp=distributed", f"privacy.epsilon={eps:g}"]) for eps in (8, 4, 1)],
]

WORKLOADS = {  # name -> (config, metric column, label, overrides that bound its runtime)
    "movielens": ("conf/movielens.yaml", "hr10", "HR@10", ["train.eval_every=10"]),
    "credit": ("conf/credit_mlp.yaml", "server_auc", "AUC", ["train.eval_every=10"]),
    "synthetic": ("conf/default.yaml", "hr10", "HR@10",
                  ["data.synthetic.n_users=10000", "train.participants=1000", "train.eval_every=5",
                   "train.eval_users=1000", "runtime.devices_per_actor=2500"]),
}


def protocol_round(k: int, length: int, drop: int = 0) -> tuple[dict[str, float], dict[str, float], int]:
    """One pure SecAgg+ round over k devices of `length` trits (drop of them vanish before masking):
    (device seconds per phase, per device; driver seconds per phase; bytes a device uploads besides its vector)."""
    rng = np.random.default_rng(0)
    bits = modulus_bits(k)
    inputs = {d: rng.integers(-1, 2, length) for d in range(k)}
    device, driver = {p: 0.0 for p in ("keys", "share", "mask", "unmask")}, {p: 0.0 for p in ("keys", "share", "mask", "unmask")}

    def timed(store, phase, fn):
        t0 = time.perf_counter()
        out = fn()
        store[phase] += time.perf_counter() - t0
        return out

    clients = timed(device, "keys", lambda: {d: SecAggClient(d, 0, v) for d, v in inputs.items()})
    adverts = timed(device, "keys", lambda: [c.advertise() for c in clients.values()])
    server = SecAggServer(0, length, bits, 0.6)
    requests = timed(driver, "keys", lambda: server.route_keys(adverts, np.random.default_rng(1)))
    shares = timed(device, "share", lambda: {d: clients[d].share(requests[d]) for d in requests})
    overhead = statistics.mean(sum(len(s.ciphertext) + 16 for s in v) for v in shares.values()) + KEY_BYTES
    deliveries = timed(driver, "share", lambda: server.route_shares(shares))
    masked = timed(device, "mask", lambda: [clients[d].mask(deliveries[d]) for d in sorted(deliveries)[drop:]])
    asks = timed(driver, "mask", lambda: server.route_masked(masked))
    responses = timed(device, "unmask", lambda: [clients[d].unmask(asks[d]) for d in asks])
    total = timed(driver, "unmask", lambda: server.finish(responses))
    assert np.array_equal(total, sum(inputs[d] for d in server.survivors())), "the sum is not exact"
    return {p: v / k for p, v in device.items()}, driver, int(overhead)


def upload_table(ks: list[int]) -> None:
    d = ML_ELEMENTS
    rng = np.random.default_rng(0)
    update = [rng.normal(0, 0.01, (9066, 32)).astype(np.float32), rng.normal(0, 0.01, 9066).astype(np.float32)]
    dense = len(ternary.encode(update, rng, clip_sigma=2.5, mode="dense")[0])
    print(f"\nUpload per device, MovieLens MF update (d = {d:,} elements)")
    print(f"{'encoding':<44}{'bytes':>12}{'bits/el':>9}{'vs f32':>8}")
    rows = [("plain float32", 4 * d), ("plain ternary (dense, 5 trits/byte)", dense)]
    per_neighbour = sealed_share_bytes()
    for k in ks:
        bits = modulus_bits(k)
        extra = KEY_BYTES + per_neighbour * default_degree(k)
        rows.append((f"secure ternary K={k} (b={bits}) + shares/keys", packing.packed_size(d, bits) + extra))
    rows.append(("int64 masks (Flower SecAgg+)", 8 * d))
    for name, size in rows:
        print(f"{name:<44}{size:>12,}{8 * size / d:>9.3f}{4 * d / size:>8.1f}")
    print(f"(shares: {per_neighbour} bytes per neighbour, measured; degree {', '.join(str(default_degree(k)) for k in ks)})")


def sealed_share_bytes() -> int:
    """Upload per neighbour: one sealed pair of shares plus its sender and receiver ids, measured on 8 devices."""
    _, _, overhead = protocol_round(8, 16)
    return round((overhead - KEY_BYTES) / default_degree(8))


def phases_table(ks: list[int], length: int) -> None:
    print(f"\nSecAgg+ phases, pure protocol on one core, d = {length:,} elements, 5 % dropped before masking "
          "(ms; device = per device, driver = whole round)")
    print(f"{'K':>6}{'degree':>8}" + "".join(f"{'dev ' + p:>12}" for p in ("keys", "share", "mask", "unmask"))
          + "".join(f"{'drv ' + p:>12}" for p in ("keys", "share", "mask", "unmask")) + f"{'total s':>9}")
    for k in ks:
        t0 = time.perf_counter()
        device, driver, _ = protocol_round(k, length, drop=max(1, k // 20))
        wall = time.perf_counter() - t0
        print(f"{k:>6}{default_degree(k):>8}" + "".join(f"{1e3 * device[p]:>12.2f}" for p in device)
              + "".join(f"{1e3 * driver[p]:>12.1f}" for p in driver) + f"{wall:>9.1f}")


def engine(conf: str, overrides: list[str], run_dir: Path) -> RoundEngine:
    import torch

    torch.set_num_threads(1)
    cfg = load_config(ROOT / conf, [*overrides, f"run_dir={run_dir}", "checkpoint.every=0"])
    e = RoundEngine(to_plain(cfg), str(run_dir), InProcessFleet)
    e.setup()
    return e


def round_time_table(rounds: int, tmp: Path) -> None:
    conf, _, _, _ = WORKLOADS["movielens"]
    base = ["train.eval_every=100000"]
    engines = {name: engine(conf, [*base, *o], tmp / f"rt-{i}") for i, (name, o) in enumerate(SETTINGS[:2])}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for e in engines.values():
        e.run_round()  # warm-up
    for _ in range(rounds):  # interleaved, so both see the same machine load
        for name, e in engines.items():
            t0 = time.perf_counter()
            e.run_round()
            times[name].append(time.perf_counter() - t0)
    plain = statistics.median(times[SETTINGS[0][0]])
    print(f"\nRound time, MovieLens, K = 64, in-process engine (training included), median of {rounds} rounds")
    print(f"{'run':<34}{'median s':>10}{'vs plain':>10}")
    for name, values in times.items():
        print(f"{name:<34}{statistics.median(values):>10.3f}{statistics.median(values) / plain:>10.2f}")


def quality_table(names: list[str], rounds: int | None, tmp: Path, extra: list[str]) -> None:
    for name in names:
        conf, metric, label, bound = WORKLOADS[name]
        cfg_rounds = rounds or load_config(ROOT / conf, bound).train.rounds
        print(f"\nQuality: {name} ({conf}), {cfg_rounds} rounds, in-process engine")
        print(f"{'run':<44}{label:>10}{'vs plain':>10}{'bits/el':>9}{'wall s':>9}")
        base = None
        for i, (setting, overrides) in enumerate(SETTINGS):
            t0 = time.perf_counter()
            e = engine(conf, [*bound, f"train.rounds={cfg_rounds}", *overrides, *extra], tmp / f"{name}-{i}")
            for _ in range(cfg_rounds):
                e.run_round()
            rows = e.metrics_table().to_pylist()
            values = [r[metric] for r in rows if r.get(metric) is not None and not math.isnan(r[metric])]
            value = values[-1] if values else math.nan
            base = value if base is None else base
            bits = statistics.mean(r["bits_per_element"] for r in rows)
            print(f"{setting:<44}{value:>10.4f}{value / base:>10.3f}{bits:>9.2f}{time.perf_counter() - t0:>9.0f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upload", action="store_true")
    ap.add_argument("--phases", action="store_true")
    ap.add_argument("--round-time", action="store_true")
    ap.add_argument("--quality", nargs="*", choices=list(WORKLOADS))
    ap.add_argument("--ks", type=int, nargs="+", default=[64, 256, 1000])
    ap.add_argument("--length", type=int, default=ML_ELEMENTS)
    ap.add_argument("--rounds", type=int, default=None, help="quality rounds (default: each config's own)")
    ap.add_argument("--timing-rounds", type=int, default=5)
    ap.add_argument("--sweep", nargs="*", default=None, metavar="KEY=VALUE",
                    help="quality rows: secure aggregation under each of these overrides (e.g. privacy.coordinate_clip=30)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every quality run")
    args = ap.parse_args(argv)
    everything = not (args.upload or args.phases or args.round_time or args.quality is not None)
    if args.sweep:
        SETTINGS.extend((f"secure aggregation, {o}", [*SECURE, o]) for o in args.sweep)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if everything or args.upload:
            upload_table(args.ks)
        if everything or args.phases:
            phases_table(args.ks, args.length)
        if everything or args.round_time:
            round_time_table(args.timing_rounds, tmp)
        if everything or args.quality is not None:
            quality_table(args.quality or list(WORKLOADS), args.rounds, tmp, list(args.overrides))


if __name__ == "__main__":
    main()
