"""The sigchain: a node's append-only, hash-linked list of signed claims (docs/spec/sigchain.md).

This module is the public face of the sigchain: ``Sigchain`` (this node's own chain),
``PeerChains`` (verified copies of other nodes' chains, trust/sigchain_peers.py), the pure
``verify_chain``/``verify_entry``/``chain_state`` (trust/sigchain_chain.py) and the entry
itself (trust/sigchain_entry.py).

This node's chain is kept sealed in the mutable namespace ``trust/sigchain`` (key: seq as 8
bytes big-endian; value: the entry's stored form), so dropping its last entries is detected as
a rollback like any record's. An entry is verified before it is stored; reads are cached by the
node file's epoch and take only what another process appended meanwhile.

Claims signed by two keys (link-node, delegate) take a round trip: ``prepare`` (this node
signs the draft at its chain's next place), the other node's ``countersign`` (after checking
the draft names it), then ``append_draft`` (both signatures checked; a chain that moved on
meanwhile is StaleDraft: draft again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from polykey.errors import InvalidInput, NodeDamaged
from polykey.ids import NodeId, encode_node_id
from polykey.keys.root import RootKey
from polykey.store.nodefile import Damage, NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.trust.jws import new_claim_id
from polykey.trust.sigchain_chain import (
    MAX_PAGE,
    ChainState,
    Claimed,
    chain_state,
    check_rotation,
    check_signatures,
    reload_chain,
    verify_chain,
    verify_entry,
)
from polykey.trust.sigchain_entry import (
    DELEGATE,
    LINK_IDENTITY,
    LINK_NODE,
    MAX_ENTRY,
    RESERVED,
    REVOKE,
    ROTATE_KEY,
    TWO_PARTY,
    BadChain,
    Entry,
    Head,
    Problem,
    add_signature,
    parse,
    sign_claim,
)
from polykey.trust.sigchain_peers import Fork, Forked, ForkedChain, PeerChains, prove_fork

__all__ = [
    "DELEGATE",
    "LINK_IDENTITY",
    "LINK_NODE",
    "MAX_ENTRY",
    "MAX_PAGE",
    "REVOKE",
    "ROTATE_KEY",
    "SIGCHAIN",
    "BadChain",
    "ChainState",
    "Claimed",
    "Draft",
    "Entry",
    "Fork",
    "Forked",
    "ForkedChain",
    "Head",
    "PeerChains",
    "Sigchain",
    "StaleDraft",
    "chain_state",
    "check_rotation",
    "countersign",
    "prove_fork",
    "verify_chain",
    "verify_entry",
]

SIGCHAIN = Namespace("trust/sigchain")


class StaleDraft(BadChain):
    """The sigchain moved on since the claim was drafted"""

    hint = "Draft the claim again (run the command again): it must name the chain's last entry."


def seq_key(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


@dataclass(frozen=True)
class Draft:
    """A two-party claim signed by this node alone, to send to the other node (``doc``)."""

    doc: dict[str, Any]
    seq: int
    jti: str
    typ: str
    sub: str


def countersign(
    doc: object, key: RootKey, *, typ: str = LINK_NODE, issuer: NodeId | None = None
) -> dict[str, Any]:
    """The other node's side of a two-party claim: ``doc`` (a draft by ``issuer``, when given)
    checked to be a ``typ`` claim naming ``key``'s node as its subject, signed by its issuer,
    and returned with ``key``'s signature added. Anything else is BadChain."""
    try:
        entry, work = parse(doc, partial=True)
    except Problem as exc:
        raise BadChain(f"the draft: {exc}") from None
    if entry.typ != typ or typ not in TWO_PARTY or entry.starts_rotated:
        raise BadChain(f"the draft is not a {typ} claim")
    if entry.sub != encode_node_id(key.node_id):
        raise BadChain("the draft names another node than this one")
    if issuer is not None and entry.iss != encode_node_id(issuer):
        raise BadChain("the draft was issued by another node than the one it comes from")
    check_signatures(entry, work, "the draft")
    assert isinstance(doc, dict)
    return add_signature(doc, key)


class Sigchain:
    """This node's own chain; made by the Node, which owns it."""

    def __init__(self, store: NodeFile, key: RootKey, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.key = key
        self.node_id = key.node_id
        self.now = now
        self._epoch = -1
        self._cache: list[Entry] = []

    def __repr__(self) -> str:
        return f"Sigchain({encode_node_id(self.node_id)})"

    # --- reading ---------------------------------------------------------------------------------

    def entries(self, since: int = 0) -> list[Entry]:
        """The entries from seq ``since`` on (all of them by default), in chain order."""
        return self._load()[max(0, since - 1) :]

    def head(self) -> Head | None:
        entries = self._load()
        return Head.of(entries[-1]) if entries else None

    def docs(
        self, since: int = 0, limit: int = MAX_PAGE, *, max_chars: int = 0
    ) -> list[dict[str, Any]]:
        """A page to serve: the documents of at most ``limit`` entries from seq ``since`` on
        (and, with ``max_chars``, no more stored characters than that, but at least one)."""
        return page(self._load(), since, limit, max_chars)

    def state(self) -> ChainState:
        return chain_state(self._load())

    def check(self) -> list[Damage]:
        """The chain verified from its start, signatures included (`pk node check`)."""
        try:
            items = self.store.items(SIGCHAIN)
            _contiguous(items)
            verify_chain(self.node_id, [_doc(raw) for _, raw in items])
        except (BadChain, NodeDamaged) as exc:
            return [Damage(SIGCHAIN.name, exc.message)]
        return []

    # --- appending -------------------------------------------------------------------------------

    def append(
        self, typ: str, fields: Mapping[str, Any] | None = None, *, tx: Transaction | None = None
    ) -> Entry:
        """Sign and append a claim of this node alone (``fields``: ``sub`` and the type's own;
        the chain's fields are filled in here); within ``tx`` when given (it lands with the
        rest of that transaction)."""
        if typ in TWO_PARTY:
            raise InvalidInput(
                f"a {typ} claim is signed by two keys",
                hint="Draft it with prepare, have the other key countersign, then append_draft.",
            )
        if tx is None:
            with self.store.write() as own:
                return self.append(typ, fields, tx=own)
        entries = self._load()
        doc = sign_claim(self.key, self._claim(typ, fields or {}, entries))
        entry = verify_chain(self.node_id, [doc], earlier=entries)[0]
        tx.put(SIGCHAIN, seq_key(entry.seq), entry.raw)
        return entry

    def revoke(self, jti: str) -> Entry:
        """Append a revocation of this chain's claim ``jti``."""
        entries = self._load()
        target = next((e for e in entries if e.jti == jti), None)
        if target is None:
            raise InvalidInput("this node's sigchain holds no claim of that jti")
        if target.typ in (REVOKE, ROTATE_KEY) or jti in chain_state(entries).revoked:
            raise InvalidInput(f"that claim cannot be revoked (a {target.typ}, or revoked already)")
        return self.append(REVOKE, {"sub": jti})

    def prepare(self, typ: str, fields: Mapping[str, Any]) -> Draft:
        """A two-party claim (link-node, delegate) signed by this node at the chain's next
        place, for the other node to countersign."""
        if typ not in (LINK_NODE, DELEGATE):
            raise InvalidInput(f"{typ} is not a claim drafted for another node to countersign")
        entries = self._load()
        doc = sign_claim(self.key, self._claim(typ, fields, entries))
        try:
            entry, _ = parse(doc, partial=True)
        except Problem as exc:
            raise BadChain(f"the draft: {exc}") from None
        return Draft(doc, entry.seq, entry.jti, entry.typ, entry.sub)

    def prepare_link(self, other: NodeId) -> Draft:
        return self.prepare(LINK_NODE, {"sub": encode_node_id(other)})

    def append_draft(self, doc: object) -> Entry:
        """Append a draft of this node's, countersigned by the other node: both signatures
        checked, and its place still the chain's next (else StaleDraft)."""
        try:
            entry, _ = parse(doc)
        except Problem as exc:
            raise BadChain(f"the countersigned claim: {exc}") from None
        if entry.iss != encode_node_id(self.node_id):
            raise BadChain("the countersigned claim was not drafted by this node")
        with self.store.write() as tx:
            entries = self._load()
            head = Head.of(entries[-1]) if entries else None
            if entry.seq != (head.seq if head else 0) + 1 or entry.prev_digest != (
                head.digest if head else None
            ):
                raise StaleDraft(f"it was drafted as entry {entry.seq}")
            entry = verify_chain(self.node_id, [doc], earlier=entries)[0]
            tx.put(SIGCHAIN, seq_key(entry.seq), entry.raw)
        return entry

    def rotate(self, new_key: RootKey) -> tuple[Entry, dict[str, Any]]:
        """Close this chain with a rotate-key to ``new_key`` (signed by both keys), and make
        the first entry of the new key's chain (signed by both, linked to the closing one),
        for the new key's Sigchain to ``begin`` with."""
        with self.store.write() as tx:
            _, closing, opening = self.rotation(new_key)
            tx.put(SIGCHAIN, seq_key(closing.seq), closing.raw)
        return closing, opening.doc()

    def rotation(self, new_key: RootKey) -> tuple[list[Entry], Entry, Entry]:
        """The entries of this chain, the rotate-key to ``new_key`` that would close it, and
        the first entry of the new key's chain (each signed by both keys, checked to belong
        together); nothing is stored."""
        new = encode_node_id(new_key.node_id)
        entries = self._load()
        claim = self._claim(ROTATE_KEY, {"sub": new}, entries)
        doc = add_signature(sign_claim(self.key, claim), new_key)
        closing = verify_chain(self.node_id, [doc], earlier=entries)[0]
        first: dict[str, Any] = {"typ": ROTATE_KEY, "iss": new, "sub": new, "seq": 1}
        first |= {"prevClaimId": closing.jti, "prevDigest": closing.digest}
        first |= {"iat": int(self.now()), "jti": new_claim_id(), "from": closing.iss}
        opening = verify_chain(
            new_key.node_id, [add_signature(sign_claim(new_key, first), self.key)]
        )
        check_rotation(closing, opening[0])
        return entries, closing, opening[0]

    def restart(self, tx: Transaction, opening: Entry) -> None:
        """Within ``tx``: drop this chain's entries and start the chain again with
        ``opening``, the first entry of the new key's chain (a key renewal: the old chain is
        kept as another node's, trust/rotation.py). The Node then makes a Sigchain of the new
        key."""
        for key in self.store.keys(SIGCHAIN):
            tx.delete(SIGCHAIN, key)
        tx.put(SIGCHAIN, seq_key(1), opening.raw)
        self._epoch, self._cache = -1, []

    def begin(self, doc: object) -> Entry:
        """Start an empty chain with ``doc`` (the first entry ``rotate`` made for this key)."""
        with self.store.write() as tx:
            if self._load():
                raise InvalidInput("this node's sigchain is not empty")
            entry = verify_chain(self.node_id, [doc])[0]
            tx.put(SIGCHAIN, seq_key(entry.seq), entry.raw)
        return entry

    # --- inside ----------------------------------------------------------------------------------

    def _claim(self, typ: str, fields: Mapping[str, Any], entries: list[Entry]) -> dict[str, Any]:
        taken = sorted(set(fields) & set(RESERVED))
        if taken:
            raise InvalidInput(f"the chain fills in {', '.join(taken)} itself")
        if entries and entries[-1].closes:
            raise BadChain("this node's sigchain was closed by a rotate-key entry")
        head = entries[-1] if entries else None
        claim = dict(fields)
        claim |= {"typ": typ, "iss": encode_node_id(self.node_id)}
        claim |= {"seq": head.seq + 1 if head else 1, "iat": int(self.now())}
        claim |= {"prevClaimId": head.jti if head else None}
        claim |= {"prevDigest": head.digest if head else None, "jti": new_claim_id()}
        return claim

    def _load(self) -> list[Entry]:
        """The chain, read again only when the node file changed, and then only what was
        appended (entries are never rewritten; a rollback is caught by the node file)."""
        with self.store.snapshot():
            epoch = self.store.epoch
            if epoch == self._epoch:
                return list(self._cache)
            keys = self.store.keys(SIGCHAIN)
            held = self._cache
            if keys[: len(held)] != [seq_key(e.seq) for e in held]:
                held = []
            new = self.store.get_many(SIGCHAIN, keys[len(held) :])
        items = list(zip(keys[len(held) :], new, strict=True))
        try:
            _contiguous(items, len(held))
            docs = [_doc(raw) for _, raw in items if isinstance(raw, bytes)]
            entries = held + reload_chain(self.node_id, docs, held)
        except BadChain as exc:
            raise NodeDamaged(f"{SIGCHAIN.name}: {exc.detail}") from None
        self._cache, self._epoch = entries, epoch
        return list(entries)


def page(entries: list[Entry], since: int, limit: int, max_chars: int = 0) -> list[dict[str, Any]]:
    """The documents of at most ``limit`` of ``entries`` from seq ``since`` on."""
    out: list[dict[str, Any]] = []
    size = 0
    start = max(0, since - 1)
    for entry in entries[start : start + max(0, limit)]:
        size += len(entry.raw)
        if max_chars and out and size > max_chars:
            break
        out.append(entry.doc())
    return out


def _contiguous(items: list[tuple[bytes, Any]], before: int = 0) -> None:
    for index, (key, raw) in enumerate(items, start=before + 1):
        if key != seq_key(index) or not isinstance(raw, bytes):
            raise BadChain(f"entry {index} is missing")


def _doc(raw: bytes) -> object:
    import json

    try:
        return json.loads(raw)
    except ValueError:
        return None
