"""MovieLens readers (ml-latest CSV, ml-100k u.data, ml-1m ratings.dat) into one Arrow ratings table."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

RATINGS_SCHEMA = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("rating", pa.float32()), ("timestamp", pa.int64())])

# format -> (file name inside a directory, field separator, has header)
LAYOUTS = {"latest": ("ratings.csv", ",", True), "100k": ("u.data", "\t", False), "1m": ("ratings.dat", "::", False)}


class DataError(ValueError):
    """A data file is missing, empty or malformed; the message names the file and the line."""


def resolve(path: str | Path, fmt: str = "auto") -> tuple[Path, str]:
    """The ratings file and its layout for a MovieLens path (a file or a directory holding one)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        names = [LAYOUTS[fmt][0]] if fmt != "auto" else [v[0] for v in LAYOUTS.values()]
        for name in names:
            if (path / name).is_file():
                return resolve(path / name, fmt)
        raise DataError(f"{path}: no MovieLens ratings file in it (looked for {', '.join(names)})")
    if fmt == "auto":
        by_name = {v[0]: k for k, v in LAYOUTS.items()}
        fmt = by_name.get(path.name) or _sniff(path)
    return path, fmt


def _sniff(path: Path) -> str:
    """Guess the layout of a file with an unusual name from its first line."""
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", "replace")
    if "::" in first:
        return "1m"
    if "\t" in first:
        return "100k"
    return "latest"


def _first_bad_line(raw: bytes, sep: str, header: bool, path: Path) -> DataError:
    """Locate the first malformed row to report it by file and line (only run once parsing has failed)."""
    for lineno, line in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
        if (header and lineno == 1) or not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != 4:
            return DataError(f"{path}:{lineno}: expected 4 fields (user, item, rating, timestamp), got {len(fields)}: {line[:80]!r}")
        for name, value, kind in zip(("user", "item", "rating", "timestamp"), fields, (int, int, float, int)):
            try:
                kind(value)
            except ValueError:
                return DataError(f"{path}:{lineno}: {name} is not a number: {value!r}")
    return DataError(f"{path}: could not be parsed as MovieLens ratings")


def read_ratings(path: str | Path, fmt: str = "auto") -> pa.Table:
    """Read a MovieLens ratings file into a table (user, item, rating, timestamp) with the raw ids."""
    file, fmt = resolve(path, fmt)
    _, sep, header = LAYOUTS[fmt]
    raw = file.read_bytes()
    if not raw.strip():
        raise DataError(f"{file}: the file is empty")
    body = raw.replace(b"::", b"\t") if sep == "::" else raw
    delim = "\t" if sep == "::" else sep
    names = ["user", "item", "rating", "timestamp"]
    try:
        table = pacsv.read_csv(
            io.BytesIO(body),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0),
            parse_options=pacsv.ParseOptions(delimiter=delim),
            convert_options=pacsv.ConvertOptions(column_types=RATINGS_SCHEMA, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise _first_bad_line(raw, sep, header, file) from None
    if table.num_rows == 0:
        raise DataError(f"{file}: no ratings in the file")
    for name in names:
        col = table.column(name)
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{file}:{row + 1 + int(header)}: {name} is empty")
    return table.cast(RATINGS_SCHEMA)
