"""The plaintext header of a node file: format, KDF parameters, and the wrapped data key.

The header is one row of canonical JSON plus its SHA-256, so accidental damage is told apart from
a wrong password. It is checked in this order before any expensive work: checksum, magic, format
version, KDF bounds. Then the password (or the recovery secret) unwraps the data key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass, replace
from typing import Any

from polykey.crypto.aead import SealBroken, Sealer
from polykey.crypto.kdf import (
    AboveCeiling,
    Argon2Params,
    ParametersRefused,
    argon2id,
    equal,
    hkdf,
)
from polykey.errors import NodeDamaged, NotANode, UnsafeParameters, UnsupportedVersion

MAGIC = "polykey-node"
FORMAT = 1
DATA_KEY_BYTES = 32
WRAP_PASSWORD = b"polykey/v1 wrap password\x00"
WRAP_RECOVERY = b"polykey/v1 wrap recovery\x00"
RECOVERY_KEK_INFO = b"polykey/v1 recovery key-encryption key"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise NodeDamaged(f"header field {what} is not text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NodeDamaged(f"header field {what} is not base64") from None


def refused(exc: ParametersRefused) -> UnsafeParameters:
    """The error a user reads; above the ceiling, its hint names the flag that raises it."""
    if not isinstance(exc, AboveCeiling):
        return UnsafeParameters(str(exc))
    flag, value = (
        ("memory", -(-exc.value // 1024))  # MiB, rounded up
        if exc.parameter == "memory"
        else ("iterations", exc.value)
    )
    return UnsafeParameters(
        str(exc),
        hint=f"`pk bootstrap` never asks for more, so the header may be hostile; if you made "
        f"this node with a higher cost, allow it: `pk --kdf-max-{flag} {value} COMMAND`, "
        f"or set PK_KDF_MAX_{flag.upper()}={value}.",
    )


def canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class Header:
    format: int
    kdf: Argon2Params
    password_wrap: bytes
    recovery_wrap: bytes

    def kdf_json(self) -> dict[str, Any]:
        return {
            "alg": "argon2id",
            "version": 19,
            "memory_kib": self.kdf.memory_kib,
            "iterations": self.kdf.iterations,
            "lanes": self.kdf.lanes,
            "salt": _b64(self.kdf.salt),
        }

    def password_aad(self) -> bytes:
        return WRAP_PASSWORD + canonical({"format": self.format, "kdf": self.kdf_json()})

    def recovery_aad(self) -> bytes:
        return WRAP_RECOVERY + canonical({"format": self.format})

    def encode(self) -> tuple[bytes, bytes]:
        """(body, checksum) as stored in the header row."""
        body = canonical(
            {
                "magic": MAGIC,
                "format": self.format,
                "kdf": self.kdf_json(),
                "password": _b64(self.password_wrap),
                "recovery": _b64(self.recovery_wrap),
            }
        )
        return body, hashlib.sha256(body).digest()


def decode(body: bytes, checksum: bytes, *, allow_weak: bool = False) -> Header:
    """Parse and bound a stored header; raise the error a user should see."""
    if not equal(hashlib.sha256(body).digest(), checksum):
        raise NodeDamaged("header checksum mismatch")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise NodeDamaged("header is not JSON") from None
    if not isinstance(doc, dict) or doc.get("magic") != MAGIC:
        raise NotANode("header magic is missing")
    fmt = doc.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise NodeDamaged("header format version is invalid")
    if fmt > FORMAT:
        raise UnsupportedVersion(f"format {fmt}; this Polykey reads format {FORMAT}")
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("alg") != "argon2id" or kdf.get("version") != 19:
        raise UnsafeParameters("unknown key-derivation function")
    params = Argon2Params(
        memory_kib=kdf.get("memory_kib"),  # type: ignore[arg-type]  # checked just below
        iterations=kdf.get("iterations"),  # type: ignore[arg-type]
        lanes=kdf.get("lanes"),  # type: ignore[arg-type]
        salt=_unb64(kdf.get("salt"), "kdf.salt"),
    )
    try:
        params.check(allow_weak=allow_weak)
    except ParametersRefused as exc:
        raise refused(exc) from None
    return Header(
        format=fmt,
        kdf=params,
        password_wrap=_unb64(doc.get("password"), "password"),
        recovery_wrap=_unb64(doc.get("recovery"), "recovery"),
    )


def recovery_kek(recovery_secret: bytes) -> bytes:
    return hkdf(recovery_secret, RECOVERY_KEK_INFO)


def new_header(
    data_key: bytes,
    password: bytes,
    recovery_secret: bytes,
    kdf: Argon2Params,
    *,
    allow_weak: bool = False,
) -> Header:
    blank = Header(format=FORMAT, kdf=kdf, password_wrap=b"", recovery_wrap=b"")
    recovery_wrap = bytes(
        Sealer(recovery_kek(recovery_secret)).seal(data_key, blank.recovery_aad())
    )
    return rewrap_password(
        replace(blank, recovery_wrap=recovery_wrap), data_key, password, kdf, allow_weak=allow_weak
    )


def rewrap_password(
    header: Header, data_key: bytes, password: bytes, kdf: Argon2Params, *, allow_weak: bool
) -> Header:
    """The header with the data key wrapped under a new password (fresh salt in ``kdf``)."""
    try:
        kek = argon2id(password, kdf, allow_weak=allow_weak)
    except ParametersRefused as exc:
        raise refused(exc) from None
    fresh = replace(header, kdf=kdf, password_wrap=b"")
    return replace(fresh, password_wrap=bytes(Sealer(kek).seal(data_key, fresh.password_aad())))


def rewrap_recovery(header: Header, data_key: bytes, recovery_secret: bytes) -> Header:
    """The header with the data key wrapped under a new recovery secret (a key renewal)."""
    sealer = Sealer(recovery_kek(recovery_secret))
    return replace(header, recovery_wrap=bytes(sealer.seal(data_key, header.recovery_aad())))


def unwrap_with_password(header: Header, password: bytes, *, allow_weak: bool) -> bytes | None:
    """The data key, or None when the password is wrong."""
    try:
        kek = argon2id(password, header.kdf, allow_weak=allow_weak)
    except ParametersRefused as exc:
        raise refused(exc) from None
    return _unwrap(Sealer(kek), header.password_wrap, header.password_aad())


def unwrap_with_recovery(header: Header, recovery_secret: bytes) -> bytes | None:
    kek = recovery_kek(recovery_secret)
    return _unwrap(Sealer(kek), header.recovery_wrap, header.recovery_aad())


def _unwrap(sealer: Sealer, wrapped: bytes, aad: bytes) -> bytes | None:
    try:
        key = sealer.open(wrapped, aad)
    except SealBroken:
        return None
    if len(key) != DATA_KEY_BYTES:
        raise NodeDamaged("the wrapped data key has the wrong length")
    return key


def new_salt() -> bytes:
    return os.urandom(16)
