"""The whole protocol in one process: accuracy against pooled sklearn, message audit, outputs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedray.data.vertical import PartyTable, read_party
from fedray.vertical.config import VerticalConfig
from fedray.vertical.protocol import BusinessCore, Message, ProviderCore, Settings, auc, run_local
from fedray.vertical.psi import PSIError

SETTINGS = Settings.from_config(VerticalConfig())


def _load(data_dir, name):
    g = read_party(data_dir / f"{name}_hetero_guest.csv", label_column="y")
    h = read_party(data_dir / f"{name}_hetero_host.csv")
    return g, h


def _subset(t: PartyTable, rows) -> PartyTable:
    return PartyTable(t.path, t.ids[rows], t.features[rows], t.feature_names,
                      None if t.labels is None else t.labels[rows])


def _pooled_auc(g: PartyTable, h: PartyTable) -> float:
    pos = {i: k for k, i in enumerate(h.ids)}
    common = [k for k, i in enumerate(g.ids) if i in pos]
    X = np.hstack([g.features[common], h.features[[pos[g.ids[k]] for k in common]]])
    y = g.labels[common]
    sk = LogisticRegression(max_iter=2000).fit(X, y)
    return roc_auc_score(y, sk.decision_function(X))


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
    assert info["intersection"] == 569
    assert hist[-1]["loss"] < hist[0]["loss"]
    ref = _pooled_auc(g, h)
    assert abs(hist[-1]["auc"] - ref) < 0.01, (hist[-1]["auc"], ref)
    paths = trainer.save(tmp_path)
    b = pq.read_table(paths["business"]).to_pydict()
    p = pq.read_table(paths["provider0"]).to_pydict()
    assert sorted(b["code"]) == [-1] + list(range(10))  # own codes + intercept (-1)
    assert sorted(p["code"]) == list(range(10, 30))
    assert set(b) == set(p) == {"code", "weight"}


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
    assert abs(hist[-1]["auc"] - ref) < 0.01, (hist[-1]["auc"], ref)


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
    kinds = auditor(msgs, _raw_columns(g, [h1, h2], b, ps), pub, info["intersection"])
    assert kinds["ciphertext"] > 20 and kinds["psi_point"] >= 4 * 569 and kinds["public_context"] == 3
    # the only float arrays are the masked gradient sums the business party returns
    floats = [m for m in msgs if any(isinstance(v, np.ndarray) and v.dtype.kind == "f"
                                     for v in (m.payload if isinstance(m.payload, tuple) else (m.payload,)))]
    assert floats and {(m.src, m.method) for m in floats} <= {("business", "unmask"), ("driver", "apply")}
    # names never travel
    strings = set()

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(k), walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            strings.add(x)

    for m in msgs:
        walk(m.payload)
    assert strings <= {"business", "p1", "p2", "loss", "auc"}, strings
    assert not strings & set(g.feature_names + h.feature_names)
    # the auditor itself fails on a leaky message
    leaky = msgs + [Message("p1", "driver", "scores", h1.features[:, 3].copy())]
    with pytest.raises(AssertionError):
        auditor(leaky, _raw_columns(g, [h1, h2], b, ps), pub, info["intersection"])
    leaky = msgs + [Message("business", "driver", "x", g.labels.astype(np.int64))]
    with pytest.raises(AssertionError):
        auditor(leaky, _raw_columns(g, [h1, h2], b, ps), pub, info["intersection"])


def test_two_providers_and_minibatch_train(data_dir):
    g, h = _load(data_dir, "breast")
    h1 = PartyTable(h.path, h.ids, h.features[:, :7], h.feature_names[:7])
    h2 = PartyTable(h.path, h.ids, h.features[:, 7:], h.feature_names[7:])
    s = replace(SETTINGS, batch_size=128, lr=0.5)
    _, info, hist = run_local(BusinessCore(g, s), [ProviderCore("a", h1, s), ProviderCore("b", h2, s)], s, 5)
    assert info["codes"] == {"business": [0, 10], "a": [10, 7], "b": [17, 13]}
    assert hist[-1]["auc"] > 0.99


def test_split_equals_plain_gradient_descent(data_dir):
    """The encrypted run follows plain full-batch GD on pooled data to CKKS precision."""
    g, h = _load(data_dir, "breast")
    s = replace(SETTINGS, l2=0.01, momentum=0.5)
    b = BusinessCore(g, s)
    p = ProviderCore("provider0", h, s)
    run_local(b, [p], s, iterations=5)
    X = np.hstack([b.X, p.X, np.ones((b.n, 1))])
    w, v = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    pen = np.r_[np.ones(X.shape[1] - 1), 0.0]
    for _ in range(5):
        d = 1 / (1 + np.exp(-X @ w)) - b.y
        gr = X.T @ d / len(d) + 0.01 * w * pen
        v = 0.5 * v + gr
        w = w - 1.0 * v
    got = np.r_[b.opt.w[:-1], p.opt.w, b.opt.w[-1]]
    assert np.allclose(got, w, atol=1e-6)


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
