"""Verified copies of other nodes' sigchains, and a high-water mark per node.

Entries are kept sealed in the write-once namespace ``trust/peer-chains`` (key: the node's 32
raw NodeId bytes then seq as 8 bytes big-endian; value: the entry's stored form) and the mark
in the mutable namespace ``trust/chain-marks`` (key: NodeId text; value: JSON {"seq", "jti",
"digest", "closed", "chars"}, and "fork" once the node was caught signing two histories). The
mark is versioned like any mutable record, so the copy cannot be rolled back behind it; an
entry missing below the mark is damage.

A page a node serves must continue the copy held: entries it repeats must be the very ones held,
and a node that says its chain is shorter than the mark, or serves another entry at a seq held
(a fork), is ForkedChain. The copy held is kept as it was, never replaced. When the node's own
signatures prove the fork (another entry at a seq held, or an entry after the last one held
that names another entry before it: ``Fork``), the proof is kept in the mark; from then on the
node's pages are refused and gestalts leave it out (trust/gestalts.py) until the user forgets
the copy (``forget``, `pk sigchain forget`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from polykey.errors import NodeDamaged, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.store.nodefile import Damage, NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.trust.sigchain_chain import (
    MAX_PAGE,
    ChainState,
    chain_state,
    reload_chain,
    verify_chain,
    verify_entry,
)
from polykey.trust.sigchain_entry import BadChain, Entry, Head

PEER_CHAINS = Namespace("trust/peer-chains", immutable=True)
MARKS = Namespace("trust/chain-marks")
MAX_ENTRIES = 100_000  # entries kept of one node's chain
MAX_CHARS = 64 * 2**20  # stored characters kept of one node's chain
MAX_TOTAL_CHARS = 512 * 2**20  # of all the chains kept together
_CACHED = 200_000  # entries kept in memory over all nodes


class ForkedChain(BadChain):
    """The node's sigchain does not continue the copy held"""

    exit_code = 59
    hint = (
        "The node served a shorter chain, or another entry where one was seen before: it "
        "rewrote its history. The copy held is kept; do not trust the node's new claims."
    )

    def __init__(self, detail: str = "", *, fork: Fork | None = None) -> None:
        super().__init__(detail)
        self.fork = fork  # the node's own signatures proving it, when they do


class Forked(ForkedChain):
    """The node signed two different histories of its sigchain"""

    hint = (
        "Someone holds a copy of its key, or it was restored from an old copy and went on. It "
        "is refused wherever a gestalt or identity would admit it; `pk sigchain show NODEID` "
        "shows both entries. Once it is settled, `pk sigchain forget NODEID --yes`."
    )


@dataclass(frozen=True)
class Fork:
    """Proof that a node signed two histories (docs/spec/sigchain.md, "Forks"): ``held``, the
    entry ``seq`` of its chain as held, and ``served``, another entry ``seq`` or an entry
    ``seq + 1`` naming another entry before it; both verify as signed by the node."""

    seq: int
    held: dict[str, Any]
    served: dict[str, Any]
    at: int  # unix seconds: when it was seen

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "held": self.held, "served": self.served, "at": self.at}


def prove_fork(node_id: NodeId, held: object, served: object) -> int:
    """The seq at which the two documents prove that ``node_id`` signed two histories, or
    BadChain saying why they do not: each must verify as an entry issued by that node, and
    ``served`` must be another entry at ``held``'s seq, or the entry after it naming another
    entry before it."""
    node = encode_node_id(node_id)
    a, b = verify_entry(held), verify_entry(served)
    if a.iss != node or b.iss != node:
        raise BadChain("the fork: both entries must be issued by the node")
    if b.seq == a.seq and b.digest != a.digest:
        return a.seq
    if b.seq == a.seq + 1 and b.prev_digest != a.digest:
        return a.seq
    raise BadChain("the fork: the two entries do not show two histories")


def entry_key(node_id: NodeId, seq: int) -> bytes:
    return bytes(node_id) + seq.to_bytes(8, "big")


class PeerChains:
    """What this node holds of other nodes' chains; made by the Node, which owns it."""

    def __init__(self, store: NodeFile, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.now = now
        self._cache: dict[bytes, tuple[str, list[Entry]]] = {}  # NodeId -> (head digest, chain)

    def __repr__(self) -> str:
        return "PeerChains()"

    # --- reading ---------------------------------------------------------------------------------

    def nodes(self) -> list[NodeId]:
        """The nodes whose chains are held."""
        out = []
        for key in self.store.keys(MARKS):
            try:
                out.append(decode_node_id(key.decode("ascii", errors="replace")))
            except PolykeyError:
                continue
        return out

    def head(self, node_id: NodeId) -> Head | None:
        mark = self._mark(node_id)
        return None if mark is None else mark[0]

    def entries(self, node_id: NodeId, since: int = 0) -> list[Entry]:
        """The copy held of ``node_id``'s chain (entries from seq ``since`` on); empty if none."""
        return self._load(node_id)[max(0, since - 1) :]

    def docs(self, node_id: NodeId, since: int = 0, limit: int = MAX_PAGE) -> list[dict[str, Any]]:
        """The documents of the copy held, as ``node_id`` served them (a page from ``since``)."""
        start = max(0, since - 1)
        return [e.doc() for e in self._load(node_id)[start : start + max(0, limit)]]

    def state(self, node_id: NodeId) -> ChainState:
        return chain_state(self._load(node_id))

    def fork(self, node_id: NodeId) -> Fork | None:
        """The proof that ``node_id`` signed two histories, when it was caught doing so."""
        raw = self.store.get(MARKS, _mark_key(node_id))
        return None if raw is None else _fork_of(raw)

    def forks(self) -> dict[str, Fork]:
        """NodeId text -> the proof of its fork, for every node caught signing two histories."""
        out = {}
        for key, raw in self.store.items(MARKS):
            if b'"fork"' in raw and (found := _fork_of(raw)) is not None:
                out[key.decode("ascii", errors="replace")] = found
        return out

    def check(self) -> list[Damage]:
        """Every copy verified again from its start, signatures included (`pk node check`)."""
        damage = []
        for node_id in self.nodes():
            place = f"{PEER_CHAINS.name}/{encode_node_id(node_id)}"
            try:
                mark = self._mark(node_id)
                raws = self._raws(node_id, mark[0].seq if mark else 0)
                entries = verify_chain(node_id, [_doc(raw) for raw in raws])
                if mark is not None and entries and entries[-1].digest != mark[0].digest:
                    raise BadChain("the copy does not end where its mark says")
                self._check_fork(node_id)
            except (BadChain, NodeDamaged) as exc:
                damage.append(Damage(place, exc.message))
        return damage

    def _check_fork(self, node_id: NodeId) -> None:
        raw = self.store.get(MARKS, _mark_key(node_id)) or b"{}"
        fork = _fork_of(raw)
        if fork is None:
            if "fork" in json.loads(raw):
                raise BadChain("the proof of a fork in its mark is malformed")
            return
        try:
            prove_fork(node_id, fork.held, fork.served)
        except BadChain as exc:
            raise BadChain(f"the proof of a fork in its mark does not hold: {exc.detail}") from None

    # --- taking what a node serves ----------------------------------------------------------------

    def accept(
        self,
        node_id: NodeId,
        docs: Sequence[object],
        *,
        from_seq: int,
        length: int | None = None,
    ) -> ChainState:
        """Take a page of ``node_id``'s chain whose first entry is ``from_seq`` (``length``:
        how long the node says its chain is): verified to continue the copy held, then kept.
        ForkedChain for a shorter chain or another entry at a seq held (Forked, its proof
        kept in the mark, when the node's signatures prove it; and for any page of a node
        caught so before); BadChain for anything else that does not verify; the copy held is
        unchanged by either."""
        known = self.fork(node_id)
        if known is not None:
            raise Forked(f"it signed two different entries {known.seq} before (seen then)")
        for _ in range(3):  # another thread may extend the copy while this page is verified
            held = self._load(node_id)
            try:
                new = self._continuation(node_id, held, docs, from_seq, length)
            except ForkedChain as exc:
                if exc.fork is not None:
                    self._keep_fork(node_id, exc.fork)
                raise
            with self.store.write() as tx:
                mark = self._mark(node_id)
                if self.fork(node_id) is not None:  # caught by another thread meanwhile
                    raise Forked("it signed two different entries before")
                if (mark[0].digest if mark else None) != (held[-1].digest if held else None):
                    continue
                if not new:
                    return chain_state(held)
                chars = (mark[1] if mark else 0) + sum(len(e.raw) for e in new)
                if chars > MAX_CHARS:
                    raise BadChain(f"the chain is longer than the {MAX_CHARS} characters kept")
                if self._total_chars() - (mark[1] if mark else 0) + chars > MAX_TOTAL_CHARS:
                    raise BadChain("the chains held of other nodes have reached their bound")
                for entry in new:
                    tx.put(PEER_CHAINS, entry_key(node_id, entry.seq), entry.raw)
                tx.put(MARKS, _mark_key(node_id), _mark_value(new[-1], chars, None))
            chain = held + new
            self._remember(node_id, chain)
            return chain_state(chain)
        raise BadChain("the copy held kept changing while the page was verified")

    def keep(self, tx: Transaction, node_id: NodeId, entries: Sequence[Entry]) -> None:
        """Within ``tx``: keep ``entries``, the whole chain of ``node_id`` as this node verified
        it (its own chain, closed by a key renewal), past what is held of it."""
        mark = self._mark(node_id)
        held = mark[0].seq if mark else 0
        new = [e for e in entries if e.seq > held]
        if not new:
            return
        chars = (mark[1] if mark else 0) + sum(len(e.raw) for e in new)
        for entry in new:
            tx.put(PEER_CHAINS, entry_key(node_id, entry.seq), entry.raw)
        tx.put(MARKS, _mark_key(node_id), _mark_value(new[-1], chars, self.fork(node_id)))
        self._cache.pop(bytes(node_id), None)

    def forget(self, node_id: NodeId) -> None:
        """Drop the copy held of ``node_id``'s chain (and its mark, a fork's proof with it):
        the node's next chain is taken afresh."""
        with self.store.write() as tx:
            mark = self._mark(node_id)
            for seq in range(1, (mark[0].seq if mark else 0) + 1):
                tx.delete(PEER_CHAINS, entry_key(node_id, seq))
            tx.delete(MARKS, _mark_key(node_id))
        self._cache.pop(bytes(node_id), None)

    # --- inside ----------------------------------------------------------------------------------

    def _continuation(
        self,
        node_id: NodeId,
        held: list[Entry],
        docs: Sequence[object],
        from_seq: int,
        length: int | None,
    ) -> list[Entry]:
        count = len(held)
        if length is not None and length < count:
            raise ForkedChain(f"it serves a chain of {length} entries; {count} were seen before")
        if isinstance(docs, str | bytes) or not isinstance(docs, Sequence):
            raise BadChain("a page of a chain must be a list of entries")
        if not 1 <= from_seq <= count + 1:
            raise BadChain(f"the page starts at entry {from_seq}; the copy held has {count}")
        repeated = min(len(docs), count + 1 - from_seq)
        for offset in range(repeated):
            seq = from_seq + offset
            if docs[offset] != held[seq - 1].doc():
                fork = self._proof(node_id, held[seq - 1], docs[offset])
                detail = f"it serves another entry {seq} than the one seen before"
                raise (Forked if fork else ForkedChain)(detail, fork=fork)
        rest = docs[repeated:]
        if count + len(rest) > MAX_ENTRIES:
            raise BadChain(f"the chain is longer than the {MAX_ENTRIES} entries kept")
        if not rest:
            return []
        try:
            return verify_chain(node_id, rest, earlier=held)
        except BadChain:
            fork = self._proof(node_id, held[-1], rest[0]) if held else None
            if fork is None:
                raise
            detail = f"its entry {count + 1} names another entry {count} than the one seen before"
            raise Forked(detail, fork=fork) from None

    def _proof(self, node_id: NodeId, held: Entry, served: object) -> Fork | None:
        """The proof of a fork ``served`` makes with ``held``, if it is one."""
        try:
            seq = prove_fork(node_id, held.doc(), served)
        except BadChain:
            return None
        return Fork(seq, held.doc(), verify_entry(served).doc(), int(self.now()))

    def _keep_fork(self, node_id: NodeId, fork: Fork) -> None:
        with self.store.write() as tx:
            raw = self.store.get(MARKS, _mark_key(node_id))
            if raw is None or _fork_of(raw) is not None:
                return  # nothing held (no fork can be), or caught before: the first proof kept
            doc = json.loads(raw)
            doc["fork"] = fork.as_json()
            tx.put(MARKS, _mark_key(node_id), json.dumps(doc, sort_keys=True).encode())

    def _mark(self, node_id: NodeId) -> tuple[Head, int] | None:
        raw = self.store.get(MARKS, _mark_key(node_id))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            head = Head(int(doc["seq"]), str(doc["jti"]), str(doc["digest"]), bool(doc["closed"]))
            return head, int(doc["chars"])
        except (ValueError, KeyError, TypeError):
            node = encode_node_id(node_id)
            raise NodeDamaged(f"{MARKS.name}: the mark of {node} is malformed") from None

    def _total_chars(self) -> int:
        total = 0
        for _, raw in self.store.items(MARKS):
            try:
                total += int(json.loads(raw)["chars"])
            except (ValueError, KeyError, TypeError):
                continue
        return total

    def _raws(self, node_id: NodeId, seq: int) -> list[bytes]:
        keys = [entry_key(node_id, s) for s in range(1, seq + 1)]
        raws = self.store.get_many(PEER_CHAINS, keys)
        for index, raw in enumerate(raws, start=1):
            if not isinstance(raw, bytes):
                raise NodeDamaged(f"{PEER_CHAINS.name}: entry {index} of a chain is missing")
        return raws  # type: ignore[return-value]

    def _load(self, node_id: NodeId) -> list[Entry]:
        with self.store.snapshot():
            mark = self._mark(node_id)
            if mark is None:
                return []
            cached = self._cache.get(bytes(node_id))
            if cached is not None and cached[0] == mark[0].digest:
                return list(cached[1])
            raws = self._raws(node_id, mark[0].seq)
        try:
            chain = reload_chain(node_id, [_doc(raw) for raw in raws], [])
        except BadChain as exc:
            raise NodeDamaged(f"{PEER_CHAINS.name}: {exc.detail}") from None
        if not chain or chain[-1].digest != mark[0].digest:
            raise NodeDamaged(f"{PEER_CHAINS.name}: a copy does not end where its mark says")
        self._remember(node_id, chain)
        return list(chain)

    def _remember(self, node_id: NodeId, chain: list[Entry]) -> None:
        if sum(len(c) for _, c in self._cache.values()) + len(chain) > _CACHED:
            self._cache.clear()
        self._cache[bytes(node_id)] = (chain[-1].digest, chain)


def _mark_key(node_id: NodeId) -> bytes:
    return encode_node_id(node_id).encode("ascii")


def _mark_value(entry: Entry, chars: int, fork: Fork | None) -> bytes:
    doc: dict[str, Any] = {"seq": entry.seq, "jti": entry.jti, "digest": entry.digest}
    doc |= {"closed": entry.closes, "chars": chars}
    if fork is not None:
        doc["fork"] = fork.as_json()
    return json.dumps(doc, sort_keys=True).encode()


def _fork_of(raw: bytes) -> Fork | None:
    """The fork a mark's value holds, if any (a malformed one reads as none: `pk node check`
    names it)."""
    try:
        doc = json.loads(raw)["fork"]
        return Fork(int(doc["seq"]), dict(doc["held"]), dict(doc["served"]), int(doc["at"]))
    except (ValueError, KeyError, TypeError):
        return None


def _doc(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None
