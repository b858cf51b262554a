"""Tables for tasks: read CSV, Parquet or Arrow IPC through pyarrow (by suffix), check numeric columns, join files on an id.

Vertical-style data comes split by columns over files that share an id column (a guest file ``id,y,x0,..``
and a host file ``id,x0,..``); ``load_table`` reads them all, checks the columns a task uses are numeric,
and joins them into one table in the first file's row order. A column name found in several files is
qualified by its file's stem (``default_credit_hetero_host.x0``) so no feature is silently dropped.

Every problem is a DataError naming the file, the column and, for CSV, the line (header = line 1,
records on one line each); for Parquet and Arrow files, the 1-based data row.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedray.data.movielens import DataError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".arrow": "ipc", ".feather": "ipc", ".ipc": "ipc"}
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


def _where(path: Path, row: int) -> str:
    """Where data row `row` (0-based) sits: a CSV line number, or a 1-based row for binary formats."""
    return f"{path}:{row + 2}" if FORMATS[path.suffix.lower()] == "csv" else f"{path}: row {row + 1}"


def _csv_problem(path: Path, error: Exception) -> DataError:
    """Locate a CSV that pyarrow cannot parse: the first line whose field count differs from the header's."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        for fields in reader:
            if len(fields) != len(header):
                return DataError(f"{path}:{reader.line_num}: {len(fields)} fields, the header has {len(header)}")
    return DataError(f"{path}: cannot be parsed as CSV: {error}")


def read_table(path: str | Path) -> pa.Table:
    """Read one table file by its suffix: .csv, .parquet/.pq, or Arrow IPC (.arrow/.feather/.ipc, file or stream)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown table format {path.suffix!r}; use .csv, .parquet/.pq or .arrow/.feather/.ipc")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if kind == "csv":
            table = pacsv.read_csv(path)
        elif kind == "parquet":
            table = pq.read_table(path)
        else:
            table = _read_ipc(path)
    except pa.ArrowInvalid as error:
        if kind == "csv":
            raise _csv_problem(path, error) from None
        raise DataError(f"{path}: not a readable {kind} file: {error}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    return table


def _read_ipc(path: Path) -> pa.Table:
    """An Arrow IPC file, or failing that an IPC stream."""
    try:
        with pa.ipc.open_file(path) as reader:
            return reader.read_all()
    except pa.ArrowInvalid:
        with pa.ipc.open_stream(path) as reader:
            return reader.read_all()


def numeric_column(path: Path, table: pa.Table, name: str) -> np.ndarray:
    """Column `name` as float64; a missing, non-numeric or non-finite value is a DataError at its line."""
    column = table.column(name)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = column.to_numpy(zero_copy_only=False)
        bad = ~pc.match_substring_regex(column.fill_null(""), _NUMBER).to_numpy(zero_copy_only=False)
        if bad.any():
            row = int(np.argmax(bad))
            value = text[row]
            why = "missing value" if value is None or value.strip() == "" else f"non-numeric value {value!r}"
            raise DataError(f"{_where(path, row)}: column {name!r}: {why}")
        column = pc.cast(column, pa.float64())
    elif not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)):
        raise DataError(f"{path}: column {name!r} has type {column.type}, not numbers")
    if column.null_count:
        row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(f"{_where(path, row)}: column {name!r}: missing value")
    values = pc.cast(column, pa.float64()).to_numpy()
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.argmin(finite))
        raise DataError(f"{_where(path, row)}: column {name!r}: non-finite value {float(values[row])}")
    return values


def _ids(path: Path, table: pa.Table, id_column: str) -> np.ndarray:
    """The id column as strings (so integer and text ids join alike); no nulls, no repeats."""
    if id_column not in table.column_names:
        raise DataError(f"{path}: no id column {id_column!r}; columns are {table.column_names}")
    column = table.column(id_column)
    if column.null_count:
        row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(f"{_where(path, row)}: column {id_column!r}: missing id")
    ids = pc.cast(column, pa.string()).to_numpy(zero_copy_only=False).astype(str)
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):
        rows = np.sort(order[repeated[0]:repeated[0] + 2])
        raise DataError(f"{_where(path, int(rows[1]))}: column {id_column!r}: id {str(ids[rows[1]])!r} repeats the one "
                        f"at {_where(path, int(rows[0]))}")
    return ids


def _positions(reference: np.ndarray, ids: np.ndarray, ref_path: Path, path: Path, id_column: str) -> np.ndarray:
    """For each reference id, its row in `ids`; both files must hold exactly the same ids."""
    order = np.argsort(ids)
    slot = np.minimum(np.searchsorted(ids, reference, sorter=order), len(ids) - 1)
    found = ids[order][slot] == reference
    if not found.all():
        row = int(np.argmin(found))
        raise DataError(f"{path}: column {id_column!r}: {int((~found).sum())} ids of {ref_path} do not join here "
                        f"(first: id {str(reference[row])!r} at {_where(ref_path, row)})")
    if len(ids) != len(reference):
        extra = ~np.isin(ids, reference)
        row = int(np.argmax(extra))
        raise DataError(f"{ref_path}: column {id_column!r}: {int(extra.sum())} ids of {path} do not join here "
                        f"(first: id {str(ids[row])!r} at {_where(path, row)})")
    return order[slot]


def _qualified_names(paths: Sequence[Path], tables: Sequence[pa.Table], id_column: str) -> list[list[str]]:
    """Each file's non-id column names, prefixed by the file's stem where several files share the name."""
    seen: dict[str, int] = {}
    for table in tables:
        for name in table.column_names:
            if name != id_column:
                seen[name] = seen.get(name, 0) + 1
    return [[name if seen[name] == 1 else f"{path.stem}.{name}" for name in table.column_names if name != id_column]
            for path, table in zip(paths, tables)]


def load_table(paths: str | Path | Sequence[str | Path], id_column: str = "id",
               columns: Sequence[str] | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Read one or several files, join them on `id_column`, and return (ids, column names, float64 matrix).

    `columns` picks and orders the numeric columns (default: every non-id column of every file); names
    shared by several files are qualified by file stem. Rows follow the first file's order.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise DataError("no table files given (task.paths is empty)")
    tables = [read_table(p) for p in paths]
    if len(paths) > 1 or id_column in tables[0].column_names:
        ids = [_ids(p, t, id_column) for p, t in zip(paths, tables)]
    else:
        ids = [np.arange(tables[0].num_rows).astype(str)]
    names = _qualified_names(paths, tables, id_column)
    available = [n for file_names in names for n in file_names]
    wanted = list(available if columns is None else columns)
    missing = [n for n in wanted if n not in available]
    if missing:
        raise DataError(f"{', '.join(map(str, paths))}: no column {missing[0]!r}; columns are {available}")
    source = {qualified: (index, raw) for index, table in enumerate(tables)
              for qualified, raw in zip(names[index], [c for c in table.column_names if c != id_column])}
    rows = [np.arange(len(ids[0]))] + [_positions(ids[0], ids[i], paths[0], paths[i], id_column) for i in range(1, len(paths))]
    matrix = np.empty((len(ids[0]), len(wanted)), np.float64)
    for j, name in enumerate(wanted):
        index, raw = source[name]
        matrix[:, j] = numeric_column(paths[index], tables[index], raw)[rows[index]]
    return ids[0], wanted, matrix
