"""Compression benchmarks: ternary codec size and single-core speed, and ternary vs float FedAvg quality.

Run: .venv/bin/python bench/compression.py [--reps N] [--quality [--rounds R]]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

try:
    from fedray.core import ternary
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fedray.core import ternary

MODE_NAMES = {ternary.MODE_DENSE: "dense", ternary.MODE_SPARSE: "sparse", ternary.MODE_ROWS: "rows"}


def _cases() -> list[tuple[str, np.ndarray, float | None]]:
    """(label, tensor, clip_sigma) workloads: dense gradients and a recommendation-like sparse update."""
    rng = np.random.default_rng(0)
    grad_1m = rng.standard_normal(1_000_000).astype(np.float32)
    grad_mf = (rng.standard_normal((9066, 32)) * 0.01).astype(np.float32)
    rec = np.zeros((9066, 32), np.float32)
    rows = rng.choice(9066, int(0.02 * 9066), replace=False)
    rec[rows] = rng.standard_normal((rows.size, 32)) * 0.01
    scattered = np.zeros(1_000_000, np.float32)
    idx = rng.choice(scattered.size, scattered.size // 100, replace=False)
    scattered[idx] = rng.standard_normal(idx.size)
    return [
        ("grad 1M", grad_1m, None),
        ("grad 1M clip 2.5s", grad_1m, 2.5),
        ("grad 9066x32", grad_mf, None),
        ("grad 9066x32 clip 2.5s", grad_mf, 2.5),
        ("rec update 2% rows 9066x32", rec, None),
        ("1% scattered 1M", scattered, None),
    ]


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def codec_table(reps: int = 7, modes: tuple[str, ...] = ("dense", "auto", "rows")) -> list[dict]:
    """Measure size and single-core encode/decode throughput per workload and mode -> table rows."""
    rows = []
    for label, g, clip in _cases():
        mb = g.nbytes / 1e6
        for mode in modes:
            payload, _ = ternary.encode([g], np.random.default_rng(1), clip_sigma=clip, mode=mode)
            t_enc = _median_time(
                lambda: ternary.encode([g], np.random.default_rng(1), clip_sigma=clip, mode=mode), reps
            )
            t_dec = _median_time(lambda: ternary.decode(payload), reps)
            bits = 8 * len(payload) / ternary.payload_elements(payload)
            rows.append(
                {
                    "workload": label,
                    "shape": "x".join(map(str, g.shape)),
                    "mode": mode,
                    "chosen": MODE_NAMES[payload[9]],  # the single tensor's mode byte
                    "bytes": len(payload),
                    "bits/elem": bits,
                    "ratio": 32 / bits,
                    "enc MB/s": mb / t_enc,
                    "dec MB/s": mb / t_dec,
                }
            )
    return rows


def format_table(rows: list[dict], title: str) -> str:
    """Fixed-width plain-text table."""
    cols = list(rows[0])
    fmt = {"bits/elem": "{:.4f}", "ratio": "{:.1f}x", "enc MB/s": "{:.0f}", "dec MB/s": "{:.0f}"}
    cells = [[fmt.get(c, "{}").format(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    left = {"workload", "shape", "mode", "chosen"}

    def line(vals):
        return "  ".join(v.ljust(w) if c in left else v.rjust(w) for v, w, c in zip(vals, widths, cols))

    out = [title, line(cols), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Print the benchmark tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per cell (median)")
    ap.add_argument("--quality", action="store_true", help="also train float and ternary FedAvg on MovieLens")
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args(argv)
    rows = codec_table(reps=max(5, args.reps))
    print(
        format_table(
            rows,
            f"Ternary codec (one thread, median of {max(5, args.reps)}; MB/s of float32 input; "
            "ratio vs float32)",
        )
    )
    if args.quality:
        quality_section(args.rounds)


def quality_section(rounds: int) -> None:
    """HR@10 / NDCG@10 of ternary against float FedAvg on movielens-small at equal rounds (bench/quality.py)."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import quality

    data = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-small")
    with tempfile.TemporaryDirectory() as tmp:
        finals = {name: quality.final(quality.federated(data, rounds, method, Path(tmp)))
                  for name, method in (("float FedAvg", "none"), ("ternary FedAvg", "ternary"))}
    print(f"\nMovieLens small, 671 devices, 64 per round, {rounds} rounds")
    print(quality.table(list(finals.items()), finals["float FedAvg"]).replace("HR/central", "HR/float"))


if __name__ == "__main__":
    main()
