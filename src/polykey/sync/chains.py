"""The peer methods of the sigchain (docs/spec/sigchain.md, "Over the peer port").

- ``sigchain.get``: any peer may read this node's chain, a page at a time (it is public: the
  claims in it are published proofs and links).
- ``sigchain.present``: a peer hands its own chain (the entries after what this node holds of
  it), so that a node this one never met can show it belongs to a gestalt a vault is shared
  with; kept as a verified copy, a shorter or forked chain refused (a fork its signatures
  prove is kept in the chain's mark: from then on the node's pages are refused and gestalts
  leave it out; docs/spec/sigchain.md, "Forks"). Only a node that shares some vault with an
  identity keeps them (otherwise a stranger could fill its file).

Registered in the one peer registry of sync/server.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from polykey.errors import InvalidInput
from polykey.ids import NodeId
from polykey.sync.service import PEER_METHODS, PeerCall, PeerService

MAX_PAGE = 1000  # entries in one page either way
GET_CHARS = 4 * 1024 * 1024  # stored characters in one page served


@dataclass(frozen=True)
class ChainPage:
    since: int = 1
    limit: int = MAX_PAGE


@PEER_METHODS.method("sigchain.get")
def sigchain_get(c: PeerCall, p: ChainPage) -> dict[str, Any]:
    gestalts = c.service.acl.gestalts
    if gestalts is None:
        raise InvalidInput("this node keeps no sigchain")
    if p.since < 1 or p.limit < 1:
        raise InvalidInput("since and limit must be 1 or more")
    chain = gestalts.own
    head = chain.head()
    return {
        "entries": chain.docs(p.since, min(p.limit, MAX_PAGE), max_chars=GET_CHARS),
        "length": head.seq if head is not None else 0,
    }


@dataclass(frozen=True)
class Presented:
    entries: list[Any] = field(default_factory=list, repr=False)  # verified by PeerChains
    since: int = 1


@PEER_METHODS.method("sigchain.present")
def sigchain_present(c: PeerCall, p: Presented) -> dict[str, Any]:
    """The peer's own entries from ``since`` on. Answers how much of its chain this node holds
    now (``held``), so the peer sends only what is new next time (and ``since`` past it is
    refused: a gap)."""
    gestalts = c.service.acl.gestalts
    if gestalts is None:
        raise InvalidInput("this node keeps no sigchain")
    if len(p.entries) > MAX_PAGE:
        raise InvalidInput(f"at most {MAX_PAGE} entries at a time")
    if not c.service.acl.shares_with_identities():  # no reason to keep a stranger's chain
        return {"held": 0, "kept": False}
    if p.entries:
        gestalts.chains.accept(c.peer, p.entries, from_seq=p.since)
    head = gestalts.chains.head(c.peer)
    return {"held": head.seq if head is not None else 0, "kept": True}


@dataclass(frozen=True)
class Rotated:
    closing: Any = field(default=None, repr=False)  # the old chain's rotate-key, checked
    chain: list[Any] = field(default_factory=list, repr=False)  # the new chain, from entry 1
    link: Any = field(default=None, repr=False)  # the new key's link statement (an own node)


@PEER_METHODS.method("sigchain.rotated")
def sigchain_rotated(c: PeerCall, p: Rotated) -> dict[str, Any]:
    """The peer renewed its key: what this node holds of its old NodeId moves to it
    (trust/rotation.py), when the two halves of the rotation check out."""
    from polykey.trust.rotation import follow

    gestalts = c.service.acl.gestalts
    if gestalts is None:
        raise InvalidInput("this node keeps no sigchain")
    if len(p.chain) > MAX_PAGE:
        raise InvalidInput(f"at most {MAX_PAGE} entries at a time")
    service = c.service
    if service.graph is None:
        raise InvalidInput("this node keeps no node graph")
    result = follow(
        service.store,
        c.peer,
        p.closing,
        p.chain,
        chains=gestalts.chains,
        acl=service.acl,
        vaults=service.vaults,
        graph=service.graph,
        link=p.link,
        moves=(service.notifications.readdress,) if service.notifications else (),
    )
    if result.get("followed"):
        _expose_compromised(service, c.peer, str(result["old"]), gestalts.chains)
    return result


def _expose_compromised(service: PeerService, new: NodeId, old: str, chains: Any) -> None:
    """When the peer says its old key was stolen, the exposure report of that old key is
    kept at once (docs/spec/audit.md): what it could read (the rights that moved to the new
    key) and what it received. Once per old key."""
    from polykey.trust.rotation import compromised_after
    from polykey.vaults import exposure

    if compromised_after(chains.entries(new), old) is None or exposure.kept(service.vaults, old):
        return
    could: dict[str, tuple[list[str], str | None]] = {}
    for info in service.vaults.all():
        perms = service.acl.permissions(info.id, new)
        folder = service.acl.folder(info.id, new)
        if perms or folder is not None:
            could[info.id] = (perms, folder.path if folder is not None else None)
    if service.audit is None:
        return
    report = exposure.build(service.vaults, service.audit, old, could, "key revoked", None)
    with service.store.write() as tx:
        exposure.keep(tx, report)


@dataclass(frozen=True)
class Countersign:
    draft: Any = field(default=None, repr=False)  # the peer's link-node draft, checked


@PEER_METHODS.method("sigchain.countersign")
def sigchain_countersign(c: PeerCall, p: Countersign) -> dict[str, Any]:
    """A linked node's link-node draft, countersigned by this node (``entry``); and this
    node's own draft of the link (``draft``) when its chain holds no live claim of it yet,
    for the peer to countersign and hand back with ``sigchain.countersigned``."""
    from polykey.ids import encode_node_id
    from polykey.trust.sigchain import countersign

    service = c.service
    gestalts = service.acl.gestalts
    if gestalts is None or not service.links.is_mine(c.peer):
        raise InvalidInput("this node is not linked with the asking node")
    out: dict[str, Any] = {}
    if p.draft is not None:
        out["entry"] = countersign(p.draft, gestalts.own.key, issuer=c.peer)
    if encode_node_id(c.peer) not in gestalts.own.state().nodes:
        out["draft"] = gestalts.own.prepare_link(c.peer).doc
    return out


@dataclass(frozen=True)
class Countersigned:
    entry: Any = field(default=None, repr=False)


@PEER_METHODS.method("sigchain.countersigned")
def sigchain_countersigned(c: PeerCall, p: Countersigned) -> dict[str, Any]:
    """This node's draft, countersigned by the linked peer: appended to its chain (when its
    place is still the next; else StaleDraft and the peer asks again)."""
    from polykey.ids import encode_node_id

    gestalts = c.service.acl.gestalts
    if gestalts is None or not c.service.links.is_mine(c.peer):
        raise InvalidInput("this node is not linked with the asking node")
    from polykey.trust.sigchain import verify_entry

    if encode_node_id(c.peer) in gestalts.own.state().nodes:
        return {"appended": False}
    if verify_entry(p.entry).sub != encode_node_id(c.peer):
        raise InvalidInput("the claim names another node than the one it comes from")
    entry = gestalts.own.append_draft(p.entry)
    return {"appended": True, "seq": entry.seq}
