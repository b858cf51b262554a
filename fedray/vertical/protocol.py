"""The vertical protocol as plain classes (no Ray): party cores, the driver's aggregator and the loop.

Roles:
* ``BusinessCore``: labels, its own features, the CKKS secret key, the intercept.
* ``ProviderCore``: its own features only.
* ``Aggregator``: the driver's arithmetic: adds ciphertexts under the public context.
* ``Trainer``: the driver's loop. It talks to parties only through a ``Transport``:
  ``LocalTransport`` calls the cores in-process (tests, benchmarks) and can record every message;
  ``fedray.vertical.actors.RayTransport`` calls the actors and forwards ObjectRefs.

Every value that crosses a party boundary passes through ``Transport.call`` as an argument or a
result. What crosses (see README_SECTION.md): blinded 32-byte PSI points, row positions,
feature counts and code blocks, the training and validation row counts, the public CKKS
context, batch row indices, ciphertexts (partial scores, their sum, the residual, masked gradient
slot vectors), masked gradient sums, and the business party's loss/AUC. Never a feature column, a
label, a weight or a column statistic.

After PSI every party splits the aligned ids alone (``fedray.vertical.split``: a seeded hash of
the id), puts its training rows first, and fits its own missing-value fill and standardization
on its training rows (``fedray.vertical.preprocess``). An "iteration" is one pass over the
training rows: one step with full batch (batch_size=0), ceil(n / batch_size) steps otherwise.
After each iteration the business party evaluates loss and AUC on the training and the
validation rows with the updated weights (one extra encrypted forward pass over all aligned
rows, whose training part is reused as the next full-batch step's forward pass).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedray.data.vertical import PartyTable, read_party
from fedray.vertical import ckks
from fedray.vertical.coding import INTERCEPT_CODE, CodeBlock, LocalFeatureMap, assign_codes
from fedray.vertical.config import _get
from fedray.vertical.optim import LocalOptimizer, load_state_table, state_table
from fedray.vertical.preprocess import ColumnPrep
from fedray.vertical.psi import BusinessPSI, PSIError, ProviderPSI, dedup
from fedray.vertical.split import EarlyStopping, train_first_order

BUSINESS = "business"


@dataclass(frozen=True)
class BoostParams:
    """SecureBoost's tree parameters (``vertical.boost``)."""

    trees: int = 20
    depth: int = 4
    learning_rate: float = 0.3
    bins: int = 32
    min_child_weight: float = 1.0
    l2: float = 1.0
    subsample: float = 1.0

    @classmethod
    def from_config(cls, b: Any) -> "BoostParams":
        if b is None:
            return cls()
        return cls(int(_get(b, "trees")), int(_get(b, "depth")), float(_get(b, "learning_rate")), int(_get(b, "bins")),
                   float(_get(b, "min_child_weight")), float(_get(b, "l2")), float(_get(b, "subsample")))


@dataclass(frozen=True)
class Settings:
    """What the parties and the driver need from the ``vertical`` config, as plain values."""

    model: str = "logistic"
    optimizer: str = "nesterov"
    lr: float = 1.0
    l2: float = 1e-3
    momentum: float = 0.9
    fit_intercept: bool = True
    standardize: bool = True
    missing: str = "mean"
    validation_fraction: float = 0.2
    validation_seed: int = 0
    patience: int = 0
    tolerance: float = 1e-4
    batch_size: int = 0
    duplicates: str = "error"
    min_intersection: int = 10
    id_column: str = "id"
    label_column: str = "y"
    plaintext_cache_mb: int = 2048
    ckks: ckks.CKKSParams = field(default_factory=ckks.CKKSParams)
    boost: BoostParams = field(default_factory=BoostParams)

    @classmethod
    def from_config(cls, v: Any) -> "Settings":
        return cls(model=str(_get(v, "model")), optimizer=str(_get(v, "optimizer")), lr=float(_get(v, "lr")),
                   l2=float(_get(v, "l2")), momentum=float(_get(v, "momentum")),
                   fit_intercept=bool(_get(v, "fit_intercept")), standardize=bool(_get(v, "standardize")),
                   missing=str(_get(v, "missing")), validation_fraction=float(_get(v, "validation_fraction")),
                   validation_seed=int(_get(v, "validation_seed")),
                   patience=int(_get(_get(v, "early_stopping"), "patience")),
                   tolerance=float(_get(_get(v, "early_stopping"), "tolerance")),
                   batch_size=int(_get(v, "batch_size")), duplicates=str(_get(v, "duplicates")),
                   min_intersection=int(_get(v, "min_intersection")), id_column=str(_get(v, "id_column")),
                   label_column=str(_get(v, "label_column")),
                   plaintext_cache_mb=int(_get(v, "plaintext_cache_mb", 2048)),
                   ckks=ckks.CKKSParams.from_config(_get(v, "ckks")),
                   boost=BoostParams.from_config(_get(v, "boost")))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula with average ranks for ties (NaN if one class only)."""
    y = np.asarray(y) > 0.5
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    ranks = avg_rank[inv]
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


INTERCEPT_NAME = "(intercept)"


def model_table(codes: np.ndarray, names: Sequence[str], weights: np.ndarray, prep: ColumnPrep) -> pa.Table:
    """A party's own model file: per feature code its column name, weight, fill value, centre and scale."""
    return pa.table({"code": pa.array(codes, pa.int64()), "name": pa.array(list(names), pa.string()),
                     "weight": pa.array(weights, pa.float64()), **prep.columns()})


def _write_table(path: str | Path, table: pa.Table) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return str(path)


def _dedup(table: PartyTable, party: str, settings: Settings, warnings: list[str]):
    """Row positions to keep, and the PSIError to raise at PSI time when duplicates are an error.

    Raised from psi_start rather than the constructor, so that a Ray actor reports it as a
    method error (with its message) instead of dying in its creation task.
    """
    try:
        keep, rep = dedup(table.ids, party, table.path, settings.duplicates)
    except PSIError as exc:
        return np.arange(len(table.ids)), exc
    if rep:
        warnings.append(rep.message(party, table.path) + "; kept the first row of each")
    return keep, None


class _Party:
    name: str
    warnings: list[str]

    def take_warnings(self) -> list[str]:
        out, self.warnings = self.warnings, []
        return out

    def feature_count(self) -> int:
        return self.X.shape[1]

    def rows(self, batch: Optional[np.ndarray]) -> np.ndarray:
        """Training rows (all of them for batch None), prepared."""
        return self.X if batch is None else self.X[batch]

    def _prepare(self, aligned_ids: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Split the aligned rows, fit fill and scaling on the training part; the row order used (train first)."""
        order, n_train = train_first_order(aligned_ids, self.s.validation_fraction, self.s.validation_seed)
        raw = X[order]
        self.prep = ColumnPrep.fit(raw[:n_train], self.s.missing, self.s.standardize)
        self.X_all = np.ascontiguousarray(self.prep.apply(raw))
        self.X = self.X_all[:n_train]
        self.n_train, self.n_val = n_train, len(order) - n_train
        return order

    # -- own checkpoint state (never a protocol message: in a real deployment each party writes its
    #    own state to its own storage; the simulation's job process gathers one file per party) --
    def export_state(self) -> pa.Table:
        """This party's weights and momentum keyed by feature code (the business party's intercept: -1)."""
        codes, _ = self.weights_by_code()
        return state_table(codes, self.opt)

    def import_state(self, table: pa.Table) -> int:
        """Restore weights and momentum by feature code; ValueError naming the party if codes are missing."""
        codes, _ = self.weights_by_code()
        self._su_all = None  # a cached full-batch forward pass belonged to the old weights
        return load_state_table(self.name, codes, self.opt, table)

    def _optimizer(self, dim: int) -> LocalOptimizer:
        return LocalOptimizer(dim, self.s.optimizer, self.s.lr, self.s.l2, self.s.momentum)


class BusinessAlignment:
    """The business party's PSI steps over its own deduplicated ids ``_ids``; sets ``_aligned``."""

    _ids: np.ndarray
    _dup_error: Optional[PSIError]
    min_ids: int

    def psi_start(self) -> list[bytes]:
        if self._dup_error:
            raise self._dup_error
        self._psi = BusinessPSI(list(self._ids))
        return self._psi.single

    def psi_receive(self, provider: str, their_single: Sequence[bytes]) -> None:
        self._psi.receive(provider, their_single)

    def psi_match(self, provider: str, double_of_mine: Sequence[bytes]) -> int:
        return self._psi.match(provider, double_of_mine)

    def psi_finish(self) -> dict[str, np.ndarray]:
        """Fix the common order; each provider's aligned row positions (this party keeps its own)."""
        mine, theirs = self._psi.finish(self.min_ids)
        self._aligned = mine
        self._psi = None
        return theirs


class ProviderAlignment:
    """A provider's PSI steps over its own deduplicated ids ``_ids``; sets ``_aligned``."""

    name: str
    _ids: np.ndarray
    _dup_error: Optional[PSIError]
    _psi: Optional[ProviderPSI]

    def psi_start(self) -> list[bytes]:
        if self._dup_error:
            raise self._dup_error
        return self._psi.single()

    def psi_reblind(self, points: Sequence[bytes]) -> list[bytes]:
        return self._psi.reblind(points)

    def psi_align(self, positions: np.ndarray) -> int:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self._ids)
                               or len(np.unique(positions)) != len(positions)):
            raise PSIError(f"{self.name}: invalid alignment positions")
        self._aligned = positions
        self._psi = None
        return len(positions)


class BusinessCore(_Party, BusinessAlignment):
    """The label holder. Keeps the secret key; sees Σu_p in the clear (documented leakage)."""

    def __init__(self, table: PartyTable, settings: Settings) -> None:
        if table.labels is None:
            raise ValueError(f"{table.path}: the business party needs a label column")
        self.name = BUSINESS
        self.s = settings
        self.path = table.path
        self.warnings = []
        keep, self._dup_error = _dedup(table, BUSINESS, settings, self.warnings)
        self._ids = table.ids[keep]
        self._X0, self._y0 = table.features[keep], table.labels[keep]
        self.names = table.feature_names
        self._psi: Optional[BusinessPSI] = None
        self.min_ids = settings.min_intersection
        self.X = self._X0  # until aligned
        self.y = self._y0
        self.ctx = None
        self._su_all: Optional[np.ndarray] = None

    @classmethod
    def from_file(cls, path: str, settings: Settings) -> "BusinessCore":
        kind = "binary" if settings.model == "logistic" else "real"
        return cls(read_party(path, settings.id_column, settings.label_column, kind, settings.missing), settings)

    def prepare(self) -> tuple[int, int]:
        """Own split, fill and scaling of the aligned rows; (training rows, validation rows)."""
        order = self._prepare(self._ids[self._aligned], self._X0[self._aligned])
        self.y_all = self._y0[self._aligned][order]
        self.y = self.y_all[: self.n_train]
        self.n = self.n_train
        return self.n_train, self.n_val

    # -- coding and keys ------------------------------------------------------------------------
    def assign_codes(self, counts: list[tuple[str, int]]) -> dict[str, tuple[int, int]]:
        blocks = assign_codes([(BUSINESS, self.feature_count())] + list(counts))
        self.features = LocalFeatureMap(self.names, blocks[BUSINESS])
        self.opt = self._optimizer(self.feature_count() + 1)
        self._penalize = np.r_[np.ones(self.feature_count()), 0.0]
        return {p: (b.offset, b.count) for p, b in blocks.items()}

    def public_context(self) -> bytes:
        self.ctx = ckks.secret_context(self.s.ckks)
        return ckks.public_context_bytes(self.ctx)

    # -- training -----------------------------------------------------------------------------
    def _z(self, batch: Optional[np.ndarray], su: np.ndarray) -> np.ndarray:
        w = self.opt.w
        b = w[-1] if self.s.fit_intercept else 0.0
        return self.rows(batch) @ w[:-1] + b + su

    def forward(self, batch: Optional[np.ndarray], agg: Optional[Sequence[bytes]]) -> None:
        """Decrypt Σu_p for the batch (agg None: reuse the last evaluate()'s full-data sum)."""
        m = self.n if batch is None else len(batch)
        if agg is None:
            if batch is not None or self._su_all is None:
                raise RuntimeError("no cached full-batch scores to reuse")
            su = self._su_all
        else:
            su = ckks.decrypt_chunks(self.ctx, agg, m, self.s.ckks.plausible_bound,
                                     f"{BUSINESS}: summed partial scores")
        self._batch, self._zb = batch, self._z(batch, su)

    def _residual(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.s.model == "logistic":
            return 1.0 / (1.0 + np.exp(-z)) - y
        return z - y

    def backward(self, segment: int = 0) -> list[bytes]:
        """Residual d, own update, and [[d]] for the providers, in blocks of ``segment`` rows
        (``ckks.SlotLayout``; the driver picks it, 0: the default)."""
        batch, z = self._batch, self._zb
        y = self.y if batch is None else self.y[batch]
        d = self._residual(z, y)
        m = len(d)
        grad = np.r_[self.rows(batch).T @ d / m, d.mean() if self.s.fit_intercept else 0.0]
        self.opt.step(grad, self._penalize)
        layout = ckks.SlotLayout(m, self.s.ckks.slots, segment)
        self._layout = layout
        ops = ckks.seal_ops(self.ctx)
        return [ops.encrypt(v) for v in layout.residual_plain(d)]

    def unmask(self, masked: Sequence[bytes]) -> np.ndarray:
        """Masked slot vectors in, masked per-feature sums out. Never sees an unmasked gradient."""
        return ckks.unmask_sums(self.ctx, masked, self._layout, self.s.ckks.plausible_bound)

    def _metrics(self, z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(loss, AUC) of scores z; NaN for no rows, AUC NaN for the linear model."""
        if len(y) == 0:
            return float("nan"), float("nan")
        if self.s.model == "logistic":
            return float(np.mean(np.logaddexp(0.0, z) - y * z)), auc(y, z)
        return float(np.mean((z - y) ** 2)), float("nan")

    def evaluate(self, agg: Sequence[bytes]) -> dict[str, float]:
        """Loss and AUC on the training and the validation rows from Σu_p over all aligned rows."""
        su = ckks.decrypt_chunks(self.ctx, agg, len(self.y_all), self.s.ckks.plausible_bound,
                                 f"{BUSINESS}: summed partial scores (evaluation)")
        w = self.opt.w
        z = self.X_all @ w[:-1] + (w[-1] if self.s.fit_intercept else 0.0) + su
        self._su_all = su[: self.n_train]
        loss, train_auc = self._metrics(z[: self.n_train], self.y)
        val_loss, val_auc = self._metrics(z[self.n_train:], self.y_all[self.n_train:])
        return {"loss": loss, "auc": train_auc, "val_loss": val_loss, "val_auc": val_auc}

    # -- own results ----------------------------------------------------------------------------
    def weights_by_code(self) -> tuple[np.ndarray, np.ndarray]:
        codes = np.r_[self.features.block.codes(), INTERCEPT_CODE]
        return codes, self.opt.w.copy()

    def save_weights(self, path: str) -> str:
        """This party's model file: its weights, intercept (code -1), fill values and scaling, keyed by code."""
        codes, weights = self.weights_by_code()
        prep = ColumnPrep(np.r_[self.prep.fill, 0.0], np.r_[self.prep.center, 0.0], np.r_[self.prep.scale, 1.0])
        return _write_table(path, model_table(codes, [*self.names, INTERCEPT_NAME], weights, prep))


class ProviderCore(_Party, ProviderAlignment):
    """A data provider: its own features and weights; computes masked encrypted gradients.

    ``shard=(k, W)``: this core holds only the k-th of W contiguous column blocks of the party's
    file (``vertical.provider_workers``), so one provider's gradient work spreads over W processes.
    All shards belong to the same party; only shard 0 takes part in PSI.
    """

    def __init__(self, name: str, table: PartyTable, settings: Settings, shard: tuple[int, int] = (0, 1)) -> None:
        k, workers = shard
        if not 0 <= k < workers or workers > table.features.shape[1]:
            raise ValueError(f"{name}: shard {k} of {workers} for {table.features.shape[1]} features")
        cols = np.array_split(np.arange(table.features.shape[1]), workers)[k]
        self.name = name
        self.shard = (k, workers)
        self.s = settings
        self.path = table.path
        self.warnings = []
        keep, self._dup_error = _dedup(table, name, settings, self.warnings)
        self._ids = table.ids[keep]
        self._X0 = np.ascontiguousarray(table.features[keep][:, cols])
        self.names = [table.feature_names[i] for i in cols]
        self.X = self._X0
        self._psi = ProviderPSI(list(self._ids)) if k == 0 else None
        self.ctx = None
        self._plains = ckks.PlainCache(settings.plaintext_cache_mb << 20)

    @classmethod
    def from_file(cls, name: str, path: str, settings: Settings, shard: tuple[int, int] = (0, 1)) -> "ProviderCore":
        return cls(name, read_party(path, settings.id_column, None, missing=settings.missing), settings, shard)

    def prepare(self) -> tuple[int, int]:
        """Own split, fill and scaling of the aligned rows; (training rows, validation rows)."""
        self._prepare(self._ids[self._aligned], self._X0[self._aligned])
        return self.n_train, self.n_val

    def set_codes(self, offset: int, count: int) -> None:
        self.features = LocalFeatureMap(self.names, CodeBlock(self.name, offset, count))
        self.opt = self._optimizer(self.feature_count())

    def set_context(self, data: bytes) -> None:
        self.ctx = ckks.load_context(data)
        if self.ctx.is_private():
            raise ValueError(f"{self.name}: refusing a context that holds a secret key")
        self._plains.clear()

    def scores(self, batch: Optional[np.ndarray]) -> list[bytes]:
        """[[u_p]] = [[X_p w_p]] for the training batch, one ciphertext per ``slots`` rows."""
        return ckks.encrypt_chunks(self.ctx, self.rows(batch) @ self.opt.w, self.s.ckks.slots)

    def eval_scores(self) -> list[bytes]:
        """[[u_p]] for all aligned rows, training rows first (the evaluation pass)."""
        return ckks.encrypt_chunks(self.ctx, self.X_all @ self.opt.w, self.s.ckks.slots)

    def encode_columns(self, segment: int) -> int:
        """Encode the full batch's gradient multipliers for blocks of ``segment`` rows into the cache now
        (during setup, so that no epoch pays for it); the bytes kept."""
        layout = ckks.SlotLayout(self.n_train, self.s.ckks.slots, segment)
        ckks.encode_multipliers(self.ctx, self.X, layout, self._plains)
        return self._plains.used

    def masked_gradient(self, batch: Optional[np.ndarray], enc_d: Sequence[bytes], segment: int = 0) -> list[bytes]:
        """Masked [[X_p^T d]] slot vectors for [[d]] in blocks of ``segment`` rows (as the business party's)."""
        X = self.rows(batch)
        self._m = X.shape[0]
        layout = ckks.SlotLayout(self._m, self.s.ckks.slots, segment)
        scale = 2.0 ** (2 * self.s.ckks.global_scale_bits)
        # the full batch's multipliers never change: their encodings are kept for every later epoch
        cache = self._plains if batch is None else None
        out, self._mask_sums = ckks.masked_gradient(self.ctx, enc_d, X, layout, self.s.ckks.mask_bits, scale,
                                                    what=f"{self.name}: residual ciphertext", cache=cache)
        return out

    def apply(self, masked_sums: np.ndarray) -> None:
        f = self.feature_count()
        masked_sums = np.asarray(masked_sums, dtype=np.float64)
        if masked_sums.shape[0] < f:
            raise ValueError(f"{self.name}: {masked_sums.shape[0]} gradient sums for {f} features")
        grad = (masked_sums[:f] - self._mask_sums) / self._m
        self._mask_sums = None
        self.opt.step(grad)

    def weights_by_code(self) -> tuple[np.ndarray, np.ndarray]:
        return self.features.block.codes(), self.opt.w.copy()

    def save_weights(self, path: str) -> str:
        """This party's model file: its weights, fill values and scaling, keyed by code."""
        codes, weights = self.weights_by_code()
        return _write_table(path, model_table(codes, self.names, weights, self.prep))


class Aggregator:
    """The driver's arithmetic: ciphertext additions under the public context (no secret key)."""

    def __init__(self) -> None:
        self.ctx = None

    def set_context(self, data: bytes) -> None:
        self.ctx = ckks.load_context(data)

    def add(self, lists: Sequence[Sequence[bytes]], names: Optional[Sequence[str]] = None) -> list[bytes]:
        if len(lists) == 1:
            return list(lists[0])
        return ckks.add_ciphertexts(self.ctx, lists, names)


class Transport(Protocol):
    def call(self, party: str, method: str, *args: Any) -> Any: ...
    def get(self, handles: list) -> list: ...


@dataclass
class Message:
    src: str
    dst: str
    method: str
    payload: Any


class LocalTransport:
    """In-process calls into the party cores. ``record=True`` keeps every message (for tests)."""

    def __init__(self, parties: dict[str, Any], record: bool = False) -> None:
        self.parties = parties
        self.record = record
        self.messages: list[Message] = []

    def call(self, party: str, method: str, *args: Any) -> Any:
        if self.record:
            self.messages.append(Message("driver", party, method, args))
        out = getattr(self.parties[party], method)(*args)
        if self.record:
            self.messages.append(Message(party, "driver", method, out))
        return out

    def get(self, handles: list) -> list:
        return list(handles)


def code_features(t: Transport, groups: dict[str, list[str]]) -> tuple[dict[str, int], dict, Any]:
    """Number every provider worker's features into the shared code set (blocks the business party assigns per
    party), then hand every provider the business party's public context -> (feature count per worker, the
    code block of each party, the context as the transport returned it)."""
    providers = [k for keys in groups.values() for k in keys]
    counts = dict(zip(providers, t.get([t.call(k, "feature_count") for k in providers])))
    blocks = t.get([t.call(BUSINESS, "assign_codes", [(p, sum(counts[k] for k in keys)) for p, keys in groups.items()])])[0]
    done = []
    for p, keys in groups.items():
        offset = blocks[p][0]
        for k in keys:
            done.append(t.call(k, "set_codes", offset, counts[k]))
            offset += counts[k]
    t.get(done)
    ctx = t.call(BUSINESS, "public_context")
    t.get([t.call(k, "set_context", ctx) for k in providers])
    return counts, blocks, ctx


def align(t: Transport, groups: dict[str, list[str]]) -> tuple[int, list[int]]:
    """PSI between the business party and every provider through the driver; every worker of a
    provider gets its aligned row positions. Returns (intersection size, pairwise sizes)."""
    P = list(groups)
    # both sides blind their own ids at once, then each blinds the other's points at once
    own = {p: t.call(groups[p][0], "psi_start") for p in P}
    A = t.call(BUSINESS, "psi_start")
    received = [t.call(BUSINESS, "psi_receive", p, own[p]) for p in P]
    reblinded = {p: t.call(groups[p][0], "psi_reblind", A) for p in P}
    pair_sizes = t.get(received + [t.call(BUSINESS, "psi_match", p, reblinded[p]) for p in P])[len(P):]
    positions = t.get([t.call(BUSINESS, "psi_finish")])[0]
    sizes = t.get([t.call(k, "psi_align", positions[p]) for p in P for k in groups[p]])
    return int(sizes[0]), [int(s) for s in pair_sizes]


class Trainer:
    """The driver's side of the protocol, independent of how parties are reached."""

    def __init__(self, transport: Transport, providers: list[str] | dict[str, list[str]], settings: Settings,
                 seed: int = 0, log: Callable[[str], None] = lambda s: None) -> None:
        """``providers``: transport keys, or {party: [keys of its shards]} (the first does PSI)."""
        self.t = transport
        self.groups = dict(providers) if isinstance(providers, dict) else {p: [p] for p in providers}
        self.providers = [k for keys in self.groups.values() for k in keys]
        self.s = settings
        self.rng = np.random.default_rng(seed)
        self.agg = Aggregator()
        self.log = log
        self._cached = False
        self.n = 0
        self.provider_features = 0  # set by setup: all provider workers' feature counts
        self.done = 0  # iterations completed
        self.stopping = EarlyStopping(settings.patience, settings.tolerance)
        self.stop = False  # set when early stopping says the last iteration was the final one

    def setup(self) -> dict[str, Any]:
        t, G = self.t, self.groups
        P = list(G)  # parties
        warnings = [w for ws in t.get([t.call(k, "take_warnings") for k in [BUSINESS] + [G[p][0] for p in P]])
                    for w in ws]
        for w in warnings:
            self.log(f"warning: {w}")
        start = time.perf_counter()
        intersection, pair_sizes = align(t, G)
        psi_s = time.perf_counter() - start
        self.log(f"PSI: {intersection} common ids ({psi_s:.1f} s)")
        splits = {tuple(x) for x in t.get([t.call(k, "prepare") for k in [BUSINESS] + self.providers])}
        if len(splits) != 1:
            raise PSIError(f"the parties disagree on the validation split: (training, validation) rows {sorted(splits)}")
        self.n, self.n_val = splits.pop()
        counts, blocks, ctx = code_features(t, G)
        self.provider_features = sum(counts.values())
        self.agg.set_context(t.get([ctx])[0])
        if not 0 < self.s.batch_size < self.n:  # full batch: the providers encode their multipliers once, now
            start = time.perf_counter()
            cached = t.get([t.call(p, "encode_columns", self._segment(self.n)) for p in self.providers])
            self.log(f"providers encoded their columns ({sum(cached) >> 20} MB kept, "
                     f"{time.perf_counter() - start:.1f} s)")
        return {"intersection": intersection, "train_rows": self.n, "validation_rows": self.n_val,
                "pairwise_intersection": dict(zip(P, map(int, pair_sizes))),
                "codes": {k: list(v) for k, v in blocks.items()}, "psi_seconds": psi_s, "warnings": warnings}

    def _batches(self) -> list[Optional[np.ndarray]]:
        b = self.s.batch_size
        if not 0 < b < self.n:
            return [None]
        perm = self.rng.permutation(self.n)
        return [np.sort(perm[i:i + b]) for i in range(0, self.n, b)]

    def _segment(self, m: int) -> int:
        """Rows per block of [[d]] for a batch of m rows (``ckks.SlotLayout.choose``)."""
        return ckks.SlotLayout.choose(m, self.s.ckks.slots, self.provider_features).segment

    def _scores(self, batch: Optional[np.ndarray]) -> list[bytes]:
        t = self.t
        return self.agg.add(t.get([t.call(p, "scores", batch) for p in self.providers]), self.providers)

    def iteration(self) -> dict[str, float]:
        """One pass over the aligned rows, then an encrypted evaluation pass."""
        t, P = self.t, self.providers
        start = time.perf_counter()
        for batch in self._batches():
            if batch is None and self._cached:
                t.call(BUSINESS, "forward", None, None)
            else:
                t.call(BUSINESS, "forward", batch, self._scores(batch))
            segment = self._segment(self.n if batch is None else len(batch))
            enc_d = t.call(BUSINESS, "backward", segment)
            masked = {p: t.call(p, "masked_gradient", batch, enc_d, segment) for p in P}
            sums = {p: t.call(BUSINESS, "unmask", masked[p]) for p in P}
            t.get([t.call(p, "apply", sums[p]) for p in P])
        evaluation = self.agg.add(t.get([t.call(p, "eval_scores") for p in P]), P)
        metrics = t.get([t.call(BUSINESS, "evaluate", evaluation)])[0]
        self._cached = True
        self.done += 1
        self.stop = self.stopping.update(self.done, metrics["val_loss"])
        return {**metrics, "seconds": time.perf_counter() - start}

    # -- checkpoint state of the driver's loop: iteration count and the batch generator --------------
    def state(self) -> dict[str, Any]:
        stopping = self.stopping
        return {"iteration": self.done, "batch_rng": self.rng.bit_generator.state,
                "stopping": {"best": stopping.best, "best_iteration": stopping.best_iteration,
                             "waited": stopping.waited}}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue after ``state["iteration"]`` iterations with the saved batch generator. The next
        full-batch step re-runs its forward pass (the cached one belonged to the old weights)."""
        self.done = int(state["iteration"])
        self.rng.bit_generator.state = state["batch_rng"]
        for key, value in state.get("stopping", {}).items():
            setattr(self.stopping, key, value)
        self.stop = 0 < self.stopping.patience <= self.stopping.waited
        self._cached = False

    def shard_keys(self) -> dict[str, list[str]]:
        """{party: transport keys of its workers}, the business party included."""
        return {BUSINESS: [BUSINESS], **{p: list(keys) for p, keys in self.groups.items()}}

    def save(self, directory: str | Path) -> dict[str, str]:
        """Each party writes its own weights: DIR/<party>.parquet, a file; or, for a provider with
        several workers, a Parquet dataset directory with one part-K.parquet per worker."""
        directory = Path(directory)
        refs = [self.t.call(BUSINESS, "save_weights", str(directory / f"{BUSINESS}.parquet"))]
        for p, keys in self.groups.items():
            for i, k in enumerate(keys):
                path = directory / f"{p}.parquet" if len(keys) == 1 else directory / f"{p}.parquet" / f"part-{i}.parquet"
                refs.append(self.t.call(k, "save_weights", str(path)))
        self.t.get(refs)
        return {BUSINESS: str(directory / f"{BUSINESS}.parquet"),
                **{p: str(directory / f"{p}.parquet") for p in self.groups}}


def local_parties(business: Any, providers: list[Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Party cores by transport key, and each provider party's worker keys: cores with the same name are shards
    (workers) of one party, in shard order."""
    by_party: dict[str, list[Any]] = {}
    for p in providers:
        by_party.setdefault(p.name, []).append(p)
    parties: dict[str, Any] = {BUSINESS: business}
    groups = {}
    for name, cores in by_party.items():
        keys = [name] if len(cores) == 1 else [f"{name}:{k}" for k in range(len(cores))]
        parties.update(zip(keys, cores))
        groups[name] = keys
    return parties, groups


def run_local(business: BusinessCore, providers: list[ProviderCore], settings: Settings, iterations: int,
              seed: int = 0, record: bool = False, log: Callable[[str], None] = lambda s: None):
    """Whole protocol in one process. Returns (trainer, setup info, per-iteration metrics).

    Provider cores with the same name are shards (workers) of one party, in shard order.
    """
    parties, groups = local_parties(business, providers)
    transport = LocalTransport(parties, record=record)
    trainer = Trainer(transport, groups, settings, seed, log)
    info = trainer.setup()
    history = []
    for it in range(1, iterations + 1):
        m = trainer.iteration()
        history.append({"iteration": it, **m})
        log(f"iteration {it}: {progress(m)}")
        if trainer.stop:
            log(f"early stopping after iteration {it}: best validation loss at iteration "
                f"{trainer.stopping.best_iteration}")
            break
    return trainer, info, history


def progress(m: dict[str, float]) -> str:
    """One iteration's metrics as a progress line."""
    return (f"loss {m['loss']:.5f} auc {m['auc']:.4f} | validation loss {m['val_loss']:.5f} "
            f"auc {m['val_auc']:.4f} ({m['seconds']:.2f} s)")
