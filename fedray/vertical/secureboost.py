"""SecureBoost (Cheng et al. 2019) under CKKS, as plain party cores and a driver loop (no Ray).

Roles as in the linear protocol (``fedray.vertical.protocol``), with the same PSI, validation
split and feature coding. Per tree, level by level:

1. The business party computes g = p - y and h = p(1 - p) for its training rows (a seeded row
   subsample when ``boost.subsample`` < 1) and, for each node to expand, encrypts g and h of the
   node's training rows in a ``BlockLayout`` (a node with a sibling: only the smaller child; the
   larger one is its parent minus it). It sends the node's row positions and [[g]], [[h]].
2. Each provider (each worker of a provider: its own columns) bins its columns locally
   (``QuantileBins``, fitted on its training rows) and returns, per (column, bin), the encrypted
   sums of g and h (``ckks.masked_histograms``: plaintext products only, zero-sum masks per
   segment, so decryption reveals only the bin sums).
3. The business party decrypts the bin sums, adds its own plaintext histograms, and finds the
   best split over all parties' columns (``boost.best_split``, with a learned direction for
   missing cells). For its own column it splits the node itself. For a provider's column it
   sends (node rows, column index, bin, missing direction); the provider records the threshold
   in its own lookup table under a new split id and returns that id and the positions of the
   node's rows that go left. Thresholds never leave the provider.
4. Leaves get lr * -G / (H + lambda); every aligned row (training and validation) follows the
   splits, so the business party updates its scores without another round.

What each party sees beyond the linear protocol: the business party sees per-node bin sums of g
and h for every provider column (as in SecureBoost) and the row partition of every split; a
provider sees the row positions of the nodes it is asked about and which of its own (column,
bin) the business party chose; the driver sees ciphertexts, positions, split ids and column/bin
indices, never g, h, a feature value or a threshold.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tenseal as ts

from fedray.data.vertical import PartyTable, read_party
from fedray.vertical import ckks
from fedray.vertical.boost import GAIN_TOLERANCE, QuantileBins, Split, best_split, histograms, leaf_weight
from fedray.vertical.coding import CodeBlock, LocalFeatureMap, assign_codes
from fedray.vertical.protocol import (BUSINESS, BusinessAlignment, LocalTransport, ProviderAlignment, PSIError,
                                      Settings, Transport, _dedup, _write_table, align, auc, code_features,
                                      local_parties)
from fedray.vertical.psi import ProviderPSI
from fedray.vertical.split import EarlyStopping, train_first_order

LEAF = -1  # "column" of a leaf in the tree table


@dataclass
class Node:
    """One node the business party is growing: all its aligned rows, its (subsampled) training rows."""

    id: int
    depth: int
    rows: np.ndarray  # aligned positions of every row in the node (training and validation)
    train: np.ndarray  # aligned positions of the training rows that build its histograms
    G: float = 0.0
    H: float = 0.0
    hists: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # provider key -> (G, H)


@dataclass
class TreeRow:
    """One row of the business party's tree table (its model file and checkpoints)."""

    tree: int
    node: int
    left: int = -1
    right: int = -1
    owner: str = ""  # "" leaf, "business", or a provider's transport key
    column: int = -1  # the business party's own column (owner business)
    split_id: int = -1  # a provider's split id (owner a provider)
    threshold: float = float("nan")  # the business party's own threshold (x < threshold goes left)
    missing_left: bool = False
    value: float = 0.0  # leaf value (already times the learning rate)


def _prepared(ids: np.ndarray, X: np.ndarray, s: Settings) -> tuple[np.ndarray, int, np.ndarray, QuantileBins]:
    """(train-first order, training rows, bin codes of all aligned rows, the fitted bins)."""
    order, n_train = train_first_order(ids, s.validation_fraction, s.validation_seed)
    raw = X[order]
    bins = QuantileBins.fit(raw[:n_train], s.boost.bins)
    return order, n_train, bins.codes(raw), bins


class _BoostParty:
    warnings: list[str]

    def take_warnings(self) -> list[str]:
        out, self.warnings = self.warnings, []
        return out

    def feature_count(self) -> int:
        return self._X0.shape[1]


class BoostBusiness(_BoostParty, BusinessAlignment):
    """The label holder and active party: g and h, the secret key, every split decision, the trees."""

    def __init__(self, table: PartyTable, settings: Settings, seed: int = 0) -> None:
        if table.labels is None:
            raise ValueError(f"{table.path}: the business party needs a label column")
        self.name, self.s, self.path, self.warnings = BUSINESS, settings, table.path, []
        keep, self._dup_error = _dedup(table, BUSINESS, settings, self.warnings)
        self._ids, self._X0, self._y0 = table.ids[keep], table.features[keep], table.labels[keep]
        self.names = table.feature_names
        self._psi, self.min_ids = None, settings.min_intersection
        self.rng = np.random.default_rng(seed)
        self.trees: list[TreeRow] = []
        self.tree = 0

    @classmethod
    def from_file(cls, path: str, settings: Settings, seed: int = 0) -> "BoostBusiness":
        return cls(read_party(path, settings.id_column, settings.label_column, "binary",
                              "error" if settings.missing == "error" else "zero"), settings, seed)

    def prepare(self) -> tuple[int, int]:
        order, self.n_train, self.codes, self.bins = _prepared(self._ids[self._aligned], self._X0[self._aligned], self.s)
        self._order = order
        self.y_all = self._y0[self._aligned][order]
        self.n_val = len(order) - self.n_train
        rate = float(np.clip(self.y_all[: self.n_train].mean(), 1e-6, 1 - 1e-6))
        self.base = float(np.log(rate / (1 - rate)))
        self.F = np.full(len(order), self.base)
        return self.n_train, self.n_val

    def assign_codes(self, counts: list[tuple[str, int]]) -> dict[str, tuple[int, int]]:
        blocks = assign_codes([(BUSINESS, self.feature_count())] + list(counts))
        self.features = LocalFeatureMap(self.names, blocks[BUSINESS])
        return {p: (b.offset, b.count) for p, b in blocks.items()}

    def public_context(self) -> bytes:
        self.ctx = ckks.secret_context(self.s.ckks)
        return ckks.public_context_bytes(self.ctx)

    # -- one tree ---------------------------------------------------------------------------------
    def start_tree(self, providers: Sequence[str]) -> None:
        """g and h from the current scores; the root holds every aligned row."""
        self.providers = list(providers)
        p = 1.0 / (1.0 + np.exp(-self.F[: self.n_train]))
        self.g, self.h = p - self.y_all[: self.n_train], p * (1.0 - p)
        train = np.arange(self.n_train)
        if self.s.boost.subsample < 1.0:
            take = max(1, int(round(self.s.boost.subsample * self.n_train)))
            train = np.sort(self.rng.choice(self.n_train, take, replace=False))
        root = Node(0, 0, np.arange(len(self.F)), train, float(self.g[train].sum()), float(self.h[train].sum()))
        self.open, self.next_id, self.pending = [root], 1, {}
        self._requested: list[tuple[Node, Optional[Node]]] = [(root, None)]

    def hist_requests(self) -> dict[int, tuple[np.ndarray, list[bytes], list[bytes]]]:
        """For each node whose provider histograms must be computed: its training rows, [[g]] and [[h]]."""
        out = {}
        columns = max(1, self.max_provider_columns) * (self.s.boost.bins + 1)
        self._requested = [(node, sib) for node, sib in self._requested if self._splittable(node)
                           or (sib is not None and self._splittable(sib[1]))]
        for node, _ in self._requested:
            layout = ckks.BlockLayout.choose(len(node.train), self.s.ckks.slots, columns)
            enc = [[ts.ckks_vector(self.ctx, v).serialize() for v in layout.residual_plain(vec[node.train])]
                   for vec in (self.g, self.h)]
            out[node.id] = (node.train, enc[0], enc[1])
        return out

    def _splittable(self, node: Node) -> bool:
        return node.depth < self.s.boost.depth and len(node.train) >= 2

    def receive_histograms(self, provider: str, columns: int, result: dict[int, tuple[list[bytes], list[bytes]]]) -> None:
        """Decrypt a provider's bin sums (only the sums: the masks cancel per segment); the sibling by subtraction."""
        width = self.s.boost.bins + 1
        for node, sibling_of in self._requested:
            enc_g, enc_h = result[node.id]
            layout = ckks.BlockLayout.choose(len(node.train), self.s.ckks.slots,
                                             max(1, self.max_provider_columns) * width)
            sums = [ckks.unmask_sums(self.ctx, enc, layout, self.s.ckks.plausible_bound,
                                     f"{BUSINESS}: bin sums from {provider}")[: columns * width].reshape(columns, width)
                    for enc in (enc_g, enc_h)]
            node.hists[provider] = (sums[0], sums[1])
            if sibling_of is not None:
                parent, sibling = sibling_of
                pg, ph = parent.hists[provider]
                sibling.hists[provider] = (pg - sums[0], ph - sums[1])

    def choose_splits(self) -> dict[str, list[tuple[int, np.ndarray, int, int, bool]]]:
        """Best split of every open node; own splits and leaves are applied here, provider splits are requested."""
        b = self.s.boost
        asks: dict[str, list] = {}
        self.pending = {}
        for node in self.open:
            best, owner = None, ""
            if self._splittable(node):
                own = histograms(self.codes[node.train], self.g[node.train], self.h[node.train], b.bins)
                for who, (G, H) in [(BUSINESS, own), *node.hists.items()]:
                    split = best_split(G, H, b.l2, b.min_child_weight)
                    if split is not None and (best is None or split.gain > best.gain + GAIN_TOLERANCE):
                        best, owner = split, who
            if best is None:
                self._leaf(node)
            elif owner == BUSINESS:
                column = self.codes[node.rows, best.column]
                left = (column <= best.bin) & (column < b.bins) | (column == b.bins) & best.missing_left
                self._branch(node, BUSINESS, best, -1, np.flatnonzero(left))
            else:
                self.pending[node.id] = (node, best, owner)
                asks.setdefault(owner, []).append((node.id, node.rows, best.column, best.bin, best.missing_left))
        return asks

    def apply_splits(self, provider: str, results: Sequence[tuple[int, int, np.ndarray]]) -> None:
        """A provider's answers: (node, its split id, positions within the node's rows that go left)."""
        for node_id, split_id, left in results:
            node, split, owner = self.pending.pop(node_id)
            if owner != provider:
                raise ValueError(f"{BUSINESS}: {provider} answered for node {node_id} of {owner}")
            self._branch(node, provider, split, int(split_id), np.asarray(left, dtype=np.int64))

    def next_level(self) -> bool:
        """Move to the children; which nodes need provider histograms. False when the tree is done."""
        if self.pending:
            raise RuntimeError(f"{BUSINESS}: splits of nodes {sorted(self.pending)} were never answered")
        self.open, children = [], self._children
        self._requested = []
        for left, right, parent in children:
            self.open += [left, right]
            small, large = (left, right) if len(left.train) <= len(right.train) else (right, left)
            self._requested.append((small, (parent, large)))
        self._children = []
        return bool(self.open)

    def _leaf(self, node: Node) -> None:
        value = self.s.boost.learning_rate * leaf_weight(node.G, node.H, self.s.boost.l2)
        self.trees.append(TreeRow(self.tree, node.id, value=value))
        self.F[node.rows] += value

    def _branch(self, node: Node, owner: str, split: Split, split_id: int, left_positions: np.ndarray) -> None:
        """Record the split and make the children (their training rows follow the same partition)."""
        goes_left = np.zeros(len(node.rows), dtype=bool)
        goes_left[left_positions] = True
        in_node = np.zeros(len(self.F), dtype=bool)
        in_node[node.rows[goes_left]] = True
        train_left = in_node[node.train]
        children = []
        for side, train in ((goes_left, node.train[train_left]), (~goes_left, node.train[~train_left])):
            children.append(Node(self.next_id, node.depth + 1, node.rows[side], train,
                                 float(self.g[train].sum()), float(self.h[train].sum())))
            self.next_id += 1
        own = owner == BUSINESS
        self.trees.append(TreeRow(self.tree, node.id, children[0].id, children[1].id, owner,
                                  split.column if own else -1, split_id,
                                  self.bins.threshold(split.column, split.bin) if own else float("nan"),
                                  split.missing_left))
        self._children.append((children[0], children[1], node))

    def begin(self, providers: Sequence[str], provider_columns: int) -> None:
        self.max_provider_columns = provider_columns
        self._children = []
        self.start_tree(providers)

    def end_tree(self) -> dict[str, float]:
        """Loss and AUC on training and validation rows after this tree."""
        self.tree += 1
        z, y = self.F, self.y_all
        out = {}
        for prefix, part in (("", slice(0, self.n_train)), ("val_", slice(self.n_train, len(z)))):
            zz, yy = z[part], y[part]
            if len(yy) == 0:
                out[prefix + "loss"], out[prefix + "auc"] = float("nan"), float("nan")
            else:
                out[prefix + "loss"] = float(np.mean(np.logaddexp(0.0, zz) - yy * zz))
                out[prefix + "auc"] = auc(yy, zz)
        return out

    def tree_table(self) -> pa.Table:
        """The business party's trees (its own thresholds, providers' split ids) and base score, for its files."""
        rows = self.trees
        table = {name: [getattr(r, name) for r in rows] for name in TreeRow.__dataclass_fields__}
        table["column_code"] = [int(self.features.block.offset + r.column) if r.owner == BUSINESS else -1 for r in rows]
        table["column_name"] = [self.names[r.column] if r.owner == BUSINESS else "" for r in rows]
        out = pa.table(table)
        return out.replace_schema_metadata({"base_score": repr(self.base)})

    # -- own checkpoint state (see fedray.vertical.job) ---------------------------------------------
    def export_state(self) -> dict[str, pa.Table]:
        """Trees so far and every aligned row's score keyed by id (PSI's row order changes on resume)."""
        ids = self._ids[self._aligned][self._order]
        meta = {"trees_done": str(self.tree), "base_score": repr(self.base),
                "rng": json.dumps(self.rng.bit_generator.state)}
        scores = pa.table({"id": pa.array(ids.tolist(), pa.string()), "score": pa.array(self.F, pa.float64())})
        return {"trees": self.tree_table(), "scores": scores.replace_schema_metadata(meta)}

    def import_state(self, state: dict[str, pa.Table]) -> int:
        """Restore trees, scores (by id), the subsample generator; ValueError naming what does not fit."""
        scores, trees = state["scores"], state["trees"]
        meta = {k.decode(): v.decode() for k, v in (scores.schema.metadata or {}).items()}
        pos = {i: k for k, i in enumerate(scores.column("id").to_pylist())}
        ids = self._ids[self._aligned][self._order]
        absent = [i for i in ids if i not in pos]
        if absent:
            raise ValueError(f"{BUSINESS}: checkpoint scores lack {len(absent)} aligned ids (e.g. {absent[0]!r})")
        self.F = scores.column("score").to_numpy()[[pos[i] for i in ids]].astype(np.float64)
        self.tree, self.base = int(meta["trees_done"]), float(meta["base_score"])
        self.rng.bit_generator.state = json.loads(meta["rng"])
        fields = list(TreeRow.__dataclass_fields__)
        columns = [trees.column(f).to_pylist() for f in fields]
        self.trees = [TreeRow(**dict(zip(fields, values))) for values in zip(*columns)]
        return len(self.trees)

    def save_weights(self, path: str) -> str:
        return _write_table(path, self.tree_table())


class BoostProvider(_BoostParty, ProviderAlignment):
    """A passive party: its own bins and thresholds; encrypted bin sums and row partitions out."""

    def __init__(self, name: str, table: PartyTable, settings: Settings, shard: tuple[int, int] = (0, 1)) -> None:
        k, workers = shard
        cols = np.array_split(np.arange(table.features.shape[1]), workers)[k]
        self.name, self.s, self.shard, self.warnings = name, settings, shard, []
        keep, self._dup_error = _dedup(table, name, settings, self.warnings)
        self._ids = table.ids[keep]
        self._X0 = np.ascontiguousarray(table.features[keep][:, cols])
        self.names = [table.feature_names[i] for i in cols]
        self._psi = ProviderPSI(list(self._ids)) if k == 0 else None
        self.splits: list[tuple[int, float, bool]] = []  # split id -> (column, threshold, missing_left)
        self.ctx = None

    @classmethod
    def from_file(cls, name: str, path: str, settings: Settings, shard: tuple[int, int] = (0, 1)) -> "BoostProvider":
        return cls(name, read_party(path, settings.id_column, None,
                                    missing="error" if settings.missing == "error" else "zero"), settings, shard)

    def prepare(self) -> tuple[int, int]:
        order, self.n_train, self.codes, self.bins = _prepared(self._ids[self._aligned], self._X0[self._aligned], self.s)
        return self.n_train, len(order) - self.n_train

    def set_codes(self, offset: int, count: int) -> None:
        self.features = LocalFeatureMap(self.names, CodeBlock(self.name, offset, count))

    def set_context(self, data: bytes) -> None:
        self.ctx = ckks.load_context(data)
        if self.ctx.is_private():
            raise ValueError(f"{self.name}: refusing a context that holds a secret key")

    def histograms(self, requests: dict[int, tuple[np.ndarray, list[bytes], list[bytes]]], provider_columns: int
                   ) -> dict[int, tuple[list[bytes], list[bytes]]]:
        """Per requested node, masked encrypted bin sums of g and h over the node's training rows."""
        b, scale = self.s.boost, 2.0 ** (2 * self.s.ckks.global_scale_bits)
        out = {}
        for node, (train, enc_g, enc_h) in requests.items():
            train = np.asarray(train, dtype=np.int64)
            if train.size and (train.min() < 0 or train.max() >= self.n_train):
                raise ValueError(f"{self.name}: histogram rows outside the training rows")
            layout = ckks.BlockLayout.choose(len(train), self.s.ckks.slots, max(1, provider_columns) * (b.bins + 1))
            codes = self.codes[train]
            out[node] = tuple(ckks.masked_histograms(self.ctx, enc, codes, b.bins, layout, self.s.ckks.mask_bits,
                                                     scale, f"{self.name}: gradient ciphertext")
                              for enc in (enc_g, enc_h))
        return out

    def split(self, asks: Sequence[tuple[int, np.ndarray, int, int, bool]]) -> list[tuple[int, int, np.ndarray]]:
        """Record each chosen (column, bin, missing direction) under a new split id; which node rows go left."""
        out = []
        for node, rows, column, bin_, missing_left in asks:
            codes = self.codes[np.asarray(rows, dtype=np.int64), column]
            left = (codes <= bin_) & (codes < self.s.boost.bins) | (codes == self.s.boost.bins) & bool(missing_left)
            self.splits.append((int(column), self.bins.threshold(int(column), int(bin_)), bool(missing_left)))
            out.append((node, len(self.splits) - 1, np.flatnonzero(left)))
        return out

    def split_table(self) -> pa.Table:
        """This worker's lookup table: split id -> feature code and name, threshold, missing direction, worker."""
        cols = [c for c, _, _ in self.splits]
        return pa.table({"split_id": pa.array(range(len(self.splits)), pa.int64()),
                         "code": pa.array([int(self.features.block.offset + c) for c in cols], pa.int64()),
                         "name": pa.array([self.names[c] for c in cols], pa.string()),
                         "threshold": pa.array([t for _, t, _ in self.splits], pa.float64()),
                         "missing_left": pa.array([m for _, _, m in self.splits], pa.bool_()),
                         "worker": pa.array([self.shard[0]] * len(self.splits), pa.int64())})

    def export_state(self) -> pa.Table:
        """This worker's split lookup table (tagged with its worker index) and the worker count."""
        return self.split_table().replace_schema_metadata({"workers": str(self.shard[1])})

    def import_state(self, table: pa.Table) -> int:
        """This worker's splits back by split id; ValueError when the checkpoint had another worker count."""
        workers = int((table.schema.metadata or {}).get(b"workers", b"1"))
        if workers != self.shard[1]:
            raise ValueError(f"{self.name}: checkpoint splits were made by {workers} worker(s), this run has "
                             f"{self.shard[1]}; SecureBoost resumes with the same vertical.provider_workers")
        mine = table.filter(pc.equal(table.column("worker"), self.shard[0])).sort_by("split_id")
        columns = np.asarray(mine.column("code").to_numpy(), dtype=np.int64) - self.features.block.offset
        if mine.num_rows and (columns.min() < 0 or columns.max() >= self.feature_count()):
            raise ValueError(f"{self.name}: checkpoint splits name feature codes outside this worker's block")
        self.splits = [(int(c), float(t), bool(m)) for c, t, m in
                       zip(columns, mine.column("threshold").to_pylist(), mine.column("missing_left").to_pylist())]
        return len(self.splits)

    def save_weights(self, path: str) -> str:
        return _write_table(path, self.split_table())


class BoostTrainer:
    """The driver's side of SecureBoost: routes messages between the parties; adds nothing, decrypts nothing."""

    def __init__(self, transport: Transport, providers: dict[str, list[str]], settings: Settings,
                 log: Callable[[str], None] = lambda s: None) -> None:
        self.t, self.groups, self.s, self.log = transport, dict(providers), settings, log
        self.providers = [k for keys in self.groups.values() for k in keys]
        self.done = 0
        self.stopping = EarlyStopping(settings.patience, settings.tolerance)
        self.stop = False

    def setup(self) -> dict[str, Any]:
        t, G = self.t, self.groups
        P = list(G)
        warnings = [w for ws in t.get([t.call(k, "take_warnings") for k in [BUSINESS] + [G[p][0] for p in P]])
                    for w in ws]
        start = time.perf_counter()
        intersection, pair_sizes = align(t, G)
        psi_s = time.perf_counter() - start
        splits = {tuple(x) for x in t.get([t.call(k, "prepare") for k in [BUSINESS] + self.providers])}
        if len(splits) != 1:
            raise PSIError(f"the parties disagree on the validation split: (training, validation) rows {sorted(splits)}")
        n_train, n_val = splits.pop()
        self.counts, blocks, _ = code_features(t, G)
        return {"intersection": intersection, "train_rows": n_train, "validation_rows": n_val,
                "pairwise_intersection": dict(zip(P, pair_sizes)),
                "codes": {k: list(v) for k, v in blocks.items()}, "psi_seconds": psi_s, "warnings": warnings}

    def iteration(self) -> dict[str, float]:
        """Grow one tree, level by level; training and validation metrics after it."""
        t, P = self.t, self.providers
        start = time.perf_counter()
        widest = max(self.counts.values()) if self.counts else 0
        t.get([t.call(BUSINESS, "begin", P, widest)])
        while True:
            requests = t.call(BUSINESS, "hist_requests")
            answers = {p: t.call(p, "histograms", requests, widest) for p in P}
            t.get([t.call(BUSINESS, "receive_histograms", p, self.counts[p], answers[p]) for p in P])
            asks = t.get([t.call(BUSINESS, "choose_splits")])[0]
            results = {p: t.call(p, "split", asks[p]) for p in asks}
            t.get([t.call(BUSINESS, "apply_splits", p, results[p]) for p in results])
            if not t.get([t.call(BUSINESS, "next_level")])[0]:
                break
        metrics = t.get([t.call(BUSINESS, "end_tree")])[0]
        self.done += 1
        self.stop = self.stopping.update(self.done, metrics["val_loss"])
        return {"loss": metrics["loss"], "auc": metrics["auc"], "val_loss": metrics["val_loss"],
                "val_auc": metrics["val_auc"], "seconds": time.perf_counter() - start}

    def state(self) -> dict[str, Any]:
        stopping = self.stopping
        return {"iteration": self.done, "stopping": {"best": stopping.best, "best_iteration": stopping.best_iteration,
                                                     "waited": stopping.waited}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.done = int(state["iteration"])
        for key, value in state.get("stopping", {}).items():
            setattr(self.stopping, key, value)
        self.stop = 0 < self.stopping.patience <= self.stopping.waited

    def save(self, directory: str | Path) -> dict[str, str]:
        """Each party writes its own model file (business: trees; provider: split lookup table)."""
        directory = Path(directory)
        refs = [self.t.call(BUSINESS, "save_weights", str(directory / f"{BUSINESS}.parquet"))]
        for p, keys in self.groups.items():
            for i, k in enumerate(keys):
                path = directory / f"{p}.parquet" if len(keys) == 1 else directory / f"{p}.parquet" / f"part-{i}.parquet"
                refs.append(self.t.call(k, "save_weights", str(path)))
        self.t.get(refs)
        return {BUSINESS: str(directory / f"{BUSINESS}.parquet"), **{p: str(directory / f"{p}.parquet") for p in self.groups}}


def run_boost_local(business: BoostBusiness, providers: list[BoostProvider], settings: Settings, trees: int,
                    record: bool = False, log: Callable[[str], None] = lambda s: None):
    """SecureBoost in one process. Returns (trainer, setup info, per-tree metrics)."""
    parties, groups = local_parties(business, providers)
    trainer = BoostTrainer(LocalTransport(parties, record=record), groups, settings, log)
    info = trainer.setup()
    history = []
    for tree in range(1, trees + 1):
        m = trainer.iteration()
        history.append({"iteration": tree, **m})
        log(f"tree {tree}: loss {m['loss']:.5f} auc {m['auc']:.4f} | validation loss {m['val_loss']:.5f} "
            f"auc {m['val_auc']:.4f} ({m['seconds']:.2f} s)")
        if trainer.stop:
            break
    return trainer, info, history

