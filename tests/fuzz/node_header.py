"""The node file's plaintext header (store/header.py ``decode``): the first thing read from a
file that may be damaged or hostile, before any key exists.

Input: ``u8 flags ‖ body`` (``\xfe\xfe n c`` in the body is ``c`` repeated: see
``_bytes.expand``). The checksum is the body's own SHA-256 (what a forger writes), or,
with flag bit 0, the first 32 body bytes (damage). Flag bit 1 allows the weak (test) KDF, as
tests and ``PK_UNSAFE_FAST_KDF`` do. A header that decodes must encode back to an equal header
and be unwrapped by the recovery secret (cheap) and, when its KDF is cheap, by a password. The
documented refusals are the :class:`PolykeyError` family (``NodeDamaged``, ``NotANode``,
``UnsupportedVersion``, ``UnsafeParameters``).
"""

from __future__ import annotations

import hashlib

from polykey.errors import PolykeyError
from polykey.store import header
from tests.fuzz._bytes import expand

CHEAP_KIB = 256


def one_input(data: bytes) -> None:
    if not data:
        return
    flags, body = data[0], expand(data[1:])
    checksum = body[:32] if flags & 1 else hashlib.sha256(body).digest()
    try:
        h = header.decode(body, checksum, allow_weak=bool(flags & 2))
    except PolykeyError:
        return
    encoded, digest = h.encode()
    assert header.decode(encoded, digest, allow_weak=True) == h, "the header does not round-trip"
    try:
        header.unwrap_with_recovery(h, b"\x00" * 64)
        if h.kdf.memory_kib * h.kdf.iterations <= CHEAP_KIB:
            header.unwrap_with_password(h, b"password", allow_weak=True)
    except PolykeyError:
        return
