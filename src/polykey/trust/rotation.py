"""Key renewal: a node's new key pair, the claims that join it to the old one, and what the
nodes that see them do (docs/spec/keys.md, "Renewal"; docs/spec/sigchain.md, "Key rotation").

- ``renew`` (the renewing node, one transaction): the old chain is closed by a rotate-key
  signed by both keys and kept as another node's chain; the own chain starts again with the new
  key's first entry; the old key's seed is kept sealed (``node/former-keys``) and the new one
  becomes the root key; the old NodeId stays a writer of every vault for the history it signed.
- ``follow`` (a peer told of it, ``sigchain.rotated``): the two halves checked together, the
  new chain kept; grants, addresses and clone origins naming the old NodeId move to the new.
- ``compromise`` (`pk keys revoke-old --compromised --after T`): a ``key-compromised`` claim
  in the new chain; the sealed old key is dropped.

Every rotation known, this node's own and its peers', is kept in ``trust/rotations`` (old
NodeId -> JSON, below). ``retired`` is what commit checks read: from when a key signs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from polykey.errors import InvalidInput, NodeDamaged, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.keys.root import RootKey
from polykey.store.nodefile import NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.trust.links import PENDING, Links, Statement
from polykey.trust.sigchain import (
    BadChain,
    Entry,
    ForkedChain,
    PeerChains,
    Sigchain,
    check_rotation,
    verify_chain,
    verify_entry,
)

if TYPE_CHECKING:
    from polykey.trust.acl import Acl
    from polykey.vaults.registry import Vaults

ROTATIONS = Namespace("trust/rotations")
"""old NodeId -> JSON {"to", "at", "compromised": unix s | null, "own": bool,
"closing": the old chain's rotate-key, "opening": the new chain's first entry,
"untold": [NodeIds not told yet] (own only)}"""
FORMER_KEYS = Namespace("node/former-keys")
"""old NodeId -> its 32-byte Ed25519 seed, kept sealed until revoked as compromised."""
COMPROMISED = "key-compromised"
MAX_SUCCESSION = 64  # renewals followed from one NodeId to its newest
TELL_CHARS = 40 * 1024  # of the new chain sent with a rotation (a stranger's request: 64 KiB)


@dataclass(frozen=True)
class Rotation:
    """One key rotation: ``old`` became ``new`` at ``at`` (the closing entry's iat)."""

    old: str
    new: str
    at: int
    compromised: int | None = None  # the old key's signatures after this time are refused
    own: bool = False
    closing: dict[str, Any] = field(default_factory=dict, repr=False)
    opening: dict[str, Any] = field(default_factory=dict, repr=False)
    untold: tuple[str, ...] = ()

    @property
    def until(self) -> int:
        """The last second whose signatures by the old key are taken."""
        return self.at if self.compromised is None else min(self.at, self.compromised)

    def as_json(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "at": self.at,
            "until": self.until,
            "compromised": self.compromised,
            "own": self.own,
            "untold": list(self.untold),
        }

    def encode(self) -> bytes:
        doc = {"to": self.new, "at": self.at, "compromised": self.compromised, "own": self.own}
        doc |= {"closing": self.closing, "opening": self.opening, "untold": list(self.untold)}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def decode(cls, old: str, raw: bytes) -> Rotation:
        try:
            doc = json.loads(raw)
            compromised = doc["compromised"]
            return cls(
                old,
                str(doc["to"]),
                int(doc["at"]),
                None if compromised is None else int(compromised),
                bool(doc["own"]),
                dict(doc["closing"]),
                dict(doc["opening"]),
                tuple(str(n) for n in doc.get("untold", [])),
            )
        except (ValueError, KeyError, TypeError):
            raise NodeDamaged(f"{ROTATIONS.name}: the record of {old[:12]}… is malformed") from None


class Graph(Protocol):
    """What ``follow`` needs of the node graph (network/graph.py)."""

    def knows(self, node_id: NodeId) -> bool: ...

    def move(self, tx: Transaction, old: NodeId, new: NodeId) -> None: ...


# --- reading -----------------------------------------------------------------------------------


def rotations(store: NodeFile) -> dict[str, Rotation]:
    """Every rotation this node knows, by old NodeId."""
    return {k.decode(): Rotation.decode(k.decode(), v) for k, v in store.items(ROTATIONS)}


def rotation_of(store: NodeFile | Transaction, old: str) -> Rotation | None:
    raw = store.get(ROTATIONS, old.encode())
    return None if raw is None else Rotation.decode(old, raw)


def retired(store: NodeFile) -> dict[bytes, int]:
    """Raw public key -> the last second whose signatures by it are taken (commit checks)."""
    return {bytes(decode_node_id(r.old)): r.until for r in rotations(store).values()}


def successors(store: NodeFile) -> dict[str, str]:
    """Old NodeId -> the newest NodeId its renewals lead to."""
    step = {old: r.new for old, r in rotations(store).items()}
    out = {}
    for old, first in step.items():
        new = first
        for _ in range(MAX_SUCCESSION):
            if new not in step or step[new] == old:
                break
            new = step[new]
        out[old] = new
    return out


def former_key(store: NodeFile, old: str) -> RootKey | None:
    """This node's old key ``old``, while it is kept (until revoked as compromised)."""
    seed = store.get(FORMER_KEYS, old.encode())
    return None if seed is None else RootKey.from_seed(seed)


# --- the renewing node -------------------------------------------------------------------------


def renew(
    store: NodeFile,
    old_key: RootKey,
    new_key: RootKey,
    own: Sigchain,
    chains: PeerChains,
    acl: Acl,
    vaults: Vaults,
    root: tuple[Namespace, bytes],
    recovery_secret: bytes,
    *,
    untold: Sequence[str] = (),
    also: Sequence[tuple[Namespace, bytes, bytes]] = (),
) -> Rotation:
    """Make ``new_key`` this node's root key, in one transaction (``root``: where the root
    key's seed is kept) that also wraps the node file's data key under ``recovery_secret``
    (the new recovery code): no crash leaves the old code unlocking a renewed file. The
    peers ``untold`` (every node this one knows) are kept as not told yet in the same
    transaction, so a crash before ``tell`` leaves them to be told at the next contact, never
    forgotten; ``also``: records written with it (the new code, until it is handed over). The
    links with own nodes wait for the other node's new statement. The caller then makes its
    parts again with the new key."""
    old, new = encode_node_id(old_key.node_id), encode_node_id(new_key.node_id)
    with store.write(recovery_secret=recovery_secret) as tx:
        for namespace, key, value in also:
            tx.put(namespace, key, value)
        entries, closing, opening = own.rotation(new_key)
        chains.keep(tx, old_key.node_id, [*entries, closing])
        own.restart(tx, opening)
        tx.put(FORMER_KEYS, old.encode(), old_key.signing.seed())
        tx.put(root[0], root[1], new_key.signing.seed())
        infos = vaults.all()
        acl.rename(tx, [i.id for i in infos], old, new, writer=True)
        _move_origins(tx, vaults, old, new)
        acl.links.rekey(tx, new_key)
        waiting = tuple(sorted(set(untold) - {old, new}))
        record = Rotation(old, new, closing.iat, None, True, closing.doc(), opening.doc(), waiting)
        tx.put(ROTATIONS, old.encode(), record.encode())
    return record


def compromise(store: NodeFile, own: Sigchain, old: str, after: int) -> Rotation:
    """This node's old key ``old`` was stolen: its signatures after ``after`` are refused (a
    ``key-compromised`` claim in the own chain, for peers), and it is no longer kept."""
    record = rotation_of(store, old)
    if record is None or not record.own:
        raise InvalidInput(
            "this node never renewed away from that key",
            hint="`pk keys renewals` lists this node's old keys.",
        )
    if after < 0:
        raise InvalidInput("the time a key was stolen is a time after 1970")
    with store.write() as tx:  # the claim and the record land together
        own.append(COMPROMISED, {"sub": old, "after": after}, tx=tx)
        record = replace(record, compromised=min(after, record.compromised or after))
        tx.put(ROTATIONS, old.encode(), record.encode())
        tx.delete(FORMER_KEYS, old.encode())
    return record


def tell(
    store: NodeFile,
    own: Sigchain,
    chains: PeerChains,
    call: Callable[[NodeId, str, dict[str, Any]], dict[str, Any]],
    peers: Sequence[NodeId],
    links: Links | None = None,
) -> dict[str, str]:
    """Tell each of ``peers`` of this node's renewals, oldest first (``sigchain.rotated``),
    so that it moves what it holds of the old NodeIds to the new. NodeId -> "told" or why not;
    the peers not told are kept in the newest renewal's record (told at the next contact).
    A link with one of them waiting since the renewal (``links``) travels with the newest
    rotation; the peer's statement in the answer completes it."""
    mine = sorted((r for r in rotations(store).values() if r.own), key=lambda r: r.at)
    if not mine:
        return {}
    out: dict[str, str] = {}
    for peer in peers:
        text = encode_node_id(peer)
        try:
            for record in mine:
                params: dict[str, Any] = {"closing": record.closing}
                waiting = None
                if record.new == encode_node_id(own.node_id):
                    params["chain"] = own.docs(1, max_chars=TELL_CHARS)
                    waiting = _waiting_link(links, peer)
                    if waiting is not None:
                        params["link"] = waiting.to_json()
                else:
                    params["chain"] = chains.docs(decode_node_id(record.new))[:1]
                reply = call(peer, "sigchain.rotated", params)
                if links is not None and waiting is not None and reply.get("link") is not None:
                    links.answered(peer, waiting, {"linked": True, "statement": reply["link"]})
            out[text] = "told"
        except PolykeyError as exc:
            out[text] = exc.message
    told = {n for n, v in out.items() if v == "told"}
    left = tuple(sorted((set(mine[-1].untold) | set(out)) - told))
    if left != mine[-1].untold:
        with store.write() as tx:
            tx.put(ROTATIONS, mine[-1].old.encode(), replace(mine[-1], untold=left).encode())
    return out


def _waiting_link(links: Links | None, peer: NodeId) -> Statement | None:
    """This node's link statement ``peer`` has not signed back yet (since a renewal)."""
    entry = links.entry(peer) if links is not None else None
    return entry.mine if entry is not None and entry.state == PENDING else None


def untold(store: NodeFile) -> set[str]:
    """The peers this node has not yet told of its newest renewal."""
    mine = [r for r in rotations(store).values() if r.own]
    return set(max(mine, key=lambda r: r.at).untold) if mine else set()


# --- a peer told of a rotation -----------------------------------------------------------------


def proof(closing_doc: object, chain: Sequence[object]) -> tuple[Entry, list[Entry]]:
    """The closing rotate-key of the old chain and the new chain's entries (its first one
    continuing the old chain), each verified; BadChain otherwise."""
    closing = verify_entry(closing_doc)
    if not closing.closes:
        raise BadChain("the rotation: its first entry is not a rotate-key to a new key")
    if isinstance(chain, str | bytes) or not isinstance(chain, Sequence) or not chain:
        raise BadChain("the rotation holds no entry of the new chain")
    entries = verify_chain(decode_node_id(closing.sub), chain)
    check_rotation(closing, entries[0])
    return closing, entries


def follow(
    store: NodeFile,
    teller: NodeId,
    closing_doc: object,
    chain: Sequence[object],
    *,
    chains: PeerChains,
    acl: Acl,
    vaults: Vaults,
    graph: Graph,
    link: object = None,
    moves: Sequence[Callable[[Transaction, str, str], None]] = (),
) -> dict[str, Any]:
    """``teller`` tells of a renewal (its own, or an older one of the key it renewed from):
    checked, then what this node holds of the old NodeId (grants, address, clone origins,
    ``moves``: queued notifications) is moved to the new NodeId, in one transaction. A link
    with the old NodeId moves when ``link`` is the new key's link statement: this node's
    statement for the new key is answered (``"link"``). A node this one does not know is told
    nothing is kept ({"followed": False})."""
    closing, entries = proof(closing_doc, chain)
    # Signed by the old key and the new one, a rotation proves itself whoever tells it: a node
    # that renewed twice tells its older renewal under its newest key (``tell``, oldest first).
    # Only the new key's own link statement must come from the new key itself.
    old_id, new = decode_node_id(closing.iss), closing.sub
    new_id = decode_node_id(new)
    old = closing.iss
    infos = vaults.all()
    known = (
        graph.knows(old_id)
        or old in acl.nodes()
        or any(i.origin.get("node_id") == old for i in infos)
        or chains.head(old_id) is not None
        or rotation_of(store, old) is not None
        or acl.links.entry(old_id) is not None
    )
    if not known:
        return {"followed": False}
    _check_prior(rotation_of(store, old), new)
    head = chains.head(old_id)
    if head is not None and closing.seq <= head.seq + 1:  # it must continue the copy held
        chains.accept(old_id, [closing_doc], from_seq=closing.seq)
    chains.accept(new_id, chain, from_seq=1)
    after = compromised_after(chains.entries(new_id), old)
    with store.write() as tx:
        _check_prior(rotation_of(tx, old), new)  # again: another request may have landed
        record = Rotation(old, new, closing.iat, after, False, closing.doc(), entries[0].doc())
        acl.rename(tx, [i.id for i in infos], old, new)
        _move_origins(tx, vaults, old, new)
        graph.move(tx, old_id, new_id)
        for move in moves:
            move(tx, old, new)
        mine = acl.links.moved(tx, old_id, new_id, link if new_id == teller else None)
        tx.put(ROTATIONS, old.encode(), record.encode())
    out: dict[str, Any] = {"followed": True, "old": old, "until": record.until}
    return out | ({"link": mine.to_json()} if mine is not None else {})


def _check_prior(prior: Rotation | None, new: str) -> None:
    if prior is not None and prior.own:  # this node's own old key: a copy of it talks
        raise BadChain("that rotation is this node's own")
    if prior is not None and prior.new != new:
        raise ForkedChain(f"{prior.old} was renewed to another key before")


def compromised_after(entries: list[Entry], old: str) -> int | None:
    """The earliest time a live ``key-compromised`` claim of the chain gives for ``old``."""
    times = [
        e.payload["after"]
        for e in entries
        if e.typ == COMPROMISED
        and e.sub == old
        and type(e.payload.get("after")) is int
        and e.payload["after"] >= 0
    ]
    return min(times) if times else None


def _move_origins(tx: Transaction, vaults: Vaults, old: str, new: str) -> None:
    """Clones whose origin is ``old`` come from ``new`` now; a writer ``old`` named, ``new``
    writes too."""
    for info in vaults.all():
        origin = dict(info.origin)
        if not origin:
            continue
        writers = origin.get("writers", "").split()
        if origin.get("node_id") != old and old not in writers:
            continue
        if origin.get("node_id") == old:
            origin["node_id"] = new
        if old in writers or "writers" in origin:
            origin["writers"] = " ".join(sorted({*writers, new} if old in writers else writers))
        vaults.set_origin(info.name, origin, tx)
