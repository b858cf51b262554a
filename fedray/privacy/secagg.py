"""Secure aggregation (SecAgg+, Bell et al. 2020) as two state machines and typed messages; no Ray, no I/O.

Per round, over the participants U1 that advertised keys:

1. advertise: each device makes two X25519 pairs (one for the share channel, one for pairwise masks);
2. share: the driver sends each device its neighbours' public keys; the device Shamir-shares its self-mask
   seed and its mask private key among its neighbours, each share sealed (ChaCha20-Poly1305) for its holder;
3. mask: the driver delivers the sealed shares (U2 = devices whose shares arrived); each device sends
   y = x + PRG(self seed) + sum over U2 neighbours of +-PRG(pairwise seed) mod 2^b (AES-CTR PRG), b-bit packed;
4. unmask: the driver tells each survivor (U3) which of its neighbours survived and which dropped; it returns
   self-mask shares of the survivors and key shares of the dropped; the driver rebuilds the seeds and keys,
   removes every mask and returns the exact sum of the survivors' inputs.

A device reveals a self-mask share only for a neighbour reported surviving and a key share only for one
reported dropped, and refuses a second request that contradicts the first; with a share threshold above half
the neighbours, the driver can never hold both kinds of share of one device. Honest-but-curious driver model:
public keys are not signed (no PKI), so a driver that forges keys in phase 2 is out of scope.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from fedray.privacy import graph, keys, masks, packing, shamir
from fedray.privacy.quantize import centred

SECRET_BYTES = 32


class SecAggError(RuntimeError):
    """Secure aggregation could not go on."""


class SecAggAborted(SecAggError):
    """Too few participants left to unmask the sum: the round fails (the model is left unchanged)."""


class ProtocolViolation(SecAggError):
    """A message out of order, malformed, or asking for what must not be revealed: refused."""


# ---- messages (device -> driver and driver -> device) ---------------------------------------------------
@dataclass(frozen=True)
class KeyAdvert:
    """Device -> driver, phase 1: its public keys for this round."""

    device: int
    channel_key: bytes
    mask_key: bytes


@dataclass(frozen=True)
class ShareRequest:
    """Driver -> device, phase 2: the round's modulus and vector length, and its neighbours' public keys."""

    round_: int
    bits: int
    length: int
    threshold: float
    neighbours: tuple[KeyAdvert, ...]


@dataclass(frozen=True)
class SealedShare:
    """Device -> driver -> device: one neighbour's shares of the sender's two secrets, sealed for the receiver."""

    sender: int
    receiver: int
    ciphertext: bytes


@dataclass(frozen=True)
class ShareDelivery:
    """Driver -> device, phase 3: the sealed shares addressed to it (their senders are its U2 neighbours)."""

    round_: int
    shares: tuple[SealedShare, ...]


@dataclass(frozen=True)
class MaskedInput:
    """Device -> driver, phase 3: its masked vector in Z_(2^bits), bit-packed."""

    device: int
    payload: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Driver -> device, phase 4: which of its U2 neighbours survived (sent a masked input) and which dropped."""

    round_: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskResponse:
    """Device -> driver, phase 4: self-mask shares of surviving neighbours, key shares of dropped ones."""

    device: int
    self_mask_shares: Mapping[int, np.ndarray]
    key_shares: Mapping[int, np.ndarray]


def _share_plaintext(self_share: np.ndarray, key_share: np.ndarray) -> bytes:
    return struct.pack("<I", len(self_share)) + self_share.astype("<i8").tobytes() + key_share.astype("<i8").tobytes()


def _parse_share(plain: bytes, sender: int) -> tuple[np.ndarray, np.ndarray]:
    if len(plain) < 4:
        raise ProtocolViolation(f"share from device {sender}: truncated")
    (n,) = struct.unpack_from("<I", plain)
    if len(plain) != 4 + 16 * n:
        raise ProtocolViolation(f"share from device {sender}: {len(plain)} bytes for {n} chunks")
    both = np.frombuffer(plain, "<i8", offset=4).astype(np.int64)
    return both[:n], both[n:]


def pair_sign(me: int, other: int) -> int:
    """+1 for the lower id of a pair, -1 for the higher, so the pair's masks cancel in the sum."""
    return 1 if me < other else -1


def holder_point(device: int) -> int:
    """The Shamir evaluation point of a share held by a device (device id + 1: distinct and nonzero)."""
    return int(device) + 1


class Phase(enum.Enum):
    ADVERTISE = 1
    SHARE = 2
    MASK = 3
    UNMASK = 4
    DONE = 5


# ---- the device side -------------------------------------------------------------------------------------
class SecAggClient:
    """One device's secure-aggregation state for one round; it holds its input and secrets in memory only."""

    def __init__(self, device: int, round_: int, values: np.ndarray):
        self.device, self.round_ = int(device), int(round_)
        self.values = np.asarray(values, np.int64)  # the integer vector to be summed (weighted trits, noise)
        self.phase = Phase.ADVERTISE
        self.channel = keys.KeyPair.generate()
        self.mask_pair = keys.KeyPair.generate()
        self.self_seed = keys.fresh_seed()
        self.peers: dict[int, KeyAdvert] = {}
        self.channels: dict[int, bytes] = {}  # neighbour -> the AEAD key shared with it
        self.held: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # sender -> (its self-seed share, its key share)
        self.answered: UnmaskRequest | None = None
        self.bits = 0

    def _expect(self, phase: Phase, round_: int) -> None:
        if round_ != self.round_:
            raise ProtocolViolation(f"device {self.device}: message for round {round_}, this is round {self.round_}")
        if self.phase is not phase:
            raise ProtocolViolation(f"device {self.device}: {phase.name.lower()} requested in phase {self.phase.name.lower()}")

    def advertise(self) -> KeyAdvert:
        """Phase 1: the public keys."""
        self._expect(Phase.ADVERTISE, self.round_)
        self.phase = Phase.SHARE
        return KeyAdvert(self.device, self.channel.public, self.mask_pair.public)

    def share(self, request: ShareRequest) -> list[SealedShare]:
        """Phase 2: shares of the self-mask seed and mask key for each neighbour, sealed for it."""
        self._expect(Phase.SHARE, request.round_)
        if len(self.values) != request.length:
            raise ProtocolViolation(f"device {self.device}: vector length {request.length} asked, it holds {len(self.values)}")
        if not 1 <= request.bits <= masks.MAX_BITS:
            raise ProtocolViolation(f"device {self.device}: modulus bits {request.bits} out of range")
        if not 0.5 < request.threshold <= 1.0:
            raise ProtocolViolation(f"device {self.device}: threshold {request.threshold} must be in (0.5, 1]")
        self.peers = {int(a.device): a for a in request.neighbours if int(a.device) != self.device}
        if len(self.peers) != len(request.neighbours) or not self.peers:
            raise ProtocolViolation(f"device {self.device}: neighbour list malformed or empty")
        self.bits, self.threshold = request.bits, request.threshold
        holders = sorted(self.peers)
        need = graph.share_threshold(request.threshold, len(holders))
        points = np.array([holder_point(h) for h in holders], np.int64)
        self_shares = shamir.split(self.self_seed, points, need)
        key_shares = shamir.split(self.mask_pair.private_bytes(), points, need)
        out = []
        self.channels = {h: keys.agree(self.channel, self.peers[h].channel_key, keys.CHANNEL_INFO) for h in holders}
        for i, holder in enumerate(holders):
            out.append(SealedShare(self.device, holder, keys.seal(self.channels[holder], self.round_, self.device, holder,
                                                                 _share_plaintext(self_shares[i], key_shares[i]))))
        self.phase = Phase.MASK
        return out

    def mask(self, delivery: ShareDelivery) -> MaskedInput:
        """Phase 3: open the shares from U2 neighbours, then send the input under self and pairwise masks."""
        self._expect(Phase.MASK, delivery.round_)
        held = {}
        for sealed in delivery.shares:
            sender = int(sealed.sender)
            if sealed.receiver != self.device or sender not in self.peers or sender in held:
                raise ProtocolViolation(f"device {self.device}: share from {sender} to {sealed.receiver} is not for it")
            plain = keys.open_sealed(self.channels[sender], self.round_, sender, self.device, sealed.ciphertext)
            held[sender] = _parse_share(plain, sender)
        self.held = held
        length, bits, word = len(self.values), self.bits, masks.word_type(self.bits)
        total = self.values.astype(word)  # two's complement: wraps modulo the word, hence modulo 2^bits
        total += masks.expand(self.self_seed, length, bits)
        for other in sorted(held):
            pairwise = masks.expand(keys.agree(self.mask_pair, self.peers[other].mask_key, keys.MASK_INFO), length, bits)
            if pair_sign(self.device, other) > 0:
                total += pairwise
            else:
                total -= pairwise
        self.values = np.zeros(0, np.int64)  # the plain input is no longer needed
        self.phase = Phase.UNMASK
        total &= word((1 << bits) - 1)
        return MaskedInput(self.device, packing.pack(total, bits))

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Phase 4: self-mask shares of the reported survivors, key shares of the reported dropped.

        Refused (ProtocolViolation): a peer in both lists, a peer it holds no share of, too few survivors to be a
        real round, or a second request that differs from the first (the driver could otherwise learn both
        shares of one device).
        """
        if self.answered is not None:
            if request != self.answered:
                raise ProtocolViolation(f"device {self.device}: a second unmask request contradicts the first; refused")
            return self._response(request)
        self._expect(Phase.UNMASK, request.round_)
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise ProtocolViolation(f"device {self.device}: devices {sorted(survivors & dropped)} reported both "
                                    "surviving and dropped; refused")
        unknown = (survivors | dropped) - set(self.held)
        if unknown:
            raise ProtocolViolation(f"device {self.device}: asked about devices {sorted(unknown)} it holds no share of")
        if len(survivors) + 1 < graph.share_threshold(self.threshold, len(self.peers)):
            raise ProtocolViolation(f"device {self.device}: only {len(survivors)} surviving neighbours reported; refused")
        self.answered = request
        self.phase = Phase.DONE
        return self._response(request)

    def _response(self, request: UnmaskRequest) -> UnmaskResponse:
        return UnmaskResponse(self.device, {p: self.held[p][0] for p in sorted(request.survivors)},
                              {p: self.held[p][1] for p in sorted(request.dropped)})


# ---- the driver side -------------------------------------------------------------------------------------
@dataclass
class SecAggServer:
    """The driver's state for one round: it routes messages and, at the end, holds only the sum."""

    round_: int
    length: int
    bits: int
    threshold: float
    degree: int | None = None
    adverts: dict[int, KeyAdvert] = field(default_factory=dict)
    graph: dict[int, tuple[int, ...]] = field(default_factory=dict)
    sealed: dict[int, list[SealedShare]] = field(default_factory=dict)
    senders: set[int] = field(default_factory=set)
    masked: set[int] = field(default_factory=set)  # U3: devices whose masked vector is in `total`
    total: np.ndarray | None = None  # running sum of the masked vectors (mod 2^64), so memory stays O(length)
    self_mask_shares: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)  # owner -> holder -> share
    key_shares: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)

    def needed(self) -> int:
        """Masked inputs needed to unmask: ceil(threshold * participants that advertised)."""
        return graph.share_threshold(self.threshold, len(self.adverts))

    def _abort(self, what: str, have: int) -> SecAggAborted:
        return SecAggAborted(f"round {self.round_}: secure aggregation aborted: {what} ({have} of {len(self.adverts)} "
                             f"participants, {self.needed()} needed at privacy.threshold={self.threshold:g})")

    def route_keys(self, adverts: Iterable[KeyAdvert], rng: np.random.Generator) -> dict[int, ShareRequest]:
        """Phase 1 -> 2: draw the neighbour graph over the advertisers and send each its neighbours' keys."""
        self.adverts = {int(a.device): a for a in adverts}
        if len(self.adverts) < 2:
            raise self._abort("fewer than two participants advertised keys", len(self.adverts))
        self.graph = graph.neighbours(np.array(sorted(self.adverts), np.int64), self.degree, rng)
        return {d: ShareRequest(self.round_, self.bits, self.length, self.threshold,
                                tuple(self.adverts[o] for o in self.graph[d])) for d in self.adverts}

    def route_shares(self, shares_by_sender: Mapping[int, Sequence[SealedShare]]) -> dict[int, ShareDelivery]:
        """Phase 2 -> 3: deliver the sealed shares of every device that sent them (U2) to their receivers."""
        inbox: dict[int, list[SealedShare]] = {}
        self.senders = set()
        for sender, shares in shares_by_sender.items():
            if int(sender) not in self.adverts or {s.receiver for s in shares} != set(self.graph[int(sender)]) \
                    or any(s.sender != sender for s in shares):
                continue  # malformed: the device counts as dropped
            self.senders.add(int(sender))
            for s in shares:
                inbox.setdefault(int(s.receiver), []).append(s)
        if len(self.senders) < self.needed():
            raise self._abort("too few participants shared their keys", len(self.senders))
        return {d: ShareDelivery(self.round_, tuple(inbox.get(d, ()))) for d in sorted(self.senders)}

    def route_masked(self, inputs: Iterable[MaskedInput]) -> dict[int, UnmaskRequest]:
        """Phase 3 -> 4: keep the masked vectors of U2 devices (U3) and ask each survivor for the shares needed."""
        word = masks.word_type(self.bits)
        self.total = np.zeros(self.length, word)
        for item in inputs:
            if int(item.device) in self.senders and int(item.device) not in self.masked:
                try:
                    self.total += packing.unpack(item.payload, self.length, self.bits).astype(word)
                except packing.PackingError:
                    continue
                self.masked.add(int(item.device))
        if len(self.masked) < self.needed():
            raise self._abort("too few masked inputs arrived", len(self.masked))
        out = {}
        for d in sorted(self.masked):
            peers = [p for p in self.graph[d] if p in self.senders]
            out[d] = UnmaskRequest(self.round_, tuple(p for p in peers if p in self.masked),
                                   tuple(p for p in peers if p not in self.masked))
        return out

    def _store(self, kind: dict[int, dict[int, np.ndarray]], other: dict[int, dict[int, np.ndarray]],
               owner: int, holder: int, share: np.ndarray) -> None:
        if owner in other:  # never hold both kinds of share of one device
            raise ProtocolViolation(f"round {self.round_}: driver would hold both kinds of share of device {owner}")
        kind.setdefault(owner, {})[holder] = np.asarray(share, np.int64)

    def finish(self, responses: Iterable[UnmaskResponse]) -> np.ndarray:
        """Phase 4 -> sum: rebuild survivors' self seeds and dropped devices' mask keys, remove every mask; the
        exact signed sum of the survivors' inputs (int64)."""
        dropped = self.senders - set(self.masked)
        for r in responses:
            holder = int(r.device)
            if holder not in self.masked:
                continue
            for owner, share in r.self_mask_shares.items():
                if owner in self.masked and owner in self.graph[holder]:
                    self._store(self.self_mask_shares, self.key_shares, int(owner), holder, share)
            for owner, share in r.key_shares.items():
                if owner in dropped and owner in self.graph[holder]:
                    self._store(self.key_shares, self.self_mask_shares, int(owner), holder, share)
        if self.total is None:
            raise ProtocolViolation(f"round {self.round_}: finish called before the masked inputs arrived")
        total = self.total.copy()
        for d in sorted(self.masked):
            seed = self._rebuild(self.self_mask_shares.get(d, {}), d, "self-mask seed")
            total -= masks.expand(seed, self.length, self.bits)
        for d in sorted(dropped):
            pair = keys.KeyPair.from_private_bytes(self._rebuild(self.key_shares.get(d, {}), d, "mask key"))
            if pair.public != self.adverts[d].mask_key:
                raise SecAggAborted(f"round {self.round_}: the rebuilt mask key of device {d} does not match its "
                                    "advertised key (inconsistent shares)")
            for j in self.graph[d]:
                if j in self.masked:  # y_j carries sign(j, d) * PRG(s_jd): take it out
                    pairwise = masks.expand(keys.agree(pair, self.adverts[j].mask_key, keys.MASK_INFO), self.length, self.bits)
                    if pair_sign(j, d) > 0:
                        total -= pairwise
                    else:
                        total += pairwise
        total &= total.dtype.type((1 << self.bits) - 1)
        return centred(total, self.bits)

    def _rebuild(self, shares: Mapping[int, np.ndarray], owner: int, what: str) -> bytes:
        need = graph.share_threshold(self.threshold, len(self.graph[owner]))
        if len(shares) < need:
            raise SecAggAborted(f"round {self.round_}: secure aggregation aborted: {len(shares)} shares of device "
                                f"{owner}'s {what} arrived, {need} needed (privacy.threshold={self.threshold:g})")
        holders = sorted(shares)
        try:
            return shamir.combine(np.array([holder_point(h) for h in holders]), np.stack([shares[h] for h in holders]),
                                  need, SECRET_BYTES)
        except shamir.ShamirError as e:
            raise SecAggAborted(f"round {self.round_}: device {owner}'s {what}: {e}") from None

    def survivors(self) -> list[int]:
        """The devices whose inputs the sum holds (U3), sorted."""
        return sorted(self.masked)
