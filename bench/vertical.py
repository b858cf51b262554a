"""Vertical (CKKS) benchmark: LR and SecureBoost vs pooled scikit-learn, seconds per epoch/tree, Paillier.

    python bench/vertical.py            # breast, default credit, synthetic 100k x (30 + 300), Paillier
    python bench/vertical.py --no-boost # logistic regression rows only
    python bench/vertical.py --quick    # smaller synthetic shape, for a smoke run
    flock /tmp/fedray-ray.lock python bench/vertical.py --ray   # also time breast/credit through Ray actors
    python bench/vertical.py --epoch --ray-lock /tmp/fedray-ray.lock   # one epoch at 100k x (30 + 300): in process, then Ray

By default the protocol runs in-process (``fedray.vertical.protocol.run_local``: the same party
cores and driver loop the Ray actors wrap, one process, one core) so that the timings are the
protocol's own cost; the ``--ray`` rows add actor and object-store overhead on the local cluster.
One iteration = one full-batch epoch: encrypted forward pass, residual, masked encrypted
gradients for every provider feature, and the encrypted evaluation pass (loss, AUC on the
training and the validation ids). A SecureBoost row's s/iteration is per tree; its synthetic
row times one tree at 30 + ``--boost-synthetic-columns`` columns and prints the per-tree cost
scaled to 300 provider columns (the histogram products grow linearly in them).
Results are printed as tables and written to bench/out/vertical.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedray.data.vertical import PartyTable, read_party  # noqa: E402
from fedray.vertical import ckks  # noqa: E402
from fedray.vertical.config import VerticalConfig  # noqa: E402
from fedray.vertical.protocol import BusinessCore, ProviderCore, Settings, run_local  # noqa: E402
from fedray.vertical.secureboost import BoostBusiness, BoostProvider, run_boost_local  # noqa: E402
from fedray.vertical.split import validation_mask  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "vertical"


def _pooled(g: PartyTable, h: PartyTable, settings: Settings):
    """Pooled raw features, labels and the protocol's validation mask (same seeded hash) of the common ids."""
    pos = {i: k for k, i in enumerate(h.ids)}
    common = [k for k, i in enumerate(g.ids) if i in pos]
    X = np.hstack([g.features[common], h.features[[pos[g.ids[k]] for k in common]]])
    val = validation_mask(g.ids[common], settings.validation_fraction, settings.validation_seed)
    return X, g.labels[common], val


def sklearn_lr_auc(g: PartyTable, h: PartyTable, settings: Settings) -> float:
    """Pooled scikit-learn LogisticRegression, standardized on the training rows, same L2 (C = 1/(l2 n))."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    X, y, val = _pooled(g, h, settings)
    mu, sd = X[~val].mean(0), X[~val].std(0)
    sd[sd == 0] = 1.0
    model = LogisticRegression(C=1.0 / (settings.l2 * (~val).sum()), max_iter=2000).fit((X[~val] - mu) / sd, y[~val])
    return float(roc_auc_score(y[val], model.decision_function((X[val] - mu) / sd)))


def sklearn_boost_auc(g: PartyTable, h: PartyTable, settings: Settings) -> float:
    """Pooled HistGradientBoostingClassifier with the same trees, depth, bins, learning rate and L2."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    X, y, val = _pooled(g, h, settings)
    b = settings.boost
    model = HistGradientBoostingClassifier(max_iter=b.trees, max_depth=b.depth, learning_rate=b.learning_rate,
                                           max_bins=b.bins, l2_regularization=b.l2, early_stopping=False)
    model.fit(X[~val], y[~val])
    return float(roc_auc_score(y[val], model.decision_function(X[val])))


def run_dataset(name: str, g: PartyTable, h: PartyTable, iterations: int, settings: Settings,
                reference: bool = True) -> dict:
    """Logistic regression with the default optimizer, in process; AUCs on the training and validation rows."""
    b = BusinessCore(g, settings)
    p = ProviderCore("provider0", h, settings)
    start = time.perf_counter()
    trainer, info, hist = run_local(b, [p], settings, iterations)
    total = time.perf_counter() - start
    secs = [x["seconds"] for x in hist]
    return {
        "dataset": name, "model": f"logistic ({settings.optimizer})", "rows": info["intersection"],
        "features": f"{g.features.shape[1]}+{h.features.shape[1]}", "iterations": len(hist),
        "psi_s": info["psi_seconds"], "s_per_iter": statistics.median(secs), "first_iter_s": secs[0],
        "setup_s": total - sum(secs), "workers": 1, "auc": hist[-1]["auc"], "val_auc": hist[-1]["val_auc"],
        "sklearn_auc": sklearn_lr_auc(g, h, settings) if reference else None, "where": "in-process",
    }


def run_boost(name: str, g: PartyTable, h: PartyTable, settings: Settings, reference: bool = True) -> dict:
    """SecureBoost, in process; AUCs on the training and validation rows, seconds per tree."""
    trainer, info, hist = run_boost_local(BoostBusiness(g, settings), [BoostProvider("provider0", h, settings)],
                                          settings, settings.boost.trees)
    secs = [x["seconds"] for x in hist]
    return {
        "dataset": name, "model": f"secureboost (depth {settings.boost.depth}, {settings.boost.bins} bins)",
        "rows": info["intersection"], "features": f"{g.features.shape[1]}+{h.features.shape[1]}",
        "iterations": len(hist), "psi_s": info["psi_seconds"], "s_per_iter": statistics.median(secs),
        "first_iter_s": secs[0], "auc": hist[-1]["auc"], "val_auc": hist[-1]["val_auc"],
        "sklearn_auc": sklearn_boost_auc(g, h, settings) if reference else None, "where": "in-process",
    }


def synthetic(n: int, fb: int, fp: int, seed: int = 0) -> tuple[PartyTable, PartyTable]:
    rng = np.random.default_rng(seed)
    Xb = rng.standard_normal((n, fb))
    Xp = rng.standard_normal((n, fp))
    w = rng.standard_normal(fb + fp) / np.sqrt(fb + fp) * 2
    y = (rng.random(n) < 1 / (1 + np.exp(-(np.hstack([Xb, Xp]) @ w)))).astype(float)
    ids = np.array([f"u{i:07d}" for i in range(n)], dtype=object)
    perm = rng.permutation(n)
    g = PartyTable("synthetic-business", ids, Xb, [f"b{i}" for i in range(fb)], y)
    h = PartyTable("synthetic-provider", ids[perm], Xp[perm], [f"p{i}" for i in range(fp)])
    return g, h


def run_ray(name: str, guest: Path, host: Path, iterations: int, workers: int = 1) -> dict:
    """The same job through Ray (party actors, driver actor, object store): s per iteration as the driver
    actor times it; set-up is everything before the first iteration (actors, reading, PSI, coding, keys)."""
    import pyarrow.parquet as pq
    import ray
    from omegaconf import OmegaConf

    from fedray.vertical.job import run_vertical

    v = VerticalConfig(business_path=str(guest), provider_paths=[str(host)], iterations=iterations,
                       provider_workers=workers)
    cfg = OmegaConf.create({"seed": 0, "runtime": {"actor_cpus": 0.25}, "vertical": OmegaConf.structured(v)})
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = ROOT / "bench" / "out" / f"vertical-ray-{name.replace(' ', '')}-w{workers}"
        begin = time.perf_counter()
        s = run_vertical(cfg, out, log=lambda line: None)
        total = time.perf_counter() - begin
    finally:
        if started:
            ray.shutdown()
    secs = pq.read_table(s["metrics_path"]).column("seconds").to_pylist()
    label = f"{name} (Ray, {workers} provider worker{'s' if workers > 1 else ''})"
    return {"dataset": label, "model": "logistic (nesterov)", "rows": s["intersection"], "iterations": iterations,
            "psi_s": s["psi_seconds"], "s_per_iter": statistics.median(secs), "first_iter_s": secs[0],
            "setup_s": total - sum(secs), "workers": workers, "auc": s["final_auc"], "val_auc": s["final_val_auc"],
            "where": "ray"}


def cpu_by_role(g: PartyTable, h: PartyTable, settings: Settings, iterations: int, workers: int = 2) -> dict:
    """CPU seconds per epoch of each role, in process (``time.process_time`` around every call into a party
    and around the driver's additions): what each process would spend, less sensitive to a loaded machine
    than wall-clock time. Median over ``iterations`` epochs, per role and per provider worker."""
    from fedray.vertical.protocol import LocalTransport, Trainer, local_parties

    spent: dict[str, float] = {}

    class Timed(LocalTransport):
        def call(self, party, method, *args):
            start = time.process_time()
            try:
                return super().call(party, method, *args)
            finally:
                spent[party] = spent.get(party, 0.0) + time.process_time() - start

    business = BusinessCore(g, settings)
    shards = [ProviderCore("provider0", h, settings, (k, workers)) for k in range(workers)]
    parties, groups = local_parties(business, shards)
    trainer = Trainer(Timed(parties), groups, settings)
    trainer.setup()
    add = trainer.agg.add

    def timed_add(*args):
        start = time.process_time()
        try:
            return add(*args)
        finally:
            spent["driver"] = spent.get("driver", 0.0) + time.process_time() - start

    trainer.agg.add = timed_add
    per_epoch = []
    for _ in range(iterations):
        spent.clear()
        trainer.iteration()
        per_epoch.append(dict(spent))
    roles = {"business party": ["business"], "driver (additions)": ["driver"],
             "each provider worker": groups["provider0"]}
    return {role: statistics.median(max(e.get(k, 0.0) for k in keys) for e in per_epoch) for role, keys in roles.items()}


def epoch_table(n: int, iterations: int, settings: Settings, workers_list: list[int],
                lock: str | None = None) -> list[dict]:
    """One full-batch epoch at n x (30 + 300): in process on one core, then through Ray with each of
    ``workers_list`` provider workers on the 2-CPU local cluster, on the same data in the same run.
    ``lock``: a file to flock around the Ray rows only (the machine's one-cluster-at-a-time lock)."""
    import fcntl

    import ray

    g, h = synthetic(n, 30, 300)
    rows = [run_dataset(f"synthetic {n // 1000}k (in-process, 1 core)", g, h, iterations, settings, reference=False)]
    rows[-1]["load"] = os.getloadavg()[0]
    print(f"done {rows[-1]['dataset']}: {rows[-1]['s_per_iter']:.2f} s/iteration", flush=True)
    gp, hp = write_parquet(g, h, ROOT / "bench" / "out" / "vertical-synthetic")
    held = open(lock, "a") if lock else None
    if held:
        print(f"waiting for {lock}", flush=True)
        fcntl.flock(held, fcntl.LOCK_EX)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for workers in workers_list:
            rows.append(run_ray(f"synthetic {n // 1000}k", gp, hp, iterations, workers))
            rows[-1]["load"] = os.getloadavg()[0]
            print(f"done {rows[-1]['dataset']}: {rows[-1]['s_per_iter']:.2f} s/iteration", flush=True)
    finally:
        ray.shutdown()
        if held:
            held.close()
    base = rows[0]["s_per_iter"]
    for r in rows:
        r["ratio"] = r["s_per_iter"] / base
    return rows, g, h


def write_parquet(g: PartyTable, h: PartyTable, directory: Path) -> tuple[Path, Path]:
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "business.parquet", directory / "provider.parquet"
    pq.write_table(g.to_arrow(), paths[0])
    pq.write_table(h.to_arrow(), paths[1])
    return paths


# ---- Paillier vs CKKS: the same protocol step at the same shape ----------------------------------

def step_ckks(Xb, Xp, y, params: ckks.CKKSParams) -> float:
    """One full step: [[u]] -> decrypt, residual, [[d]], masked [[X_p^T d]], unmask; serialized bytes."""
    import tenseal as ts

    secret = ckks.secret_context(params)  # keygen is not timed (nor is Paillier's)
    pub = ckks.load_context(ckks.public_context_bytes(secret))
    m, f = Xp.shape
    wb, wp = np.zeros(Xb.shape[1]), np.zeros(f)
    start = time.perf_counter()
    enc_u = ckks.encrypt_chunks(pub, Xp @ wp, params.slots)  # provider
    su = ckks.decrypt_chunks(secret, enc_u, m)  # business
    d = 1 / (1 + np.exp(-(Xb @ wb + su))) - y
    layout = ckks.SlotLayout(m, params.slots)
    enc_d = [ts.ckks_vector(secret, v).serialize() for v in layout.residual_plain(d)]
    masked, mask_sums = ckks.masked_gradient(pub, enc_d, Xp, layout, params.mask_bits,
                                             2.0 ** (2 * params.global_scale_bits))  # provider
    sums = ckks.unmask_sums(secret, masked, layout)  # business
    grad = (sums[:f] - mask_sums) / m  # provider
    elapsed = time.perf_counter() - start
    assert np.allclose(grad, Xp.T @ d / m, atol=1e-5)
    return elapsed  # keygen excluded, as for Paillier


def step_paillier(Xb, Xp, y, key_bits: int) -> float:
    """The same step with python-paillier (phe): one ciphertext per value, scalar products per element."""
    from phe import paillier

    pk, sk = paillier.generate_paillier_keypair(n_length=key_bits)
    m, f = Xp.shape
    wb, wp = np.zeros(Xb.shape[1]), np.zeros(f)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    enc_u = [pk.encrypt(float(v)) for v in Xp @ wp]  # provider
    su = np.array([sk.decrypt(c) for c in enc_u])  # business
    d = 1 / (1 + np.exp(-(Xb @ wb + su))) - y
    enc_d = [pk.encrypt(float(v)) for v in d]  # business
    masks = rng.uniform(-2.0 ** 30, 2.0 ** 30, f)
    masked = []
    for j in range(f):  # provider: sum_i x_ij [[d_i]] + [[r_j]]
        acc = pk.encrypt(float(masks[j]))
        col = Xp[:, j]
        for i in range(m):
            acc = acc + enc_d[i] * float(col[i])
        masked.append(acc)
    sums = np.array([sk.decrypt(c) for c in masked])  # business
    grad = (sums - masks) / m
    elapsed = time.perf_counter() - start
    assert np.allclose(grad, Xp.T @ d / m, atol=1e-5)
    return elapsed


def paillier_ops(key_bits: int, count: int = 20) -> dict:
    from phe import paillier

    pk, sk = paillier.generate_paillier_keypair(n_length=key_bits)
    vals = np.random.default_rng(1).uniform(-1, 1, count)
    t = time.perf_counter()
    enc = [pk.encrypt(float(v)) for v in vals]
    t_enc = (time.perf_counter() - t) / count
    t = time.perf_counter()
    acc = enc[0] * 0.5
    for c, v in zip(enc[1:], vals[1:]):
        acc = acc + c * float(v)
    t_mul = (time.perf_counter() - t) / (count - 1)
    t = time.perf_counter()
    total = enc[0]
    for c in enc[1:]:
        total = total + c
    t_add = (time.perf_counter() - t) / (count - 1)
    t = time.perf_counter()
    for c in enc[:5]:
        sk.decrypt(c)
    t_dec = (time.perf_counter() - t) / 5
    return {"scheme": f"Paillier {key_bits}-bit", "values_per_ct": 1, "enc_ms": t_enc * 1e3,
            "mul_add_ms": t_mul * 1e3, "add_ms": t_add * 1e3, "dec_ms": t_dec * 1e3}


def ckks_ops(params: ckks.CKKSParams, count: int = 20) -> dict:
    import tenseal as ts

    ctx = ckks.secret_context(params)
    rng = np.random.default_rng(2)
    vecs = [rng.uniform(-1, 1, params.slots) for _ in range(count)]
    t = time.perf_counter()
    enc = [ts.ckks_vector(ctx, v) for v in vecs]
    t_enc = (time.perf_counter() - t) / count
    t = time.perf_counter()
    acc = enc[0].data.mul_plain(vecs[0].tolist())
    for c, v in zip(enc[1:], vecs[1:]):
        acc.add_(c.data.mul_plain(v.tolist()))
    t_mul = (time.perf_counter() - t) / count
    t = time.perf_counter()
    for c in enc[:5]:
        c.decrypt()
    t_dec = (time.perf_counter() - t) / 5
    return {"scheme": f"CKKS N={params.poly_modulus_degree}", "values_per_ct": params.slots,
            "enc_ms": t_enc * 1e3, "mul_add_ms": t_mul * 1e3, "dec_ms": t_dec * 1e3}


def hist_step_ckks(m: int, f: int, params: ckks.CKKSParams, bins: int = 32) -> float:
    """Seconds for one histogram step at m rows x f provider columns: encrypt g and h, masked bin sums, decrypt."""
    import tenseal as ts

    from fedray.vertical.boost import QuantileBins

    rng = np.random.default_rng(6)
    codes = QuantileBins.fit(rng.standard_normal((1000, f)), bins).codes(rng.standard_normal((m, f)))
    secret = ckks.secret_context(params)
    pub = ckks.load_context(ckks.public_context_bytes(secret))
    layout = ckks.BlockLayout.choose(m, params.slots, f * (bins + 1))
    start = time.perf_counter()
    for v in (rng.uniform(-1, 1, m), rng.uniform(0, 0.25, m)):
        enc = [ts.ckks_vector(secret, x).serialize() for x in layout.residual_plain(v)]
        out = ckks.masked_histograms(pub, enc, codes, bins, layout, params.mask_bits, 2.0 ** (2 * params.global_scale_bits))
        ckks.unmask_sums(secret, out, layout)
    return time.perf_counter() - start


def histogram_step_rows(settings: Settings, key_bits: int) -> list[dict]:
    """CKKS measured (80k x 300 scaled from 80k x 10) beside Paillier estimated from per-op costs."""
    ops = paillier_ops(key_bits)
    rows = []
    for m, f, measured_f in ((24_000, 10, 10), (80_000, 300, 10)):
        t = hist_step_ckks(m, measured_f, settings.ckks) * f / measured_f
        how = "measured" if f == measured_f else f"measured at {measured_f} columns, x {f // measured_f}"
        rows.append({"scheme": "CKKS N=8192 (block-tiled, zero-sum masks)", "shape": f"{m} x {f}", "seconds": t,
                     "how": how})
        # Paillier: encrypt g and h per row, one ciphertext addition per row and column for each, decrypt the bins
        pai = (2 * m * ops["enc_ms"] + 2 * m * f * ops["add_ms"] + 2 * f * 33 * ops["dec_ms"]) / 1e3
        rows.append({"scheme": f"Paillier {key_bits}-bit (phe)", "shape": f"{m} x {f}", "seconds": pai,
                     "how": "estimated: 2m enc + 2mf add + 66f dec"})
    return rows


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = [h for _, h, _ in cols]
    body = [[("" if r.get(k) is None else format(r[k], f)) if k in r else "" for k, _, f in cols] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda xs: "| " + " | ".join(x.rjust(w) for x, w in zip(xs, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(b) for b in body])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20k x (30+300) synthetic instead of 100k")
    ap.add_argument("--ray", action="store_true", help="also run breast and credit through Ray actors")
    ap.add_argument("--epoch", action="store_true",
                    help="only the epoch table: synthetic LR in process, then through Ray")
    ap.add_argument("--epoch-workers", type=int, nargs="+", default=[2],
                    help="provider_workers of the epoch table's Ray rows (default 2)")
    ap.add_argument("--ray-lock", default=None,
                    help="flock this file around the epoch table's Ray rows only (e.g. /tmp/fedray-ray.lock)")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--synthetic-iterations", type=int, default=3)
    ap.add_argument("--paillier-rows", type=int, default=300)
    ap.add_argument("--paillier-bits", type=int, default=1024)
    ap.add_argument("--no-boost", action="store_true", help="skip the SecureBoost rows")
    ap.add_argument("--boost-trees", type=int, default=0, help="trees per SecureBoost run (default: vertical.boost)")
    ap.add_argument("--boost-synthetic-columns", type=int, default=10,
                    help="provider columns of the timed synthetic SecureBoost tree (scaled to 300 in the printout)")
    args = ap.parse_args()
    settings = Settings.from_config(VerticalConfig())
    if args.epoch:
        n = 20_000 if args.quick else 100_000
        rows, g, h = epoch_table(n, args.synthetic_iterations, settings, args.epoch_workers, args.ray_lock)
        print(f"\nOne full-batch epoch (forward reused from the last evaluation, residual, masked encrypted "
              f"gradients of all provider features, encrypted evaluation pass) at {n // 1000}k x (30+300), CKKS "
              f"N=8192; medians over {args.synthetic_iterations} epochs; set-up = actors, reading, PSI, coding, "
              f"keys and the providers' column encoding")
        print(table(rows, [("dataset", "run", "s"), ("workers", "provider workers", "d"),
                           ("s_per_iter", "s/epoch (median)", ".2f"), ("first_iter_s", "first epoch s", ".2f"),
                           ("ratio", "vs in-process", ".2f"), ("setup_s", "set-up s", ".1f"),
                           ("psi_s", "of which PSI s", ".1f"), ("val_auc", "validation AUC", ".4f"),
                           ("load", "load average (2 cores)", ".1f")]))
        cpu = cpu_by_role(g, h, settings, args.synthetic_iterations, max(args.epoch_workers))
        print(f"\nCPU seconds per epoch by role, in process, {max(args.epoch_workers)} provider workers (median over "
              f"{args.synthetic_iterations} epochs; load average {os.getloadavg()[0]:.1f})")
        print(table([{"role": k, "cpu": v} for k, v in cpu.items()], [("role", "role", "s"), ("cpu", "CPU s", ".2f")]))
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "vertical-epoch.json").write_text(json.dumps({"epochs": rows, "cpu_by_role": cpu}, indent=1))
        return
    boost = replace(settings, model="secureboost",
                    boost=replace(settings.boost, trees=args.boost_trees) if args.boost_trees else settings.boost)
    rows = []
    for name in ("breast", "default_credit"):
        g = read_party(DATA / f"{name}_hetero_guest.csv", label_column="y")
        h = read_party(DATA / f"{name}_hetero_host.csv")
        rows.append(run_dataset(name, g, h, args.iterations, settings))
        print(f"done {name} LR: {rows[-1]['s_per_iter']:.3f} s/iteration", flush=True)
        if not args.no_boost:
            rows.append(run_boost(name, g, h, boost))
            print(f"done {name} SecureBoost: {rows[-1]['s_per_iter']:.2f} s/tree", flush=True)
    n = 20_000 if args.quick else 100_000
    g, h = synthetic(n, 30, 300)
    rows.append(run_dataset(f"synthetic {n // 1000}k", g, h, args.synthetic_iterations, settings))
    syn = rows[-1]
    print(f"done synthetic LR: {syn['s_per_iter']:.2f} s/iteration", flush=True)
    if not args.no_boost:
        cols = args.boost_synthetic_columns
        narrow = PartyTable(h.path, h.ids, h.features[:, :cols], h.feature_names[:cols])
        one_tree = replace(boost, boost=replace(boost.boost, trees=1))
        rows.append(run_boost(f"synthetic {n // 1000}k", g, narrow, one_tree))
        rows[-1]["estimate_300"] = rows[-1]["s_per_iter"] * 300 / cols
        print(f"done synthetic SecureBoost: {rows[-1]['s_per_iter']:.1f} s/tree at {cols} provider columns", flush=True)
    if args.ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # once, for every Ray row
        for name in ("breast", "default_credit"):
            rows.append(run_ray(name, DATA / f"{name}_hetero_guest.csv", DATA / f"{name}_hetero_host.csv",
                                args.iterations))
        gp, hp = write_parquet(g, h, ROOT / "bench" / "out" / "vertical-synthetic")
        for workers in (1, 2):
            rows.append(run_ray(f"synthetic {n // 1000}k", gp, hp, args.synthetic_iterations, workers))
            print(f"done {rows[-1]['dataset']}: {rows[-1]['s_per_iter']:.2f} s/iteration", flush=True)
        ray.shutdown()

    print("\nVertical training, CKKS N=8192 [60,40,40,60] scale 2^40, one provider, in-process = one core; "
          "AUC on the training rows and on the 20 % validation ids; scikit-learn on the pooled rows, same split "
          "(LogisticRegression with the same L2 on standardized columns; HistGradientBoosting with the same trees, "
          "depth, bins, learning rate and L2); s/iteration is per tree for SecureBoost")
    print(table(rows, [("dataset", "dataset", "s"), ("model", "model", "s"), ("rows", "rows", "d"),
                       ("features", "features (b+p)", "s"), ("iterations", "iterations/trees", "d"),
                       ("s_per_iter", "s/iteration (median)", ".3f"), ("psi_s", "PSI s", ".2f"),
                       ("auc", "train AUC", ".4f"), ("val_auc", "validation AUC", ".4f"),
                       ("sklearn_auc", "sklearn validation AUC", ".4f")]))
    print(f"\n{syn['dataset']} x (30+300) LR target (100k): <= 15 s per epoch on 2 cores; measured "
          f"{syn['s_per_iter']:.2f} s in-process on one core"
          + "".join(f"; {r['s_per_iter']:.2f} s {r['dataset']}" for r in rows if r.get("where") == "ray"
                    and r["dataset"].startswith("synth"))
          + " (FATE 2.0 with Paillier: 136 s per epoch on 2 x 16 cores)")
    if not args.no_boost:
        est = next(r for r in rows if "estimate_300" in r)
        print(f"SecureBoost at {est['rows']} x (30+300): {est['s_per_iter']:.1f} s per tree measured at 30+"
              f"{args.boost_synthetic_columns} columns, so about {est['estimate_300']:.0f} s per tree at 30+300 on "
              "one core (the providers' histogram products grow linearly in their columns; provider_workers "
              "spreads them over cores). FATE 2.0's published SecureBoost (Paillier): about 1m54s-3m41s per "
              "epoch on 16 cores.")
        hist_rows = histogram_step_rows(settings, args.paillier_bits)
        print("\nOne SecureBoost root-level histogram step (g and h of every training row, 33 bins per provider "
              "column): CKKS measured on one core, Paillier (phe) estimated from its measured per-operation costs")
        print(table(hist_rows, [("scheme", "scheme", "s"), ("shape", "rows x provider columns", "s"),
                                ("seconds", "seconds", ".1f"), ("how", "how", "s")]))

    # Paillier vs CKKS at equal shape
    m, fb, fp = args.paillier_rows, 5, 10
    rng = np.random.default_rng(5)
    Xb, Xp = rng.standard_normal((m, fb)), rng.standard_normal((m, fp))
    y = (rng.random(m) < 0.5).astype(float)
    t_ckks = statistics.median(step_ckks(Xb, Xp, y, settings.ckks) for _ in range(5))
    t_pai = step_paillier(Xb, Xp, y, args.paillier_bits)
    step_rows = [{"scheme": "CKKS N=8192 (slot-packed, masked)", "shape": f"{m} x ({fb}+{fp})", "seconds": t_ckks},
                 {"scheme": f"Paillier {args.paillier_bits}-bit (phe)", "shape": f"{m} x ({fb}+{fp})",
                  "seconds": t_pai}]
    print("\nOne protocol step (encrypted scores, residual, masked encrypted gradient), same shape, one core")
    print(table(step_rows, [("scheme", "scheme", "s"), ("shape", "shape", "s"), ("seconds", "seconds", ".4f")]))
    print(f"speed ratio Paillier / CKKS: {t_pai / t_ckks:.0f}x (target >= 50x)")
    ops = [ckks_ops(settings.ckks), paillier_ops(1024), paillier_ops(2048, count=8)]
    for o in ops:
        o["us_per_value_mul"] = o["mul_add_ms"] * 1e3 / o["values_per_ct"]
    print("\nPrimitive costs (ms per ciphertext; CKKS packs 4096 values per ciphertext)")
    print(table(ops, [("scheme", "scheme", "s"), ("values_per_ct", "values/ct", "d"), ("enc_ms", "encrypt ms", ".2f"),
                      ("mul_add_ms", "plain-mul+add ms", ".3f"), ("dec_ms", "decrypt ms", ".2f"),
                      ("us_per_value_mul", "mul+add us/value", ".3f")]))

    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "vertical.json").write_text(json.dumps({"datasets": rows, "step": step_rows, "ops": ops,
                                                   "ratio": t_pai / t_ckks}, indent=1))


if __name__ == "__main__":
    main()
