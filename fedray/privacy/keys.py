"""Per-round key material from `cryptography`: X25519 key pairs, HKDF-derived seeds and AEAD channels.

Every private key and seed comes from the OS's entropy (never the run seed), fresh for each round.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

KEY_BYTES = 32
NONCE_BYTES = 12
MASK_INFO = b"fedray secagg pairwise mask v1"
CHANNEL_INFO = b"fedray secagg share channel v1"


class ChannelError(ValueError):
    """An encrypted share failed authentication (tampered, misrouted or for another receiver)."""


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair held by one device for one round."""

    private: X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls) -> "KeyPair":
        """A fresh key pair from the OS's entropy."""
        private = X25519PrivateKey.generate()
        return cls(private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> "KeyPair":
        """Rebuild a key pair from its 32 raw private bytes (after Shamir reconstruction)."""
        private = X25519PrivateKey.from_private_bytes(raw)
        return cls(private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def private_bytes(self) -> bytes:
        """The raw private key (what a device Shamir-shares so the driver can remove a dropped device's masks)."""
        return self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def agree(pair: KeyPair, peer_public: bytes, info: bytes) -> bytes:
    """A 32-byte key both ends derive: HKDF-SHA256 over the X25519 shared secret, bound to its purpose."""
    shared = pair.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def fresh_seed() -> bytes:
    """A 32-byte self-mask seed from the OS's entropy."""
    return os.urandom(KEY_BYTES)


def _header(round_: int, sender: int, receiver: int) -> bytes:
    return struct.pack("<qqq", round_, sender, receiver)


def seal(key: bytes, round_: int, sender: int, receiver: int, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305 ciphertext bound to (round, sender, receiver) as associated data: nonce | ciphertext."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, _header(round_, sender, receiver))


def open_sealed(key: bytes, round_: int, sender: int, receiver: int, sealed: bytes) -> bytes:
    """The plaintext of seal(); raises ChannelError if it was altered or addressed to another (round, pair)."""
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _header(round_, sender, receiver))
    except (InvalidTag, ValueError):
        raise ChannelError(f"share from device {sender} to {receiver} failed authentication") from None
