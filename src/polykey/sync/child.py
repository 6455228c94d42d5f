"""The peer methods of child nodes (docs/spec/delegation.md, "Over the peer port").

- ``child.join``: a new node proves a one-time token (an HMAC over both NodeIds and a nonce,
  under the token's secret, which never travels) and gets the parent's draft of its delegation.
- ``child.draft``: a child asks whether its parent holds a delegation for it to countersign (a
  renewal): the draft, or none.
- ``child.countersigned``: the child's countersignature; the claim joins the parent's chain.

``child.join`` and ``child.draft`` may carry where the child serves peers (``address``): the
parent keeps it with the child's record, to notify the child of a revocation at once.

And ``clone_delegated``, the asking side's clone of a delegated vault under the vault's own id.
Registered in the one peer registry of sync/server.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from polykey.errors import InvalidInput, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network.graph import parse_address
from polykey.network.peers import Peers
from polykey.store.nodefile import NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.sync.checks import Intake, fetch_reply, land, validate, writer_ids, writers
from polykey.sync.client import fetch_vault
from polykey.sync.service import PEER_METHODS, PeerCall
from polykey.trust.rotation import retired as retired_keys
from polykey.trust.sigchain import DELEGATE, verify_entry
from polykey.vaults.registry import VaultInfo, Vaults

TOKENS = Namespace("child/tokens")
"""token id (hex) -> JSON {"secret": hex, "name", "grant", "expires", "used_by", "done"}."""
PENDING = Namespace("child/pending")
"""child NodeId -> JSON {"name", "grant"}: a delegation waiting for the child's countersignature."""
CHILDREN = Namespace("child/children")
"""child name -> JSON {"node_id" (empty until a token is used), "created", "mode", "address"
(where the child serves peers, when known: told at join and pull, or given at create)}."""
PARENT = Namespace("child/parent")
"""b"parent" -> JSON {"node_id", "address", "name"}: on a child, the node it was delegated by."""
JOIN_LABEL = b"polykey/child-join/v1"


class TokenRefused(PolykeyError):
    """The parent refused the join token"""

    exit_code = 3
    hint = "A token works once and expires; ask for a new one with `pk child create NAME --token`."


def join_mac(secret: bytes, parent: str, child: str, nonce: bytes) -> bytes:
    """The proof of a join token: HMAC-SHA256 under its secret over both NodeIds and a nonce."""
    message = b"\0".join((JOIN_LABEL, parent.encode(), child.encode(), nonce))
    return hmac.new(secret, message, hashlib.sha256).digest()


def read_json(store: NodeFile | Transaction, ns: Namespace, key: bytes) -> dict[str, Any] | None:
    raw = store.get(ns, key)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def put_json(tx: Transaction, ns: Namespace, key: bytes, doc: dict[str, Any]) -> None:
    tx.put(ns, key, json.dumps(doc, sort_keys=True).encode())


@dataclass(frozen=True)
class Join:
    token: str
    nonce: str
    mac: str = field(repr=False)
    address: str = ""  # where the child serves peers, HOST:PORT; "": not told


def child_address(text: str) -> str:
    """A child's address as the parent keeps it ("" for none; InvalidInput when malformed)."""
    return str(parse_address(text)) if text else ""


@PEER_METHODS.method("child.join")
def child_join(c: PeerCall, p: Join) -> dict[str, Any]:
    """A node proving a join token gets its delegation drafted; the token is then its alone
    (the same node may ask again until it countersigned, another never)."""
    service = c.service
    gestalts = service.acl.gestalts
    if gestalts is None:
        raise TokenRefused()
    peer = encode_node_id(c.peer)
    try:
        nonce, mac = bytes.fromhex(p.nonce), bytes.fromhex(p.mac)
    except ValueError:
        raise InvalidInput("nonce and mac must be hexadecimal") from None
    if len(nonce) < 16 or len(p.token) > 64:
        raise InvalidInput("the nonce must be 16 bytes or more")
    address = child_address(p.address)
    with service.store.write() as tx:
        rec = read_json(tx, TOKENS, p.token.encode())
        if rec is None or rec.get("done"):
            raise TokenRefused()
        wanted = join_mac(
            bytes.fromhex(str(rec["secret"])), encode_node_id(service.node_id), peer, nonce
        )
        if not hmac.compare_digest(wanted, mac) or time.time() >= float(rec["expires"]):
            raise TokenRefused()
        if rec.get("used_by") not in (None, peer):
            raise TokenRefused()
        rec["used_by"] = peer
        put_json(tx, TOKENS, p.token.encode(), rec)
        name = str(rec["name"])
        put_json(
            tx, PENDING, peer.encode(), {"name": name, "grant": rec["grant"], "token": p.token}
        )
        child = read_json(tx, CHILDREN, name.encode()) or {}
        told = {"address": address} if address else {}
        put_json(tx, CHILDREN, name.encode(), {**child, "node_id": peer, **told})
    draft = gestalts.own.prepare(DELEGATE, {"sub": peer, "grant": rec["grant"]})
    return {"draft": draft.doc, "name": name}


@dataclass(frozen=True)
class Draft:
    address: str = ""  # where the child serves peers now, HOST:PORT; "": not told


@PEER_METHODS.method("child.draft")
def child_draft(c: PeerCall, p: Draft) -> dict[str, Any]:
    """The delegation waiting for the asking node's countersignature (a renewal), or none; a
    child of this node telling its address has it kept."""
    address = child_address(p.address)
    if address:
        _keep_address(c.service.store, encode_node_id(c.peer), address)
    gestalts = c.service.acl.gestalts
    pending = read_json(c.service.store, PENDING, encode_node_id(c.peer).encode())
    if gestalts is None or pending is None:
        return {"draft": None}
    sub = encode_node_id(c.peer)
    return {"draft": gestalts.own.prepare(DELEGATE, {"sub": sub, "grant": pending["grant"]}).doc}


@dataclass(frozen=True)
class Countersigned:
    entry: Any = field(default=None, repr=False)  # checked by the chain


@PEER_METHODS.method("child.countersigned")
def child_countersigned(c: PeerCall, p: Countersigned) -> dict[str, Any]:
    """The asking node's countersignature of the delegation drafted for it: appended to this
    node's chain (StaleDraft when the chain moved on: the child asks for a draft again)."""
    service = c.service
    gestalts = service.acl.gestalts
    peer = encode_node_id(c.peer)
    pending = read_json(service.store, PENDING, peer.encode())
    if gestalts is None or pending is None:
        raise InvalidInput("no delegation waits for this node")
    claimed = verify_entry(p.entry)
    if (
        claimed.typ != DELEGATE
        or claimed.sub != peer
        or claimed.payload.get("grant") != pending["grant"]
    ):
        raise InvalidInput("the claim is not the delegation drafted for this node")
    entry = gestalts.own.append_draft(p.entry)
    with service.store.write() as tx:
        tx.delete(PENDING, peer.encode())
        token = pending.get("token")
        rec = read_json(tx, TOKENS, str(token).encode()) if token else None
        if rec is not None:
            put_json(tx, TOKENS, str(token).encode(), {**rec, "done": True})
    return {"seq": entry.seq, "jti": entry.jti}


def _keep_address(store: NodeFile, child: str, address: str) -> None:
    """Keep ``address`` with the record of the child whose NodeId is ``child`` (if any)."""
    with store.write() as tx:
        for key, _raw in store.items(CHILDREN):
            rec = read_json(tx, CHILDREN, key)
            if rec is not None and rec.get("node_id") == child and rec.get("address") != address:
                put_json(tx, CHILDREN, key, {**rec, "address": address})


def clone_delegated(
    vaults: Vaults, peers: Peers, parent: NodeId, vault_id: str, name: str
) -> VaultInfo:
    """Clone the parent's vault ``vault_id`` under the same id (a grant names a vault by the id
    it has on every node down the delegations), as ``name``. A folder delegated is served as
    the vault derived to it, under the vault's id as well (docs/spec/derived.md)."""
    intake = Intake(spool=True)
    try:
        reply = fetch_vault(peers, parent, vault_id, intake)
        remote, head, _received = fetch_reply(reply, vault_id)
        if remote["id"] != vault_id:
            raise InvalidInput("the parent answered with another vault")
        signers = {bytes(parent), *writers(reply)}
        retired = retired_keys(vaults.store)  # renewed keys: nothing signed after their time
        objects = validate(intake, head, lambda _sha: False, signers, retired=retired)
    finally:
        intake.close()
    origin = {
        "node_id": encode_node_id(parent),
        "vault_id": vault_id,
        "name": remote["name"],
        "high_water": head.decode(),
        "writers": writer_ids(reply),
    }
    with vaults.store.write() as tx:
        info = vaults.register(name, origin, tx, vault_id=vault_id)
        land(tx, info.id, objects, head)
    return info


def parent_of(store: NodeFile) -> tuple[NodeId, dict[str, Any]] | None:
    """On a child: its parent's NodeId and record, or None."""
    rec = read_json(store, PARENT, b"parent")
    if rec is None:
        return None
    return decode_node_id(str(rec["node_id"])), rec
