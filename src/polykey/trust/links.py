"""Own nodes: a link is a pair of signed statements, each node signing the other's NodeId.

A statement is a JWS (RFC 7515) in flattened JSON serialization, the envelope the sigchain of
the trust issue uses for its claims (docs/spec/links.md)::

    {"protected": b64url(JCS({"alg": "EdDSA", "kid": signer NodeId})),
     "payload":   b64url(JCS({"typ": "link-node" | "unlink-node", "iss": signer NodeId,
                              "sub": the other NodeId, "iat": unix seconds, "jti": claim id})),
     "signature": b64url(Ed25519(ASCII(protected "." payload)))}

JCS is RFC 8785 canonical JSON (the ``rfc8785`` package); a statement whose header or payload
is not exactly its canonical form is refused, so one claim has one encoding.

What this node knows of each other node is one record of the mutable namespace
``trust/links`` (key: that NodeId): ``pending`` (this node signed and asked; the other has not
confirmed), ``offered`` (the other signed and asked; this node has not confirmed), ``linked``
(both statements held) or ``unlinked`` (a link ended; the unlink statement is kept). Both
statements are verified on every read (memoised by their exact bytes); one that does not verify
makes the record ``damaged``: not linked, and named by ``check`` (`pk node check`).

The Node owns the one ``Links``; the ACL asks it ``is_mine``; the network flow (asking the
other node) is the Node's (node.py), the answering side the peer methods' (sync/server.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from polykey.crypto.signing import SIGNATURE_BYTES, verify
from polykey.errors import InvalidInput, InvalidNodeId, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.keys.root import RootKey
from polykey.store.nodefile import Damage, NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.trust import jws
from polykey.trust.jws import JwsError, b64url, canonical, new_claim_id

LINKS = Namespace("trust/links")
LINK = "link-node"
UNLINK = "unlink-node"
ALG = "EdDSA"
MAX_STATEMENT = 4096  # characters of protected + payload + signature together
MAX_OFFERS = 32  # offers kept from nodes this node has not linked; the oldest goes first
MAX_JTI = 128
_MEMO = 256  # verified statements remembered by their bytes

PENDING, OFFERED, LINKED, UNLINKED, DAMAGED = "pending", "offered", "linked", "unlinked", "damaged"
STATES = (PENDING, OFFERED, LINKED, UNLINKED)


class BadStatement(InvalidInput):
    """Not a valid signed statement."""

    hint = "A link statement is the JWS `pk nodes link` sends (docs/spec/links.md)."


class BadAnswer(PolykeyError):
    """The other node's answer to the link was refused"""

    exit_code = 53
    hint = "Run `pk nodes link` again; if it persists, the other node runs a faulty Polykey."


class NotLinked(PolykeyError):
    """This node has no link with that node."""

    exit_code = 56
    hint = "See your nodes, and the requests to link, with `pk nodes mine`."


# --- statements ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """The payload of a statement (the fields this version reads; others are kept, unread)."""

    typ: str
    iss: str
    sub: str
    iat: int
    jti: str


@dataclass(frozen=True)
class Statement:
    """One signed statement, exactly as it travels and is kept: JWS flattened JSON."""

    protected: str
    payload: str
    signature: str

    def to_json(self) -> dict[str, str]:
        return {"protected": self.protected, "payload": self.payload, "signature": self.signature}

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected}.{self.payload}".encode("ascii")


def _b64url_decode(text: str, what: str) -> bytes:
    """Strict base64url without padding (trust/jws.py), refused as a BadStatement."""
    try:
        return jws.b64url_decode(text, what)
    except JwsError as exc:
        raise BadStatement(str(exc)) from None


def _canonical_object(raw: bytes, what: str) -> dict[str, Any]:
    """The object ``raw`` holds in its RFC 8785 form (trust/jws.py), or BadStatement."""
    try:
        return jws.canonical_object(raw, what)
    except JwsError as exc:
        raise BadStatement(str(exc)) from None


def sign(
    key: RootKey, typ: str, sub: NodeId, *, now: int | None = None, jti: str | None = None
) -> Statement:
    """``key``'s statement ``typ`` about ``sub`` (``now`` and ``jti`` fixed: test vectors)."""
    issuer = encode_node_id(key.node_id)
    iat = int(time.time()) if now is None else now
    header = {"alg": ALG, "kid": issuer}
    claim: dict[str, Any] = {"typ": typ, "iss": issuer, "sub": encode_node_id(sub), "iat": iat}
    claim["jti"] = jti if jti is not None else new_claim_id()
    protected, payload = b64url(canonical(header)), b64url(canonical(claim))
    signature = key.signing.sign(f"{protected}.{payload}".encode("ascii"))
    return Statement(protected, payload, b64url(signature))


def parse(doc: object) -> tuple[Statement, Claim]:
    """A statement as received: its shape, size, encodings and signature (by the key its
    ``kid`` names, which must be its ``iss``); not yet what it says (``expect``)."""
    if not isinstance(doc, dict) or set(doc) != {"protected", "payload", "signature"}:
        raise BadStatement("it must be an object of protected, payload and signature")
    if not all(isinstance(v, str) for v in doc.values()):
        raise BadStatement("its protected, payload and signature must be text")
    statement = Statement(doc["protected"], doc["payload"], doc["signature"])
    size = len(statement.protected) + len(statement.payload) + len(statement.signature)
    if size > MAX_STATEMENT:
        raise BadStatement(f"it is longer than {MAX_STATEMENT} characters")
    raw_header = _b64url_decode(statement.protected, "header")
    raw_payload = _b64url_decode(statement.payload, "payload")
    signature = _b64url_decode(statement.signature, "signature")
    header = _canonical_object(raw_header, "header")
    payload = _canonical_object(raw_payload, "payload")
    if header.get("alg") != ALG or "crit" in header:
        raise BadStatement(f"its header must name the algorithm {ALG} and nothing critical")
    claim = _claim(payload)
    if header.get("kid") != claim.iss:
        raise BadStatement("its key id is not its issuer")
    if len(signature) != SIGNATURE_BYTES or not verify(
        bytes(decode_node_id(claim.iss)), statement.signing_input, signature
    ):
        raise BadStatement("its signature does not verify")
    return statement, claim


def _claim(payload: dict[str, Any]) -> Claim:
    typ, iss, sub = payload.get("typ"), payload.get("iss"), payload.get("sub")
    iat, jti = payload.get("iat"), payload.get("jti")
    if not isinstance(typ, str) or not isinstance(iss, str) or not isinstance(sub, str):
        raise BadStatement("its payload must name typ, iss and sub as text")
    if not isinstance(iat, int) or isinstance(iat, bool) or iat < 0:
        raise BadStatement("its payload must hold iat, a time in whole seconds")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise BadStatement("its payload must hold jti, an id of 1 to 128 characters")
    for who in (iss, sub):
        try:
            decode_node_id(who)
        except InvalidNodeId:
            raise BadStatement("its iss and sub must be NodeIds") from None
    return Claim(typ, iss, sub, iat, jti)


def expect(claim: Claim, typ: str, iss: NodeId, sub: NodeId) -> None:
    """Refuse a verified statement that does not say what it is taken for."""
    if claim.iss != encode_node_id(iss):
        raise BadStatement("it was issued by another node than the one it comes from")
    if claim.sub != encode_node_id(sub):
        raise BadStatement("it names another node than this one")
    if claim.typ != typ:
        raise BadStatement(f"it is not a {typ} statement")


# --- the records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """What this node holds about one other node."""

    node_id: str
    state: str  # one of STATES, or "damaged"
    at: int  # when it entered that state, unix nanoseconds
    mine: Statement | None = None
    theirs: Statement | None = None
    problem: str = ""  # why it is damaged

    @property
    def id(self) -> NodeId:
        return decode_node_id(self.node_id)

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"node_id": self.node_id, "state": self.state}
        doc["since"] = self.at // 1_000_000_000
        if self.problem:
            doc["problem"] = self.problem
        return doc


class Links:
    """This node's links with its other nodes; made by the Node, which owns it."""

    def __init__(self, store: NodeFile, key: RootKey) -> None:
        self.store = store
        self.key = key
        self.node_id = key.node_id
        self._verified: dict[tuple[str, str, str], Claim] = {}

    def __repr__(self) -> str:
        return f"Links({encode_node_id(self.node_id)})"

    # --- reading ---------------------------------------------------------------------------------

    def is_mine(self, node_id: NodeId) -> bool:
        """Whether ``node_id`` is linked: both statements held, and both verify now."""
        entry = self.entry(node_id)
        return entry is not None and entry.state == LINKED

    def mine(self) -> list[NodeId]:
        """The linked nodes, by NodeId."""
        return [e.id for e in self.entries() if e.state == LINKED]

    def entry(self, node_id: NodeId) -> Entry | None:
        text = encode_node_id(node_id)
        raw = self.store.get(LINKS, text.encode())
        return None if raw is None else self._load(text, raw)

    def entries(self) -> list[Entry]:
        return [self._load(k.decode(errors="replace"), v) for k, v in self.store.items(LINKS)]

    def states(self) -> list[dict[str, Any]]:
        """Every node this node has a record of, with its state (docs/spec/links.md)."""
        return [e.as_json() for e in self.entries()]

    def check(self) -> list[Damage]:
        """The records whose statements do not verify, by name."""
        return [Damage(f"{LINKS.name}/{e.node_id}", e.problem) for e in self.entries() if e.problem]

    # --- this node's wishes ---------------------------------------------------------------------

    def link(self, node_id: NodeId) -> tuple[Statement, str]:
        """Sign the link to ``node_id`` (or keep the one signed before): the statement to send
        it, and the state now: ``linked`` when it had asked already, else ``pending``."""
        self._not_itself(node_id)
        with self.store.write() as tx:
            entry = self.entry(node_id)
            if entry is not None and entry.state in (PENDING, LINKED) and entry.mine is not None:
                return entry.mine, entry.state
            mine = sign(self.key, LINK, node_id)
            if entry is not None and entry.state == OFFERED:
                self._put(tx, node_id, LINKED, mine, entry.theirs)
                return mine, LINKED
            self._put(tx, node_id, PENDING, mine, None)
            return mine, PENDING

    def answered(self, node_id: NodeId, mine: Statement, reply: dict[str, Any]) -> str:
        """The other node's answer to ``mine`` (``{"linked", "statement"}``): completes the
        link, or, when it does not hold the link any more, takes this one back to pending.
        A state changed meanwhile (an unlink while the call waited) is left as it is."""
        linked = reply.get("linked")
        if not isinstance(linked, bool):
            raise BadStatement("it says neither linked nor not")
        theirs = None
        if linked:
            theirs = self._verify(reply.get("statement"), LINK, node_id, self.node_id)
        with self.store.write() as tx:
            entry = self.entry(node_id)
            if entry is None or entry.mine != mine or entry.state not in (PENDING, LINKED):
                return entry.state if entry is not None else UNLINKED
            if theirs is not None and entry.state == PENDING:
                self._put(tx, node_id, LINKED, mine, theirs)
                return LINKED
            if theirs is None and entry.state == LINKED:
                self._put(tx, node_id, PENDING, mine, None)
                return PENDING
            return entry.state

    def unlink(self, node_id: NodeId) -> tuple[str, Statement | None]:
        """End the link with ``node_id``, withdraw this node's request, or decline its offer:
        the state it was in, and the unlink statement to send it (None: nothing to tell). A
        link that ends leaves its unlink statement; a request or an offer leaves nothing."""
        self._not_itself(node_id)
        with self.store.write() as tx:
            entry = self.entry(node_id)
            if entry is None:
                raise NotLinked(encode_node_id(node_id))
            if entry.state == UNLINKED:  # again: tell it again, if this node ended it
                return UNLINKED, entry.mine
            statement = sign(self.key, UNLINK, node_id)
            if entry.state in (LINKED, DAMAGED):
                self._put(tx, node_id, UNLINKED, statement, None)
            else:
                tx.delete(LINKS, entry.node_id.encode())
            return entry.state, statement

    # --- what other nodes send -----------------------------------------------------------------

    def accept(self, doc: object, peer: NodeId) -> tuple[str, Statement | None]:
        """``peer``'s link statement (``peer`` proved who it is): the state now, and this
        node's statement when linked. A node this one asked becomes linked; any other
        becomes an offer (at most MAX_OFFERS kept, the oldest dropped). A damaged record is
        not changed by a peer."""
        self._not_itself(peer)
        theirs = self._verify(doc, LINK, peer, self.node_id)
        with self.store.write() as tx:
            entry = self.entry(peer)
            if entry is not None and entry.state == LINKED:
                return LINKED, entry.mine
            if entry is not None and entry.state == PENDING:
                self._put(tx, peer, LINKED, entry.mine, theirs)
                return LINKED, entry.mine
            if entry is not None and entry.state == DAMAGED:
                return DAMAGED, None
            if entry is None or entry.state != OFFERED:
                self._bound_offers(tx)
            self._put(tx, peer, OFFERED, None, theirs)
            return OFFERED, None

    def unlinked_by(self, doc: object, peer: NodeId) -> bool:
        """``peer``'s unlink statement: a link ends (its statement is kept), a request or an
        offer between the two is dropped. Whether there was anything to end."""
        self._not_itself(peer)
        theirs = self._verify(doc, UNLINK, peer, self.node_id)
        with self.store.write() as tx:
            entry = self.entry(peer)
            if entry is None or entry.state in (UNLINKED, DAMAGED):
                return False
            if entry.state == LINKED:
                self._put(tx, peer, UNLINKED, None, theirs)
            else:
                tx.delete(LINKS, entry.node_id.encode())
            return True

    # --- key renewal (trust/rotation.py) ---------------------------------------------------------

    def rekey(self, tx: Transaction, new_key: RootKey) -> list[NodeId]:
        """Within ``tx`` (this node renews its key to ``new_key``): each link and request is
        signed again by the new key and waits (``pending``) for the other node to sign back,
        which it does when told of the renewal (``moved``); an ended link keeps an unlink
        statement of the new key; offers made to the old key are dropped. The nodes asked."""
        asked = []
        for entry in self.entries():
            other, place = entry.id, entry.node_id.encode()
            if entry.state in (LINKED, PENDING):
                self._put(tx, other, PENDING, sign(new_key, LINK, other), None)
                asked.append(other)
            elif entry.state == UNLINKED:
                self._put(tx, other, UNLINKED, sign(new_key, UNLINK, other), None)
            elif entry.state == OFFERED:
                tx.delete(LINKS, place)
        return asked

    def moved(self, tx: Transaction, old: NodeId, new: NodeId, doc: object) -> Statement | None:
        """Within ``tx`` (``old`` renewed its key to ``new``, the rotation checked): a link
        with ``old`` moves to ``new`` when ``doc`` is ``new``'s link statement; this node's
        statement for ``new`` is returned (the other node completes its side with it). No
        link with ``old``: None, nothing changes."""
        entry = self.entry(old)
        if entry is None or entry.state != LINKED or doc is None:
            return None
        theirs = self._verify(doc, LINK, new, self.node_id)
        mine = sign(self.key, LINK, new)
        tx.delete(LINKS, entry.node_id.encode())
        self._put(tx, new, LINKED, mine, theirs)
        return mine

    # --- inside -----------------------------------------------------------------------------------

    def _not_itself(self, node_id: NodeId) -> None:
        if node_id == self.node_id:
            raise InvalidInput(
                "a node cannot link to itself",
                hint="Give the NodeId of your other node (`pk keys public` there prints it).",
            )

    def _bound_offers(self, tx: Transaction) -> None:
        """Room for one more offer: drop the oldest beyond MAX_OFFERS - 1."""
        offers = sorted((e.at, e.node_id) for e in self.entries() if e.state == OFFERED)
        for _, node in offers[: max(0, len(offers) + 1 - MAX_OFFERS)]:
            tx.delete(LINKS, node.encode())

    def _put(
        self,
        tx: Transaction,
        node_id: NodeId,
        state: str,
        mine: Statement | None,
        theirs: Statement | None,
    ) -> None:
        doc = {
            "state": state,
            "at": time.time_ns(),
            "mine": mine.to_json() if mine is not None else None,
            "theirs": theirs.to_json() if theirs is not None else None,
        }
        tx.put(LINKS, encode_node_id(node_id).encode(), json.dumps(doc, sort_keys=True).encode())

    def _verify(self, doc: object, typ: str, iss: NodeId, sub: NodeId) -> Statement:
        """``doc`` as a statement ``typ`` by ``iss`` about ``sub``, or BadStatement; statements
        verified once are remembered by their exact text."""
        if isinstance(doc, dict) and all(isinstance(doc.get(k), str) for k in _FIELDS):
            key = (doc["protected"], doc["payload"], doc["signature"])
            claim = self._verified.get(key)
            if claim is not None and len(doc) == len(_FIELDS):
                expect(claim, typ, iss, sub)
                return Statement(*key)
        statement, claim = parse(doc)
        expect(claim, typ, iss, sub)
        if len(self._verified) >= _MEMO:
            self._verified.clear()
        self._verified[(statement.protected, statement.payload, statement.signature)] = claim
        return statement

    def _load(self, text: str, raw: bytes) -> Entry:
        """A record, its statements verified; a record that does not hold together is
        ``damaged`` (not linked), with the reason."""
        try:
            other = decode_node_id(text)
            doc = json.loads(raw)
            state, at = doc["state"], doc["at"]
            if state not in STATES or not isinstance(at, int):
                raise ValueError(state)
        except (InvalidNodeId, ValueError, KeyError, TypeError):
            return Entry(text, DAMAGED, 0, problem="the link record is malformed")
        typ, need_mine, need_theirs = _SHAPES[state]
        statements: dict[str, Statement | None] = {}
        for side, iss, sub, need in (
            ("mine", self.node_id, other, need_mine),
            ("theirs", other, self.node_id, need_theirs),
        ):
            value = doc.get(side)
            if value is None:
                if need:
                    return Entry(text, DAMAGED, at, problem=f"the {_WHOSE[side]} is missing")
                statements[side] = None
                continue
            if need is False:
                return Entry(text, DAMAGED, at, problem=f"a {state} link holds {_WHOSE[side]}")
            try:
                statements[side] = self._verify(value, typ, iss, sub)
            except BadStatement as exc:
                return Entry(text, DAMAGED, at, problem=f"the {_WHOSE[side]}: {exc.detail}")
        if state == UNLINKED and statements["mine"] is None and statements["theirs"] is None:
            return Entry(text, DAMAGED, at, problem="an ended link holds no unlink statement")
        return Entry(text, state, at, statements["mine"], statements["theirs"])


_FIELDS = ("protected", "payload", "signature")
# per state: the type of its statements, and whether this node's and the other's must be there
# (True), must not be (False), or may be (None)
_SHAPES: dict[str, tuple[str, bool | None, bool | None]] = {
    PENDING: (LINK, True, False),
    OFFERED: (LINK, False, True),
    LINKED: (LINK, True, True),
    UNLINKED: (UNLINK, None, None),  # either or both
}
_WHOSE = {"mine": "statement of this node", "theirs": "statement of the other node"}
