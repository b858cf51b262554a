"""CKKS helpers for the vertical protocol (TenSEAL), all on serialized bytes.

Slot packing: samples run along the N/2 slots of a ciphertext (4096 at N=8192).

* Partial scores u_p (length m) are encrypted in ceil(m / slots) chunks.
* The gradient step needs no rotations, hence no Galois keys, and no ciphertext x ciphertext
  product, hence no relinearisation keys: the public context carries only the public key.
  For a batch of m rows, ``SlotLayout`` (picked by the driver, ``SlotLayout.choose``) lays d out
  in blocks of ``segment`` rows, each block tiled k = slots // segment times in one ciphertext:
    - m <= slots: one block (segment = m); the provider multiplies by [x_j1 | x_j2 | .. x_jk],
      one product per k features;
    - m > slots: ceil(m / segment) blocks; for the k features of an output the provider computes
      sum_b [[d_b tiled]] * [x_j1,b | .. | x_jk,b] (one product per block, added before any
      rotation). The segment balances the business party's ceil(m / segment) encryptions against
      the ceil(f * segment / slots) outputs (each is a ciphertext to make, send and decrypt):
      at 80,000 rows and 300 provider features, 79 blocks of 1024 rows and 75 outputs, instead of
      20 chunks and 300 outputs with one feature per output. Products: m * f / slots either way.
  The provider then adds a mask r it alone knows (uniform in [-2^mask_bits, 2^mask_bits) per
  slot, fresh per output ciphertext and step, from os.urandom). The business party decrypts
  only v + r + e (e: CKKS noise, ~1e-6) and returns per-segment slot sums; the provider
  subtracts the segment sums of r it kept, giving x_j^T d up to CKKS noise. Per slot, the
  distribution of v + e + r is within statistical distance |v + e| / 2^(mask_bits+1) of r's:
  about 2^-22 for |v| <= 2^8 at mask_bits=30 (a slot value is a sum of d*x over at most
  ceil(m / segment) blocks of standardized data, so it is small).

Speed. The providers' loop works on SEAL's own objects (``tenseal.sealapi``, ``SealOps``): a
full-batch multiplier is encoded once and kept (``PlainCache``, ``vertical.plaintext_cache_mb``),
so a product costs a multiply (~0.25 ms) instead of an encoding plus a multiply (~1.3 ms); its
outputs are saved by SEAL and framed exactly as TenSEAL's ``serialize`` would frame them. The
business party encrypts with its secret key (symmetric, cheaper than public-key encryption).

Scale: products are left un-rescaled (``auto_rescale`` off): one product costs ~1.1 ms instead
of ~1.7 ms and keeps the full data modulus. With [60, 40, 40, 60] and scale 2^40 a product sits
at scale 2^80 under a 140-bit data modulus, leaving 2^59 of headroom for |v + r| <= 2^31. Decoding loses ~2^(mask_bits-50)
per slot to float64, hence mask_bits=30 by default (validated: 2*scale + mask + 16 <= data bits).

Validation. Every ciphertext a party or the driver receives goes through ``load_vector``: bytes
that SEAL cannot load under this context (another poly modulus degree or coefficient modulus, or
corrupt bytes) and ciphertexts at another scale or level are rejected with a ``CKKSError`` that
says which. A ciphertext encrypted under *another key* with the same parameters cannot be told
apart by its bytes; it decrypts to noise of magnitude about 2^(data bits - scale bits), far above
any value this protocol encrypts (the validated modulus guarantees a gap of >= 2^8), so the
business party's decryptions check a magnitude bound (``plausible_bound``) and reject it.
"""
from __future__ import annotations

import atexit
import math
import os
import struct
import tempfile
import weakref
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import tenseal as ts
from tenseal import sealapi


class CKKSError(ValueError):
    """A ciphertext does not belong to this CKKS context (parameters, scale, level or key); says which."""


@dataclass(frozen=True)
class CKKSParams:
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    global_scale_bits: int = 40
    mask_bits: int = 30

    @classmethod
    def from_config(cls, ck) -> "CKKSParams":
        return cls(int(ck.poly_modulus_degree), tuple(int(b) for b in ck.coeff_mod_bit_sizes),
                   int(ck.global_scale_bits), int(ck.mask_bits))

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def plausible_bound(self) -> float:
        """Largest magnitude an honest decryption can have here (masked slots are < 2^(mask_bits+1))."""
        return 2.0 ** (self.mask_bits + 8)


def secret_context(params: CKKSParams) -> ts.Context:
    """The business party's context with the secret key. Never serialized with the secret key."""
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
    ctx.global_scale = 2.0 ** params.global_scale_bits
    ctx.auto_rescale = False
    return ctx


def public_context_bytes(ctx: ts.Context) -> bytes:
    """Public key only: no secret key, no relinearisation keys, no Galois keys (none are needed)."""
    pub = ctx.copy()
    pub.make_context_public()
    return pub.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                         save_relin_keys=False)


def load_context(data: bytes) -> ts.Context:
    ctx = ts.context_from(data)
    ctx.auto_rescale = False
    return ctx


def _bits(x: float) -> str:
    return f"2^{math.log2(x):.4g}" if x > 0 else repr(x)


def load_vector(ctx: ts.Context, data: bytes, scale: float | None = None,
                what: str = "ciphertext") -> ts.CKKSVector:
    """Deserialize one ciphertext under ``ctx`` and check it belongs there; CKKSError naming ``what`` if not.

    Checks: SEAL can load it under this context's parameters (poly modulus degree, coefficient
    modulus), it is a fresh-size (2-component) ciphertext at the context's top level, and its scale
    is ``scale`` (default: the context's global scale; the masked gradients sit at its square).
    """
    if not isinstance(data, (bytes, bytearray)):
        raise CKKSError(f"{what}: expected serialized ciphertext bytes, got {type(data).__name__}")
    try:
        vec = ts.ckks_vector_from(ctx, bytes(data))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CKKSError(f"{what}: rejected, it does not deserialize under this CKKS context "
                        f"(another poly modulus degree or coefficient modulus, or corrupt bytes): {exc}") from None
    expected = float(ctx.global_scale if scale is None else scale)
    top = ctx.seal_context().data.first_parms_id()
    for ct in vec.ciphertext():
        if ct.size() != 2:
            raise CKKSError(f"{what}: rejected, {ct.size()}-component ciphertext, expected 2")
        if list(ct.parms_id()) != list(top):
            raise CKKSError(f"{what}: rejected, ciphertext is not at this context's top modulus level "
                            f"({ct.coeff_modulus_size()} primes left): wrong coefficient modulus or rescaled")
        if not math.isclose(ct.scale, expected, rel_tol=1e-9):
            raise CKKSError(f"{what}: rejected, ciphertext scale {_bits(ct.scale)} but this context expects "
                            f"{_bits(expected)} (another global_scale_bits)")
    return vec


def check_plausible(values: np.ndarray, bound: float, what: str = "ciphertext") -> np.ndarray:
    """Reject a decryption that is noise: a ciphertext under another key (same parameters) decrypts to
    values around 2^(data bits - scale bits), far above ``bound``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size:
        worst = float(np.max(np.abs(values))) if np.all(np.isfinite(values)) else float("inf")
        if worst > bound:
            raise CKKSError(f"{what}: rejected, it decrypts to values up to {worst:.3g} (bound {bound:.3g}): "
                            "it was encrypted under another key (a ciphertext of a different context)")
    return values


def pad(v: np.ndarray, slots: int) -> np.ndarray:
    """Zero-pad a vector to exactly ``slots`` values (every ciphertext here is full-width)."""
    v = np.asarray(v, dtype=np.float64)
    if len(v) > slots:
        raise ValueError(f"{len(v)} values do not fit {slots} slots")
    if len(v) == slots:
        return v
    out = np.zeros(slots)
    out[: len(v)] = v
    return out


def encrypt_chunks(ctx: ts.Context, values: np.ndarray, slots: int) -> list[bytes]:
    """Encrypt a vector in consecutive chunks of ``slots`` values (last one zero-padded)."""
    values = np.asarray(values, dtype=np.float64)
    n = max(1, math.ceil(len(values) / slots))
    ops = seal_ops(ctx)
    return [ops.encrypt(values[c * slots:(c + 1) * slots]) for c in range(n)]


def decrypt_chunks(ctx: ts.Context, chunks: Sequence[bytes], m: int, bound: float | None = None,
                   what: str = "ciphertext") -> np.ndarray:
    """Inverse of encrypt_chunks under the secret context; the first m values.

    ``bound``: reject (CKKSError) a decryption larger than this, i.e. a ciphertext under another key.
    """
    parts = [np.asarray(load_vector(ctx, c, what=f"{what} [{i}]").decrypt()) for i, c in enumerate(chunks)]
    out = np.concatenate(parts)[:m]
    return out if bound is None else check_plausible(out, bound, what)


def add_ciphertexts(ctx: ts.Context, lists: Sequence[Sequence[bytes]],
                    names: Sequence[str] | None = None) -> list[bytes]:
    """Element-wise sum of equally long lists of ciphertexts (the driver's only arithmetic).

    ``names``: the sending party of each list, for error messages."""
    if not lists:
        raise ValueError("nothing to add")
    k = len(lists[0])
    if any(len(x) != k for x in lists):
        raise ValueError(f"ciphertext lists differ in length: {[len(x) for x in lists]}")
    names = list(names) if names is not None else [f"party {j}" for j in range(len(lists))]
    out = []
    for i in range(k):
        acc = load_vector(ctx, lists[0][i], what=f"driver: ciphertext [{i}] from {names[0]}")
        for j, other in enumerate(lists[1:], start=1):
            acc += load_vector(ctx, other[i], what=f"driver: ciphertext [{i}] from {names[j]}")
        out.append(acc.serialize())
    return out


@dataclass(frozen=True)
class SlotLayout:
    """How a batch of m rows maps onto ciphertext slots for the gradient step (see module doc).

    Rows go in blocks of ``segment``; the business party encrypts each block of d tiled ``pack`` =
    slots // segment times (``blocks`` ciphertexts), and one provider output covers ``pack`` features:
    segment s of it holds the sum over blocks of d * x_js. ``segment`` 0 picks m (tiled, one block)
    when m <= slots, else ``slots`` (one feature per output)."""

    m: int
    slots: int
    segment: int = 0

    def __post_init__(self) -> None:
        if self.segment == 0:
            object.__setattr__(self, "segment", self.m if self.m <= self.slots else self.slots)
        if self.m < 1 or not 1 <= self.segment <= self.slots:
            raise ValueError(f"slot layout: segment {self.segment} for {self.m} rows and {self.slots} slots "
                             f"(need 1 <= segment <= slots)")

    @classmethod
    def choose(cls, m: int, slots: int, features: int) -> "SlotLayout":
        """The segment that balances the business party's ceil(m / segment) residual encryptions against the
        providers' ceil(features * segment / slots) outputs (each one ciphertext to make, send and open):
        one block when m <= slots, else the power of two nearest sqrt(m * slots / features)."""
        if m <= slots:
            return cls(m, slots, m)
        best = math.sqrt(m * slots / max(features, 1))
        return cls(m, slots, int(min(slots, 2 ** max(0, round(math.log2(max(best, 1.0)))))))

    @property
    def pack(self) -> int:
        """Features per gradient ciphertext."""
        return self.slots // self.segment

    @property
    def blocks(self) -> int:
        """Residual ciphertexts: blocks of ``segment`` rows."""
        return math.ceil(self.m / self.segment)

    chunks = blocks  # the residual ciphertexts masked_gradient expects

    def outputs(self, features: int) -> int:
        return math.ceil(features / self.pack)

    def residual_plain(self, d: np.ndarray) -> list[np.ndarray]:
        """The business party's plaintext vectors to encrypt for residual d (length m): each block tiled."""
        return [pad(np.tile(block, self.pack), self.slots) for block in self._blocks(np.asarray(d, dtype=np.float64))]

    def feature_plain(self, X: np.ndarray, out: int) -> list[np.ndarray]:
        """The provider's plaintext multipliers for gradient ciphertext ``out`` (one per block): block b of each
        of the output's features, side by side."""
        cols = X[:, out * self.pack:(out + 1) * self.pack]
        blocks = self._blocks(cols)  # (blocks, segment, k)
        return [pad(np.ascontiguousarray(b.T).reshape(-1), self.slots) for b in blocks]

    def _blocks(self, rows: np.ndarray) -> np.ndarray:
        """Rows zero-padded to whole blocks, as (blocks, segment, ...)."""
        padded = np.zeros((self.blocks * self.segment,) + rows.shape[1:])
        padded[: self.m] = rows
        return padded.reshape((self.blocks, self.segment) + rows.shape[1:])

    def segment_sums(self, vec: np.ndarray) -> np.ndarray:
        """Per-feature sums of one decrypted (or mask) slot vector: ``pack`` values."""
        return np.asarray(vec, dtype=np.float64)[: self.pack * self.segment].reshape(self.pack, self.segment).sum(axis=1)


def random_mask(size: int, bits: int) -> np.ndarray:
    """Uniform in [-2^bits, 2^bits) from the OS CSPRNG (53 random bits per value)."""
    u = np.frombuffer(os.urandom(8 * size), dtype=np.uint64) >> np.uint64(11)
    return (u.astype(np.float64) * 2.0 ** -53 * 2.0 - 1.0) * 2.0 ** bits


def masked_gradient(ctx: ts.Context, enc_d: Sequence[bytes], X: np.ndarray, layout: SlotLayout,
                    mask_bits: int, product_scale: float, what: str = "provider: residual ciphertext",
                    cache: Optional["PlainCache"] = None) -> tuple[list[bytes], np.ndarray]:
    """The provider's hot path: masked slot vectors of [[X^T d]] and the mask segment sums it keeps.

    X is the provider's (m, f) batch. Returns (ciphertext bytes, one per output; mask sums, len f').
    ``cache``: keeps the encoded multipliers of X for the next call with the same X and layout (the
    full batch: X never changes), so that a product costs one multiply instead of an encoding too.
    """
    cts = [seal_ciphertext(load_vector(ctx, b, what=f"{what} [{i}]"), what) for i, b in enumerate(enc_d)]
    if len(cts) != layout.chunks:
        raise ValueError(f"expected {layout.chunks} residual ciphertexts, got {len(cts)}")
    ops = seal_ops(ctx)
    X = np.asarray(X, dtype=np.float64)
    f = X.shape[1]
    outputs = layout.outputs(f)
    masks = [random_mask(layout.slots, mask_bits) for _ in range(outputs)]
    out = _masked_outputs(ops, cts, outputs, _multipliers(ops, X, layout, cache), masks, product_scale)
    return out, np.concatenate([layout.segment_sums(r) for r in masks])[:f]


def _multipliers(ops: "SealOps", X: np.ndarray, layout: SlotLayout, cache: Optional["PlainCache"],
                 ) -> Callable[[int], list]:
    """Output o -> its encoded multipliers (one per block), from ``cache`` when given (one fixed X per cache)."""
    def encoded(o: int) -> list:
        make = lambda: ops.encode_all(layout.feature_plain(X, o))  # noqa: E731
        return make() if cache is None else cache.get((ops.parms, layout, X.shape[1], o), make)
    return encoded


def encode_multipliers(ctx: ts.Context, X: np.ndarray, layout: SlotLayout, cache: "PlainCache") -> None:
    """Put X's encoded multipliers for ``layout`` (what masked_gradient would encode) in ``cache``, output by
    output, until its budget is full."""
    encoded = _multipliers(seal_ops(ctx), np.asarray(X, dtype=np.float64), layout, cache)
    for o in range(layout.outputs(X.shape[1])):
        kept = len(cache)
        encoded(o)
        if len(cache) == kept:
            return


def _masked_outputs(ops: "SealOps", cts: list, outputs: int, encoded: Callable[[int], list],
                    masks: Sequence[np.ndarray], product_scale: float) -> list[bytes]:
    """Serialized sum_c cts[c] * encoded(o)[c] + masks[o] for every output o (the providers' hot loop).

    Works on SEAL's own objects (``tenseal.sealapi``): a plaintext encoded once can be multiplied many
    times, which TenSEAL's ``mul_plain`` (encoding on every call) cannot."""
    S, evaluator = sealapi, ops.evaluator
    carrier = ops.carrier(product_scale)
    product, mask = S.Ciphertext(), S.Plaintext()
    out = []
    for o in range(outputs):
        acc = S.Ciphertext()
        started = False
        for ct, plain in zip(cts, encoded(o)):
            if plain is None:  # an all-zero multiplier: SEAL refuses the (transparent) product
                continue
            evaluator.multiply_plain(ct, plain, product)
            if started:
                evaluator.add_inplace(acc, product)
            else:  # the carrier's fresh encryption of zero starts every sum
                evaluator.add(carrier, product, acc)
                started = True
        ops.encoder.encode(masks[o].tolist(), ops.parms_id, product_scale, mask)
        if started:
            evaluator.add_plain_inplace(acc, mask)
        else:
            evaluator.add_plain(carrier, mask, acc)
        out.append(ops.to_bytes(acc, product_scale))
    return out


def seal_ciphertext(vec: ts.CKKSVector, what: str = "ciphertext"):
    """The one SEAL ciphertext of a full-width vector (every vector here is one ciphertext)."""
    cts = vec.data.ciphertext()
    if len(cts) != 1:
        raise CKKSError(f"{what}: rejected, {len(cts)} ciphertexts in one vector, expected 1")
    return cts[0]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


class SealOps:
    """SEAL's encoder, evaluator and byte output for one TenSEAL context (``seal_ops``): what the hot loops
    need below TenSEAL's vector API."""

    def __init__(self, ctx: ts.Context) -> None:
        self.ctx = ctx  # held, so that the cache key (its id) is never reused while this lives
        self.context = ctx.seal_context().data
        self.encoder = sealapi.CKKSEncoder(self.context)
        self.evaluator = sealapi.Evaluator(self.context)
        self.parms_id = self.context.first_parms_id()
        self.parms = tuple(self.parms_id)
        self.slots = self.encoder.slot_count()
        self._carriers: dict[float, object] = {}
        self._file: Optional[tuple[int, str]] = None
        self._encryptor: Optional[tuple[object, bool]] = None

    def encode_all(self, plains: Sequence[np.ndarray], scale: Optional[float] = None) -> list:
        """SEAL plaintexts at the top level and ``scale`` (default: the context's); None for an all-zero vector."""
        scale = float(self.ctx.global_scale) if scale is None else scale
        out = []
        for values in plains:
            if not values.any():
                out.append(None)
                continue
            plain = sealapi.Plaintext()
            self.encoder.encode(values.tolist(), self.parms_id, scale, plain)
            out.append(plain)
        return out

    def carrier(self, scale: float):
        """An encrypted zero at ``scale`` under the public key, made once per context (an encryption costs
        as much as several products); only ever used as the left operand of a new sum."""
        if scale not in self._carriers:
            zero, ct = sealapi.Plaintext(), sealapi.Ciphertext()
            self.encoder.encode([0.0] * self.slots, self.parms_id, scale, zero)
            sealapi.Encryptor(self.context, self.ctx.public_key().data).encrypt(zero, ct)
            self._carriers[scale] = ct
        return self._carriers[scale]

    def encrypt(self, values: np.ndarray) -> bytes:
        """One full-width vector encrypted at the global scale, as TenSEAL bytes: with the secret key when
        this context holds it (symmetric encryption skips the public-key product, about a third of the
        cost), else with the public key."""
        if self._encryptor is None:
            private = self.ctx.is_private()
            key = self.ctx.secret_key().data if private else self.ctx.public_key().data
            self._encryptor = (sealapi.Encryptor(self.context, key), private)
        encryptor, private = self._encryptor
        plain, ct = sealapi.Plaintext(), sealapi.Ciphertext()
        scale = float(self.ctx.global_scale)
        self.encoder.encode(pad(values, self.slots).tolist(), self.parms_id, scale, plain)
        if private:
            encryptor.encrypt_symmetric(plain, ct)
        else:
            encryptor.encrypt(plain, ct)
        return self.to_bytes(ct, scale)

    def to_bytes(self, ct, scale: float) -> bytes:
        """The TenSEAL serialization of a one-ciphertext vector of ``slots`` values at ``scale``
        (``CKKSVectorProto``: sizes, ciphertexts, scale), around SEAL's own save of ``ct``. SEAL saves
        only to a path, so it goes through an in-memory file of this process."""
        if self._file is None:
            self._file = _scratch_file()
            weakref.finalize(self, os.close, self._file[0])
        fd, path = self._file
        ct.save(path)
        blob = os.pread(fd, os.fstat(fd).st_size, 0)
        sizes = _varint(self.slots)
        return b"".join((b"\x0a", _varint(len(sizes)), sizes, b"\x12", _varint(len(blob)), blob,
                         b"\x19", struct.pack("<d", scale)))


def _scratch_file() -> tuple[int, str]:
    """(descriptor, path) of an anonymous in-memory file (memfd), else of a temporary file removed at exit."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("fedray-ckks")
        return fd, f"/proc/self/fd/{fd}"
    fd, path = tempfile.mkstemp(prefix="fedray-ckks-")
    atexit.register(os.unlink, path)
    return fd, path


_SEAL_OPS: dict[int, SealOps] = {}


def seal_ops(ctx: ts.Context) -> SealOps:
    """The SealOps of ``ctx``, made once per context (one context at a time: a new one replaces it)."""
    ops = _SEAL_OPS.get(id(ctx))
    if ops is None or ops.ctx is not ctx:
        _SEAL_OPS.clear()
        ops = _SEAL_OPS[id(ctx)] = SealOps(ctx)
    return ops


class PlainCache:
    """Encoded plaintext multipliers kept across calls, up to ``budget_bytes``; beyond it they are encoded
    again on every call. A provider's full-batch columns never change, so every later epoch's products
    skip the encoding (~1 ms of the ~1.3 ms a product costs at N=8192)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._plains: dict[tuple, list] = {}

    def get(self, key: tuple, make: Callable[[], list]) -> list:
        if key in self._plains:
            return self._plains[key]
        plains = make()
        size = sum(p.coeff_count() * 8 for p in plains if p is not None)
        if self.used + size <= self.budget:
            self._plains[key] = plains
            self.used += size
        return plains

    def __len__(self) -> int:
        return len(self._plains)

    def clear(self) -> None:
        self._plains.clear()
        self.used = 0


@dataclass(frozen=True)
class BlockLayout:
    """Slot layout of the SecureBoost histogram step: rows in blocks of ``segment``, each block tiled
    ``pack`` times in one ciphertext, so that one product covers ``pack`` (column, bin) indicators of
    ``segment`` rows. ``segment`` near sqrt(m * slots / columns) balances the business party's
    encryptions (``blocks``) against the outputs to serialize and decrypt (columns / pack)."""

    m: int
    slots: int
    segment: int

    @classmethod
    def choose(cls, m: int, slots: int, columns: int) -> "BlockLayout":
        best = math.sqrt(max(m, 1) * slots / max(columns, 1))
        segment = min(slots, max(1, m), 2 ** max(0, round(math.log2(max(best, 1.0)))))
        return cls(m, slots, segment)

    @property
    def pack(self) -> int:
        return self.slots // self.segment

    @property
    def blocks(self) -> int:
        return max(1, math.ceil(self.m / self.segment))

    chunks = blocks  # ciphertexts of the business party's vector (the name masked_histograms checks)

    def outputs(self, columns: int) -> int:
        return math.ceil(columns / self.pack)

    def residual_plain(self, v: np.ndarray) -> list[np.ndarray]:
        """The business party's plaintexts for a per-row vector (g or h): each block tiled ``pack`` times."""
        v = np.asarray(v, dtype=np.float64)
        return [pad(np.tile(pad(v[k * self.segment:(k + 1) * self.segment], self.segment), self.pack), self.slots)
                for k in range(self.blocks)]

    def segment_sums(self, vec: np.ndarray) -> np.ndarray:
        return np.asarray(vec, dtype=np.float64)[: self.pack * self.segment].reshape(self.pack, self.segment).sum(axis=1)


def zero_sum_mask(layout: SlotLayout | BlockLayout, bits: int) -> np.ndarray:
    """A mask whose every segment sums to exactly 0: integer differences r_i - r_(i-1) (cyclic within the
    segment) of OS-random integers below 2^bits, so a decrypted segment sum is the true sum while each
    slot stays masked (entries below 2^(bits+1); slots outside the segments are 0)."""
    r = np.floor(random_mask(layout.pack * layout.segment, bits)).reshape(layout.pack, layout.segment)
    mask = np.zeros(layout.slots)
    mask[: r.size] = (r - np.roll(r, 1, axis=1)).ravel()
    return mask


def masked_histograms(ctx: ts.Context, enc: Sequence[bytes], codes: np.ndarray, bins: int, layout: BlockLayout,
                      mask_bits: int, product_scale: float, what: str = "provider: gradient ciphertext",
                      ) -> list[bytes]:
    """A provider's SecureBoost step: per (column, bin) the encrypted sum of [[v]] (g or h) over a node's rows.

    ``codes`` (m, f) are the provider's bin indices of those rows (``bins`` + 1 bins per column,
    the last for missing cells). Virtual column c = j * (bins + 1) + b is the indicator of
    "column j is in bin b"; one product multiplies a block of [[v]] (tiled ``pack`` times) by
    ``pack`` such indicators, so the cost is about m * f * (bins + 1) / slots products, and no
    encryption at all on the provider's side. Each output gets a zero-sum mask per segment
    (``zero_sum_mask``): the business party's segment sums are the bin sums, and nothing finer.
    """
    cts = [load_vector(ctx, b, what=f"{what} [{i}]") for i, b in enumerate(enc)]
    if len(cts) != layout.blocks:
        raise ValueError(f"expected {layout.blocks} gradient ciphertexts, got {len(cts)}")
    width, seg = bins + 1, layout.segment
    columns = codes.shape[1] * width
    m = codes.shape[0]
    # one-hot of every (row, virtual column), block by block: (blocks, segment, columns) as bools
    padded = np.full((layout.blocks * seg, codes.shape[1]), -1, dtype=np.int32)
    padded[:m] = codes
    onehot = np.zeros((layout.blocks * seg, columns + layout.pack), dtype=bool)
    rows = np.repeat(np.arange(m), codes.shape[1])
    onehot[rows, (codes.astype(np.int64) + np.arange(codes.shape[1]) * width).ravel()] = True
    onehot = onehot.reshape(layout.blocks, seg, -1)

    def plains(o: int) -> list[np.ndarray]:
        block = onehot[:, :, o * layout.pack:(o + 1) * layout.pack]  # (blocks, segment, pack)
        return [pad(np.ascontiguousarray(block[k].T).reshape(-1).astype(np.float64), layout.slots)
                for k in range(layout.blocks)]

    outputs = layout.outputs(columns)
    masks = [zero_sum_mask(layout, mask_bits) for _ in range(outputs)]
    ops = seal_ops(ctx)
    return _masked_outputs(ops, [seal_ciphertext(v, what) for v in cts], outputs,
                           lambda o: ops.encode_all(plains(o)), masks, product_scale)


def unmask_sums(ctx: ts.Context, masked: Sequence[bytes], layout: SlotLayout, bound: float | None = None,
                what: str = "business: masked gradient ciphertext") -> np.ndarray:
    """The business party's step: decrypt masked slot vectors, return only their segment sums.

    They sit at the product scale (the square of the global scale); ``bound`` as in decrypt_chunks.
    """
    scale = float(ctx.global_scale) ** 2
    sums = []
    for i, b in enumerate(masked):
        vals = np.asarray(load_vector(ctx, b, scale, what=f"{what} [{i}]").decrypt())
        if bound is not None:
            check_plausible(vals, bound, f"{what} [{i}]")
        sums.append(layout.segment_sums(vals))
    return np.concatenate(sums)
