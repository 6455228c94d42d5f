"""Gestalts: who is who. A person is the nodes and identities joined by verified links.

Two kinds of link make the graph (docs/spec/gestalts.md):

- node to node: a live ``link-node`` claim, signed by both nodes, in the chain of either (a
  chain that holds a newer revocation of its side's claim ends the link, whichever chain the
  other claim sits in);
- node to identity: a live ``link-identity`` claim in the node's chain whose proof was fetched
  from the provider by its reference (never searched for), is owned there by that identity,
  and embeds exactly that claim. A verification is remembered (namespace
  ``trust/identity-proofs``) and is fresh for ``FRESH`` seconds; after that it must be
  verified again before it counts.

The chains read are this node's own and the verified copies of other nodes' (PeerChains,
trust/sigchain.py). A node caught signing two histories of its chain (a fork whose proof its
mark keeps) is no vertex: nothing it claims, and no link to it, joins it to anyone, so no grant
to a gestalt or an identity reaches it (a grant naming its NodeId still does: the owner chose
that node, not a person); gestalts list it as ``forked`` where it would have been reached.

Identities the user chose to trust are kept in ``trust/identities``; only
a trusted identity's gestalt is served vaults shared with that identity (trust/acl.py). Fetching
the chains of other nodes is the Node's (it holds the peers); this class reads what is held and
asks the providers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polykey.errors import InvalidInput, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.store.nodefile import NodeFile
from polykey.store.records import Namespace
from polykey.trust.sigchain import (
    BadChain,
    Entry,
    PeerChains,
    Sigchain,
    chain_state,
    verify_entry,
)

if TYPE_CHECKING:
    from polykey.trust.providers.base import ProofRef, Provider

IDENTITIES = Namespace("trust/identities")
"""identity id -> JSON {"trusted": bool, "at": unix s, "discovered": unix s | null,
"nodes": [NodeIds its proofs named]}"""
PROOFS = Namespace("trust/identity-proofs")
"""NodeId "|" identity id -> JSON {"jti", "digest", "provider", "ref", "verified": unix s}"""

FRESH = 3 * 24 * 3600  # a verified proof counts this long (Polykey: stale after 3 days)
REDISCOVER = 3600  # the agent rediscovers trusted identities about hourly
MAX_IDENTITY = 300
MAX_VERTICES = 10_000  # a gestalt larger than this is cut off (a hostile web of claims)

ProviderFor = Callable[[str], "Provider"]


class UnknownIdentity(InvalidInput):
    """Not an identity this node knows"""

    hint = "Find it first: `pk identities discover PROVIDER:NAME`."


class NotVerified(PolykeyError):
    """The identity claim could not be verified"""

    exit_code = 57
    hint = "The proof must stay where it was published; `pk identities get ID` shows why."


def parse_identity(text: str) -> tuple[str, str]:
    """``provider:user`` split, or InvalidInput."""
    provider, sep, user = text.partition(":")
    if not sep or not provider or not user or len(text) > MAX_IDENTITY:
        raise InvalidInput(
            f"{text[:80]!r} is not an identity",
            hint="Write it PROVIDER:NAME, as github:alice or dns:example.org.",
        )
    if not provider.isascii() or not provider.isalnum() or not provider.islower():
        raise InvalidInput(f"unknown identity provider {provider[:40]!r}")
    if any(c.isspace() or not c.isprintable() for c in user):
        raise InvalidInput("an identity name holds no spaces or control characters")
    return provider, user


def same_owner(provider: str, user: str, owner: str) -> bool:
    """Whether the provider's owner of a proof is the identity's user: GitHub logins and DNS
    names are case-insensitive (a final dot of a DNS name is ignored)."""
    if provider == "dns":
        return user.rstrip(".").lower() == owner.rstrip(".").lower()
    return user.lower() == owner.lower()


@dataclass(frozen=True)
class Gestalt:
    """One person as this node sees it now."""

    nodes: frozenset[str]
    identities: frozenset[str]
    why: dict[str, str] = field(default_factory=dict, compare=False)  # vertex -> how it joined
    forked: frozenset[str] = frozenset()  # nodes reached but left out: they forked their chain

    def as_json(self) -> dict[str, Any]:
        out = {
            "nodes": sorted(self.nodes),
            "identities": sorted(self.identities),
            "links": dict(sorted(self.why.items())),
        }
        if self.forked:
            out["forked"] = sorted(self.forked)
        return out


@dataclass(frozen=True)
class Verified:
    identity: str
    node_id: str
    jti: str
    ref: ProofRef
    at: int


class Gestalts:
    """Made by the Node, which owns it."""

    def __init__(
        self,
        store: NodeFile,
        own: Sigchain,
        chains: PeerChains,
        provider_for: ProviderFor,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.own = own
        self.chains = chains
        self.provider_for = provider_for
        self.now = now

    def __repr__(self) -> str:
        return "Gestalts()"

    # --- chains ---------------------------------------------------------------------------------

    def entries(self, node_id: NodeId) -> list[Entry]:
        """The chain held for ``node_id`` (this node's own included); empty when none."""
        if node_id == self.own.key.node_id:
            return self.own.entries()
        return self.chains.entries(node_id)

    # --- identities -----------------------------------------------------------------------------

    def own_identities(self) -> list[Entry]:
        """This node's live identity claims, in chain order."""
        return list(_live_identity_claims(self.own.entries()).values())

    def claimed_identities(self, node_id: NodeId) -> list[str]:
        """The identities ``node_id``'s chain held claims, live."""
        return list(_live_identity_claims(self.entries(node_id)))

    def claims_of(self, node_id: NodeId, identity: str) -> Entry | None:
        """``node_id``'s live claim of ``identity`` in the chain held, if any."""
        return _live_identity_claims(self.entries(node_id)).get(identity)

    def verify(self, node_id: NodeId, identity: str) -> Verified:
        """Check ``node_id``'s live claim of ``identity`` against the provider now: fetched by
        the reference the claim holds, owned by that identity, embedding that very claim.
        Remembered on success; NotVerified (why) on failure."""
        provider_name, user = parse_identity(identity)
        claim = _live_identity_claims(self.entries(node_id)).get(identity)
        if claim is None:
            raise NotVerified(f"{encode_node_id(node_id)} holds no live claim of {identity}")
        proof = claim.payload.get("proof")
        if not isinstance(proof, dict) or not isinstance(proof.get("ref"), str):
            raise NotVerified(f"the claim of {identity} names no proof")
        from polykey.trust.providers.base import ProofRef, ProviderError, SignedProvider

        ref = ProofRef(provider_name, proof["ref"])
        provider = self.provider_for(provider_name)
        if isinstance(provider, SignedProvider):  # the claim carries its proof: a signature
            try:
                provider.verify_signed(identity, claim.iss, proof)
            except ProviderError as exc:
                raise NotVerified(f"the proof of {identity}: {exc.message}") from None
        else:
            self._check_published(provider, user, identity, claim, ref)
        at = int(self.now())
        record: dict[str, Any] = {
            "jti": claim.jti,
            "digest": claim.digest,
            "provider": provider_name,
        }
        record |= {"ref": ref.ref, "verified": at}
        with self.store.write() as tx:
            tx.put(PROOFS, _proof_key(node_id, identity), json.dumps(record).encode())
        return Verified(identity, encode_node_id(node_id), claim.jti, ref, at)

    def _check_published(
        self, provider: Provider, user: str, identity: str, claim: Entry, ref: ProofRef
    ) -> None:
        """A proof published at ``ref``: owned there by the identity, holding that claim."""
        from polykey.trust.providers.base import ProviderError

        provider_name = ref.provider
        try:
            found = provider.fetch(ref)
        except ProviderError as exc:
            raise NotVerified(
                f"the proof of {identity} could not be fetched: {exc.message}"
            ) from None
        if not same_owner(provider_name, user, found.owner):
            raise NotVerified(f"the proof of {identity} is owned by someone else")
        try:
            held = _claims_in(provider_name, found.text)
        except ProviderError as exc:
            raise NotVerified(f"the proof of {identity}: {exc.message}") from None
        doc = next((d for d in held if _is_claim(d, claim)), None)
        if doc is None:
            raise NotVerified(f"the proof of {identity} does not hold the node's claim")
        if provider_name != "dns":  # a document: its words must say what its claim says
            from polykey.trust.proofs import check

            try:
                check(found.text, identity, claim.iss, doc)
            except ProviderError as exc:
                raise NotVerified(f"the proof of {identity}: {exc.message}") from None

    def verified(self, node_id: NodeId, identity: str) -> bool:
        """Whether a fresh verification of that very claim is remembered."""
        claim = _live_identity_claims(self.entries(node_id)).get(identity)
        raw = self.store.get(PROOFS, _proof_key(node_id, identity))
        if claim is None or raw is None:
            return False
        try:
            doc = json.loads(raw)
            return bool(doc["digest"] == claim.digest and self.now() - int(doc["verified"]) < FRESH)
        except (ValueError, KeyError, TypeError):
            return False

    def claimants(self, identity: str) -> list[tuple[NodeId, Entry | None]]:
        """Nodes whose proofs the provider lists for ``identity``, each with the signed claim
        found in its proof (verified as a claim of that node naming that identity); for an
        OpenPGP key, the nodes its notations name (no claim: only their chains hold it).
        Their chains are fetched and their claims verified by the caller; the identity is
        remembered as discovered."""
        from polykey.trust.providers.base import ProviderError
        from polykey.trust.providers.openpgp import OpenPgp

        provider_name, user = parse_identity(identity)
        provider = self.provider_for(provider_name)
        found: dict[bytes, tuple[NodeId, Entry | None]] = {}
        if isinstance(provider, OpenPgp):
            try:
                named = provider.named_nodes(identity)
            except ProviderError:
                named = []
            for text in named:
                node = decode_node_id(text)
                found.setdefault(bytes(node), (node, None))
        for ref in provider.list(identity):
            try:
                proof = provider.fetch(ref)
            except ProviderError:
                continue
            if not same_owner(provider_name, user, proof.owner):
                continue
            try:
                docs = _claims_in(provider_name, proof.text)
            except ProviderError:
                continue
            for doc in docs:
                entry = _claim_of(doc, identity)
                if entry is not None:
                    node = decode_node_id(entry.iss)
                    found.setdefault(bytes(node), (node, entry))
        record = self._identity(identity) or {"trusted": False, "at": int(self.now())}
        record["discovered"] = int(self.now())
        record["nodes"] = sorted(encode_node_id(n) for n, _ in found.values())
        with self.store.write() as tx:
            tx.put(IDENTITIES, identity.encode(), json.dumps(record, sort_keys=True).encode())
        return list(found.values())

    def trust(self, identity: str, trusted: bool = True) -> None:
        parse_identity(identity)
        record = self._identity(identity) or {"discovered": None, "nodes": []}
        record |= {"trusted": trusted, "at": int(self.now())}
        with self.store.write() as tx:
            tx.put(IDENTITIES, identity.encode(), json.dumps(record, sort_keys=True).encode())

    def trusted(self, identity: str) -> bool:
        record = self._identity(identity)
        return bool(record and record.get("trusted"))

    def identities(self) -> list[dict[str, Any]]:
        out = []
        for key, raw in self.store.items(IDENTITIES):
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            out.append({"id": key.decode(errors="replace"), **doc})
        return out

    def _identity(self, identity: str) -> dict[str, Any] | None:
        raw = self.store.get(IDENTITIES, identity.encode())
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    # --- the graph ------------------------------------------------------------------------------

    def held_nodes(self) -> list[NodeId]:
        return [self.own.key.node_id, *self.chains.nodes()]

    def gestalt(self, start: str) -> Gestalt:
        """The gestalt of a vertex (a NodeId or an identity id), from what is held and fresh:
        nodes joined by live node links, identities by fresh verified proofs. No network."""
        links = self._node_links()
        proofs = self._fresh_proofs()
        from polykey.trust.rotation import successors

        moved = successors(self.store)  # a renewed key: its newest NodeId stands in its place
        if moved:
            start = moved.get(start, start)
            proofs = {(moved.get(n, n), i) for n, i in proofs}
            renamed: dict[str, set[str]] = {}
            for a, others in links.items():
                renamed.setdefault(moved.get(a, a), set()).update(moved.get(b, b) for b in others)
            links = renamed
        by_identity: dict[str, set[str]] = {}
        for node, identity in proofs:
            by_identity.setdefault(identity, set()).add(node)
        forks = set(self.chains.forks())
        nodes: set[str] = set()
        identities: set[str] = set()
        forked: set[str] = set()
        why: dict[str, str] = {}
        todo = [start]
        while todo and len(nodes) + len(identities) < MAX_VERTICES:
            vertex = todo.pop()
            if ":" in vertex:
                if vertex in identities:
                    continue
                identities.add(vertex)
                for node in sorted(by_identity.get(vertex, ())):
                    why.setdefault(node, f"proves {vertex}")
                    todo.append(node)
                continue
            if vertex in nodes or vertex in forked:
                continue
            if vertex in forks:
                forked.add(vertex)
                continue
            nodes.add(vertex)
            for other in sorted(links.get(vertex, ())):
                why.setdefault(other, f"linked with {vertex}")
                todo.append(other)
            for node, identity in proofs:
                if node == vertex:
                    why.setdefault(identity, f"proved by {vertex}")
                    todo.append(identity)
        why = {v: w for v, w in why.items() if v not in forked}
        return Gestalt(frozenset(nodes), frozenset(identities), why, frozenset(forked))

    def contains(self, identity: str, node_id: NodeId) -> bool:
        return encode_node_id(node_id) in self.gestalt(identity).nodes

    def admits(self, identity: str, node_id: NodeId) -> bool:
        """Whether ``node_id`` belongs to the gestalt of the trusted ``identity``, verified
        on the spot where what is held is not enough: the identity's known claimants whose
        proofs went stale, then the node's own live claims of the gestalt's identities (its
        chain is held: it presented it). A provider that fails leaves the answer no, and so
        does a node caught forking its chain."""
        if not self.trusted(identity) or self.chains.fork(node_id) is not None:
            return False
        if self.contains(identity, node_id):
            return True
        record = self._identity(identity) or {}
        for text in record.get("nodes", []):
            try:
                claimant = decode_node_id(str(text))
            except PolykeyError:
                continue
            if not self.verified(claimant, identity):
                self._try_verify(claimant, identity)
        if self.contains(identity, node_id):
            return True
        wanted = self.gestalt(identity).identities | {identity}
        for claimed in sorted(set(_live_identity_claims(self.entries(node_id))) & wanted):
            if not self.verified(node_id, claimed) and self._try_verify(node_id, claimed):
                return self.contains(identity, node_id)
        return False

    def _try_verify(self, node_id: NodeId, identity: str) -> bool:
        try:
            self.verify(node_id, identity)
        except (NotVerified, InvalidInput):
            return False
        return True

    def _node_links(self) -> dict[str, set[str]]:
        """Live node-to-node links over every chain held: a pair is linked when some chain
        holds a live link-node claim between them, and no chain holds a revocation of a
        link-node claim between them made after it (or in the same second)."""
        live: dict[frozenset[str], int] = {}
        ended: dict[frozenset[str], int] = {}
        for node in self.held_nodes():
            claims, revoked = _link_claims(self.entries(node))
            for pair, iat in claims.items():
                live[pair] = max(live.get(pair, -1), iat)
            for pair, iat in revoked.items():
                ended[pair] = max(ended.get(pair, -1), iat)
        out: dict[str, set[str]] = {}
        for pair, iat in live.items():
            if ended.get(pair, -1) >= iat:  # a tie (whole seconds) goes to the revocation
                continue
            a, b = sorted(pair)
            out.setdefault(a, set()).add(b)
            out.setdefault(b, set()).add(a)
        return out

    def _fresh_proofs(self) -> set[tuple[str, str]]:
        out = set()
        for key, _ in self.store.items(PROOFS):
            node_text, _, identity = key.decode(errors="replace").partition("|")
            try:
                node = decode_node_id(node_text)
            except PolykeyError:
                continue
            if self.verified(node, identity):
                out.add((node_text, identity))
        return out


def _proof_key(node_id: NodeId, identity: str) -> bytes:
    return f"{encode_node_id(node_id)}|{identity}".encode()


def _live_identity_claims(entries: list[Entry]) -> dict[str, Entry]:
    """identity id -> its live link-identity claim (the newest claim about it decides)."""
    by_jti = {e.jti: e for e in entries}
    state = chain_state(entries)
    return {i: by_jti[c.jti] for i, c in state.identities.items() if c.jti in by_jti}


def _link_claims(
    entries: list[Entry],
) -> tuple[dict[frozenset[str], int], dict[frozenset[str], int]]:
    """(pair -> iat of its live link-node claim, pair -> when its last claim was revoked)."""
    state = chain_state(entries)
    revoked_at = {e.sub: e.iat for e in entries if e.typ == "revoke"}
    live: dict[frozenset[str], int] = {}
    ended: dict[frozenset[str], int] = {}
    for e in entries:
        if e.typ != "link-node" or e.sub == e.iss:
            continue
        pair = frozenset((e.iss, e.sub))
        claimed = state.nodes.get(e.sub)
        if claimed is not None and claimed.jti == e.jti:
            live[pair] = e.iat
        elif e.jti in revoked_at:
            ended[pair] = max(ended.get(pair, -1), revoked_at[e.jti])
    return live, ended


def _claims_in(provider: str, text: str) -> list[str]:
    """The claims a proof text holds: DNS records a line each, documents in blocks."""
    from polykey.trust.proofs import extract, extract_lines

    return extract_lines(text) if provider == "dns" else extract(text)


def _is_claim(doc: str, claim: Entry) -> bool:
    """Whether the text ``doc`` found in a proof is exactly ``claim``."""
    try:
        return verify_entry(json.loads(doc)).digest == claim.digest
    except (ValueError, BadChain):
        return False


def _claim_of(doc: str, identity: str) -> Entry | None:
    """The signed link-identity claim of ``identity`` in ``doc``, or None."""
    try:
        entry = verify_entry(json.loads(doc))
    except (ValueError, BadChain):
        return None
    return entry if entry.typ == "link-identity" and entry.sub == identity else None
