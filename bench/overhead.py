"""Framework overhead: fedray's round time on Ray against the same rounds in a plain single-process loop.

Run: .venv/bin/python bench/overhead.py [--rounds 20] [--data ../shared/data/movielens-small] [key=value ...]
Both sides run the same per-round work on MovieLens (conf/movielens.yaml: 671 devices, 64 per round,
10 local steps, ternary updates; overrides such as compression.error_feedback=true apply to both):
select, train each participant, encode, decode, fuse, server step. The plain loop calls fedray's pure
core directly (DeviceFleet, ternary codec, fusion) in this process, one torch thread, no Ray. fedray
runs the real driver actor and device-host actors on an embedded local Ray; "1 host" puts every device
on one actor so compute is as serial as the plain loop and only the framework differs; more hosts let
local training use both cores (and pay more for Ray's processes sharing them).
Round times exclude the first round (warm-up) and the last (it evaluates); medians over the rest.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedray.cli import main as fedray_main  # noqa: E402
from fedray.config import load_config, to_plain  # noqa: E402
from fedray.core import fusion, selection  # noqa: E402
from fedray.data import load_recdata  # noqa: E402
from fedray.horizontal.device import DeviceFleet, decode_update, stream  # noqa: E402
from fedray.horizontal.driver import STREAM_INIT, STREAM_SELECT  # noqa: E402
from fedray.models.recommender import init_global, scaled_spec  # noqa: E402

CONF = ROOT / "conf/movielens.yaml"


def overrides(data: str, rounds: int, extra: list[str]) -> list[str]:
    """The measured job: no checkpoints and one evaluation at the end, so rounds are training only."""
    return [f"data.path={data}", f"train.rounds={rounds}", f"train.eval_every={rounds}", "checkpoint.every=0", *extra]


def plain_loop(data: str, rounds: int, extra: list[str]) -> list[float]:
    """Seconds per round of the same federated rounds in one process through fedray's pure core."""
    import torch

    torch.set_num_threads(1)  # as in every device host
    cfg = load_config(CONF, overrides(data, rounds, extra))
    rec = load_recdata(cfg.data, cfg.seed)
    fleet = DeviceFleet(to_plain(cfg), rec, np.arange(rec.n_users))
    m, t = cfg.model, cfg.train
    spec = scaled_spec(rec.n_items, m.dim, list(m.hidden), m.kind, 1.0)
    params = init_global(spec, m.init_std, stream(cfg.seed, STREAM_INIT, 0))
    opt = fusion.ServerOptimizer(t.server_opt, t.server_lr, t.adam_beta1, t.adam_beta2, t.adam_tau)
    rng, shapes, counts = stream(cfg.seed, STREAM_SELECT), list(spec.shapes().values()), fleet.sample_counts()
    times = []
    for r in range(rounds):
        t0 = time.perf_counter()
        chosen = selection.select(np.arange(rec.n_users), selection.participant_count(t.participants, rec.n_users),
                                  t.over_select, rng)
        # trained and fused in device order, as the driver fuses
        results = [fleet.train(int(d), params, spec, r) for d in np.sort(chosen)]
        updates = [dict(zip(spec.shapes(), decode_update(res["payload"], shapes, cfg.compression.method)))
                   for res in results]
        weights = [counts[res["device"]] for res in results]
        params = opt.step(params, fusion.weighted_mean(updates, weights))
        times.append(time.perf_counter() - t0)
    return times


def fedray_rounds(data: str, rounds: int, per_actor: int, tmp: Path, extra: list[str]) -> list[float]:
    """Seconds per round of the real fedray job (driver and device-host actors on the embedded Ray)."""
    run_dir = tmp / f"fedray-{per_actor}"
    with contextlib.redirect_stdout(io.StringIO()):
        code = fedray_main(["run", str(CONF), *overrides(data, rounds, extra), f"runtime.devices_per_actor={per_actor}",
                            f"run_dir={run_dir}"])
    if code != 0:
        raise SystemExit(f"fedray run (devices_per_actor={per_actor}) failed with exit code {code}")
    return [r["wall_s"] for r in pq.read_table(run_dir / "metrics.parquet").to_pylist()]


def main(argv: list[str] | None = None) -> None:
    """Time both sides and print median round times and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/movielens-small"))
    ap.add_argument("overrides", nargs="*", help="key=value config overrides for both sides")
    args = ap.parse_args(argv)
    if args.rounds < 4:
        raise SystemExit("--rounds must be at least 4 (first and last rounds are not timed)")
    plain = plain_loop(args.data, args.rounds, args.overrides)[1:-1]
    rows = [("plain loop, 1 process", plain)]
    with tempfile.TemporaryDirectory() as tmp:
        for per_actor, name in ((671, "fedray, 1 device host"), (336, "fedray, 2 device hosts"),
                               (100, "fedray, 7 device hosts")):
            rows.append((name, fedray_rounds(args.data, args.rounds, per_actor, Path(tmp), args.overrides)[1:-1]))
    base = statistics.median(plain)
    print(f"overhead: MovieLens-small, 671 devices, 64 per round, 10 local steps, ternary; "
          f"median of {args.rounds - 2} rounds" + (f"; {' '.join(args.overrides)}" if args.overrides else ""))
    head = f"{'run':<26}{'median s/round':>15}{'min':>8}{'max':>8}{'vs plain':>10}"
    print(head)
    print("-" * len(head))
    for name, ts in rows:
        print(f"{name:<26}{statistics.median(ts):>15.3f}{min(ts):>8.3f}{max(ts):>8.3f}"
              f"{statistics.median(ts) / base:>9.2f}x")


if __name__ == "__main__":
    main()
