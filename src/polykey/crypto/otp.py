"""One-time passwords: TOTP (RFC 6238) from an otpauth:// URI (Google's Key Uri Format).

The HOTP/TOTP arithmetic is ``cryptography``'s; this module parses and bounds the URI.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives.hashes import SHA1, SHA256, SHA512
from cryptography.hazmat.primitives.twofactor.totp import TOTP

_ALGORITHMS: dict[str, type[SHA1] | type[SHA256] | type[SHA512]] = {
    "SHA1": SHA1,
    "SHA256": SHA256,
    "SHA512": SHA512,
}


class BadOtpSecret(ValueError):
    """The secret is not an otpauth://totp URI or a base32 TOTP key."""


@dataclass(frozen=True)
class TotpSpec:
    key: bytes
    digits: int = 6
    period: int = 30
    algorithm: str = "SHA1"
    label: str = ""
    issuer: str = ""

    def __repr__(self) -> str:
        return f"TotpSpec({self.label!r}, digits={self.digits}, period={self.period})"

    def code(self, at: float | None = None) -> str:
        now = time.time() if at is None else at
        totp = TOTP(
            self.key,
            self.digits,
            _ALGORITHMS[self.algorithm](),
            self.period,
            enforce_key_length=False,
        )
        return totp.generate(int(now)).decode()

    def remaining(self, at: float | None = None) -> int:
        now = time.time() if at is None else at
        return self.period - int(now) % self.period


def _key(text: str) -> bytes:
    clean = text.replace(" ", "").replace("-", "").upper()
    try:
        key = base64.b32decode(clean + "=" * (-len(clean) % 8))
    except (binascii.Error, ValueError):
        raise BadOtpSecret("the key is not base32") from None
    if not 10 <= len(key) <= 128:
        raise BadOtpSecret("the key must be 10 to 128 bytes")
    return key


def parse(secret: str) -> TotpSpec:
    text = secret.strip()
    if not text.lower().startswith("otpauth://"):
        return TotpSpec(_key(text))
    parts = urlsplit(text)
    if parts.netloc.lower() != "totp":
        raise BadOtpSecret("only otpauth://totp URIs are supported")
    query = {k.lower(): v[-1] for k, v in parse_qs(parts.query).items()}
    if "secret" not in query:
        raise BadOtpSecret("the URI has no secret")
    algorithm = query.get("algorithm", "SHA1").upper()
    if algorithm not in _ALGORITHMS:
        raise BadOtpSecret(f"unsupported algorithm {algorithm[:20]}")
    try:
        digits = int(query.get("digits", "6"))
        period = int(query.get("period", "30"))
    except ValueError:
        raise BadOtpSecret("digits and period must be numbers") from None
    if digits not in (6, 7, 8) or not 1 <= period <= 3600:
        raise BadOtpSecret("digits must be 6 to 8 and the period 1 to 3600 seconds")
    return TotpSpec(
        key=_key(query["secret"]),
        digits=digits,
        period=period,
        algorithm=algorithm,
        label=unquote(parts.path.lstrip("/")),
        issuer=query.get("issuer", ""),
    )
