"""The whole protocol in one process: accuracy against pooled sklearn, message audit, outputs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedray.data.vertical import PartyTable, read_party
from fedray.vertical import ckks
from fedray.vertical.config import VerticalConfig
from fedray.vertical.protocol import BusinessCore, Message, ProviderCore, Settings, auc, run_local
from fedray.vertical.psi import PSIError
from fedray.vertical.split import validation_mask

SETTINGS = Settings.from_config(VerticalConfig())


def _load(data_dir, name):
    g = read_party(data_dir / f"{name}_hetero_guest.csv", label_column="y")
    h = read_party(data_dir / f"{name}_hetero_host.csv")
    return g, h


def _subset(t: PartyTable, rows) -> PartyTable:
    return PartyTable(t.path, t.ids[rows], t.features[rows], t.feature_names,
                      None if t.labels is None else t.labels[rows])


def _pooled(g: PartyTable, h: PartyTable, s: Settings = SETTINGS):
    """Pooled raw features, labels and validation mask of the common ids, computed here independently."""
    pos = {i: k for k, i in enumerate(h.ids)}
    common = [k for k, i in enumerate(g.ids) if i in pos]
    X = np.hstack([g.features[common], h.features[[pos[g.ids[k]] for k in common]]])
    val = validation_mask(g.ids[common], s.validation_fraction, s.validation_seed)
    return X, g.labels[common], val


def _pooled_auc(g: PartyTable, h: PartyTable, s: Settings = SETTINGS) -> float:
    """scikit-learn's validation AUC on the pooled, standardized training rows, with the same L2."""
    X, y, val = _pooled(g, h, s)
    mu, sd = X[~val].mean(0), X[~val].std(0)
    sk = LogisticRegression(C=1.0 / (s.l2 * (~val).sum()), max_iter=5000).fit((X[~val] - mu) / sd, y[~val])
    return roc_auc_score(y[val], sk.decision_function((X[val] - mu) / sd))


def test_auc_matches_sklearn_rank_formula():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500).astype(float)
    s = np.round(rng.normal(size=500) + y, 1)  # with ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_breast_full_run_matches_pooled_sklearn(data_dir, tmp_path):
    g, h = _load(data_dir, "breast")
    rng = np.random.default_rng(3)
    h = _subset(h, rng.permutation(h.rows))  # the provider's file order differs
    trainer, info, hist = run_local(BusinessCore(g, SETTINGS), [ProviderCore("provider0", h, SETTINGS)],
                                    SETTINGS, iterations=30)
    _, _, val = _pooled(g, h)
    assert info["intersection"] == 569
    assert (info["train_rows"], info["validation_rows"]) == (569 - val.sum(), val.sum())
    assert hist[-1]["loss"] < hist[0]["loss"]
    ref = _pooled_auc(g, h)
    assert abs(hist[-1]["val_auc"] - ref) < 0.01, (hist[-1]["val_auc"], ref)
    paths = trainer.save(tmp_path)
    b = pq.read_table(paths["business"]).to_pydict()
    p = pq.read_table(paths["provider0"]).to_pydict()
    assert sorted(b["code"]) == [-1] + list(range(10))  # own codes + intercept (-1)
    assert sorted(p["code"]) == list(range(10, 30))
    assert set(b) == set(p) == {"code", "name", "weight", "fill", "center", "scale"}
    assert p["name"] == h.feature_names and b["name"][-1] == "(intercept)"


def test_credit_subset_matches_pooled_sklearn(data_dir):
    g, h = _load(data_dir, "default_credit")
    rng = np.random.default_rng(4)
    rows = rng.choice(g.rows, 8000, replace=False)
    g = _subset(g, rows)
    # provider holds an overlapping, shuffled subset: 7000 of the same ids plus 1000 others
    pos = {i: k for k, i in enumerate(h.ids)}
    others = np.setdiff1d(np.arange(h.rows), [pos[i] for i in g.ids])[:1000]
    hrows = np.r_[[pos[i] for i in g.ids[:7000]], others]
    h = _subset(h, rng.permutation(hrows))
    _, info, hist = run_local(BusinessCore(g, SETTINGS), [ProviderCore("provider0", h, SETTINGS)],
                              SETTINGS, iterations=30)
    assert info["intersection"] == 7000
    ref = _pooled_auc(g, h)
    assert abs(hist[-1]["val_auc"] - ref) < 0.01, (hist[-1]["val_auc"], ref)


def test_default_converges_on_data_it_was_not_tuned_on():
    """Raw columns on wildly different scales and offsets, correlated, imbalanced labels: the default
    (standardization + Nesterov) must still be within 0.01 validation AUC of pooled scikit-learn."""
    rng = np.random.default_rng(11)
    n, fb, fp = 3000, 4, 7
    X = rng.standard_normal((n, fb + fp)) @ rng.standard_normal((fb + fp, fb + fp))
    X = X * np.exp(rng.uniform(-4, 4, fb + fp)) + rng.uniform(-100, 100, fb + fp)
    z = (X - X.mean(0)) / X.std(0) @ rng.standard_normal(fb + fp) - 2.0
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    ids = np.array([f"k{i}" for i in range(n)], dtype=object)
    perm = rng.permutation(n)
    g = PartyTable("b", ids, X[:, :fb], [f"b{j}" for j in range(fb)], y)
    h = PartyTable("p", ids[perm], X[perm, fb:], [f"p{j}" for j in range(fp)])
    _, _, hist = run_local(BusinessCore(g, SETTINGS), [ProviderCore("p", h, SETTINGS)], SETTINGS, 30)
    ref = _pooled_auc(g, h)
    assert abs(hist[-1]["val_auc"] - ref) < 0.01, (hist[-1]["val_auc"], ref)


def _raw_columns(g: PartyTable, providers: list[PartyTable], b: BusinessCore, ps: list[ProviderCore]):
    cols = [g.labels, b.y] + [c for c in g.features.T] + [c for c in b.X.T]
    for t, p in zip(providers, ps):
        cols += [c for c in t.features.T] + [c for c in p.X.T]
    return cols


def test_no_raw_feature_or_label_crosses_a_party_boundary(data_dir, auditor):
    g, h = _load(data_dir, "breast")
    # two providers (the host file split by columns) and mini-batches, to exercise every path
    h1 = PartyTable(h.path, h.ids, h.features[:, :12], h.feature_names[:12])
    h2 = PartyTable(h.path, h.ids[::-1], h.features[::-1, 12:], h.feature_names[12:])
    s = replace(SETTINGS, batch_size=200)
    b = BusinessCore(g, s)
    ps = [ProviderCore("p1", h1, s), ProviderCore("p2", h2, s)]
    trainer, info, hist = run_local(b, ps, s, iterations=2, record=True)
    msgs = trainer.t.messages
    pub = next(m.payload for m in msgs if m.method == "public_context" and m.src == "business")
    tags = {"business", "p1", "p2", "loss", "auc", "val_loss", "val_auc"}
    weights = [b.opt.w] + [p.opt.w for p in ps]
    kinds = auditor(msgs, _raw_columns(g, [h1, h2], b, ps), pub, info["intersection"], tags=tags, weights=weights,
                    batch_rows=200)
    assert kinds["ciphertext"] > 20 and kinds["psi_point"] >= 4 * 569 and kinds["public_context"] == 3
    # the only float arrays are the masked gradient sums the business party returns
    floats = [m for m in msgs if any(isinstance(v, np.ndarray) and v.dtype.kind == "f"
                                     for v in (m.payload if isinstance(m.payload, tuple) else (m.payload,)))]
    assert floats and {(m.src, m.method) for m in floats} <= {("business", "unmask"), ("driver", "apply")}
    # the auditor itself fails on a leaky message
    leaky = msgs + [Message("p1", "driver", "scores", h1.features[:, 3].copy())]
    with pytest.raises(AssertionError):
        auditor(leaky, _raw_columns(g, [h1, h2], b, ps), pub, info["intersection"])
    leaky = msgs + [Message("business", "driver", "x", g.labels.astype(np.int64))]
    with pytest.raises(AssertionError):
        auditor(leaky, _raw_columns(g, [h1, h2], b, ps), pub, info["intersection"])
    # and on a feature name, a party's weights, a plaintext mini-batch, inside a nested container
    cases = [{"features": [h1.feature_names[0]]}, (1, [ps[0].opt.w.copy()]), {"scores": np.zeros(200)}]
    for payload in cases:
        with pytest.raises(AssertionError):
            auditor(msgs + [Message("p1", "driver", "x", payload)], _raw_columns(g, [h1, h2], b, ps), pub,
                    info["intersection"], tags=tags, weights=weights, batch_rows=200)


def test_two_providers_and_minibatch_train(data_dir):
    g, h = _load(data_dir, "breast")
    h1 = PartyTable(h.path, h.ids, h.features[:, :7], h.feature_names[:7])
    h2 = PartyTable(h.path, h.ids, h.features[:, 7:], h.feature_names[7:])
    s = replace(SETTINGS, batch_size=128, lr=0.5)
    _, info, hist = run_local(BusinessCore(g, s), [ProviderCore("a", h1, s), ProviderCore("b", h2, s)], s, 5)
    assert info["codes"] == {"business": [0, 10], "a": [10, 7], "b": [17, 13]}
    assert hist[-1]["auc"] > 0.99 and hist[-1]["val_auc"] > 0.97


def _pooled_steps(X: np.ndarray, y: np.ndarray, s: Settings, steps: int) -> np.ndarray:
    """Plain full-batch training on pooled rows (bias last): sgd, nesterov or adam, written out here."""
    X = np.c_[X, np.ones(len(X))]
    w, v, q = (np.zeros(X.shape[1]) for _ in range(3))
    pen = np.r_[np.ones(X.shape[1] - 1), 0.0]
    for t in range(1, steps + 1):
        d = 1 / (1 + np.exp(-X @ w)) - y
        gr = X.T @ d / len(d) + s.l2 * w * pen
        if s.optimizer == "adam":
            v, q = 0.9 * v + 0.1 * gr, 0.999 * q + 0.001 * gr ** 2
            w = w - s.lr * (v / (1 - 0.9 ** t)) / (np.sqrt(q / (1 - 0.999 ** t)) + 1e-8)
        else:
            v = s.momentum * v + gr
            w = w - s.lr * (gr + s.momentum * v if s.optimizer == "nesterov" else v)
    return w


@pytest.mark.parametrize("optimizer, lr", [("sgd", 1.0), ("nesterov", 1.0), ("adam", 0.1)])
def test_split_equals_plain_training_on_pooled_standardized_rows(data_dir, optimizer, lr):
    """The encrypted run follows plain full-batch training on the pooled training rows, standardized
    with training statistics, to CKKS precision. Catches a party standardizing with validation rows,
    a split that differs from the seeded hash, and any optimizer or L2 error."""
    g, h = _load(data_dir, "breast")
    s = replace(SETTINGS, optimizer=optimizer, lr=lr, l2=0.01, momentum=0.5)
    b = BusinessCore(g, s)
    p = ProviderCore("provider0", h, s)
    run_local(b, [p], s, iterations=5)
    X, y, val = _pooled(g, h, s)
    train = X[~val]
    w = _pooled_steps((train - train.mean(0)) / train.std(0), y[~val], s, 5)
    got = np.r_[b.opt.w[:-1], p.opt.w, b.opt.w[-1]]
    assert np.allclose(got, w, atol=1e-6)


def test_early_stopping_ends_the_run_at_the_patience(data_dir):
    g, h = _load(data_dir, "breast")
    s = replace(SETTINGS, patience=2, tolerance=0.0)
    trainer, _, hist = run_local(BusinessCore(g, s), [ProviderCore("p", h, s)], s, 30)
    best = int(np.argmin([r["val_loss"] for r in hist])) + 1
    assert len(hist) == best + 2 < 30 and trainer.stopping.best_iteration == best


def test_no_validation_rows_gives_nan_validation_metrics(data_dir):
    g, h = _load(data_dir, "breast")
    s = replace(SETTINGS, validation_fraction=0.0)
    _, info, hist = run_local(BusinessCore(g, s), [ProviderCore("p", h, s)], s, 2)
    assert info["validation_rows"] == 0 and info["train_rows"] == 569
    assert np.isnan(hist[-1]["val_auc"]) and np.isnan(hist[-1]["val_loss"]) and hist[-1]["auc"] > 0.98


def test_linear_model(data_dir):
    g, h = _load(data_dir, "breast")
    s = replace(SETTINGS, model="linear", lr=0.1)
    _, _, hist = run_local(BusinessCore(g, s), [ProviderCore("p", h, s)], s, 5)
    assert hist[-1]["loss"] < hist[0]["loss"] and np.isnan(hist[-1]["auc"])


def test_duplicates_and_disjoint_through_the_parties(data_dir):
    g, h = _load(data_dir, "breast")
    dup = _subset(h, np.r_[np.arange(h.rows), [0, 1, 1]])
    with pytest.raises(PSIError, match=r"p \(.*breast_hetero_host.csv\): 2 id\(s\) occur more than once"):
        run_local(BusinessCore(g, SETTINGS), [ProviderCore("p", dup, SETTINGS)], SETTINGS, 1)
    s = replace(SETTINGS, duplicates="keep_first")
    _, info, _ = run_local(BusinessCore(g, s), [ProviderCore("p", dup, s)], s, 1)
    assert info["intersection"] == 569 and any("2 id(s)" in w for w in info["warnings"])
    other = PartyTable(h.path, np.array([f"z{i}" for i in range(h.rows)], dtype=object), h.features,
                       h.feature_names)
    with pytest.raises(PSIError, match="intersection has 0 ids"):
        run_local(BusinessCore(g, SETTINGS), [ProviderCore("p", other, SETTINGS)], SETTINGS, 1)


def test_provider_refuses_a_private_context(data_dir):
    from fedray.vertical import ckks

    g, h = _load(data_dir, "breast")
    p = ProviderCore("p", h, SETTINGS)
    secret = ckks.secret_context(SETTINGS.ckks)
    with pytest.raises(ValueError, match="secret key"):
        p.set_context(secret.serialize(save_secret_key=True))


def test_provider_workers_split_columns_and_match_single_worker(data_dir, tmp_path):
    g, h = _load(data_dir, "breast")
    b1, p1 = BusinessCore(g, SETTINGS), ProviderCore("provider0", h, SETTINGS)
    run_local(b1, [p1], SETTINGS, 3)
    b2 = BusinessCore(g, SETTINGS)
    shards = [ProviderCore("provider0", h, SETTINGS, (k, 3)) for k in range(3)]
    trainer, info, _ = run_local(b2, shards, SETTINGS, 3)
    assert [s.feature_count() for s in shards] == [7, 7, 6]
    assert info["codes"]["provider0"] == [10, 20]
    assert np.allclose(np.concatenate([s.opt.w for s in shards]), p1.opt.w, atol=1e-6)
    assert np.allclose(b2.opt.w, b1.opt.w, atol=1e-6)
    paths = trainer.save(tmp_path)
    t = pq.read_table(paths["provider0"]).to_pydict()  # a dataset directory, one part per worker
    assert sorted(t["code"]) == list(range(10, 30))
    with pytest.raises(ValueError):
        ProviderCore("p", h, SETTINGS, (3, 3))


def _blank(t: PartyTable, path, rng, label: bool) -> None:
    """Write t as CSV with about 10 % of its feature cells empty or NA, NaN, null."""
    tokens = np.array(["", "NA", "NaN", "null"], dtype=object)
    cells = t.features.astype(str).astype(object)
    holes = rng.random(cells.shape) < 0.1
    cells[holes] = tokens[rng.integers(0, 4, holes.sum())]
    head = ["id"] + (["y"] + t.feature_names if label else t.feature_names)
    body = [[i] + ([str(int(y))] if label else []) + list(row)
            for i, y, row in zip(t.ids, t.labels if label else t.ids, cells)]
    path.write_text("\n".join(",".join(r) for r in [head] + body) + "\n")


@pytest.mark.parametrize("missing", ["mean", "median", "zero"])
def test_missing_cells_are_filled_by_their_party_with_training_statistics(data_dir, tmp_path, missing):
    """Files with empty, NA, NaN and null cells train like pooled data filled with the training rows'
    statistics. Catches fill values taken over all rows, NaN leaking into a product, a wrong statistic."""
    g, h = _load(data_dir, "breast")
    rng = np.random.default_rng(8)
    _blank(g, tmp_path / "g.csv", rng, label=True)
    _blank(h, tmp_path / "h.csv", rng, label=False)
    s = replace(SETTINGS, missing=missing)
    b = BusinessCore.from_file(str(tmp_path / "g.csv"), s)
    p = ProviderCore.from_file("provider0", str(tmp_path / "h.csv"), s)
    trainer, _, hist = run_local(b, [p], s, iterations=4)
    g2 = read_party(tmp_path / "g.csv", label_column="y", missing=missing)
    h2 = read_party(tmp_path / "h.csv", missing=missing)
    X, y, val = _pooled(g2, h2, s)
    train = X[~val]
    assert np.isnan(train).mean() > 0.05
    stat = {"mean": np.nanmean, "median": np.nanmedian, "zero": lambda a, axis: np.zeros(a.shape[1])}[missing]
    fill = stat(train, axis=0)
    train = np.where(np.isnan(train), fill, train)
    w = _pooled_steps((train - train.mean(0)) / train.std(0), y[~val], s, 4)
    assert np.allclose(np.r_[b.opt.w[:-1], p.opt.w, b.opt.w[-1]], w, atol=1e-6)
    model = pq.read_table(trainer.save(tmp_path / "out")["provider0"])
    assert np.allclose(model["fill"].to_numpy(), fill[10:]) and np.isfinite(hist[-1]["val_loss"])


def test_missing_error_policy_stops_at_the_first_empty_cell(data_dir, tmp_path):
    g, _ = _load(data_dir, "breast")
    _blank(g, tmp_path / "g.csv", np.random.default_rng(1), label=True)
    with pytest.raises(Exception, match=r"g\.csv:\d+: column 'x\d': (missing value|non-finite|non-numeric)"):
        BusinessCore.from_file(str(tmp_path / "g.csv"), replace(SETTINGS, missing="error"))


def test_blocked_layout_with_two_workers_equals_plain_training():
    """More training rows than slots and many provider features: the driver picks blocks of rows (several
    features per gradient ciphertext), two provider workers keep their encoded columns across epochs, and
    the run still follows plain full-batch training. Catches a layout the business party and the providers
    disagree on, and a stale cached multiplier in a later epoch."""
    rng = np.random.default_rng(3)
    n, fb, fp = 6000, 4, 48
    Xb, Xp = rng.normal(size=(n, fb)), rng.normal(size=(n, fp))
    y = (rng.random(n) < 1 / (1 + np.exp(-(Xb.sum(1) + Xp[:, :8].sum(1)) / 3))).astype(float)
    ids = np.array([f"c{i}" for i in range(n)], dtype=object)
    g = PartyTable("g", ids, Xb, [f"b{i}" for i in range(fb)], y)
    h = PartyTable("h", ids[::-1].copy(), Xp[::-1].copy(), [f"p{i}" for i in range(fp)])
    s = replace(SETTINGS, optimizer="sgd", lr=0.5, l2=0.01, momentum=0.5)
    b = BusinessCore(g, s)
    shards = [ProviderCore("provider0", h, s, (k, 2)) for k in range(2)]
    trainer, info, _ = run_local(b, shards, s, iterations=0)
    layout = ckks.SlotLayout.choose(info["train_rows"], s.ckks.slots, fp)
    assert info["train_rows"] > s.ckks.slots and 1 < layout.pack and layout.blocks > 1
    # set-up already encoded every output's multipliers of each worker (no epoch pays for it)
    assert [len(p._plains) for p in shards] == [layout.outputs(p.feature_count()) for p in shards]
    for _ in range(3):
        trainer.iteration()
    assert [len(p._plains) for p in shards] == [layout.outputs(p.feature_count()) for p in shards]
    X, yy, val = _pooled(g, h, s)
    train = X[~val]
    w = _pooled_steps((train - train.mean(0)) / train.std(0), yy[~val], s, 3)
    got = np.r_[b.opt.w[:-1], np.concatenate([p.opt.w for p in shards]), b.opt.w[-1]]
    assert np.allclose(got, w, atol=1e-6)
