"""Who is who: `pk sigchain`, `pk identities`, `pk gestalts` (the domain is trust/ and
people.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS
from polykey.ids import decode_node_id, encode_node_id
from polykey.rpc import NoParams

if TYPE_CHECKING:
    from polykey.node import Node
    from polykey.trust.sigchain import Entry


PAGE = 1000


@dataclass(frozen=True)
class ChainOf:
    node_id: str | None = None  # None: this node's own


def _entry(e: Entry, revoked: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": e.seq, "typ": e.typ, "sub": e.sub, "iat": e.iat, "jti": e.jti}
    out["signers"] = list(e.signers)
    out["revoked"] = e.jti in revoked
    proof = e.payload.get("proof")
    if isinstance(proof, dict):
        out["proof"] = {k: str(v) for k, v in proof.items()}
    return out


@METHODS.method("sigchain.show")
def sigchain_show(node: Node, p: ChainOf) -> dict[str, Any]:
    """A chain as held: this node's own, or the verified copy of another node's (fetched
    first when that node answers)."""
    who = node.node_id if p.node_id is None else decode_node_id(p.node_id)
    fetched, reason = _refresh(node, who)
    entries = node.gestalts.entries(who)
    revoked = {e.sub for e in entries if e.typ == "revoke"}
    out = {"node_id": encode_node_id(who), "length": len(entries), "fetched": fetched}
    out["entries"] = [_entry(e, revoked) for e in entries]
    if reason:
        out["reason"] = reason
    return out


@METHODS.method("sigchain.verify")
def sigchain_verify(node: Node, p: ChainOf) -> dict[str, Any]:
    """Verify a whole chain again, every signature and link, from its first entry."""
    from polykey.trust.sigchain import Head, verify_chain

    who = node.node_id if p.node_id is None else decode_node_id(p.node_id)
    fetched, reason = _refresh(node, who)
    entries: list[Entry] = []
    while True:  # a page at a time, each checked against all before it
        since = len(entries) + 1
        if who == node.node_id:
            page = node.sigchain.docs(since, PAGE)
        else:
            page = node.chains.docs(who, since, PAGE)
        if not page:
            break
        after = Head.of(entries[-1]) if entries else None
        entries += verify_chain(who, page, after=after, earlier=entries)
    head = entries[-1] if entries else None
    out: dict[str, Any] = {"node_id": encode_node_id(who), "ok": True, "length": len(entries)}
    out["head"] = head.digest if head is not None else None
    out["fetched"] = fetched
    if reason:
        out["reason"] = reason
    return out


def _refresh(node: Node, who: Any) -> tuple[bool, str]:
    """Fetch ``who``'s new entries when it is another node and answers: (fetched, why not)."""
    if who == node.node_id:
        return False, ""
    from polykey.errors import PolykeyError
    from polykey.people import fetch_chain

    try:
        fetch_chain(node, who)
    except PolykeyError as exc:
        if exc.exit_code == 53:  # a shorter or forked chain: never hidden behind the copy
            raise
        return False, exc.message
    return True, ""


@dataclass(frozen=True)
class Identity:
    identity: str


@dataclass(frozen=True)
class ProviderSettings:
    provider: str
    settings: dict[str, str] = field(default_factory=dict)


@METHODS.method("identities.provider")
def identities_provider(node: Node, p: ProviderSettings) -> dict[str, Any]:
    """Set where a provider is reached (GitHub Enterprise, a DNS server, your own keyserver);
    with no settings, show them."""
    if p.settings:
        node.set_provider(p.provider, p.settings)
    return {"provider": p.provider, "settings": node.provider_settings(p.provider)}


@dataclass(frozen=True)
class Provider:
    provider: str


@METHODS.method("identities.authenticate")
def identities_authenticate(node: Node, p: Provider) -> dict[str, Any]:
    """Start the provider's device flow: the code to enter and where."""
    return node.start_authentication(p.provider)


@METHODS.method("identities.authenticated")
def identities_authenticated(node: Node, p: Provider) -> dict[str, Any]:
    """Wait for the user to enter the code; keep the token sealed in the node."""
    return node.finish_authentication(p.provider)


@METHODS.method("identities.claim")
def identities_claim(node: Node, p: Identity) -> dict[str, Any]:
    from polykey.people import claim

    return claim(node, p.identity).as_json()


@METHODS.method("identities.discover")
def identities_discover(node: Node, p: Identity) -> dict[str, Any]:
    from polykey.people import discover

    return discover(node, p.identity)


@METHODS.method("identities.list")
def identities_list(node: Node, p: NoParams) -> dict[str, Any]:
    own = [
        {"id": e.sub, "jti": e.jti, "verified": node.gestalts.verified(node.node_id, e.sub)}
        for e in node.gestalts.own_identities()
    ]
    return {"mine": own, "known": node.gestalts.identities()}


@METHODS.method("identities.get")
def identities_get(node: Node, p: Identity) -> dict[str, Any]:
    from polykey.trust.gestalts import UnknownIdentity, parse_identity

    parse_identity(p.identity)
    known = {i["id"]: i for i in node.gestalts.identities()}
    if p.identity not in known and not node.gestalts.claims_of(node.node_id, p.identity):
        raise UnknownIdentity(p.identity[:80])
    record = known.get(p.identity, {"id": p.identity, "trusted": False, "nodes": []})
    return {**record, "gestalt": node.gestalts.gestalt(p.identity).as_json()}


@METHODS.method("identities.trust")
def identities_trust(node: Node, p: Identity) -> dict[str, Any]:
    node.gestalts.trust(p.identity, True)
    return {"identity": p.identity, "trusted": True}


@METHODS.method("identities.untrust")
def identities_untrust(node: Node, p: Identity) -> dict[str, Any]:
    node.gestalts.trust(p.identity, False)
    return {"identity": p.identity, "trusted": False}


@METHODS.method("gestalts.list")
def gestalts_list(node: Node, p: NoParams) -> dict[str, Any]:
    """This node's own gestalt, then each known identity's (one person seen once)."""
    seen: set[frozenset[str]] = set()
    out = []
    starts = [encode_node_id(node.node_id), *(i["id"] for i in node.gestalts.identities())]
    for start in starts:
        g = node.gestalts.gestalt(start)
        key = g.nodes | g.identities
        if key in seen:
            continue
        seen.add(key)
        out.append(g.as_json())
    return {"gestalts": out}


@dataclass(frozen=True)
class Vertex:
    vertex: str  # a NodeId or an identity


@METHODS.method("gestalts.get")
def gestalts_get(node: Node, p: Vertex) -> dict[str, Any]:
    from polykey.trust.gestalts import parse_identity

    if ":" in p.vertex:
        parse_identity(p.vertex)
        return node.gestalts.gestalt(p.vertex).as_json()
    return node.gestalts.gestalt(encode_node_id(decode_node_id(p.vertex))).as_json()
