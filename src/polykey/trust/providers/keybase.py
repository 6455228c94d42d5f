"""Keybase: its lookup API gives a user's OpenPGP key and the proofs Keybase checked
(docs/spec/identities.md, "Keybase").

Keybase does not host proofs for other services, so a ``keybase:alice`` claim is carried the
other way round: the Polykey claim is signed by alice's OpenPGP key, the key Keybase publishes
for her: the claim carries the signature of the statement (proofs.render_statement), checked
with real GnuPG against the primary key Keybase gives (:meth:`Keybase.verify_signed`, through
openpgp.check_signed). The proofs Keybase lists (her GitHub account, her domains) are hints for
discovery, each to be verified at its own provider.
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from polykey.trust.providers import gpg
from polykey.trust.providers.base import (
    Proof,
    ProofNotFound,
    ProofRef,
    ProviderBadReply,
    Published,
    ReplyTooBig,
    name_of,
)
from polykey.trust.providers.http import Http, Limits, check_base_url, expect, integer, obj, text

NAME = "keybase"
MAX_KEY = 64 * 1024
MAX_PROOFS = 256
_USERNAME = re.compile(r"[a-z0-9_]{2,16}")
_FINGERPRINT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class KeybaseConfig:
    base_url: str = "https://keybase.io"
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class KeybaseProof:
    """A proof Keybase lists: ``proof_type`` (github, dns, generic_web_site, …), ``nametag``
    (the account or domain), ``state`` (1: Keybase found it valid when it last looked)."""

    proof_type: str
    nametag: str
    state: int
    proof_url: str


@dataclass(frozen=True)
class KeybaseUser:
    username: str
    fingerprint: str  # of the primary OpenPGP key, lowercase hex
    bundle: str  # the primary key, ASCII-armored
    proofs: tuple[KeybaseProof, ...]


class Keybase:
    name = NAME

    def __init__(
        self,
        config: KeybaseConfig | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config = config or KeybaseConfig()
        self.base_url = check_base_url(config.base_url, "Keybase URL")
        self.http = Http("Keybase", config.limits, sleep=sleep, clock=clock)

    def close(self) -> None:
        self.http.close()

    def lookup(self, username: str) -> KeybaseUser:
        """GET /_/api/1.0/user/lookup.json for one user, every field used checked."""
        if not _USERNAME.fullmatch(username):
            raise ProofNotFound(f"{username[:40]!r} is not a Keybase username")
        query = urlencode({"usernames": username, "fields": "public_keys,proofs_summary"})
        url = f"{self.base_url}/_/api/1.0/user/lookup.json?{query}"
        body = obj(expect(self.http.request("GET", url), "Keybase", "user", 200).json(), "reply")
        status = obj(body.get("status"), "reply.status")
        if integer(status, "code", "reply.status") != 0:
            if status.get("name") == "NOT_FOUND":
                raise ProofNotFound(f"no Keybase user {username}")
            raise ProviderBadReply(f"Keybase: status {text(status, 'name', 'status', limit=64)}")
        them = body.get("them")
        if not isinstance(them, list) or len(them) != 1:
            raise ProviderBadReply("Keybase: reply.them is not a list of one user")
        if them[0] is None:
            raise ProofNotFound(f"no Keybase user {username}")
        user = obj(them[0], "reply.them[0]")
        basics = obj(user.get("basics"), "them[0].basics")
        if text(basics, "username", "basics", limit=16) != username:
            raise ProviderBadReply(f"Keybase: asked for {username}, got another user")
        keys = obj(user.get("public_keys"), "them[0].public_keys")
        if keys.get("primary") is None:
            raise ProofNotFound(f"Keybase user {username} has no public key")
        primary = obj(keys.get("primary"), "public_keys.primary")
        fingerprint = text(primary, "key_fingerprint", "primary", limit=64).lower()
        if not _FINGERPRINT.fullmatch(fingerprint):
            raise ProviderBadReply("Keybase: the key fingerprint is not an OpenPGP fingerprint")
        bundle = primary.get("bundle")
        if not isinstance(bundle, str):
            raise ProviderBadReply("Keybase: primary.bundle is not text")
        if len(bundle) > MAX_KEY:
            raise ReplyTooBig(f"Keybase: a key of {len(bundle)} characters, over {MAX_KEY}")
        summary = obj(user.get("proofs_summary"), "them[0].proofs_summary")
        listed = summary.get("all")
        if not isinstance(listed, builtins.list) or len(listed) > MAX_PROOFS:
            raise ProviderBadReply(f"Keybase: proofs_summary.all is not a list of <={MAX_PROOFS}")
        proofs = tuple(_proof(obj(p, f"proofs_summary.all[{n}]")) for n, p in enumerate(listed))
        return KeybaseUser(username, fingerprint, bundle, proofs)

    def publish(self, identity: str, make_text: Callable[[ProofRef], str]) -> Published:
        """Nothing is written: the claim is to be signed with the user's Keybase key."""
        user = self.lookup(name_of(identity, NAME))
        ref = ProofRef(NAME, user.username)
        final = make_text(ref)
        instructions = (
            f"Sign this text with the Keybase key of {user.username} "
            f"(fingerprint {user.fingerprint}), e.g. `keybase pgp sign --detached` or "
            f"`gpg --detach-sign --armor --local-user {user.fingerprint}`."
        )
        return Published(ref, final, instructions)

    def verify_signed(self, identity: str, node_id: str, proof: Mapping[str, object]) -> gpg.Signer:
        """Check a claim's proof object: its signature of the statement for ``identity`` and
        ``node_id``, by the primary key Keybase gives for the user now (a key Keybase no longer
        names proves nothing)."""
        from polykey.trust.providers.openpgp import check_signed, signature_of

        username = name_of(identity, NAME)
        if proof.get("ref") != username:
            raise gpg.SignatureInvalid("the claim's proof names another Keybase user")
        signature = signature_of(proof)
        user = self.lookup(username)
        fingerprint = user.fingerprint.upper()
        if proof.get("fingerprint") not in (None, fingerprint):
            raise gpg.KeyInvalid(f"Keybase names another key for {username} now")
        return check_signed([user.bundle.encode()], fingerprint, identity, node_id, signature)

    def fetch(self, ref: ProofRef) -> Proof:
        """The user's primary OpenPGP key (armored) as the text: what must have signed the
        claim. The owner is the username Keybase reports."""
        if ref.provider != NAME:
            raise ProofNotFound(f"{ref.provider}:{ref.ref[:80]!r} is not a Keybase user")
        user = self.lookup(ref.ref)
        return Proof(ref, user.username, user.bundle)

    def list(self, identity: str) -> builtins.list[ProofRef]:
        try:
            user = self.lookup(name_of(identity, NAME))
        except ProofNotFound:
            return []
        return [ProofRef(NAME, user.username)]


def _proof(p: dict[str, object]) -> KeybaseProof:
    return KeybaseProof(
        text(p, "proof_type", "proof", limit=64),
        text(p, "nametag", "proof", limit=256),
        integer(p, "state", "proof"),
        text(p, "proof_url", "proof", limit=2048),
    )
