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
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tenseal as ts


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


def decrypt_chunks(ctx: ts.Context, chunks: Sequence[bytes], m: int) -> np.ndarray:
    """Inverse of encrypt_chunks under the secret context; the first m values."""
    parts = [np.asarray(ts.ckks_vector_from(ctx, c).decrypt()) for c in chunks]
    return np.concatenate(parts)[:m]


def add_ciphertexts(ctx: ts.Context, lists: Sequence[Sequence[bytes]]) -> list[bytes]:
    """Element-wise sum of equally long lists of ciphertexts (the driver's only arithmetic)."""
    if not lists:
        raise ValueError("nothing to add")
    k = len(lists[0])
    if any(len(x) != k for x in lists):
        raise ValueError(f"ciphertext lists differ in length: {[len(x) for x in lists]}")
    out = []
    for i in range(k):
        acc = ts.ckks_vector_from(ctx, lists[0][i])
        for other in lists[1:]:
            acc += ts.ckks_vector_from(ctx, other[i])
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
                    mask_bits: int, product_scale: float) -> tuple[list[bytes], np.ndarray]:
    """The provider's hot path: masked slot vectors of [[X^T d]] and the mask segment sums it keeps.

    X is the provider's (m, f) batch. Returns (ciphertext bytes, one per output; mask sums, len f').
    """
    # The low-level TenSEAL objects (``.data``) skip the Python PlainTensor wrapper: ~0.9 ms
    # instead of ~1.25 ms per product at N=8192, and this loop is the whole epoch's cost.
    cts = [ts.ckks_vector_from(ctx, b).data for b in enc_d]
    if len(cts) != layout.chunks:
        raise ValueError(f"expected {layout.chunks} residual ciphertexts, got {len(cts)}")
    X = np.asarray(X, dtype=np.float64)
    if not layout.tiled:
        X = np.asfortranarray(X)  # contiguous feature columns
    f = X.shape[1]
    # TenSEAL encodes an add_plain operand at the left ciphertext's *initial* scale, so each
    # accumulator starts from a zero "carrier" encrypted at the product scale; the mask is then a
    # plaintext add (~0.9 ms) instead of a fresh encryption (~4.7 ms) per output.
    carrier = ts.ckks_vector(ctx, np.zeros(layout.slots), scale=product_scale).data
    out, mask_sums = [], []
    for o in range(layout.outputs(f)):
        acc = None
        for ct, plain in zip(cts, layout.feature_plain(X, o)):
            prod = ct.mul_plain(plain.tolist())
            if acc is None:
                acc = carrier.add(prod)
            else:
                acc.add_(prod)
        r = random_mask(layout.slots, mask_bits)
        acc.add_plain_(r.tolist())
        out.append(acc.serialize())
        mask_sums.append(layout.segment_sums(r))
    return out, np.concatenate(mask_sums)[:f]


def unmask_sums(ctx: ts.Context, masked: Sequence[bytes], layout: SlotLayout) -> np.ndarray:
    """The business party's step: decrypt masked slot vectors, return only their segment sums."""
    return np.concatenate([layout.segment_sums(ts.ckks_vector_from(ctx, b).decrypt()) for b in masked])
