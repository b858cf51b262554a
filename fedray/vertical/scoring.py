"""Joint scoring of new customers with a trained vertical model, as plain classes (no Ray).

Each party loads its own model file (``RUN_DIR/parties/<party>.parquet``: code, name, weight,
fill, center, scale) and its own file of new customers, whose columns it picks by its own
feature names. Then:

1. PSI on the new ids, exactly as in training (``protocol.align``): the business party learns
   which of its new ids every provider holds; each provider learns only the intersection size
   and its aligned row positions.
2. Each provider fills and scales its columns with its stored statistics and sends
   [[u_p]] = [[X_p w_p]] for the aligned rows, encrypted under a fresh key pair of the business
   party (public key only on the provider's side).
3. The driver adds the ciphertexts (it holds no secret key) and forwards the sum.
4. The business party decrypts Σu_p, adds its own part and the intercept, applies the link
   (sigmoid for ``logistic``), and writes Parquet ``id, score`` itself, in its file's order.
   Only the row count goes back to the driver: scores never leave the business party.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedray.data.vertical import PartyTable, VerticalDataError, read_party
from fedray.vertical import ckks
from fedray.vertical.coding import INTERCEPT_CODE
from fedray.vertical.preprocess import ColumnPrep
from fedray.vertical.protocol import (BUSINESS, Aggregator, BusinessAlignment, ProviderAlignment, Settings,
                                      Transport, _dedup, _write_table, align)
from fedray.vertical.psi import ProviderPSI

MODEL_COLUMNS = ("code", "name", "weight", "fill", "center", "scale")


class PartyModel:
    """One party's trained model, read from its own model file; rows in feature-code order."""

    def __init__(self, path: str | Path, party: str) -> None:
        path = Path(path)
        if not path.exists():
            raise VerticalDataError(f"{party}: no model file {path} (was the run trained to the end?)")
        table = pq.read_table(path)
        lacking = [c for c in MODEL_COLUMNS if c not in table.column_names]
        if lacking:
            raise VerticalDataError(f"{party}: model file {path} lacks columns {lacking}")
        table = table.sort_by("code")
        codes = table.column("code").to_numpy()
        own = codes != INTERCEPT_CODE
        self.path, self.party = str(path), party
        self.codes = codes[own]
        self.names = [n for n, keep in zip(table.column("name").to_pylist(), own) if keep]
        weights = table.column("weight").to_numpy()
        self.weights = weights[own]
        self.intercept = float(weights[~own].sum())
        prep = ColumnPrep.from_table(table)
        self.prep = ColumnPrep(prep.fill[own], prep.center[own], prep.scale[own])

    def partial_scores(self, data: PartyTable, rows: np.ndarray) -> np.ndarray:
        """X_p w_p for the given rows of a new file, its columns picked by this party's feature names."""
        where = {name: j for j, name in enumerate(data.feature_names)}
        absent = [n for n in self.names if n not in where]
        if absent:
            raise VerticalDataError(f"{data.path}: {self.party}'s model needs columns {absent} "
                                    f"(the file has {data.feature_names})")
        X = data.features[rows][:, [where[n] for n in self.names]]
        return self.prep.apply(X) @ self.weights


class _ScoringParty:
    warnings: list[str]

    def take_warnings(self) -> list[str]:
        out, self.warnings = self.warnings, []
        return out


class ScoringBusiness(_ScoringParty, BusinessAlignment):
    """The business party at scoring time: its model, its new customers, the secret key, the output."""

    def __init__(self, model_path: str, data_path: str, settings: Settings, out_path: str) -> None:
        self.name, self.s, self.out_path = BUSINESS, settings, out_path
        self.model = PartyModel(model_path, BUSINESS)
        self.data = read_party(data_path, settings.id_column, None, missing=settings.missing)
        self.warnings: list[str] = []
        keep, self._dup_error = _dedup(self.data, BUSINESS, settings, self.warnings)
        self._rows, self._ids = keep, self.data.ids[keep]
        self._psi = None
        self.min_ids = 1

    def public_context(self) -> bytes:
        self.ctx = ckks.secret_context(self.s.ckks)
        return ckks.public_context_bytes(self.ctx)

    def finish(self, agg: Sequence[bytes]) -> int:
        """Decrypt Σu_p, add its own part and the intercept, write ``id, score``; only the count leaves."""
        rows = self._rows[self._aligned]
        su = ckks.decrypt_chunks(self.ctx, agg, len(rows), self.s.ckks.plausible_bound,
                                 f"{BUSINESS}: summed partial scores")
        z = self.model.partial_scores(self.data, rows) + self.model.intercept + su
        score = 1.0 / (1.0 + np.exp(-z)) if self.s.model == "logistic" else z
        order = np.argsort(rows, kind="stable")  # the business file's own order
        _write_table(self.out_path, pa.table({"id": pa.array(self.data.ids[rows][order].tolist(), pa.string()),
                                              "score": pa.array(score[order], pa.float64())}))
        return len(rows)


class ScoringProvider(_ScoringParty, ProviderAlignment):
    """A provider at scoring time: its model and new file; sends only encrypted partial scores."""

    def __init__(self, name: str, model_path: str, data_path: str, settings: Settings) -> None:
        self.name, self.s = name, settings
        self.model = PartyModel(model_path, name)
        self.data = read_party(data_path, settings.id_column, None, missing=settings.missing)
        self.warnings: list[str] = []
        keep, self._dup_error = _dedup(self.data, name, settings, self.warnings)
        self._rows, self._ids = keep, self.data.ids[keep]
        self._psi = ProviderPSI(list(self._ids))
        self.ctx = None

    def set_context(self, data: bytes) -> None:
        self.ctx = ckks.load_context(data)
        if self.ctx.is_private():
            raise ValueError(f"{self.name}: refusing a context that holds a secret key")

    def scores(self) -> list[bytes]:
        """[[X_p w_p]] for the aligned new rows, in the common order."""
        u = self.model.partial_scores(self.data, self._rows[self._aligned])
        return ckks.encrypt_chunks(self.ctx, u, self.s.ckks.slots)


class Scorer:
    """The driver's side of joint scoring: PSI, the public context, adding ciphertexts; no key, no score."""

    def __init__(self, transport: Transport, providers: Sequence[str]) -> None:
        self.t, self.providers = transport, list(providers)
        self.agg = Aggregator()

    def run(self) -> dict[str, Any]:
        t, P = self.t, self.providers
        start = time.perf_counter()
        warnings = [w for ws in t.get([t.call(k, "take_warnings") for k in [BUSINESS, *P]]) for w in ws]
        intersection, pair_sizes = align(t, {p: [p] for p in P})
        ctx = t.call(BUSINESS, "public_context")
        t.get([t.call(p, "set_context", ctx) for p in P])
        self.agg.set_context(t.get([ctx])[0])
        total = self.agg.add(t.get([t.call(p, "scores") for p in P]), P)
        rows = t.get([t.call(BUSINESS, "finish", total)])[0]
        return {"intersection": intersection, "pairwise_intersection": dict(zip(P, pair_sizes)),
                "scored": int(rows), "warnings": warnings, "seconds": time.perf_counter() - start}


# -- SecureBoost: every party follows its own splits -------------------------------------------------

class BoostScoringBusiness(_ScoringParty, BusinessAlignment):
    """The business party scoring with trees: routes rows through its own splits, asks providers about theirs."""

    def __init__(self, model_path: str, data_path: str, settings: Settings, out_path: str) -> None:
        self.name, self.s, self.out_path = BUSINESS, settings, out_path
        path = Path(model_path)
        if not path.exists():
            raise VerticalDataError(f"{BUSINESS}: no model file {path} (was the run trained to the end?)")
        table = pq.read_table(path)
        self.base = float((table.schema.metadata or {}).get(b"base_score", b"0"))
        self.nodes = {(r["tree"], r["node"]): r for r in table.to_pylist()}
        self.data = read_party(data_path, settings.id_column, None,
                               missing="error" if settings.missing == "error" else "zero")
        where = {name: j for j, name in enumerate(self.data.feature_names)}
        needed = sorted({r["column_name"] for r in self.nodes.values() if r["owner"] == BUSINESS})
        absent = [n for n in needed if n not in where]
        if absent:
            raise VerticalDataError(f"{data_path}: the business party's trees need columns {absent}")
        self._where = where
        self.warnings: list[str] = []
        keep, self._dup_error = _dedup(self.data, BUSINESS, settings, self.warnings)
        self._rows, self._ids = keep, self.data.ids[keep]
        self._psi = None
        self.min_ids = 1

    def route_requests(self) -> Optional[dict[str, list[tuple[int, int, int, np.ndarray]]]]:
        """Resolve the frontier through own splits and leaves; the providers' splits to ask about
        (as {provider party: [(frontier index, worker, split id, aligned positions)]}); None when done."""
        if not hasattr(self, "_frontier"):
            trees = sorted({t for t, _ in self.nodes})
            self.z = np.full(len(self._aligned), self.base)
            self._frontier = [(t, 0, np.arange(len(self._aligned))) for t in trees]
        asks: dict[str, list] = {}
        self._waiting, following = {}, []
        for k, (tree, node, rows) in enumerate(self._frontier):
            r = self.nodes[(tree, node)]
            if r["owner"] == "":
                self.z[rows] += r["value"]
            elif r["owner"] == BUSINESS:
                x = self.data.features[self._rows[self._aligned[rows]], self._where[r["column_name"]]]
                left = (x < r["threshold"]) | (np.isnan(x) & r["missing_left"])
                following += [(tree, r["left"], rows[left]), (tree, r["right"], rows[~left])]
            else:
                party, _, worker = r["owner"].partition(":")
                asks.setdefault(party, []).append((k, int(worker or 0), r["split_id"], rows))
                self._waiting[k] = (tree, r, rows)
        self._frontier = following
        if not asks and not following:
            return None
        return asks

    def route_answers(self, provider: str, answers: Sequence[tuple[int, np.ndarray]]) -> None:
        """A provider's answers: (frontier index, positions within those rows that go left)."""
        for k, left_positions in answers:
            tree, r, rows = self._waiting.pop(k)
            left = np.zeros(len(rows), dtype=bool)
            left[np.asarray(left_positions, dtype=np.int64)] = True
            self._frontier += [(tree, r["left"], rows[left]), (tree, r["right"], rows[~left])]

    def finish_trees(self) -> int:
        """Write ``id, score`` (the sigmoid of base + leaf values), in the business file's order; the count."""
        rows = self._rows[self._aligned]
        order = np.argsort(rows, kind="stable")
        score = 1.0 / (1.0 + np.exp(-self.z))
        _write_table(self.out_path, pa.table({"id": pa.array(self.data.ids[rows][order].tolist(), pa.string()),
                                              "score": pa.array(score[order], pa.float64())}))
        return len(rows)


class BoostScoringProvider(_ScoringParty, ProviderAlignment):
    """A provider scoring with trees: answers which rows go left at its own splits; thresholds stay here."""

    def __init__(self, name: str, model_path: str, data_path: str, settings: Settings) -> None:
        self.name, self.s = name, settings
        path = Path(model_path)
        if not path.exists():
            raise VerticalDataError(f"{name}: no model file {path} (was the run trained to the end?)")
        table = pq.read_table(path)
        self.splits = {(r["worker"], r["split_id"]): r for r in table.to_pylist()}
        self.data = read_party(data_path, settings.id_column, None,
                               missing="error" if settings.missing == "error" else "zero")
        where = {n: j for j, n in enumerate(self.data.feature_names)}
        absent = sorted({r["name"] for r in self.splits.values()} - set(where))
        if absent:
            raise VerticalDataError(f"{data_path}: {name}'s splits need columns {absent}")
        self._where = where
        self.warnings: list[str] = []
        keep, self._dup_error = _dedup(self.data, name, settings, self.warnings)
        self._rows, self._ids = keep, self.data.ids[keep]
        self._psi = ProviderPSI(list(self._ids))

    def route(self, asks: Sequence[tuple[int, int, int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
        out = []
        for k, worker, split_id, rows in asks:
            if (worker, split_id) not in self.splits:
                raise VerticalDataError(f"{self.name}: no split {split_id} of worker {worker} in its model file")
            r = self.splits[(worker, split_id)]
            x = self.data.features[self._rows[self._aligned[np.asarray(rows, dtype=np.int64)]], self._where[r["name"]]]
            out.append((k, np.flatnonzero((x < r["threshold"]) | (np.isnan(x) & r["missing_left"]))))
        return out


class BoostScorer:
    """The driver's side of scoring with trees: PSI, then level by level, the providers' split lookups."""

    def __init__(self, transport: Transport, providers: Sequence[str]) -> None:
        self.t, self.providers = transport, list(providers)

    def run(self) -> dict[str, Any]:
        t, P = self.t, self.providers
        start = time.perf_counter()
        warnings = [w for ws in t.get([t.call(k, "take_warnings") for k in [BUSINESS, *P]]) for w in ws]
        intersection, pair_sizes = align(t, {p: [p] for p in P})
        while True:
            asks = t.get([t.call(BUSINESS, "route_requests")])[0]
            if asks is None:
                break
            answers = {p: t.call(p, "route", asks[p]) for p in asks}
            t.get([t.call(BUSINESS, "route_answers", p, answers[p]) for p in answers])
        rows = t.get([t.call(BUSINESS, "finish_trees")])[0]
        return {"intersection": intersection, "pairwise_intersection": dict(zip(P, pair_sizes)),
                "scored": int(rows), "warnings": warnings, "seconds": time.perf_counter() - start}
