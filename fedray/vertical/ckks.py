"""CKKS helpers for the vertical protocol (TenSEAL), all on serialized bytes.

Slot packing: samples run along the N/2 slots of a ciphertext (4096 at N=8192).

* Partial scores u_p (length m) are encrypted in ceil(m / slots) chunks.
* The gradient step needs no rotations, hence no Galois keys, and no ciphertext x ciphertext
  product, hence no relinearisation keys: the public context carries only the public key.
  For a batch of m rows, ``SlotLayout`` decides how d is laid out:
    - m <= slots/2 ("tiled"): k = slots // m features share one ciphertext. The business party
      encrypts d tiled k times; the provider multiplies by the plaintext [x_j1 | x_j2 | .. x_jk]
      (one product per k features). Segment s of the result holds d * x_js.
    - otherwise ("chunked"): d is split into c = ceil(m / slots) chunks; for feature j the
      provider computes sum_c [[d_c]] * x_j,c (c products, added before any rotation).
  The provider then adds a mask r it alone knows (uniform in [-2^mask_bits, 2^mask_bits) per
  slot, fresh per output ciphertext and step, from os.urandom). The business party decrypts
  only v + r + e (e: CKKS noise, ~1e-6) and returns per-segment slot sums; the provider
  subtracts the segment sums of r it kept, giving x_j^T d up to CKKS noise. Per slot, the
  distribution of v + e + r is within statistical distance |v + e| / 2^(mask_bits+1) of r's:
  about 2^-22 for |v| <= 2^8 at mask_bits=30 (the slot values are sums of d*x over at most
  ceil(m / slots) chunks of standardized data, so they are small).

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

import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import tenseal as ts


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
    return [ts.ckks_vector(ctx, pad(values[c * slots:(c + 1) * slots], slots)).serialize() for c in range(n)]


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
    """How a batch of m rows maps onto ciphertext slots for the gradient step (see module doc)."""

    m: int
    slots: int

    @property
    def pack(self) -> int:
        """Features per gradient ciphertext (k >= 2 only when m <= slots/2)."""
        return max(1, self.slots // self.m)

    @property
    def tiled(self) -> bool:
        return self.pack > 1

    @property
    def chunks(self) -> int:
        return 1 if self.tiled else math.ceil(self.m / self.slots)

    @property
    def segment(self) -> int:
        """Length of the slot run summed into one feature's gradient."""
        return self.m if self.tiled else self.slots

    def outputs(self, features: int) -> int:
        return math.ceil(features / self.pack)

    def residual_plain(self, d: np.ndarray) -> list[np.ndarray]:
        """The business party's plaintext vectors to encrypt for residual d (length m)."""
        d = np.asarray(d, dtype=np.float64)
        if self.tiled:
            return [pad(np.tile(d, self.pack), self.slots)]
        return [pad(d[c * self.slots:(c + 1) * self.slots], self.slots) for c in range(self.chunks)]

    def feature_plain(self, X: np.ndarray, out: int) -> list[np.ndarray]:
        """The provider's plaintext multipliers for gradient ciphertext ``out`` (one per chunk)."""
        if self.tiled:
            cols = X[:, out * self.pack:(out + 1) * self.pack]
            return [pad(np.ascontiguousarray(cols.T).reshape(-1), self.slots)]
        x = X[:, out]
        return [pad(x[c * self.slots:(c + 1) * self.slots], self.slots) for c in range(self.chunks)]

    def segment_sums(self, vec: np.ndarray) -> np.ndarray:
        """Per-feature sums of one decrypted (or mask) slot vector: pack values, or 1 when chunked."""
        vec = np.asarray(vec, dtype=np.float64)
        if self.tiled:
            return vec[: self.pack * self.m].reshape(self.pack, self.m).sum(axis=1)
        return np.array([vec.sum()])


def random_mask(size: int, bits: int) -> np.ndarray:
    """Uniform in [-2^bits, 2^bits) from the OS CSPRNG (53 random bits per value)."""
    u = np.frombuffer(os.urandom(8 * size), dtype=np.uint64) >> np.uint64(11)
    return (u.astype(np.float64) * 2.0 ** -53 * 2.0 - 1.0) * 2.0 ** bits


def masked_gradient(ctx: ts.Context, enc_d: Sequence[bytes], X: np.ndarray, layout: SlotLayout,
                    mask_bits: int, product_scale: float, what: str = "provider: residual ciphertext",
                    ) -> tuple[list[bytes], np.ndarray]:
    """The provider's hot path: masked slot vectors of [[X^T d]] and the mask segment sums it keeps.

    X is the provider's (m, f) batch. Returns (ciphertext bytes, one per output; mask sums, len f').
    """
    # The low-level TenSEAL objects (``.data``) skip the Python PlainTensor wrapper: ~0.9 ms
    # instead of ~1.25 ms per product at N=8192, and this loop is the whole epoch's cost.
    cts = [load_vector(ctx, b, what=f"{what} [{i}]").data for i, b in enumerate(enc_d)]
    if len(cts) != layout.chunks:
        raise ValueError(f"expected {layout.chunks} residual ciphertexts, got {len(cts)}")
    X = np.asarray(X, dtype=np.float64)
    if not layout.tiled:
        X = np.asfortranarray(X)  # contiguous feature columns
    f = X.shape[1]
    masks = [random_mask(layout.slots, mask_bits) for _ in range(layout.outputs(f))]
    out = _masked_outputs(ctx, cts, layout.outputs(f), lambda o: layout.feature_plain(X, o), masks, product_scale)
    return out, np.concatenate([layout.segment_sums(r) for r in masks])[:f]


def _masked_outputs(ctx: ts.Context, cts: list, outputs: int, plains: Callable[[int], list[np.ndarray]],
                    masks: Sequence[np.ndarray], product_scale: float) -> list[bytes]:
    """Serialized sum_c cts[c] * plains(o)[c] + masks[o] for every output o (the providers' hot loop)."""
    # TenSEAL encodes an add_plain operand at the left ciphertext's *initial* scale, so each
    # accumulator starts from a zero "carrier" encrypted at the product scale; the mask is then a
    # plaintext add (~0.9 ms) instead of a fresh encryption (~4.7 ms) per output.
    carrier = _carrier(ctx, len(masks[0]) if masks else 1, product_scale)
    out = []
    for o in range(outputs):
        acc = None
        for ct, plain in zip(cts, plains(o)):
            if not plain.any():  # SEAL refuses an all-zero plaintext product (a transparent ciphertext)
                continue
            prod = ct.mul_plain(plain.tolist())
            if acc is None:
                acc = carrier.add(prod)
            else:
                acc.add_(prod)
        if acc is None:
            acc = carrier.add_plain(masks[o].tolist())
        else:
            acc.add_plain_(masks[o].tolist())
        out.append(acc.serialize())
    return out


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


_CARRIERS: dict[tuple[int, int, float], object] = {}


def _carrier(ctx: ts.Context, slots: int, scale: float):
    """An encrypted zero at ``scale`` under ``ctx``'s public key, made once per context (an encryption
    costs as much as several products); only ever used as the left operand of a new sum."""
    key = (id(ctx), slots, scale)
    if key not in _CARRIERS:
        _CARRIERS.clear()  # one context at a time: a new context replaces the cached carrier
        _CARRIERS[key] = ts.ckks_vector(ctx, np.zeros(slots), scale=scale).data
    return _CARRIERS[key]


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
    cts = [load_vector(ctx, b, what=f"{what} [{i}]").data for i, b in enumerate(enc)]
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
    return _masked_outputs(ctx, cts, outputs, plains, masks, product_scale)


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
