"""Checkpoint store on any ``pyarrow.fs`` filesystem (local path, file://, s3://, gs://, ...).

Layout::

    <base>/ckpt-00000012/manifest.json
    <base>/ckpt-00000012/<name>.parquet      one per table passed to save()
    <base>/.tmp-ckpt-12-<random>/            a save in progress (ignored; removed by the next save)

Atomicity. A checkpoint is written into a temp directory, the manifest last, and the
directory is renamed into place. On a local filesystem the rename is atomic, so a reader
never sees half a checkpoint. Object stores (S3, GCS) cannot rename directories; there the
files are copied into place and the manifest is copied last. Either way *validity* is what
counts: a checkpoint is valid only if its manifest parses and every file it lists exists
with the listed size and sha256. ``load_latest`` walks back past anything invalid, so a
SIGKILL at any point leaves either the new checkpoint or the previous one. (pyarrow exposes
no fsync, so this covers process death, not power loss.)

Only one writer per store is assumed: a save removes every stale ``.tmp-ckpt-*`` directory.

All I/O goes through the ``pyarrow.fs`` object, never ``open()``, so remote URIs work.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CKPT_RE = re.compile(r"^ckpt-(\d{8,})$")
_TMP_PREFIX = ".tmp-ckpt-"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """No valid checkpoint / checkpoint of another config; message names the path and what is wrong."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it is invalid (the message names it and why)."""


def _default_warn(message: str) -> None:
    warnings.warn(message, CheckpointWarning, stacklevel=3)


# ---------------------------------------------------------------------------- arrays <-> table

_ARRAY_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("dtype", pa.string()),
        ("shape", pa.list_(pa.int64())),
        ("data", pa.large_binary()),
    ]
)


def arrays_to_table(arrays: Mapping[str, np.ndarray]) -> pa.Table:
    """Lossless table of named numpy arrays (any shape/dtype: store name, dtype str, shape list, raw bytes as binary) so they round-trip bit-exactly.

    One row per array, C-order bytes, dtype as ``np.dtype.str`` (keeps byte order). Object
    and structured (void) dtypes are refused: they have no portable raw-byte form.
    """
    names, dtypes, shapes, data = [], [], [], []
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"array names must be str, got {name!r}")
        a = np.asarray(value)
        if a.dtype.kind in "OV":
            raise ValueError(f"array {name!r}: dtype {a.dtype} cannot be stored losslessly as raw bytes")
        names.append(name)
        dtypes.append(a.dtype.str)
        shapes.append([int(s) for s in a.shape])
        data.append(np.ascontiguousarray(a).tobytes(order="C"))
    return pa.Table.from_arrays(
        [
            pa.array(names, pa.string()),
            pa.array(dtypes, pa.string()),
            pa.array(shapes, pa.list_(pa.int64())),
            pa.array(data, pa.large_binary()),
        ],
        schema=_ARRAY_SCHEMA,
    )


def table_to_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """Inverse of ``arrays_to_table``: writable numpy arrays, bit-identical to what was stored."""
    missing = {"name", "dtype", "shape", "data"} - set(table.column_names)
    if missing:
        raise ValueError(f"not an arrays table: missing columns {sorted(missing)}")
    out: dict[str, np.ndarray] = {}
    cols = {c: table.column(c).to_pylist() for c in ("name", "dtype", "shape")}
    data = table.column("data")
    for i, (name, dt, shape) in enumerate(zip(cols["name"], cols["dtype"], cols["shape"])):
        dtype = np.dtype(dt)
        raw = data[i].as_py()
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(raw) != n * dtype.itemsize:
            raise ValueError(f"array {name!r}: {len(raw)} bytes do not fit dtype {dt} and shape {shape}")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return out


# ---------------------------------------------------------------------------- config hash


def _canonical(x: Any) -> Any:
    """Plain JSON types from mappings/sequences/numpy scalars, for hashing."""
    if isinstance(x, Mapping):
        return {str(k): _canonical(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return _canonical(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (list, tuple)):
        return [_canonical(v) for v in x]
    return x


def config_hash(resolved: Mapping) -> str:
    """sha256 over canonical JSON (sorted keys) of the result-affecting config.

    The caller decides what affects results (e.g. drop output paths, log level) and passes
    a resolved plain mapping (``OmegaConf.to_container(cfg, resolve=True)``).
    """
    text = json.dumps(_canonical(resolved), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------- store


@dataclass
class Checkpoint:
    """A verified checkpoint: its round, directory, manifest, and readers for its tables."""

    round: int
    path: str
    manifest: dict
    fs: pafs.FileSystem = field(repr=False, compare=False, default=None)

    @property
    def rng_states(self) -> dict:
        return self.manifest["rng_states"]

    @property
    def extra(self) -> dict:
        return self.manifest["extra"]

    @property
    def names(self) -> list[str]:
        return sorted(self.manifest["files"])

    def table(self, name: str) -> pa.Table:
        """Read one table; its bytes are checked against the manifest's size and sha256 first."""
        files = self.manifest["files"]
        if name not in files:
            raise KeyError(f"checkpoint {self.path} has no table {name!r}; it has {sorted(files)}")
        entry = files[name]
        path = f"{self.path}/{entry['file']}"
        with self.fs.open_input_stream(path) as f:
            buf = f.read()
        if len(buf) != entry["bytes"] or hashlib.sha256(buf).hexdigest() != entry["sha256"]:
            raise CheckpointError(f"{path}: contents changed since the checkpoint was verified")
        return pq.read_table(pa.BufferReader(buf))

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """Read a table written from ``arrays_to_table`` back into numpy arrays."""
        return table_to_arrays(self.table(name))


class CheckpointStore:
    """Checkpoints under one base URI; see the module docstring for layout and guarantees."""

    def __init__(self, uri: str, keep: int = 3, *, filesystem: pafs.FileSystem | None = None):
        """``uri``: local path (relative or absolute) or any pyarrow.fs URI; ``filesystem`` overrides resolution (``uri`` is then a path in it)."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self.uri = uri
        if filesystem is not None:
            self.fs, base = filesystem, uri
        elif "://" in uri:
            self.fs, base = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, base = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
        self.base = base.rstrip("/") or "/"

    def child(self, name: str) -> "CheckpointStore":
        """A store in a subdirectory of this one, on the same filesystem (each device host keeps its own)."""
        return CheckpointStore(self._join(name), self.keep, filesystem=self.fs)

    # -- paths
    def _join(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def path(self, round: int) -> str:
        """Directory of the checkpoint of ``round`` (whether or not it exists)."""
        return self._join(f"ckpt-{round:08d}")

    def _entries(self) -> list[pafs.FileInfo]:
        sel = pafs.FileSelector(self.base, allow_not_found=True, recursive=False)
        return self.fs.get_file_info(sel)

    # -- read side
    def list(self) -> list[int]:
        """Rounds of checkpoint directories present (valid or not), ascending."""
        rounds = []
        for info in self._entries():
            m = _CKPT_RE.match(info.base_name)
            if m and info.type == pafs.FileType.Directory:
                rounds.append(int(m.group(1)))
        return sorted(rounds)

    def _read_manifest(self, round: int) -> tuple[dict | None, str]:
        path = self._join(f"ckpt-{round:08d}", MANIFEST)
        try:
            with self.fs.open_input_stream(path) as f:
                raw = f.read()
        except (FileNotFoundError, OSError) as e:
            return None, f"manifest {MANIFEST} missing or unreadable ({e.__class__.__name__})"
        try:
            man = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return None, f"manifest does not parse: {e}"
        if not isinstance(man, dict):
            return None, "manifest is not a JSON object"
        need = ("format", "round", "created", "config_hash", "rng_states", "extra", "files")
        absent = [k for k in need if k not in man]
        if absent:
            return None, f"manifest lacks fields {absent}"
        if man["format"] != FORMAT_VERSION:
            return None, f"manifest format {man['format']!r} is not the supported {FORMAT_VERSION}"
        if man["round"] != round:
            return None, f"manifest says round {man['round']!r} but the directory is round {round}"
        files = man["files"]
        if not isinstance(files, dict) or not all(
            isinstance(e, dict)
            and isinstance(e.get("file"), str)
            and _NAME_RE.match(e["file"])
            and isinstance(e.get("bytes"), int)
            and isinstance(e.get("sha256"), str)
            for e in files.values()
        ):
            return None, "manifest 'files' is malformed"
        return man, ""

    def verify(self, round: int, *, deep: bool = True) -> tuple[bool, str]:
        """(ok, reason): manifest parses, every listed file exists with matching size and sha256, no file missing.

        ``deep=False`` skips the sha256 (sizes only): a cheap check that catches truncation
        and deletion but not flipped bytes.
        """
        man, why = self._read_manifest(round)
        if man is None:
            return False, why
        d = self.path(round)
        entries = man["files"]
        infos = self.fs.get_file_info([f"{d}/{e['file']}" for e in entries.values()])
        for (name, e), info in zip(entries.items(), infos):
            if info.type != pafs.FileType.File:
                return False, f"file {e['file']} (table {name!r}) is missing"
            if info.size != e["bytes"]:
                return False, f"file {e['file']} has {info.size} bytes, manifest says {e['bytes']} (truncated or rewritten)"
        if deep:
            for name, e in entries.items():
                digest = self._sha256(f"{d}/{e['file']}")
                if digest != e["sha256"]:
                    return False, f"file {e['file']} sha256 mismatch (corrupt): {digest[:12]}... != {e['sha256'][:12]}..."
        return True, "ok"

    def _sha256(self, path: str) -> str:
        h = hashlib.sha256()
        with self.fs.open_input_stream(path) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def load_latest(
        self, *, config_hash: str | None = None, warn: Callable[[str], None] = _default_warn,
        accept: Callable[[int], str | None] | None = None,
    ) -> Checkpoint | None:
        """Newest valid checkpoint that `accept` (if given) has no objection to, falling back past corrupt ones with a warning naming them and why; None if the store is empty; CheckpointError if checkpoints exist but none is valid, or if config_hash differs (message shows both hashes)."""
        rounds = self.list()
        if not rounds:
            return None
        problems = []
        for r in reversed(rounds):
            ok, why = self.verify(r)
            if not ok:
                problems.append(f"{self.path(r)}: {why}")
                warn(f"skipping invalid checkpoint {self.path(r)}: {why}; falling back to an older one")
                continue
            man, _ = self._read_manifest(r)
            if config_hash is not None and man["config_hash"] != config_hash:
                raise CheckpointError(
                    f"checkpoint {self.path(r)} was written by another config: "
                    f"its config_hash is {man['config_hash']}, this run's is {config_hash}"
                )
            why = accept(r) if accept is not None else None  # e.g. a device host's own state of that round is bad
            if why:
                problems.append(f"{self.path(r)}: {why}")
                warn(f"skipping checkpoint {self.path(r)}: {why}; falling back to an older one")
                continue
            return Checkpoint(round=r, path=self.path(r), manifest=man, fs=self.fs)
        raise CheckpointError(
            f"no valid checkpoint under {self.uri} ({len(rounds)} present, all invalid):\n  " + "\n  ".join(problems)
        )

    def load(self, round: int, *, config_hash: str | None = None) -> Checkpoint:
        """The checkpoint of one round; CheckpointError if it is absent, invalid or of another config."""
        ok, why = self.verify(round)
        if not ok:
            raise CheckpointError(f"checkpoint {self.path(round)} is not usable: {why}")
        man, _ = self._read_manifest(round)
        if config_hash is not None and man["config_hash"] != config_hash:
            raise CheckpointError(
                f"checkpoint {self.path(round)} was written by another config: "
                f"its config_hash is {man['config_hash']}, this run's is {config_hash}"
            )
        return Checkpoint(round=round, path=self.path(round), manifest=man, fs=self.fs)

    # -- write side
    def save(
        self,
        round: int,
        files: Mapping[str, pa.Table],
        *,
        config_hash: str,
        rng_states: dict,
        extra: dict | None = None,
    ) -> str:
        """Write a checkpoint atomically, prune to the newest `keep` valid ones, return its path."""
        if not isinstance(round, (int, np.integer)) or isinstance(round, bool) or round < 0:
            raise ValueError(f"round must be a non-negative int, got {round!r}")
        round = int(round)
        for name, t in files.items():
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise ValueError(f"table name {name!r} must match {_NAME_RE.pattern}")
            if not isinstance(t, pa.Table):
                raise TypeError(f"table {name!r} must be a pyarrow.Table, got {type(t).__name__}")
        manifest = {
            "format": FORMAT_VERSION,
            "round": round,
            "created": datetime.now(timezone.utc).isoformat(),
            "config_hash": config_hash,
            "rng_states": rng_states,
            "extra": extra or {},
            "files": {},
        }
        try:  # fail before writing anything if the caller's state is not JSON-able
            json.dumps({"rng_states": rng_states, "extra": extra or {}}, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"rng_states and extra must be JSON-able: {e}") from e

        self.fs.create_dir(self.base, recursive=True)
        self._remove_stale_tmp()
        tmp = self._join(f"{_TMP_PREFIX}{round}-{secrets.token_hex(6)}")
        self.fs.create_dir(tmp, recursive=True)
        blobs: dict[str, bytes] = {}
        for name, table in files.items():
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            buf = sink.getvalue()
            fname = f"{name}.parquet"
            blobs[fname] = buf
            self._write(f"{tmp}/{fname}", buf)
            manifest["files"][name] = {
                "file": fname,
                "sha256": hashlib.sha256(buf).hexdigest(),
                "bytes": buf.size,
            }
        man_bytes = json.dumps(manifest, sort_keys=True, indent=1, allow_nan=False).encode("utf-8")
        self._write(f"{tmp}/{MANIFEST}", man_bytes)  # manifest last

        final = self.path(round)
        self._publish(tmp, final, blobs, man_bytes)
        self._prune(keep_round=round)
        return final

    def _write(self, path: str, data) -> None:
        with self.fs.open_output_stream(path) as f:
            f.write(data)

    def _publish(self, tmp: str, final: str, blobs: Mapping[str, Any], man_bytes: bytes) -> None:
        """Put the finished temp dir in place: rename where the filesystem can, else copy with the manifest last."""
        old = None
        if self.fs.get_file_info(final).type != pafs.FileType.NotFound:
            # Re-saving a round (e.g. its old copy was corrupt): set the old copy aside first.
            old = f"{tmp}-old"
            try:
                self.fs.move(final, old)
            except (NotImplementedError, OSError):
                self.fs.delete_dir(final)
                old = None
        try:
            self.fs.move(tmp, final)
        except (NotImplementedError, OSError):
            # Object stores cannot rename directories. Copy, manifest last: until the manifest
            # lands the directory is invalid and readers fall back to an older checkpoint.
            self.fs.create_dir(final, recursive=True)
            for fname, data in blobs.items():
                self._write(f"{final}/{fname}", data)
            self._write(f"{final}/{MANIFEST}", man_bytes)
            self.fs.delete_dir(tmp)
        if old is not None:
            self.fs.delete_dir(old)

    def probe(self) -> None:
        """Write and delete a small object, so a missing bucket or an unreachable endpoint fails before a run starts."""
        path = self._join(f".probe-{os.getpid()}")
        try:
            self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(path) as f:
                f.write(b"fedray")
            self.fs.delete_file(path)
        except (OSError, pa.ArrowException) as e:
            raise CheckpointError(f"checkpoint.uri={self.uri!r}: cannot write there ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else e})") from None

    def _remove_stale_tmp(self) -> None:
        for info in self._entries():
            if info.base_name.startswith(_TMP_PREFIX):
                if info.type == pafs.FileType.Directory:
                    self.fs.delete_dir(info.path)
                else:
                    self.fs.delete_file(info.path)

    def _prune(self, keep_round: int) -> None:
        """Keep the checkpoint just written and the newest valid others up to ``keep`` in all; delete every other older one.

        Checkpoints *newer* than the one just written are never deleted (valid ones count
        towards ``keep``): they belong to another history (a deliberate rollback, or another
        run pointed at the same directory), and deleting them is not a save's call to make.
        ``load_latest`` would still prefer them.
        """
        kept = 1
        for r in reversed(self.list()):
            if r > keep_round:
                kept += self.verify(r)[0]
                continue
            if r == keep_round:
                continue
            if kept < self.keep and self.verify(r)[0]:
                kept += 1
                continue
            self.fs.delete_dir(self.path(r))
