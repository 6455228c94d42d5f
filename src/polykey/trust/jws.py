"""The JWS pieces the link statements and the sigchain share (docs/spec/links.md,
docs/spec/sigchain.md): strict base64url, RFC 8785 canonical JSON (JCS), claim ids, digests.

Nothing here raises a Polykey error: a refusal is :class:`JwsError` whose text names what is
wrong (``its payload is not base64url``); each caller turns it into its own error.

``canonical_claim`` is the sigchain's exact check that bytes are the RFC 8785 form of the JSON
object they hold, built to be cheap: for a document of text (Basic Multilingual Plane only),
integers within ±(2^53 - 1), booleans, null, lists and objects, and no other numbers, JCS and
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` write the same text
(keys sorted by UTF-16 code units are sorted by code points when every character is in the
BMP; both escape exactly ``"``, ``\\`` and the controls below U+0020, with the same short forms
and lowercase ``\\u00xx``). Any other document is checked with the ``rfc8785`` package.
tests/trust/test_sigchain.py holds the two to each other.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import time
from typing import Any

import rfc8785

from polykey import codec

ALG = "EdDSA"
DIGEST_PREFIX = "sha256:"
MAX_DEPTH = 32  # lists and objects nested in one claim
SAFE_INT = 2**53 - 1

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64URL_VALUE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PAD = (b"", b"", b"==", b"=")
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


class JwsError(ValueError):
    """A JWS part that is not what it must be; the text says what, for a user to read."""


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str) -> bytes:
    """Strict base64url without padding: the one spelling that re-encodes to itself (no other
    characters, no padding, no stray bits after the last whole byte)."""
    rest = len(text) & 3
    if rest == 1 or not _B64URL.fullmatch(text):
        raise JwsError(f"its {what} is not base64url")
    if rest and _B64URL_VALUE.index(text[-1]) & (0x0F if rest == 2 else 0x03):
        raise JwsError(f"its {what} is not base64url")
    try:
        data = text.encode("ascii").translate(_TO_STANDARD) + _PAD[rest]
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise JwsError(f"its {what} is not base64url") from None


def canonical(value: dict[str, Any]) -> bytes:
    """RFC 8785 canonical JSON (JCS)."""
    return rfc8785.dumps(value)


def canonical_object(raw: bytes, what: str) -> dict[str, Any]:
    """The object ``raw`` holds, if ``raw`` is exactly its JCS form (the link statements' check:
    ``codec.decode`` bounds depth and refuses lone surrogates)."""
    try:
        doc = codec.decode(raw)  # UTF-8 JSON holding one object, nested at most 200 deep
    except codec.BadMessage:
        raise JwsError(f"its {what} is not a JSON object") from None
    try:
        same = canonical(doc) == raw
    except rfc8785.CanonicalizationError:
        same = False
    if not same:
        raise JwsError(f"its {what} is not canonical JSON (RFC 8785)")
    return doc


def canonical_claim(raw: bytes, what: str) -> dict[str, Any]:
    """The object ``raw`` holds, if ``raw`` is exactly its JCS form: UTF-8, one JSON object,
    nested at most MAX_DEPTH deep, no lone surrogates. Cheap for the usual claim (module doc)."""
    doc: object = None
    fast = False
    try:
        text = raw.decode("utf-8")
        if text.isascii() and text.count("{") + text.count("[") <= MAX_DEPTH:
            # ASCII that json.dumps writes back as it is holds ASCII text only (module doc)
            with contextlib.suppress(_NotFast):
                doc, fast = _fast_loads(text), True
        if not fast:
            doc = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JwsError(f"its {what} is not a JSON object") from None
    if type(doc) is not dict:
        raise JwsError(f"its {what} is not a JSON object")
    if fast or jcs_like(doc, 1, what):
        same = _dumps(doc) == text
    else:
        try:
            same = rfc8785.dumps(doc) == raw
        except rfc8785.CanonicalizationError:
            same = False
    if not same:
        raise JwsError(f"its {what} is not canonical JSON (RFC 8785)")
    return doc


class _NotFast(Exception):
    """A number json.dumps does not write as JCS does: take the slow path."""


def _safe_int(text: str) -> int:
    value = int(text)
    if not -SAFE_INT <= value <= SAFE_INT:
        raise _NotFast
    return value


def _no_float(text: str) -> float:
    raise _NotFast


_fast_loads = json.JSONDecoder(
    parse_int=_safe_int, parse_float=_no_float, parse_constant=_no_float
).decode


def jcs_like(value: object, depth: int, what: str = "payload") -> bool:
    """Whether ``json.dumps`` (sorted, compact, not ASCII-only) writes ``value`` as JCS does.
    Too deep, or text that is not Unicode (a lone surrogate), is JwsError."""
    kind = type(value)
    if kind is str:
        return _bmp_text(value, what)  # type: ignore[arg-type]
    if kind is int:
        return -SAFE_INT <= value <= SAFE_INT  # type: ignore[operator]
    if kind is bool or value is None:
        return True
    if isinstance(value, dict | list) and depth > MAX_DEPTH:
        raise JwsError(f"its {what} is nested more than {MAX_DEPTH} deep")
    ok = True
    if isinstance(value, dict):
        for key, item in value.items():  # a walk to the end: a lone surrogate anywhere is refused
            ok = _bmp_text(key, what) & jcs_like(item, depth + 1, what) & ok
        return ok
    if isinstance(value, list):
        for item in value:
            ok = jcs_like(item, depth + 1, what) & ok
        return ok
    return False  # a float: JCS writes numbers as ECMAScript does, which json.dumps does not


def _bmp_text(text: str, what: str) -> bool:
    if text.isascii():
        return True
    for char in text:
        if "\ud800" <= char <= "\udfff":
            raise JwsError(f"its {what} holds text that is not Unicode (a lone surrogate)")
    return max(text) <= "\uffff"


def new_claim_id(now_ms: int | None = None) -> str:
    """A claim id as Polykey writes them: multibase base32hex (``v``) of 16 bytes, 48 bits of
    milliseconds then 80 random bits, so ids sort by time."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    raw = ms.to_bytes(6, "big") + os.urandom(10)
    return "v" + base64.b32hexencode(raw).decode("ascii").rstrip("=").lower()


def digest(raw: bytes) -> str:
    """``sha256:`` + base64url of SHA-256 over ``raw``."""
    return DIGEST_PREFIX + b64url(hashlib.sha256(raw).digest())
