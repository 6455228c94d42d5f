"""One sigchain entry: its document, what makes it valid on its own, and signing one.

An entry is a JWS in the general JSON serialization (docs/spec/sigchain.md)::

    {"payload": B64URL(JCS(claim)),
     "signatures": [{"protected": B64URL(JCS({"alg": "EdDSA", "kid": NodeId})),
                     "signature": B64URL(Ed25519(ASCII(protected "." payload)))}, ...]}

Its stored bytes are the JCS form of that document, and its digest is ``sha256:`` + B64URL of
SHA-256 over them. The checks here are steps 1 to 7 of the spec's list (all but the signatures
themselves and the entry's place in a chain: trust/sigchain_chain.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

from polykey.crypto.signing import SIGNATURE_BYTES
from polykey.errors import InvalidNodeId, PolykeyError
from polykey.ids import decode_node_id, encode_node_id
from polykey.keys.root import RootKey
from polykey.trust import jws
from polykey.trust.jws import JwsError, b64url

LINK_NODE = "link-node"
LINK_IDENTITY = "link-identity"
REVOKE = "revoke"
ROTATE_KEY = "rotate-key"
DELEGATE = "delegate"
AUDIT_CHECKPOINT = "audit-checkpoint"  # docs/spec/audit.md
TWO_PARTY = (LINK_NODE, ROTATE_KEY, DELEGATE)  # signed by the issuer and the subject
RESERVED = ("typ", "iss", "seq", "prevClaimId", "prevDigest", "iat", "jti")

MAX_ENTRY = 8192  # characters of an entry's stored form
MAX_SIGNATURES = 4
MAX_TYP = 64
MAX_JTI = 128
MAX_IDENTITY = 300
MAX_REF = 1024

_DIGEST = re.compile(r"sha256:[A-Za-z0-9_-]{43}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_IDENTITY = re.compile(r"([a-z0-9]+):([^\s:][^\s]*)")
_HEADER_HEAD, _HEADER_TAIL = b'{"alg":"EdDSA","kid":"', b'"}'
_MEMO = 4096


class BadChain(PolykeyError):
    """Not a valid sigchain"""

    exit_code = 58
    hint = "Nothing of it was taken; a chain is signed and linked as docs/spec/sigchain.md says."


class Problem(Exception):
    """One check of an entry failed; the text says which (made a BadChain by the caller)."""


@dataclass(frozen=True)
class Entry:
    """One verified entry. ``iss``, ``sub`` and ``signers`` are NodeIds in their text form
    (``sub`` of a link-identity is the identity, of a revoke the jti it revokes; "" when an
    unknown type has none); ``raw`` is the stored form, ``digest`` its hash."""

    seq: int
    jti: str
    typ: str
    iss: str
    sub: str
    iat: int
    payload: dict[str, Any]
    raw: bytes
    digest: str
    signers: tuple[str, ...]

    @property
    def prev_claim_id(self) -> str | None:
        value = self.payload.get("prevClaimId")
        return value if isinstance(value, str) else None

    @property
    def prev_digest(self) -> str | None:
        value = self.payload.get("prevDigest")
        return value if isinstance(value, str) else None

    @property
    def starts_rotated(self) -> bool:
        """The first entry of a chain continuing a rotated key's (it names ``from``)."""
        return self.typ == ROTATE_KEY and "from" in self.payload

    @property
    def closes(self) -> bool:
        """A rotate-key entry handing the chain to a new key: nothing may follow it."""
        return self.typ == ROTATE_KEY and not self.starts_rotated

    def doc(self) -> dict[str, Any]:
        """The entry's document, as it is served to other nodes."""
        return document(self.raw)


@dataclass(frozen=True)
class Head:
    """Where a chain ends: what the next entry must name."""

    seq: int
    jti: str
    digest: str
    closed: bool = False  # its last entry is a rotate-key: nothing may follow

    @classmethod
    def of(cls, entry: Entry) -> Head:
        return cls(entry.seq, entry.jti, entry.digest, entry.closes)


Work = tuple[bytes, bytes, bytes]  # (public key, signing input, signature)


def document(raw: bytes) -> dict[str, Any]:
    import json

    doc: dict[str, Any] = json.loads(raw)
    return doc


def stored_form(payload: str, signatures: Iterable[tuple[str, str]]) -> str:
    """The JCS form of an entry document whose texts are base64url (nothing to escape)."""
    sigs = ",".join(f'{{"protected":"{p}","signature":"{s}"}}' for p, s in signatures)
    return f'{{"payload":"{payload}","signatures":[{sigs}]}}'


# --- checking one entry ----------------------------------------------------------------------

_kids: dict[str, str] = {}  # protected header -> its kid, for headers seen before
_publics: dict[str, bytes] = {}  # NodeId text -> public key


def parse(doc: object, *, partial: bool = False) -> tuple[Entry, list[Work]]:
    """An entry and the signatures still to verify, or Problem. ``partial``: a draft of a
    two-party claim, signed by its issuer alone so far."""
    if type(doc) is not dict or len(doc) != 2 or "payload" not in doc or "signatures" not in doc:
        raise Problem("it must be an object of payload and signatures")
    payload, signatures = doc["payload"], doc["signatures"]
    if type(payload) is not str or type(signatures) is not list:
        raise Problem("its payload must be text and its signatures a list")
    if not 1 <= len(signatures) <= MAX_SIGNATURES:
        raise Problem(f"it must hold 1 to {MAX_SIGNATURES} signatures")
    pairs: list[tuple[str, str]] = []
    size = len(payload)
    for sig in signatures:
        if type(sig) is not dict or len(sig) != 2:
            raise Problem("each signature must be an object of protected and signature")
        protected, signature = sig.get("protected"), sig.get("signature")
        if type(protected) is not str or type(signature) is not str:
            raise Problem("each signature must be an object of protected and signature")
        pairs.append((protected, signature))
        size += len(protected) + len(signature)
    if size > MAX_ENTRY:
        raise Problem(f"it is longer than {MAX_ENTRY} characters")
    text = stored_form(payload, pairs)
    if len(text) > MAX_ENTRY:
        raise Problem(f"it is longer than {MAX_ENTRY} characters")
    try:
        raw_payload = jws.b64url_decode(payload, "payload")
        kids = [_kid(protected) for protected, _ in pairs]
        sig_bytes = [jws.b64url_decode(signature, "signature") for _, signature in pairs]
        if any(len(s) != SIGNATURE_BYTES for s in sig_bytes):
            raise Problem(f"a signature is not {SIGNATURE_BYTES} bytes")
        claim = jws.canonical_claim(raw_payload, "payload")
    except JwsError as exc:
        raise Problem(str(exc)) from None
    entry = _entry(claim, kids, text.encode("ascii"), partial)
    work = [
        (_public(kid), f"{protected}.{payload}".encode("ascii"), sig)
        for kid, (protected, _), sig in zip(kids, pairs, sig_bytes, strict=True)
    ]
    return entry, work


def _kid(protected: str) -> str:
    """The NodeId a protected header names; it must be exactly {"alg":"EdDSA","kid":NodeId}."""
    kid = _kids.get(protected)
    if kid is not None:
        return kid
    raw = jws.b64url_decode(protected, "header")
    if not (raw.startswith(_HEADER_HEAD) and raw.endswith(_HEADER_TAIL)):
        header = jws.canonical_claim(raw, "header")
        if header.get("alg") != jws.ALG:
            raise Problem(f"its header must name the algorithm {jws.ALG}")
        raise Problem("its header must hold alg and kid alone")
    kid = raw[len(_HEADER_HEAD) : -len(_HEADER_TAIL)].decode("ascii", errors="replace")
    _public(kid, "its key id")
    if len(_kids) >= _MEMO:
        _kids.clear()
    _kids[protected] = kid
    return kid


def _public(node: str, what: str = "") -> bytes:
    public = _publics.get(node)
    if public is None:
        try:
            public = bytes(decode_node_id(node))
        except InvalidNodeId:
            raise Problem(f"{what} is not a NodeId") from None
        if len(_publics) >= _MEMO:
            _publics.clear()
        _publics[node] = public
    return public


def _int(value: object, low: int) -> TypeGuard[int]:
    return type(value) is int and low <= value <= jws.SAFE_INT


def _text(value: object, most: int) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= most


def _entry(claim: dict[str, Any], kids: list[str], raw: bytes, partial: bool) -> Entry:
    typ, iss, seq, iat, jti = (claim.get(k) for k in ("typ", "iss", "seq", "iat", "jti"))
    prev_id, prev_digest = claim.get("prevClaimId"), claim.get("prevDigest")
    if not _text(typ, MAX_TYP):
        raise Problem(f"its typ must be text of 1 to {MAX_TYP} characters")
    if not isinstance(iss, str):
        raise Problem("its iss must be a NodeId")
    _public(iss, "its iss")
    if not _int(seq, 1):
        raise Problem("its seq must be a whole number from 1")
    if not _int(iat, 0):
        raise Problem("its iat must be a time in whole seconds")
    if not _text(jti, MAX_JTI):
        raise Problem(f"its jti must be text of 1 to {MAX_JTI} characters")
    if prev_id is not None and not _text(prev_id, MAX_JTI):
        raise Problem(f"its prevClaimId must be null or text of 1 to {MAX_JTI} characters")
    if prev_digest is not None and not (
        isinstance(prev_digest, str) and _DIGEST.fullmatch(prev_digest)
    ):
        raise Problem("its prevDigest must be null or sha256: and 43 base64url characters")
    if (prev_id is None) != (prev_digest is None):
        raise Problem("its prevClaimId and prevDigest must both be null or both be set")
    sub, signers = _subject(claim, typ, iss)
    starts = typ == ROTATE_KEY and "from" in claim
    if starts and (seq != 1 or prev_id is None):
        raise Problem("a rotate-key naming from must be the first entry, linked to the old chain")
    if not starts and (seq == 1) != (prev_id is None):
        which = "must be null in the first entry" if seq == 1 else "must be set after it"
        raise Problem(f"its prevClaimId and prevDigest {which}")
    _signers(kids, signers, iss, partial)
    return Entry(seq, jti, typ, iss, sub, iat, claim, raw, jws.digest(raw), tuple(kids))


def _node(value: object, what: str, iss: str, *, same: bool = False) -> str:
    if not isinstance(value, str):
        raise Problem(f"its {what} must be a NodeId")
    _public(value, f"its {what}")
    if (value == iss) != same:
        raise Problem(f"its {what} must {'' if same else 'not '}be its iss")
    return value


def _subject(claim: dict[str, Any], typ: str, iss: str) -> tuple[str, tuple[str, ...] | None]:
    """The claim's subject, and who must sign it (None: the issuer first, any others after)."""
    sub = claim.get("sub")
    if typ in (LINK_NODE, DELEGATE) or (typ == ROTATE_KEY and "from" not in claim):
        if typ == DELEGATE and not isinstance(claim.get("grant"), dict):
            raise Problem("a delegate claim must hold a grant object")
        other = _node(sub, "sub", iss)
        return other, (iss, other)
    if typ == ROTATE_KEY:
        old = _node(claim["from"], "from", iss)
        return _node(sub, "sub", iss, same=True), (iss, old)
    if typ == LINK_IDENTITY:
        match = _IDENTITY.fullmatch(sub) if _text(sub, MAX_IDENTITY) else None
        if match is None:
            raise Problem("its sub must be an identity, provider:name")
        proof = claim.get("proof")
        if not isinstance(proof, dict) or not _text(proof.get("ref"), MAX_REF):
            raise Problem(f"its proof must be an object holding ref, text of 1 to {MAX_REF}")
        if proof.get("provider") != match.group(1):
            raise Problem("its proof must name the provider its sub names")
        return match.group(0), (iss,)
    if typ == AUDIT_CHECKPOINT:
        count, head = claim.get("count"), claim.get("head")
        if not _int(count, 1) or not (isinstance(head, str) and _HEX64.fullmatch(head)):
            raise Problem("an audit-checkpoint must hold count (from 1) and head (64 hex digits)")
        return "", (iss,)
    if typ == REVOKE:
        if not _text(sub, MAX_JTI) or sub == claim.get("jti"):
            raise Problem("its sub must be the jti of an earlier claim")
        return sub, (iss,)
    return (sub if isinstance(sub, str) else ""), None


def _signers(kids: list[str], wanted: tuple[str, ...] | None, iss: str, partial: bool) -> None:
    if wanted is None:
        if kids[0] != iss:
            raise Problem("it must be signed by its issuer first")
        if len(set(kids)) != len(kids):
            raise Problem("its signers must be distinct")
        return
    if partial:
        wanted = wanted[:1]
    if tuple(kids) != wanted:
        if len(wanted) == 1:
            raise Problem("it must be signed by its issuer alone")
        raise Problem("it must be signed by its issuer, then by the other key it names")


# --- making entries ------------------------------------------------------------------------------


def sign_claim(key: RootKey, claim: dict[str, Any]) -> dict[str, Any]:
    """A document of ``claim`` signed by ``key`` (the issuer)."""
    payload = b64url(jws.canonical(claim))
    return {"payload": payload, "signatures": [_signature(key, payload)]}


def add_signature(doc: dict[str, Any], key: RootKey) -> dict[str, Any]:
    """``doc`` with ``key``'s signature over the same payload added after the others."""
    payload = doc["payload"]
    return {"payload": payload, "signatures": [*doc["signatures"], _signature(key, payload)]}


def _signature(key: RootKey, payload: str) -> dict[str, str]:
    header = {"alg": jws.ALG, "kid": encode_node_id(key.node_id)}
    protected = b64url(jws.canonical(header))
    signature = key.signing.sign(f"{protected}.{payload}".encode("ascii"))
    return {"protected": protected, "signature": b64url(signature)}
