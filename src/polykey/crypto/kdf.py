"""Key derivation: Argon2id for passwords, HKDF-SHA256 for subkeys, HMAC-SHA256 for names.

Argon2id parameters read from a file are attacker-controlled, so they are checked *before* any
work: against hard bounds (a header asking for a terabyte of memory is refused, not obeyed), and
against a ceiling that is, by default, the most work `pk bootstrap` ever asks for (64 MiB, 3
passes), so a hostile header cannot make an unlock cost more than a real node's would. A node made
elsewhere with a higher cost opens once the user raises the ceiling (the CLI's --kdf-max-memory and
--kdf-max-iterations), never past the hard bounds. Parameters below the production floor are
refused too, unless the caller allows them explicitly (tests use a fast setting that way).
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
# The default ceiling: what `pk bootstrap` makes (node.DEFAULT_KDF; a test keeps them equal).
# Lanes split the memory without adding work, so they are held to the hard bound only.
BOOTSTRAP_MEMORY_KIB = 64 * 1024
BOOTSTRAP_ITERATIONS = 3
# Production floor (OWASP's minimum for Argon2id is m=19 MiB, t=2, p=1).
MIN_MEMORY_KIB = 19 * 1024
MIN_ITERATIONS = 2


class ParametersRefused(ValueError):
    """The Argon2id parameters are outside the bounds."""


class AboveCeiling(ParametersRefused):
    """Inside the hard bounds, but more work than the ceiling allows."""

    def __init__(self, parameter: str, value: int, bound: int, text: str) -> None:
        super().__init__(text)
        self.parameter = parameter  # "memory" or "iterations"
        self.value = value
        self.bound = bound


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The most Argon2id work accepted: memory in KiB and passes."""

    memory_kib: int = BOOTSTRAP_MEMORY_KIB
    iterations: int = BOOTSTRAP_ITERATIONS


DEFAULT_CEILING = Ceiling()
_ceiling = DEFAULT_CEILING


def current_ceiling() -> Ceiling:
    return _ceiling


def set_ceiling(ceiling: Ceiling) -> Ceiling:
    """Make ``ceiling`` this process's ceiling (for every check without an explicit one);
    returns the one before. A ceiling outside the hard bounds is refused (ValueError)."""
    global _ceiling
    if not (
        1 <= ceiling.memory_kib <= MAX_MEMORY_KIB and 1 <= ceiling.iterations <= MAX_ITERATIONS
    ):
        raise ValueError(
            f"a ceiling is 1..{MAX_MEMORY_KIB} KiB of memory and 1..{MAX_ITERATIONS} iterations"
        )
    before, _ceiling = _ceiling, ceiling
    return before


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """Argon2id cost: memory in KiB, passes, lanes; and the salt."""

    memory_kib: int
    iterations: int
    lanes: int
    salt: bytes

    def check(self, *, allow_weak: bool = False, ceiling: Ceiling | None = None) -> None:
        """Refuse parameters outside the hard bounds, above the ceiling (this process's unless
        one is given), and below the floor unless allowed."""
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
        limit = ceiling if ceiling is not None else _ceiling
        if self.memory_kib > limit.memory_kib:
            raise AboveCeiling(
                "memory",
                self.memory_kib,
                limit.memory_kib,
                f"memory={self.memory_kib} KiB ({self.memory_kib / 1024:g} MiB) is above the "
                f"{limit.memory_kib} KiB ({limit.memory_kib / 1024:g} MiB) accepted",
            )
        if self.iterations > limit.iterations:
            raise AboveCeiling(
                "iterations",
                self.iterations,
                limit.iterations,
                f"iterations={self.iterations} is above the {limit.iterations} accepted",
            )
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
