"""AES-256-GCM sealing with a random 96-bit nonce: ``nonce || ciphertext || tag``."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES
LARGE = 1 << 20  # from this size on, seal into one preallocated buffer


class SealBroken(Exception):
    """A sealed value failed authentication (wrong key, wrong associated data, or damage)."""


class Sealer:
    """Seals and opens values under one 256-bit key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "Sealer(<key hidden>)"

    def seal(self, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> bytes | bytearray:
        """Encrypt and authenticate; ``nonce`` is random unless given (test vectors only).

        Values from 1 MiB on come back as a bytearray sealed in place, to spare a copy.
        """
        if nonce is None:
            nonce = os.urandom(NONCE_BYTES)
        elif len(nonce) != NONCE_BYTES:
            raise ValueError("nonce must be 12 bytes")
        if len(plaintext) < LARGE:
            return nonce + self._aead.encrypt(nonce, plaintext, aad)
        out = bytearray(NONCE_BYTES + len(plaintext) + TAG_BYTES)  # large: no extra copies
        out[:NONCE_BYTES] = nonce
        self._aead.encrypt_into(nonce, plaintext, aad, memoryview(out)[NONCE_BYTES:])
        return out

    def open(self, sealed: bytes | bytearray, aad: bytes) -> bytes:
        if len(sealed) < OVERHEAD:
            raise SealBroken("sealed value is shorter than nonce and tag")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], memoryview(sealed)[NONCE_BYTES:], aad)
        except InvalidTag:
            raise SealBroken("authentication failed") from None
