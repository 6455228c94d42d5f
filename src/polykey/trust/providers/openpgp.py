"""OpenPGP: an ``openpgp:FINGERPRINT`` identity is proven by a statement signed with that key
(docs/spec/identities.md, "OpenPGP").

Nothing is published anywhere: the node's ``link-identity`` claim carries the signature of the
statement (:func:`polykey.trust.proofs.render_statement`), so a verifier needs only the public
key. That is looked up, in this order, by Web Key Directory (when the claim names an email
address), on a keyserver (VKS, as keys.openpgp.org, or HKP), then in a local GnuPG keyring;
the first source that holds the key decides. Checking is :mod:`gpg`'s (real GnuPG, in a
temporary home).

The other way round, a key names the nodes it vouches for as Keyoxide names accounts: a
notation ``proof@ariadne.id=polykey:NODEID`` on its self-signature (``named_nodes``;
``notation_command`` is the gpg command that adds it). Such a node counts only once its own
chain's claim of the key verifies (trust/gestalts.py): the notation finds nodes, never proves.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from polykey.trust import jws
from polykey.trust.providers import gpg
from polykey.trust.providers.base import (
    BadProviderConfig,
    InvalidIdentity,
    Proof,
    ProofNotFound,
    ProofRef,
    ProviderError,
    Published,
    ReplyTooBig,
    name_of,
)
from polykey.trust.providers.http import Http, Limits, check_base_url, expect

NAME = "openpgp"
MAX_KEY = 256 * 1024  # bytes of a public key as served
_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
_LOCAL = re.compile(r"[!#$%&'*+\-/=?^_`{|}~.0-9A-Za-z]{1,64}")
_DOMAIN = re.compile(r"(?=.{4,253}$)((?!-)[a-z0-9-]{1,63}(?<!-)\.)+[a-z]{2,63}")
ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
NOTATION = "proof@ariadne.id"  # Keyoxide's name for a claim on a key's self-signature
NODE_URI = "polykey:"  # its value naming a node: polykey:NODEID
MAX_NAMED = 64  # nodes one key may name
_NODE_ID = re.compile(r"v[0-9a-v]{52}")


@dataclass(frozen=True)
class OpenPgpConfig:
    keyserver: str = "https://keys.openpgp.org"  # "": no keyserver
    keyserver_api: str = "vks"  # "vks" (/vks/v1/by-fingerprint/) or "hkp" (/pks/lookup)
    wkd_url: str = ""  # "": WKD as specified; else the base URL of both WKD methods (tests)
    keyring: str = ""  # a GnuPG home whose public keys are used (read only); "": none
    limits: Limits = field(default_factory=lambda: Limits(max_reply=MAX_KEY))

    def __post_init__(self) -> None:
        if self.keyserver_api not in ("vks", "hkp"):
            raise BadProviderConfig(f"keyserver_api {self.keyserver_api[:20]!r} (vks or hkp)")
        if self.keyserver:
            check_base_url(self.keyserver, "keyserver")
        if self.wkd_url:
            check_base_url(self.wkd_url, "WKD URL")


def fingerprint_of(identity: str) -> str:
    """The fingerprint an ``openpgp:`` identity names: 40 or 64 uppercase hex digits."""
    fingerprint = name_of(identity, NAME)
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise InvalidIdentity(
            f"{identity[:80]!r}",
            hint="Write openpgp: then the key's fingerprint, 40 hex digits in uppercase.",
        )
    return fingerprint


def check_email(email: str) -> tuple[str, str]:
    """An email address for WKD, split: (local part, lowercase domain)."""
    local, sep, domain = email.rpartition("@")
    if not sep or not _LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain.lower()):
        raise InvalidIdentity(f"{email[:80]!r} is not an email address WKD can look up")
    return local, domain.lower()


def zbase32(data: bytes) -> str:
    """z-base-32 (as WKD uses it): 5 bits a character, most significant first."""
    bits = len(data) * 8
    value = int.from_bytes(data, "big") << (-bits % 5)
    count = (bits + 4) // 5
    return "".join(ZBASE32[(value >> (5 * (count - 1 - i))) & 31] for i in range(count))


def wkd_hash(local: str) -> str:
    """The hashed local part: z-base-32 of SHA-1 of the local part, ASCII lowercased."""
    lowered = "".join(c.lower() if c.isascii() else c for c in local)
    return zbase32(hashlib.sha1(lowered.encode("utf-8"), usedforsecurity=False).digest())


def wkd_urls(email: str, base: str = "") -> builtins.list[str]:
    """The advanced then the direct method's URL of ``email``'s key."""
    local, domain = check_email(email)
    tail = f"hu/{wkd_hash(local)}?l={quote(local, safe='')}"
    advanced = base or f"https://openpgpkey.{domain}"
    direct = base or f"https://{domain}"
    return [
        f"{advanced}/.well-known/openpgpkey/{domain}/{tail}",
        f"{direct}/.well-known/openpgpkey/{tail}",
    ]


def notation_command(fingerprint: str, node_id: str) -> str:
    """The gpg command that adds the notation naming ``node_id`` to the key's self-signature
    (gpg asks for the key's passphrase); publish the key again afterwards."""
    value = f"{NOTATION}={NODE_URI}{node_id}"
    gpg_edit = f"gpg --batch --command-fd 0 --edit-key {fingerprint}"
    return f"printf 'notation\\n{value}\\nsave\\n' | {gpg_edit}"


def signature_of(proof: Mapping[str, object]) -> bytes:
    """The signature a claim's proof object carries (base64url, no padding)."""
    raw = proof.get("signature")
    if not isinstance(raw, str):
        raise gpg.SignatureInvalid("the claim carries no signature")
    try:
        return jws.b64url_decode(raw, "signature")
    except jws.JwsError:
        raise gpg.SignatureInvalid("the claim's signature is not base64url") from None


def encode_signature(signature: bytes) -> str:
    return jws.b64url(signature)


class OpenPgp:
    name = NAME

    def __init__(
        self,
        config: OpenPgpConfig | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config = config or OpenPgpConfig()
        self.keyserver = check_base_url(config.keyserver, "keyserver") if config.keyserver else ""
        self.wkd_url = check_base_url(config.wkd_url, "WKD URL") if config.wkd_url else ""
        self.http = Http("OpenPGP", config.limits, sleep=sleep, clock=clock)
        once = dataclasses.replace(config.limits, retries=0)  # a missing openpgpkey. host
        self.probe = Http("WKD", once, sleep=sleep, clock=clock)

    def close(self) -> None:
        self.http.close()
        self.probe.close()

    def keys(self, fingerprint: str, email: str | None = None) -> Iterator[bytes]:
        """The keys the sources hold for ``fingerprint`` (or ``email``'s, by WKD), each source
        asked only when the keys before it were not wanted; a source that fails or holds none
        is passed over, and when all do, the worst failure is raised (a reply too big or
        malformed before a key not found)."""
        failures: builtins.list[ProviderError] = []
        found = False
        for source in self._sources(fingerprint, email):
            try:
                key = source()
            except ProviderError as exc:
                failures.append(exc)
                continue
            if key:
                found = True
                yield key
        if not found:
            bad = [f for f in failures if not isinstance(f, ProofNotFound)]
            raise (bad or failures or [ProofNotFound(f"no key {fingerprint} found")])[0]

    def _sources(self, fingerprint: str, email: str | None) -> builtins.list[Callable[[], bytes]]:
        sources: builtins.list[Callable[[], bytes]] = []
        if email:
            sources.append(lambda: self._wkd(email))
        if self.keyserver:
            sources.append(lambda: self._keyserver(fingerprint))
        if self.config.keyring:
            sources.append(lambda: gpg.export(self.config.keyring, fingerprint))
        return sources

    def _wkd(self, email: str) -> bytes:
        advanced, direct = wkd_urls(email, self.wkd_url)
        try:
            return self._get(self.probe, advanced, "WKD key")
        except ReplyTooBig:
            raise
        except ProviderError:  # no openpgpkey. subdomain, or nothing there: the direct method
            return self._get(self.http, direct, "WKD key")

    def _keyserver(self, fingerprint: str) -> bytes:
        if self.config.keyserver_api == "vks":
            url = f"{self.keyserver}/vks/v1/by-fingerprint/{fingerprint}"
        else:
            url = f"{self.keyserver}/pks/lookup?op=get&options=mr&search=0x{fingerprint}"
        return self._get(self.http, url, "key on the keyserver")

    def _get(self, http: Http, url: str, what: str) -> bytes:
        return expect(http.request("GET", url), http.name, what, 200).body

    def verify_signed(self, identity: str, node_id: str, proof: Mapping[str, object]) -> gpg.Signer:
        """Check a claim's proof object: its signature of the statement for ``identity`` and
        ``node_id``, by the key the identity names, as the key sources give it."""
        fingerprint = fingerprint_of(identity)
        if proof.get("ref") != fingerprint:
            raise gpg.SignatureInvalid("the claim's proof names another key")
        email = proof.get("email")
        if email is not None and not isinstance(email, str):
            raise gpg.SignatureInvalid("the claim's email is not text")
        signature = signature_of(proof)
        keys = self.keys(fingerprint, email or None)
        return check_signed(keys, fingerprint, identity, node_id, signature)

    def publish(self, identity: str, make_text: Callable[[ProofRef], str]) -> Published:
        """Nothing is written: the text is to be signed with the key (the claim keeps the
        signature)."""
        fingerprint = fingerprint_of(identity)
        ref = ProofRef(NAME, fingerprint)
        instructions = (
            f"Sign this text with the OpenPGP key {fingerprint}: "
            f"`gpg --detach-sign --armor --local-user {fingerprint}`."
        )
        return Published(ref, make_text(ref), instructions)

    def fetch(self, ref: ProofRef) -> Proof:
        """The key ``ref`` names, as its first source gives it (armored, or the binary key in
        base64); the owner is the fingerprint."""
        if ref.provider != NAME or not _FINGERPRINT.fullmatch(ref.ref):
            raise ProofNotFound(f"{ref.provider}:{ref.ref[:80]!r} is not an OpenPGP key")
        key = next(self.keys(ref.ref))
        text = key.decode("ascii") if key.startswith(b"-----BEGIN") and key.isascii() else ""
        return Proof(ref, ref.ref, text or base64.b64encode(key).decode())

    def list(self, identity: str) -> builtins.list[ProofRef]:
        """No proofs are published apart from the claims: the nodes a key names are
        ``named_nodes``, and each is proven by the claim in its own chain."""
        fingerprint_of(identity)
        return []

    def named_nodes(self, identity: str) -> builtins.list[str]:
        """The NodeIds the key names in ``proof@ariadne.id=polykey:NODEID`` notations on its
        newest self-signatures, as its first source gives it (at most ``MAX_NAMED``)."""
        fingerprint = fingerprint_of(identity)
        key = next(self.keys(fingerprint))
        out: builtins.list[str] = []
        for name, value in gpg.notations(key, fingerprint):
            node = value[len(NODE_URI) :]
            named = name == NOTATION and value.startswith(NODE_URI)
            if named and _NODE_ID.fullmatch(node) and node not in out:
                out.append(node)
        return out[:MAX_NAMED]


def check_signed(
    keys: Iterable[bytes], fingerprint: str, identity: str, node_id: str, signature: bytes
) -> gpg.Signer:
    """The statement's signature checked against the first key that is ``fingerprint``'s."""
    from polykey.trust.proofs import render_statement

    statement = render_statement(identity, node_id, fingerprint).encode()
    problem: ProviderError = gpg.OtherKey(f"no key found is {fingerprint}")
    for key in keys:
        try:
            return gpg.verify(key, fingerprint, statement, signature)
        except gpg.OtherKey as exc:  # the next source may hold the right one
            problem = exc
    raise problem
