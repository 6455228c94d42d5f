"""Chains of entries: verifying a page of a chain, and what a chain says (its state).

Pure functions of the documents given (docs/spec/sigchain.md, "Verifying a chain" and "What a
chain says"). Signatures are verified after every other check of a page, on a few threads when
the page is large (the Ed25519 verifier releases the GIL), and the refusal is the first failing
check in chain order either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from polykey.crypto.signing import verify
from polykey.ids import NodeId, encode_node_id
from polykey.trust.sigchain_entry import (
    DELEGATE,
    LINK_IDENTITY,
    LINK_NODE,
    REVOKE,
    ROTATE_KEY,
    BadChain,
    Entry,
    Head,
    Problem,
    Work,
    parse,
)

MAX_PAGE = 10_000  # entries in one page given to verify_chain
PARALLEL_FROM = 256  # signatures in a page before more threads help
_THREADS = max(1, min(4, os.cpu_count() or 1))
NOT_REVOCABLE = (REVOKE, ROTATE_KEY)


def verify_entry(doc: object) -> Entry:
    """One entry on its own (a claim embedded in a proof): shape, encodings, fields and every
    signature; not its place in a chain."""
    try:
        entry, work = parse(doc)
    except Problem as exc:
        raise BadChain(f"the entry: {exc}") from None
    check_signatures(entry, work, "the entry")
    return entry


def check_signatures(entry: Entry, work: list[Work], what: str) -> None:
    """BadChain unless every signature of ``entry`` (``work``, as ``parse`` gave it) verifies."""
    bad = _first_bad(work)
    if bad is not None:
        raise BadChain(f"{what}: its signature by {entry.signers[bad]} does not verify")


def verify_chain(
    owner: NodeId,
    docs: Sequence[object],
    *,
    after: Head | None = None,
    earlier: Sequence[Entry] = (),
) -> list[Entry]:
    """The entries of ``docs``, a page of ``owner``'s chain continuing from ``after`` (None:
    from its start), or BadChain naming the first entry that fails and why. ``earlier``: the
    entries held before the page (``after`` is then their head); without them, a revoke in the
    page may only name a claim of the page, and a jti is checked unique within the page."""
    return _chain(owner, docs, after, earlier, signatures=True)


def reload_chain(owner: NodeId, docs: Sequence[object], earlier: Sequence[Entry]) -> list[Entry]:
    """Entries this node verified before and kept sealed (its own chain, the copies of other
    nodes' chains): every check but the signatures, which `pk node check` verifies again."""
    return _chain(owner, docs, None, earlier, signatures=False)


def _chain(
    owner: NodeId,
    docs: Sequence[object],
    after: Head | None,
    earlier: Sequence[Entry],
    *,
    signatures: bool,
) -> list[Entry]:
    if isinstance(docs, str | bytes) or not isinstance(docs, Sequence):
        raise BadChain("a page of a chain must be a list of entries")
    if len(docs) > MAX_PAGE:
        raise BadChain(f"a page holds at most {MAX_PAGE} entries, not {len(docs)}")
    if earlier and after is None:
        after = Head.of(earlier[-1])
    place = _Place(encode_node_id(owner), after, earlier)
    entries: list[Entry] = []
    work: list[Work] = []
    owners: list[int] = []  # for each signature in work, the index of its entry
    failure: tuple[int, str] | None = None
    for index, doc in enumerate(docs):
        try:
            entry, sigs = parse(doc)
        except Problem as exc:
            failure = (index, str(exc))
            break
        work.extend(sigs)
        owners.extend([index] * len(sigs))
        entries.append(entry)
        problem = place.take(entry)
        if problem:
            failure = (index, problem)
            break
    bad = _first_bad(work) if signatures else None
    first = (after.seq if after is not None else 0) + 1
    if bad is not None:
        index = owners[bad]
        signer = entries[index].signers[bad - owners.index(index)]
        raise BadChain(f"entry {first + index}: its signature by {signer} does not verify")
    if failure is not None:
        raise BadChain(f"entry {first + failure[0]}: {failure[1]}")
    return entries


class _Place:
    """Where the next entry of a chain must go, and what it may revoke."""

    def __init__(self, owner: str, after: Head | None, earlier: Iterable[Entry]) -> None:
        self.owner = owner
        self.head = after
        self.typs: dict[str, str] = {}
        self.revoked: set[str] = set()
        for entry in earlier:
            self._note(entry)

    def _note(self, entry: Entry) -> None:
        self.typs[entry.jti] = entry.typ
        if entry.typ == REVOKE:
            self.revoked.add(entry.sub)

    def take(self, entry: Entry) -> str:
        """Why ``entry`` cannot come next ("" when it can); it is then the head."""
        head = self.head
        if entry.iss != self.owner:
            return "it was issued by another node than the chain's owner"
        if head is not None and head.closed:
            return "it follows a rotate-key entry, which closes the chain"
        expected = (head.seq if head is not None else 0) + 1
        if entry.seq != expected:
            return f"its seq is {entry.seq}, not {expected}"
        if head is not None and entry.prev_claim_id != head.jti:
            return f"its prevClaimId is not the jti of entry {head.seq}"
        if head is not None and entry.prev_digest != head.digest:
            return f"its prevDigest is not the digest of entry {head.seq}"
        if entry.jti in self.typs:
            return "its jti is the jti of an earlier entry"
        if entry.typ == REVOKE:
            target = self.typs.get(entry.sub)
            if target is None:
                return "it revokes a claim the chain does not hold before it"
            if target in NOT_REVOCABLE:
                return f"it revokes a {target} entry, which cannot be revoked"
            if entry.sub in self.revoked:
                return "it revokes a claim revoked already"
        self._note(entry)
        self.head = Head.of(entry)
        return ""


def check_rotation(old_last: Entry, new_first: Entry) -> None:
    """That ``new_first`` (the first entry of a new key's chain) continues the chain whose
    last entry is ``old_last`` (its rotate-key to the new key), or BadChain."""
    if not old_last.closes or not new_first.starts_rotated:
        raise BadChain("the two entries are not the two halves of a key rotation")
    if old_last.sub != new_first.iss or new_first.payload.get("from") != old_last.iss:
        raise BadChain("the rotation names other keys in the old and the new chain")
    if new_first.prev_claim_id != old_last.jti or new_first.prev_digest != old_last.digest:
        raise BadChain("the new chain does not link to the old chain's rotate-key entry")


# --- signatures --------------------------------------------------------------------------------


def _first_bad(work: list[Work]) -> int | None:
    """The index of the first signature in ``work`` that does not verify, or None. Many are
    verified on a few threads, after the page is parsed: a thread verifying while another
    runs Python code would wait for the GIL after each signature."""
    if len(work) < PARALLEL_FROM or _THREADS == 1:
        return _scan((0, work))
    step = -(-len(work) // (_THREADS * 4))
    chunks = [(start, work[start : start + step]) for start in range(0, len(work), step)]
    with ThreadPoolExecutor(_THREADS, thread_name_prefix="pk-sigchain") as pool:
        found = [bad for bad in pool.map(_scan, chunks) if bad is not None]
    return min(found) if found else None


def _scan(chunk: tuple[int, list[Work]]) -> int | None:
    start, items = chunk
    for offset, (public, message, signature) in enumerate(items):
        if not verify(public, message, signature):
            return start + offset
    return None


# --- what a chain says -------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A live claim about one subject: the entry that made it, and what it holds."""

    jti: str
    iat: int
    seq: int
    ref: str = ""  # link-identity: where the proof lives
    provider: str = ""
    grant: dict[str, Any] = field(default_factory=dict)  # delegate: what the child may do


@dataclass(frozen=True)
class ChainState:
    """What a chain says now. For each subject the newest entry about it decides: a newer
    claim replaces an older one, and revoking the live claim about a subject ends it (an
    older claim about that subject does not come back)."""

    nodes: dict[str, Claimed] = field(default_factory=dict)  # linked NodeIds
    identities: dict[str, Claimed] = field(default_factory=dict)  # "provider:name"
    delegations: dict[str, Claimed] = field(default_factory=dict)  # child NodeIds
    revoked: frozenset[str] = frozenset()
    rotated_to: str | None = None
    rotated_from: str | None = None
    head: Head | None = None

    def as_json(self) -> dict[str, Any]:
        def claims(d: dict[str, Claimed]) -> dict[str, Any]:
            return {k: {"jti": c.jti, "iat": c.iat, "seq": c.seq} for k, c in sorted(d.items())}

        identities = claims(self.identities)
        for key, value in identities.items():
            value.update(provider=self.identities[key].provider, ref=self.identities[key].ref)
        return {
            "length": self.head.seq if self.head is not None else 0,
            "nodes": claims(self.nodes),
            "identities": identities,
            "delegations": claims(self.delegations),
            "revoked": sorted(self.revoked),
            "rotated_to": self.rotated_to,
            "rotated_from": self.rotated_from,
        }


_RELATION = {LINK_NODE: "nodes", LINK_IDENTITY: "identities", DELEGATE: "delegations"}


def chain_state(entries: Iterable[Entry]) -> ChainState:
    """The state of a verified chain (entries in chain order)."""
    maps: dict[str, dict[str, Claimed]] = {name: {} for name in _RELATION.values()}
    about: dict[str, tuple[str, str]] = {}  # jti -> (relation, subject)
    revoked: set[str] = set()
    rotated_to = rotated_from = None
    head = None
    for entry in entries:
        head = Head.of(entry)
        relation = _RELATION.get(entry.typ)
        if relation is not None:
            proof = entry.payload.get("proof") if entry.typ == LINK_IDENTITY else None
            grant = entry.payload.get("grant") if entry.typ == DELEGATE else None
            maps[relation][entry.sub] = Claimed(
                entry.jti,
                entry.iat,
                entry.seq,
                ref=str(proof.get("ref", "")) if isinstance(proof, dict) else "",
                provider=str(proof.get("provider", "")) if isinstance(proof, dict) else "",
                grant=grant if isinstance(grant, dict) else {},
            )
            about[entry.jti] = (relation, entry.sub)
        elif entry.typ == REVOKE:
            revoked.add(entry.sub)
            target = about.get(entry.sub)
            if target is not None:
                live = maps[target[0]].get(target[1])
                if live is not None and live.jti == entry.sub:
                    del maps[target[0]][target[1]]
        elif entry.typ == ROTATE_KEY:
            if entry.starts_rotated:
                rotated_from = str(entry.payload["from"])
            else:
                rotated_to = entry.sub
    return ChainState(
        maps["nodes"],
        maps["identities"],
        maps["delegations"],
        frozenset(revoked),
        rotated_to,
        rotated_from,
        head,
    )
