"""Who is who, with the network: claiming identities, discovering people, fetching chains.

The layer above the Node for trust work that reaches out: to identity providers (through
trust/providers/) and to other nodes (through the Node's peers). What is decided from what is
held (gestalts, the ACL's grants to identities) is trust/'s; this module fetches and records.

- ``claim``: add a ``link-identity`` claim to this node's sigchain and publish its proof where
  the provider keeps it (a gist, whose id the claim names; for DNS, the TXT text to publish),
  then verify it as any other node would.
- ``discover``: the provider's list of an identity's proofs, each fetched by its reference;
  every node a proof names has its sigchain fetched (and, through its node links, its other
  nodes'), and each claim verified. Nothing is trusted until the user says so.
- ``fetch_chain``: the new entries of another node's sigchain, checked against the copy held
  (a shorter or forked chain is refused and the copy kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polykey.errors import PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.trust.gestalts import NotVerified, parse_identity

if TYPE_CHECKING:
    from polykey.node import Node
    from polykey.trust.providers.base import ProofRef

CHAIN_PAGE = 1000  # entries asked for in one call
PRESENT_CHARS = 48 * 1024  # a presented page fits a request from a node not yet known (64 KiB)
MAX_DISCOVER = 64  # nodes whose chains one discovery fetches
MAX_IDENTITIES = 16  # identity claims of one node verified by one discovery


@dataclass(frozen=True)
class Claimed:
    identity: str
    jti: str
    ref: str
    verified: bool
    instructions: str | None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"identity": self.identity, "jti": self.jti, "ref": self.ref}
        out |= {"verified": self.verified, "instructions": self.instructions}
        if self.reason:
            out["reason"] = self.reason
        return out


def claim(node: Node, identity: str) -> Claimed:
    """Claim ``identity`` for this node. Run again, it publishes the same claim again (a DNS
    record not yet seen, a gist deleted) rather than adding another."""
    from polykey.trust.proofs import render_for

    provider_name, _ = parse_identity(identity)
    provider = node.gestalts.provider_for(provider_name)
    held = {e.sub: e for e in node.sigchain.entries() if e.typ == "link-identity"}
    revoked = {e.sub for e in node.sigchain.entries() if e.typ == "revoke"}
    existing = held.get(identity)
    if existing is not None and existing.jti in revoked:
        existing = None
    if existing is not None:  # claimed before: a proof that still verifies is left alone
        try:
            node.gestalts.verify(node.node_id, identity)
        except NotVerified:
            pass
        else:
            return Claimed(identity, existing.jti, _ref_of(existing) or "", True, None)
    me = encode_node_id(node.node_id)
    made: list[str] = []

    def make_text(ref: ProofRef) -> str:
        if existing is not None and _ref_of(existing) == ref.ref:
            made.append(existing.jti)
            return render_for(provider_name, identity, me, existing.raw.decode())
        proof = {"provider": provider_name, "ref": ref.ref}
        entry = node.sigchain.append("link-identity", {"sub": identity, "proof": proof})
        made.append(entry.jti)
        return render_for(provider_name, identity, me, entry.raw.decode())

    published = provider.publish(identity, make_text)
    try:
        node.gestalts.verify(node.node_id, identity)
    except NotVerified as exc:
        return Claimed(
            identity, made[-1], published.ref.ref, False, published.instructions, exc.detail
        )
    return Claimed(identity, made[-1], published.ref.ref, True, published.instructions)


def _ref_of(entry: Any) -> str | None:
    proof = entry.payload.get("proof")
    return proof.get("ref") if isinstance(proof, dict) else None


def fetch_chain(node: Node, node_id: NodeId) -> int:
    """Bring the held copy of ``node_id``'s sigchain up to date: the length held after."""
    if node_id == node.node_id:
        return len(node.sigchain.entries())
    while True:
        head = node.chains.head(node_id)
        since = head.seq + 1 if head is not None else 1
        reply = node.peers.call(node_id, "sigchain.get", {"since": since, "limit": CHAIN_PAGE})
        docs = reply.get("entries")
        if not isinstance(docs, list):
            raise NotVerified("the node's answer holds no chain entries")
        if docs:
            node.chains.accept(node_id, docs, from_seq=since)
        length = reply.get("length")
        if not docs or not isinstance(length, int) or since + len(docs) > length:
            break
    head = node.chains.head(node_id)
    return head.seq if head is not None else 0


def discover(node: Node, identity: str) -> dict[str, Any]:
    """Find the nodes of ``identity`` and the nodes linked to them: their chains fetched, the
    identity claims verified. Returns the gestalt as seen now, and what could not be reached."""
    claimants = node.gestalts.claimants(identity)
    problems: dict[str, str] = {}
    todo = [n for n, _ in claimants]
    seen: set[bytes] = set()
    while todo and len(seen) < MAX_DISCOVER:
        nid = todo.pop(0)
        if bytes(nid) in seen:
            continue
        seen.add(bytes(nid))
        try:
            fetch_chain(node, nid)
        except PolykeyError as exc:
            problems[encode_node_id(nid)] = exc.message
            continue
        for other in _linked(node, nid):
            todo.append(other)
    for nid, _ in claimants:
        try:
            node.gestalts.verify(nid, identity)
        except PolykeyError as exc:
            problems.setdefault(encode_node_id(nid), exc.message)
    for text in node.gestalts.gestalt(identity).nodes:  # the other identities they claim
        member = decode_node_id(text)
        for claimed in sorted(node.gestalts.claimed_identities(member))[:MAX_IDENTITIES]:
            if claimed != identity and not node.gestalts.verified(member, claimed):
                try:
                    node.gestalts.verify(member, claimed)
                except PolykeyError as exc:
                    problems.setdefault(f"{text} {claimed}", exc.message)
    gestalt = node.gestalts.gestalt(identity)
    return {"identity": identity, **gestalt.as_json(), "unreachable": problems}


def _linked(node: Node, node_id: NodeId) -> list[NodeId]:
    out = []
    for e in node.gestalts.entries(node_id):
        if e.typ == "link-node":
            try:
                out.append(decode_node_id(e.sub))
            except PolykeyError:
                continue
    return out


def present(node: Node, node_id: NodeId) -> None:
    """Hand ``node_id`` the entries of this node's sigchain it does not hold yet, so that it
    can find this node in a gestalt a vault is shared with (docs/spec/gestalts.md). Best
    effort and once per head and peer in a process: a peer that cannot take it (an older
    version, unreachable) is left to answer the request that follows as it will."""
    from polykey.trust.rotation import untold

    if encode_node_id(node_id) in untold(node.store):  # a renewal it missed: told first
        node.tell_renewal(node_id)
    head = node.sigchain.head()
    if head is None or node.presented.get(bytes(node_id), 0) >= head.seq:
        return
    try:
        reply = node.peers.call(node_id, "sigchain.present", {"entries": [], "since": 1})
        held = reply.get("held")
        if reply.get("kept") is False:  # it shares nothing with identities: nothing to hand
            return
        if not isinstance(held, int) or held < 0:
            return
        while held < head.seq:
            docs = node.sigchain.docs(held + 1, CHAIN_PAGE, max_chars=PRESENT_CHARS)
            reply = node.peers.call(
                node_id, "sigchain.present", {"entries": docs, "since": held + 1}
            )
            now = reply.get("held")
            if not isinstance(now, int) or now <= held:
                return
            held = now
    except PolykeyError:
        return
    node.presented[bytes(node_id)] = head.seq


def rediscover(node: Node, now: float, every: float = 3600) -> list[str]:
    """Discover again each trusted identity last discovered ``every`` seconds or more before
    ``now`` (the agent runs this on a schedule): their proofs fetched, chains brought up to date,
    so a revoked link or proof takes effect. The identities refreshed."""
    done = []
    for record in node.gestalts.identities():
        if not record.get("trusted"):
            continue
        last = record.get("discovered")
        if isinstance(last, int | float) and now - last < every:
            continue
        try:
            discover(node, str(record["id"]))
        except PolykeyError:
            continue
        done.append(str(record["id"]))
    return done
