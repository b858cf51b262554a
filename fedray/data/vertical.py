"""Reader for one party's vertical-training file.

Layouts (FATE "hetero" examples): a business (guest) file holds ``id,y,x0,x1,..``; a provider
(host) file holds ``id,x0,x1,..``. CSV or Parquet (by extension ``.parquet``/``.pq``).

The fast path parses with pyarrow. When anything is wrong, a slow exact scan (Python ``csv``)
finds the first bad cell and the error names the file, the 1-based line and the column.
Ids are kept as strings; features become a float64 matrix; the label is 0/1 (``binary``) or any
finite number (``real``, for linear regression).

Missing feature cells (``missing`` other than ``error``): an empty cell, ``NA``, ``NaN``, ``nan``,
``null`` or ``NULL`` in a CSV file, a null or NaN in a Parquet file. They become NaN in the
feature matrix; the owning party fills them (``fedray.vertical.preprocess``). A label or an id is
never allowed to be missing, and infinities stay an error. With ``missing="error"`` the first
missing cell is an error naming the file, line (or row) and column.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedray.vertical.config import MISSING


MISSING_TOKENS = ("", "NA", "NaN", "nan", "null", "NULL")
FILL_HINT = " (set vertical.missing to zero, mean or median to fill missing cells)"


class VerticalDataError(ValueError):
    """A problem with a party's data file; the message names the file, line (or row) and column."""


@dataclass
class PartyTable:
    """One party's rows: string ids, a float64 feature matrix, its column names, optional labels."""

    path: str
    ids: np.ndarray  # object array of str, one per row
    features: np.ndarray  # float64, shape (rows, features)
    feature_names: list[str]
    labels: Optional[np.ndarray] = None  # float64 0/1 (binary) or real values

    @property
    def rows(self) -> int:
        return len(self.ids)

    def to_arrow(self) -> pa.Table:
        cols = {"id": pa.array(self.ids.tolist(), pa.string())}
        if self.labels is not None:
            cols["y"] = pa.array(self.labels)
        for j, name in enumerate(self.feature_names):
            cols[name] = pa.array(self.features[:, j])
        return pa.table(cols)


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def read_party(path: str | Path, id_column: str = "id", label_column: Optional[str] = None,
               label_kind: str = "binary", missing: str = "error") -> PartyTable:
    """Read a party's file. ``label_column=None``: a provider file (no label).

    Raises VerticalDataError for: a missing/empty file, no data rows, a missing id or label
    column, a non-numeric/non-finite feature value, a missing feature value when ``missing`` is
    ``error`` (other policies: NaN, see the module doc), an empty id, a label outside {0,1}
    (binary) or non-finite (real).
    """
    path = Path(path)
    if label_kind not in ("binary", "real"):
        raise ValueError(f"label_kind={label_kind!r}: allowed values are binary, real")
    if missing not in MISSING:
        raise ValueError(f"missing={missing!r}: allowed values are {', '.join(MISSING)}")
    allow = missing != "error"
    if not path.is_file():
        raise VerticalDataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VerticalDataError(f"{path}: empty file (expected a header line '{id_column},...')")
    if _is_parquet(path):
        return _read_parquet(path, id_column, label_column, label_kind, allow)
    return _read_csv(path, id_column, label_column, label_kind, allow)


def _check_header(path: Path, names: list[str], id_column: str, label_column: Optional[str],
                  where: str) -> list[str]:
    if id_column not in names:
        raise VerticalDataError(f"{path}{where}: no id column {id_column!r}; columns are {names}")
    if label_column is not None and label_column not in names:
        raise VerticalDataError(f"{path}{where}: no label column {label_column!r}; columns are {names}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise VerticalDataError(f"{path}{where}: duplicate column names {dup}")
    feats = [n for n in names if n not in (id_column, label_column)]
    if not feats:
        raise VerticalDataError(f"{path}{where}: no feature columns besides {id_column!r}"
                                + (f" and {label_column!r}" if label_column else ""))
    return feats


def _cell_error(value: str, column: str, label_column: Optional[str], label_kind: str,
                allow_missing: bool = False) -> Optional[str]:
    """Why a feature/label cell is invalid, or None (a missing feature cell is fine when allowed)."""
    if allow_missing and column != label_column and value.strip() in MISSING_TOKENS:
        return None
    if value.strip() == "":
        return "missing value" + ("" if column == label_column else FILL_HINT)
    try:
        x = float(value)
    except ValueError:
        return f"non-numeric value {value!r}"
    if not math.isfinite(x):
        return f"non-finite value {value!r}" + ("" if column == label_column or math.isinf(x) else FILL_HINT)
    if column == label_column and label_kind == "binary" and x not in (0.0, 1.0):
        return f"label {value!r} not in {{0,1}}"
    return None


def _scan_csv(path: Path, id_column: str, label_column: Optional[str], label_kind: str, allow: bool) -> None:
    """Exact slow scan: raise VerticalDataError at the first bad line/cell."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise VerticalDataError(f"{path}: empty file")
        header = [h.strip() for h in header]
        rows = 0
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and row[0].strip() == ""):
                raise VerticalDataError(f"{path}:{line}: empty line")
            rows += 1
            if len(row) != len(header):
                raise VerticalDataError(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
            for name, value in zip(header, row):
                if name == id_column:
                    if value.strip() == "":
                        raise VerticalDataError(f"{path}:{line}: column {name!r}: empty id")
                    continue
                why = _cell_error(value, name, label_column, label_kind, allow)
                if why:
                    raise VerticalDataError(f"{path}:{line}: column {name!r}: {why}")
        if rows == 0:
            raise VerticalDataError(f"{path}: no data rows (only a header)")


def _utf8_error(path: Path) -> VerticalDataError:
    """The first line that is not valid UTF-8, as a VerticalDataError naming file, line and byte."""
    with open(path, "rb") as fh:
        for line, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return VerticalDataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                                         f"{exc.start + 1}); save the file as UTF-8 CSV")
    return VerticalDataError(f"{path}: not UTF-8 text")


def _read_csv(path: Path, id_column: str, label_column: Optional[str], label_kind: str, allow: bool) -> PartyTable:
    try:
        return _read_csv_utf8(path, id_column, label_column, label_kind, allow)
    except UnicodeDecodeError:
        raise _utf8_error(path) from None


def _read_csv_utf8(path: Path, id_column: str, label_column: Optional[str], label_kind: str,
                   allow: bool) -> PartyTable:
    with open(path, newline="", encoding="utf-8") as fh:
        first = fh.readline()
    if first.strip() == "":
        raise VerticalDataError(f"{path}:1: empty header line (expected '{id_column},...')")
    names = [h.strip() for h in next(csv.reader([first]))]
    feats = _check_header(path, names, id_column, label_column, ":1")
    types = {n: pa.float64() for n in names}
    types[id_column] = pa.string()
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                                 quoted_strings_can_be_null=False,
                                                 **({"null_values": list(MISSING_TOKENS)} if allow else {})),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        _scan_csv(path, id_column, label_column, label_kind, allow)
        raise VerticalDataError(f"{path}: cannot parse: {exc}") from exc
    try:
        return _to_party(path, table, id_column, label_column, label_kind, feats, allow)
    except VerticalDataError:
        _scan_csv(path, id_column, label_column, label_kind, allow)  # exact line and column
        raise


def _read_parquet(path: Path, id_column: str, label_column: Optional[str], label_kind: str,
                  allow: bool) -> PartyTable:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise VerticalDataError(f"{path}: not a readable Parquet file: {exc}") from exc
    feats = _check_header(path, table.column_names, id_column, label_column, "")
    return _to_party(path, table, id_column, label_column, label_kind, feats, allow)


def _numeric(path: Path, table: pa.Table, name: str, label_column: Optional[str], label_kind: str,
             allow: bool = False) -> np.ndarray:
    """A column as float64; NaN for its missing cells when ``allow`` (features only), else an error."""
    col = table.column(name)
    allow = allow and name != label_column
    try:
        arr = pc.cast(col, pa.float64())
        if arr.null_count and not allow:
            raise pa.ArrowInvalid("null")
        values = arr.fill_null(np.nan).to_numpy() if arr.null_count else arr.to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        values = None
    bad = None
    if values is None:
        for i, v in enumerate(col.to_pylist()):
            if v is None:
                why = None if allow else "missing value" + ("" if name == label_column else FILL_HINT)
            else:
                why = _cell_error(str(v), name, label_column, label_kind, allow)
            if why:
                bad = (i, why)
                break
        bad = bad or (0, f"cannot convert type {col.type} to float64")
    else:
        if name == label_column and label_kind == "binary":
            wrong = np.flatnonzero((values != 0.0) & (values != 1.0))
        else:
            wrong = np.flatnonzero(np.isinf(values) if allow else ~np.isfinite(values))
        if wrong.size:
            i = int(wrong[0])
            bad = (i, _cell_error(repr(float(values[i])), name, label_column, label_kind) or "invalid value")
    if bad is not None:
        i, why = bad
        where = f":{i + 2}" if path.suffix.lower() not in (".parquet", ".pq") else f": row {i + 1}"
        raise VerticalDataError(f"{path}{where}: column {name!r}: {why}")
    return values


def _to_party(path: Path, table: pa.Table, id_column: str, label_column: Optional[str], label_kind: str,
              feats: list[str], allow: bool = False) -> PartyTable:
    if table.num_rows == 0:
        raise VerticalDataError(f"{path}: no data rows (only a header)")
    ids_col = pc.cast(table.column(id_column), pa.string())
    ids = np.array(ids_col.to_pylist(), dtype=object)
    empty = [i for i, v in enumerate(ids) if v is None or str(v).strip() == ""]
    if empty:
        where = f": row {empty[0] + 1}" if _is_parquet(path) else f":{empty[0] + 2}"
        raise VerticalDataError(f"{path}{where}: column {id_column!r}: empty id")
    labels = _numeric(path, table, label_column, label_column, label_kind) if label_column else None
    X = np.empty((table.num_rows, len(feats)), dtype=np.float64)
    for j, name in enumerate(feats):
        X[:, j] = _numeric(path, table, name, label_column, label_kind, allow)
    return PartyTable(str(path), ids, X, feats, labels)


def check_party_files(v) -> None:
    """Read every party's file once, as a vertical run will (``v``: the ``vertical`` config section),
    so that bad data stops ``fedray run`` before anything starts; errors name file, line and column."""
    label_kind = "real" if v.model == "linear" else "binary"
    missing = v.missing if v.model != "secureboost" or v.missing == "error" else "zero"  # trees keep NaN
    read_party(v.business_path, v.id_column, v.label_column, label_kind, missing)
    for path in v.provider_paths:
        read_party(path, v.id_column, None, missing=missing)
