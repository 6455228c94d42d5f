"""Child nodes: small nodes that hold a delegated subset of this node's vaults.

The layer above the Node (like people.py): it makes children, written to a file or joined with
a one-time token over the peer port (sync/child.py answers there), and on a child it joins,
pulls what the delegation allows, and keeps its parent's chain up to date. What a delegation
allows is decided in trust/delegation.py, where the serving node walks the chains it holds.

- ``create``: a delegation drafted by this node; with ``to``, a child node file made here and
  countersigned at once; else a token (kept sealed here, single use, expiring) for ``join``.
- ``join``: on a new node, prove the token and countersign the delegation; then ``pull``.
- ``pull``: countersign a renewal waiting at the parent, take the parent's new chain entries
  (a revocation takes effect), clone or pull each vault delegated (a folder: the vault derived
  to it, holding nothing else).
- ``refresh_parent``: the parent's chain taken again (the child's agent: when its parent
  notifies it, and on its background sync schedule).
- ``renew``, ``revoke``, ``children``: the parent's side; a revocation notifies the child at
  the address it told (or was given), so its agent takes the parent's chain at once.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polykey.errors import InvalidInput, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network.graph import Address, parse_address
from polykey.sync.child import (
    CHILDREN,
    PARENT,
    PENDING,
    TOKENS,
    TokenRefused,
    child_address,
    clone_delegated,
    join_mac,
    parent_of,
    put_json,
    read_json,
)
from polykey.trust.delegation import Grant, VaultGrant, expand, intersect
from polykey.trust.sigchain import DELEGATE, countersign

if TYPE_CHECKING:
    from polykey.node import KdfCost, Node

TOKEN_PREFIX = "pkchild1."  # noqa: S105 - a prefix, not a secret
TOKEN_LIFE_S = 24 * 3600
WILDCARD = ("0.0.0.0", "::", "")  # noqa: S104 (names of wildcards, nothing is bound)
MAX_CHILD_NAME = 64


class ChildNotFound(PolykeyError):
    """No child of that name"""

    exit_code = 3
    hint = "See `pk child list`."


class NotAChild(PolykeyError):
    """This node was not made as a child (no parent is recorded)"""

    exit_code = 3
    hint = "Join a parent with `pk child join TOKEN`, or open the child's node file (--node)."


@dataclass(frozen=True)
class Wanted:
    """A vault (or folder of it) asked for on the command line: ``V`` or ``V:PATH``."""

    vault: str
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> Wanted:
        vault, sep, path = text.partition(":")
        return cls(vault, path.strip("/") or None if sep else None)


def make_grant(
    node: Node, wanted: list[Wanted], actions: list[str], expires: int | None, reshare: bool
) -> Grant:
    """The grant of a new child: each vault by its id, no more than this node may hand on (a
    folder within the folder this node holds, when it holds one)."""
    from polykey.trust.acl import check_folder
    from polykey.trust.delegation import check_path

    if not wanted:
        raise InvalidInput("name at least one vault", hint="Add --vault V or --vault V:PATH.")
    acts = expand(actions or ["pull"])
    out = []
    for w in wanted:
        info = node.vaults.info(w.vault)
        path = check_path(check_folder(w.path)) if w.path else None
        grant = VaultGrant(info.id, acts, path, info.name)
        bound = _may_hand_on(node, info.id)
        if not any(_within(grant, b) for b in bound):
            raise InvalidInput(
                f"this node may not hand on {w.vault}{':' + w.path if w.path else ''} "
                f"with {', '.join(sorted(acts))}",
                hint="A child holds at most what its parent gave it, and only when the parent "
                "allowed resharing (--reshare).",
            )
        out.append(grant)
    return Grant(tuple(out), expires, reshare)


def _within(grant: VaultGrant, bound: VaultGrant) -> bool:
    """Whether ``bound`` holds all of ``grant`` (names aside: a clone may be named otherwise)."""
    both = intersect(grant, bound)
    return both is not None and (both.actions, both.path) == (grant.actions, grant.path)


def _may_hand_on(node: Node, vault_id: str) -> list[VaultGrant]:
    from polykey.trust.delegation import full

    delegations = node.acl.delegations
    assert delegations is not None
    index = delegations.index()
    origin = node._lineage(vault_id)
    if not origin or delegations.me not in index.ever:
        return [full(vault_id)]
    return delegations._up(index, delegations.me, vault_id, origin, frozenset())


def _check_name(node: Node, name: str) -> None:
    if not 0 < len(name) <= MAX_CHILD_NAME or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise InvalidInput("a child's name is 1 to 64 letters, digits, '-', '_' or '.'")
    if read_json(node.store, CHILDREN, name.encode()) is not None:
        raise InvalidInput(f"a child named {name} exists", hint="Choose another name.")


def create(
    node: Node,
    name: str,
    grant: Grant,
    address: str,
    *,
    to: Path | None = None,
    password: bytes | None = None,
    kdf: KdfCost | None = None,
    allow_weak: bool = False,
    child_at: str = "",
) -> dict[str, Any]:
    """A new child: its node file written at ``to`` (delegation countersigned, this node in its
    graph at ``address``), or a one-time token for `pk child join`. ``child_at``: where the
    child will serve peers (else it tells this node when it joins or pulls)."""
    parse_address(address)
    _check_name(node, name)
    me = encode_node_id(node.node_id)
    created = _now()
    told = {"address": child_address(child_at)} if child_at else {}
    if to is None:
        token_id, secret = secrets.token_hex(8), secrets.token_bytes(32)
        expires = int(time.time()) + TOKEN_LIFE_S
        with node.store.write() as tx:
            rec = {"secret": secret.hex(), "name": name, "grant": grant.as_json()}
            put_json(tx, TOKENS, token_id.encode(), {**rec, "expires": expires, "used_by": None})
            rec = {"node_id": "", "created": created, "mode": "token", **told}
            put_json(tx, CHILDREN, name.encode(), rec)
        doc = {"p": me, "a": address, "i": token_id, "s": secret.hex()}
        text = base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode())
        return {"name": name, "token": TOKEN_PREFIX + text.decode().rstrip("="), "expires": expires}
    from polykey.node import DEFAULT_KDF, Node

    if password is None:
        raise InvalidInput("the child's node needs a password")
    child, _code = Node.bootstrap(to, password, kdf=kdf or DEFAULT_KDF, allow_weak=allow_weak)
    with child:
        child_id = encode_node_id(child.node_id)
        draft = node.sigchain.prepare(DELEGATE, {"sub": child_id, "grant": grant.as_json()})
        entry = node.sigchain.append_draft(
            countersign(draft.doc, child.key, typ=DELEGATE, issuer=node.node_id)
        )
        _adopt_parent(child, node.node_id, address, name, node.sigchain.docs())
        with node.store.write() as tx:
            rec = {"node_id": child_id, "created": created, "mode": "file", **told}
            put_json(tx, CHILDREN, name.encode(), rec)
    return {"name": name, "node_id": child_id, "path": str(to), "jti": entry.jti}


def _adopt_parent(child: Node, parent: NodeId, address: str, name: str, docs: list[Any]) -> None:
    """On the child: the parent known (its address, its chain) and recorded as the parent."""
    child.graph.add(parent, parse_address(address))
    child.chains.accept(parent, docs, from_seq=1)
    with child.store.write() as tx:
        rec = {"node_id": encode_node_id(parent), "address": address, "name": name}
        put_json(tx, PARENT, b"parent", rec)


def parse_token(text: str) -> dict[str, str]:
    if not text.startswith(TOKEN_PREFIX):
        raise InvalidInput("that is not a child token", hint="It starts with pkchild1.")
    body = text[len(TOKEN_PREFIX) :].strip()
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        out = {k: str(doc[k]) for k in ("p", "a", "i", "s")}
        decode_node_id(out["p"])
        bytes.fromhex(out["s"])
    except (ValueError, KeyError, TypeError, PolykeyError):
        raise InvalidInput("that child token is damaged", hint="Copy it again, whole.") from None
    return out


def join(node: Node, token: str, address: str = "") -> dict[str, Any]:
    """On a new node: prove ``token`` to the parent, countersign the delegation, then pull.
    ``address``: where this node serves peers, told to the parent (for its notifications)."""
    from polykey.people import fetch_chain

    tok = parse_token(token)
    parent = decode_node_id(tok["p"])
    node.graph.add(parent, parse_address(tok["a"]))
    nonce = secrets.token_bytes(16)
    mac = join_mac(bytes.fromhex(tok["s"]), tok["p"], encode_node_id(node.node_id), nonce)
    asked = {"token": tok["i"], "nonce": nonce.hex(), "mac": mac.hex()}
    reply = node.peers.call(
        parent, "child.join", {**asked, "address": _told(node, parent, address)}
    )
    signed = countersign(reply.get("draft"), node.key, typ=DELEGATE, issuer=parent)
    # The parent is kept before the countersignature is sent: once the parent holds it, the
    # delegation is live, and a child that did not keep its parent could never pull it (the
    # token is then spent). Interrupted before the parent took it, `pk child pull` asks for
    # the draft again and countersigns it (``pull``).
    with node.store.write() as tx:
        rec = {"node_id": tok["p"], "address": tok["a"], "name": str(reply.get("name", ""))}
        put_json(tx, PARENT, b"parent", rec)
    node.peers.call(parent, "child.countersigned", {"entry": signed})
    fetch_chain(node, parent)
    return {"node_id": encode_node_id(node.node_id), "parent": tok["p"], **pull(node)}


def _told(node: Node, parent: NodeId, address: str) -> str:
    """Where this node serves peers, as its parent may reach it: an agent listening on every
    interface is named by the local address of the route to the parent ("" when none)."""
    if not address:
        return ""
    at = parse_address(address)
    if at.host not in WILDCARD:
        return str(at)
    try:
        toward = node.graph.get(parent)
        family = socket.AF_INET6 if ":" in toward.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:  # a route looked up, nothing sent
            probe.connect((toward.host, toward.port))
            host = str(probe.getsockname()[0])
    except (OSError, PolykeyError):
        return ""
    return str(Address(host, at.port))


def refresh_parent(node: Node, sender: NodeId | None = None) -> bool:
    """On a child: take its parent's chain again (a revocation counts at once); with
    ``sender``, only when that node is the parent (a notification from it). Whether it did."""
    from polykey.people import fetch_chain

    found = parent_of(node.store)
    if found is None or (sender is not None and sender != found[0]):
        return False
    fetch_chain(node, found[0])
    return True


def pull(node: Node, address: str = "") -> dict[str, Any]:
    """On a child: countersign a renewal waiting at the parent, take the parent's chain (a
    revocation or an expiry counts at once), then clone or pull every vault delegated: a folder
    arrives as the vault derived to it (docs/spec/derived.md), under the vault's id.
    ``address``: where this node serves peers now, told to the parent."""
    from polykey.people import fetch_chain
    from polykey.sync.client import pull_many

    found = parent_of(node.store)
    if found is None:
        raise NotAChild()
    parent, _rec = found
    told = {"address": _told(node, parent, address)} if address else {}
    draft = node.peers.call(parent, "child.draft", told).get("draft")
    if draft is not None:
        signed = countersign(draft, node.key, typ=DELEGATE, issuer=parent)
        node.peers.call(parent, "child.countersigned", {"entry": signed})
    fetch_chain(node, parent)
    delegations = node.acl.delegations
    assert delegations is not None
    held = delegations.received().get(encode_node_id(parent))
    now = time.time()
    if held is None or not held[1].live(now):
        return {"vaults": [], "delegation": "revoked" if held is None else "expired"}
    have = {i.id: i for i in node.vaults.all()}
    out: list[dict[str, Any]] = []
    pulls = []
    for vg in held[1].vaults:
        if vg.vault in have:
            pulls.append(have[vg.vault].name)
            continue
        name = vg.name or vg.vault
        if any(i.name == name for i in have.values()):
            name = f"{name}-{vg.vault[:8]}"
        info = clone_delegated(node.vaults, node.peers, parent, vg.vault, name)
        folder = {"path": vg.path} if vg.path is not None else {}
        out.append({"vault": info.name, "cloned": True, **folder})
    out += pull_many(node.vaults, node.peers, pulls) if pulls else []
    return {"vaults": out, "delegation": "live", "expires": held[1].expires}


# --- the parent's side ---------------------------------------------------------------------------


def _child(node: Node, name: str) -> dict[str, Any]:
    rec = read_json(node.store, CHILDREN, name.encode())
    if rec is None:
        raise ChildNotFound(name[:80])
    return rec


def show(node: Node, name: str) -> dict[str, Any]:
    rec = _child(node, name)
    delegations = node.acl.delegations
    assert delegations is not None
    out: dict[str, Any] = {"name": name, **rec, "state": "waiting for join"}
    if rec.get("node_id"):
        held = delegations.issued().get(str(rec["node_id"]))
        waiting = read_json(node.store, PENDING, str(rec["node_id"]).encode()) is not None
        if held is None:  # joined, its countersignature not here yet: `pk child pull` sends it
            out["state"] = "waiting for countersignature" if waiting else "revoked"
        else:
            jti, grant = held
            out |= {"jti": jti, "grant": grant.as_json()}
            out["state"] = "live" if grant.live(time.time()) else "expired"
        if waiting:
            out["pending"] = True
    return out


def children(node: Node) -> list[dict[str, Any]]:
    return [show(node, key.decode()) for key in sorted(node.store.keys(CHILDREN))]


def renew(node: Node, name: str, expires: int | None) -> dict[str, Any]:
    """A new delegation with the same grant and a new expiry, for the child to countersign on
    its next contact (`pk child pull`); the old one holds until then."""
    rec = _child(node, name)
    delegations = node.acl.delegations
    assert delegations is not None
    held = delegations.issued().get(str(rec.get("node_id", "")))
    if held is None:
        raise InvalidInput(f"{name} holds no delegation to renew", hint="Make a new child.")
    grant = Grant(held[1].vaults, expires, held[1].reshare)
    with node.store.write() as tx:
        put_json(
            tx, PENDING, str(rec["node_id"]).encode(), {"name": name, "grant": grant.as_json()}
        )
    return {"name": name, "expires": expires, "pending": True}


def revoke(node: Node, name: str) -> dict[str, Any]:
    """Revoke the child's delegation (a signed revoke claim): refused here at once; the child
    notified at the address it told (queued, and retried by the agent, when it cannot be
    reached now), so its agent takes this node's chain at once; else at its next contact."""
    rec = _child(node, name)
    child_id = str(rec.get("node_id", ""))
    delegations = node.acl.delegations
    assert delegations is not None
    held = delegations.issued().get(child_id) if child_id else None
    out: dict[str, Any] = {"name": name, "revoked": False, "told": False}
    with node.store.write() as tx:
        if child_id:
            tx.delete(PENDING, child_id.encode())
        for key, raw in node.store.items(TOKENS):
            doc = json.loads(raw)
            if doc.get("name") == name and not doc.get("done"):
                put_json(tx, TOKENS, key, {**doc, "done": True})
    if held is not None:
        # what it could read and what it pulled, kept before its access ends
        report = node.expose(decode_node_id(child_id), f"revocation of child {name}", label=name)
        out |= {"revoked": True, "jti": node.sigchain.revoke(held[0]).jti, "exposure": report}
        out |= _tell(node, decode_node_id(child_id), str(rec.get("address", "")), name)
    return out


def _tell(node: Node, child: NodeId, address: str, name: str) -> dict[str, bool]:
    """Notify the child of its revocation (its agent then takes this node's chain): at the
    address it told, unless the graph holds one given by hand. Queued in the outbox when it
    cannot be reached now; nothing when no address is known (its next contact does it)."""
    from polykey.network.graph import MANUAL

    if address and not (node.graph.knows(child) and node.graph.entry(child).how == MANUAL):
        node.graph.add(child, parse_address(address), "peer")
    if not node.graph.knows(child):
        return {"told": False, "queued": False}
    note = f"Your delegation from {encode_node_id(node.node_id)} (child {name}) was revoked."
    try:
        sent = node.notifications.send(child, note)
    except PolykeyError:  # refused: the child learns it at its next contact
        return {"told": False, "queued": False}
    return {"told": bool(sent["delivered"]), "queued": bool(sent["queued"])}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def parse_duration(text: str) -> int:
    """Seconds in ``30d``, ``12h``, ``15m``, ``90s`` (``never``: 0)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text == "never":
        return 0
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise InvalidInput(f"{text[:20]!r} is not a duration", hint="Write 30d, 12h, 15m or 90s.")
    return int(text[:-1]) * units[text[-1]]


__all__ = [
    "TokenRefused",
    "Wanted",
    "children",
    "create",
    "join",
    "pull",
    "refresh_parent",
    "renew",
    "revoke",
    "show",
]
