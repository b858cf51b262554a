"""SecureBoost under CKKS in one process: equal to plaintext boosting on pooled rows, and what crosses."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from fedray.data.vertical import PartyTable, read_party
from fedray.vertical.boost import QuantileBins, best_split, histograms
from fedray.vertical.config import VerticalConfig
from fedray.vertical.protocol import BoostParams, Settings
from fedray.vertical.secureboost import BoostBusiness, BoostProvider, run_boost_local
from fedray.vertical.split import validation_mask

SETTINGS = replace(Settings.from_config(VerticalConfig()), model="secureboost",
                   boost=BoostParams(trees=3, depth=3, learning_rate=0.3, bins=16, min_child_weight=0.0))
# min_child_weight 0: no child's hessian sum sits at the limit, where CKKS noise (~1e-5) could tip it


def _load(data_dir):
    g = read_party(data_dir / "breast_hetero_guest.csv", label_column="y")
    h = read_party(data_dir / "breast_hetero_host.csv")
    return g, h


def _pooled(g: PartyTable, providers: list[PartyTable], s: Settings):
    X = [g.features]
    for h in providers:
        pos = {i: k for k, i in enumerate(h.ids)}
        X.append(h.features[[pos[i] for i in g.ids]])
    X = np.hstack(X)
    val = validation_mask(g.ids, s.validation_fraction, s.validation_seed)
    order = np.r_[np.flatnonzero(~val), np.flatnonzero(val)]
    return X[order], g.labels[order], int((~val).sum())


def plaintext_boost(X: np.ndarray, y: np.ndarray, n_train: int, b: BoostParams) -> list[tuple[float, float]]:
    """The same algorithm on pooled columns, written out here: (train loss, validation loss) per tree."""
    codes = QuantileBins.fit(X[:n_train], b.bins).codes(X)
    rate = y[:n_train].mean()
    F = np.full(len(y), np.log(rate / (1 - rate)))
    losses = []
    for _ in range(b.trees):
        p = 1 / (1 + np.exp(-F[:n_train]))
        g, h = p - y[:n_train], p * (1 - p)
        nodes = [(np.arange(len(y)), 0)]
        while nodes:
            rows, depth = nodes.pop()
            train = rows[rows < n_train]
            split = best_split(*histograms(codes[train], g[train], h[train], b.bins), b.l2, b.min_child_weight) \
                if depth < b.depth and len(train) >= 2 else None
            if split is None:
                F[rows] += b.learning_rate * -g[train].sum() / (h[train].sum() + b.l2)
                continue
            col = codes[rows, split.column]
            left = (col <= split.bin) & (col < b.bins) | (col == b.bins) & split.missing_left
            nodes += [(rows[left], depth + 1), (rows[~left], depth + 1)]
        loss = np.logaddexp(0, F) - y * F
        losses.append((loss[:n_train].mean(), loss[n_train:].mean()))
    return losses


def test_secureboost_equals_plaintext_boosting_on_pooled_rows(data_dir, tmp_path):
    """Two providers, one of them on two workers, missing cells in a provider: every tree's losses equal
    the pooled plaintext algorithm's. Catches wrong sibling subtraction, bin sums assigned to the wrong
    column or node, a provider's split applied to the wrong rows, and a mishandled missing direction."""
    g, h = _load(data_dir)
    X1 = h.features[:, :8].copy()
    X1[np.random.default_rng(0).random(X1.shape) < 0.1] = np.nan
    h1 = PartyTable(h.path, h.ids, X1, h.feature_names[:8])
    h2 = PartyTable(h.path, h.ids[::-1], h.features[::-1, 8:], h.feature_names[8:])
    s = SETTINGS
    providers = [BoostProvider("a", h1, s), BoostProvider("b", h2, s, (0, 2)), BoostProvider("b", h2, s, (1, 2))]
    trainer, info, hist = run_boost_local(BoostBusiness(g, s), providers, s, s.boost.trees)
    X, y, n_train = _pooled(g, [h1, h2], s)
    want = plaintext_boost(X, y, n_train, s.boost)
    assert info["train_rows"] == n_train and len(hist) == s.boost.trees
    for row, (train_loss, val_loss) in zip(hist, want):
        assert row["loss"] == pytest.approx(train_loss, abs=1e-7) and row["val_loss"] == pytest.approx(val_loss, abs=1e-7)
    paths = trainer.save(tmp_path)
    trees = pq.read_table(paths["business"]).to_pydict()
    owners = set(trees["owner"]) - {""}
    assert owners and owners <= {"business", "a", "b:0", "b:1"}
    a = pq.read_table(paths["a"]).to_pydict()
    assert set(a) == {"split_id", "code", "name", "threshold", "missing_left", "worker"}
    assert all(10 <= c < 18 for c in a["code"]) and len(a["split_id"]) == trees["owner"].count("a")


def test_secureboost_messages_carry_no_g_h_feature_or_threshold(data_dir, auditor):
    g, h = _load(data_dir)
    s = replace(SETTINGS, boost=replace(SETTINGS.boost, trees=1))
    b, p = BoostBusiness(g, s), BoostProvider("p", h, s)
    trainer, info, _ = run_boost_local(b, [p], s, 1, record=True)
    msgs = trainer.t.messages
    pub = next(m.payload for m in msgs if m.method == "public_context" and m.src == "business")
    p_all = p._X0[p._aligned]
    cols = [g.labels, *g.features.T, *h.features.T, *p_all.T, b.g, b.h, b.y_all]
    kinds = auditor(msgs, cols, pub, info["intersection"])
    assert "float_array" not in kinds and kinds["ciphertext"] > 10
    thresholds = {t for _, t, _ in p.splits}
    floats = set()

    def walk(x):
        if isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, float):
            floats.add(x)

    for m in msgs:
        if m.method in ("histograms", "split"):
            walk(m.payload)
    assert thresholds and not floats & thresholds  # thresholds never leave the provider


def test_secureboost_within_0_01_of_sklearn_on_breast(data_dir):
    g, h = _load(data_dir)
    s = replace(SETTINGS, boost=BoostParams(trees=6, depth=3, learning_rate=0.3, bins=32))
    _, _, hist = run_boost_local(BoostBusiness(g, s), [BoostProvider("p", h, s)], s, s.boost.trees)
    X, y, n = _pooled(g, [h], s)
    b = s.boost
    sk = HistGradientBoostingClassifier(max_iter=b.trees, max_depth=b.depth, learning_rate=b.learning_rate,
                                        max_bins=b.bins, l2_regularization=b.l2, early_stopping=False).fit(X[:n], y[:n])
    ref = roc_auc_score(y[n:], sk.decision_function(X[n:]))
    assert abs(hist[-1]["val_auc"] - ref) < 0.01, (hist[-1]["val_auc"], ref)


def _csv(t: PartyTable, rows, path) -> str:
    cells = t.features[rows].astype(str).astype(object)
    cells[np.isnan(t.features[rows])] = ""
    lines = [",".join(["id", *t.feature_names])] + [",".join([i, *c]) for i, c in zip(t.ids[rows], cells)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_scoring_with_trees_follows_every_partys_own_splits(data_dir, tmp_path, auditor):
    """Scoring known customers reproduces the training scores exactly: catches a provider comparing raw
    values against the wrong threshold side, a missing cell sent the wrong way, or split ids of
    different provider workers mixed up."""
    from fedray.vertical.protocol import LocalTransport
    from fedray.vertical.scoring import BoostScorer, BoostScoringBusiness, BoostScoringProvider

    g, h = _load(data_dir)
    X1 = h.features[:, :8].copy()
    X1[np.random.default_rng(2).random(X1.shape) < 0.15] = np.nan
    h1 = PartyTable(h.path, h.ids, X1, h.feature_names[:8])
    h2 = PartyTable(h.path, h.ids, h.features[:, 8:], h.feature_names[8:])
    s = SETTINGS
    b = BoostBusiness(g, s)
    providers = [BoostProvider("a", h1, s), BoostProvider("b", h2, s, (0, 2)), BoostProvider("b", h2, s, (1, 2))]
    trainer, _, _ = run_boost_local(b, providers, s, s.boost.trees)
    paths = trainer.save(tmp_path / "parties")
    rng = np.random.default_rng(5)
    files = {"business": _csv(g, rng.permutation(569)[:300], tmp_path / "g.csv"),
             "a": _csv(h1, rng.permutation(569)[:400], tmp_path / "a.csv"),
             "b": _csv(h2, rng.permutation(569)[:450], tmp_path / "b.csv")}
    parties = {"business": BoostScoringBusiness(paths["business"], files["business"], s, str(tmp_path / "s.parquet")),
               **{p: BoostScoringProvider(p, paths[p], files[p], s) for p in ("a", "b")}}
    transport = LocalTransport(parties, record=True)
    summary = BoostScorer(transport, ["a", "b"]).run()
    out = pq.read_table(tmp_path / "s.parquet").to_pydict()
    trained = dict(zip(b._ids[b._aligned][b._order], 1 / (1 + np.exp(-b.F))))
    common = set(read_party(files["business"]).ids) & set(read_party(files["a"], missing="zero").ids) \
        & set(read_party(files["b"]).ids)
    assert set(out["id"]) == common and summary["scored"] == len(common) > 50
    assert max(abs(score - trained[i]) for i, score in zip(out["id"], out["score"])) < 1e-12
    from fedray.vertical import ckks

    pub = ckks.public_context_bytes(ckks.secret_context(s.ckks))
    cols = [np.nan_to_num(c) for f in files.values() for c in read_party(f, missing="zero").features.T]
    kinds = auditor(transport.messages, cols, pub, 1)
    assert "float_array" not in kinds and "ciphertext" not in kinds and kinds["positions"] > 0
