"""Key derivation: Argon2id for passwords, HKDF-SHA256 for subkeys, HMAC-SHA256 for names.

Argon2id parameters read from a file are attacker-controlled, so they are checked against hard
bounds *before* any work: a header asking for a terabyte of memory is refused, not obeyed.
Parameters below the production floor are refused too, unless the caller allows them explicitly
(tests use a fast setting that way).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SALT_BYTES = 16
KEY_BYTES = 32

# Hard bounds: never exceeded, whatever the caller allows.
MAX_MEMORY_KIB = 4 * 1024 * 1024  # 4 GiB
MAX_ITERATIONS = 64
MAX_LANES = 64
# Production floor (OWASP's minimum for Argon2id is m=19 MiB, t=2, p=1).
MIN_MEMORY_KIB = 19 * 1024
MIN_ITERATIONS = 2


class ParametersRefused(ValueError):
    """The Argon2id parameters are outside the bounds."""


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """Argon2id cost: memory in KiB, passes, lanes; and the salt."""

    memory_kib: int
    iterations: int
    lanes: int
    salt: bytes

    def check(self, *, allow_weak: bool = False) -> None:
        """Refuse parameters outside the hard bounds, and below the floor unless allowed."""
        for name, value, top in (
            ("memory", self.memory_kib, MAX_MEMORY_KIB),
            ("iterations", self.iterations, MAX_ITERATIONS),
            ("lanes", self.lanes, MAX_LANES),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value > top:
                raise ParametersRefused(f"{name}={value!r} is outside 1..{top}")
        if self.memory_kib < 8 * self.lanes:
            raise ParametersRefused("memory must be at least 8 KiB per lane")
        if len(self.salt) != SALT_BYTES:
            raise ParametersRefused(f"salt must be {SALT_BYTES} bytes")
        if not allow_weak and (
            self.memory_kib < MIN_MEMORY_KIB or self.iterations < MIN_ITERATIONS
        ):
            raise ParametersRefused(
                f"memory={self.memory_kib} KiB, iterations={self.iterations} is below the "
                f"production floor of {MIN_MEMORY_KIB} KiB and {MIN_ITERATIONS} iterations"
            )


def argon2id(secret: bytes, params: Argon2Params, *, allow_weak: bool = False) -> bytes:
    """Derive a 32-byte key from a password, after bounding the parameters."""
    params.check(allow_weak=allow_weak)
    kdf = Argon2id(
        salt=params.salt,
        length=KEY_BYTES,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive(secret)


def hkdf(ikm: bytes, info: bytes, *, salt: bytes | None = None, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 (RFC 5869) with a named label as ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def equal(a: bytes, b: bytes) -> bool:
    """Compare secrets in constant time."""
    return hmac.compare_digest(a, b)
