"""The audit log: append-only, hash-chained records inside the node file (docs/spec/audit.md).

A record says who did what to which vault, at which path (an HMAC of it, never the path in
clear), which commit, when, and the outcome; never a value. Records are write-once records of
the namespace ``audit/log`` under their sequence number; each holds the SHA-256 digest of the
one before it, and the mutable record ``audit/head`` holds the count and the last digest, so a
record removed, altered, reordered, or cut from the end is found by :meth:`AuditLog.verify`
and named. Checkpoints (count and digest) signed into the sigchain bind the log to the node's
key: a log rewritten as a whole no longer matches them.

Fail closed: :meth:`AuditLog.append` raises :class:`AuditUnavailable` when a record cannot be
written, and the callers (the agent's dispatch, the peer service) then refuse the request.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from polykey.crypto.kdf import hmac_sha256
from polykey.errors import NodeDamaged, PolykeyError, StorageError
from polykey.store.nodefile import NodeFile
from polykey.store.records import Namespace

LOG = Namespace("audit/log", immutable=True)
"""seq (u64, big-endian) -> the record's canonical JSON; write-once."""
HEAD = Namespace("audit/head")
"""``head`` -> {"count", "digest"}: where the log ends."""
HEAD_KEY = b"head"
PATH_KEY = b"path-key"
"""32 random bytes made with the first record: the key that hides paths (it stays the same
when the node's root key is renewed, so a path is named alike in every record)."""
FORMAT = 1
GENESIS = "0" * 64
"""The ``prev`` of record 1."""
READ_BATCH = 2000
OUTCOMES = ("ok", "begun", "refused", "failed")
FIELDS: tuple[str, ...] = ("action", "at", "commit", "error", "outcome", "path", "prev", "seq")
FIELDS += ("subject", "v", "vault", "who")  # sorted: the order of the canonical form
_FIELD_SET = frozenset(FIELDS)
_DECODE = json.JSONDecoder().decode
_TEXT = rb'"(?:[^"\\\x00-\x1f\x7f-\xff]|\\.)*"'  # a JSON string of ASCII
_CANONICAL = re.compile(
    b"".join(
        (
            rb'\{"action":' + _TEXT,
            rb',"at":(?:0|[1-9][0-9]*),"commit":"[0-9a-f]*","error":' + _TEXT,
            rb',"outcome":"(?:ok|begun|refused|failed)","path":"(?:[0-9a-f]{32})?"',
            rb',"prev":"([0-9a-f]{64})","seq":([1-9][0-9]*),"subject":' + _TEXT,
            rb',"v":1,"vault":' + _TEXT + rb',"who":' + _TEXT + rb"\}",
        )
    )
)


class AuditUnavailable(StorageError):
    """The request was refused: its audit record could not be written."""

    hint = (
        "Every request is recorded before it is answered; free space on the node file's "
        "disk (or make it writable) and try again."
    )


class AuditBroken(PolykeyError):
    """The audit log does not verify: records were removed, altered or reordered."""

    exit_code = 89
    hint = "The report names each record; compare with a backup of the node file."


@dataclass(frozen=True)
class Event:
    """What a caller records: ``who`` is "local" or a NodeId; ``path`` is hidden on the way."""

    who: str
    action: str
    vault: str = ""  # a vault id where known, else the name given
    path: str | None = field(default=None, repr=False)
    commit: str = ""
    outcome: str = "ok"
    error: str = ""  # the error class of a refusal or failure
    subject: str = ""  # the node (or identity) a share or unshare names


class Record(NamedTuple):
    """One record as read (a named tuple, not a dataclass: a verify makes 100,000 of them)."""

    seq: int
    at: int  # unix milliseconds
    who: str
    action: str
    vault: str
    path: str  # 32 hex digits of HMAC, or ""
    commit: str
    outcome: str
    error: str
    subject: str
    prev: str
    digest: str

    def as_json(self) -> dict[str, Any]:
        doc = self._asdict()
        del doc["prev"]
        return doc


@dataclass(frozen=True)
class Head:
    count: int = 0
    digest: str = GENESIS


@dataclass(frozen=True)
class Problem:
    """One place where the log does not verify; ``seq`` 0 is the log as a whole."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.problem}" if self.seq else self.problem


@dataclass(frozen=True)
class Verdict:
    count: int  # records the head counts (or found, when the head is damaged)
    digest: str  # the digest of the last record read
    checkpoints: int  # signed checkpoints checked
    problems: tuple[Problem, ...]


def seq_key(seq: int) -> bytes:
    return struct.pack(">Q", seq)


def encode(seq: int, prev: str, at: int, event: Event, path_mac: str) -> bytes:
    """The stored form of a record: canonical JSON (keys sorted, no spaces, ASCII)."""
    doc = {
        "action": event.action,
        "at": at,
        "commit": event.commit,
        "error": event.error,
        "outcome": event.outcome,
        "path": path_mac,
        "prev": prev,
        "seq": seq,
        "subject": event.subject,
        "v": FORMAT,
        "vault": event.vault,
        "who": event.who,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def decode(raw: bytes) -> Record:
    """A stored record, or ValueError naming what is wrong with it."""
    try:
        doc = _DECODE(raw.decode("ascii"))
    except UnicodeDecodeError:
        raise ValueError("it is not ASCII") from None
    if type(doc) is not dict or doc.keys() != _FIELD_SET or doc["v"] != FORMAT:
        raise ValueError("it is not a record of format 1")
    action, at, commit, error, outcome, path, prev, seq, subject, _, vault, who = (
        doc[k] for k in FIELDS
    )
    if type(seq) is not int or type(at) is not int:
        raise ValueError("a field has the wrong type")
    texts = (action, commit, error, outcome, path, prev, subject, vault, who)
    if not all(type(t) is str for t in texts):
        raise ValueError("a field has the wrong type")
    digest = hashlib.sha256(raw).hexdigest()
    return Record(seq, at, who, action, vault, path, commit, outcome, error, subject, prev, digest)


class AuditLog:
    """The audit log of one node file (made by the Node, which owns it)."""

    def __init__(self, store: NodeFile) -> None:
        self.store = store
        self._key: bytes | None = None

    def __repr__(self) -> str:
        return f"AuditLog({str(self.store.path)!r})"

    def mac(self, path: str) -> str | None:
        """How a record names ``path``: 32 hex digits of HMAC-SHA256 under the path key (None
        before the first record: no record names it)."""
        if self._key is None:
            self._key = self.store.get(HEAD, PATH_KEY)
        return None if self._key is None else _mac(self._key, path)

    # --- writing ---------------------------------------------------------------------------------

    def append(self, events: Sequence[Event], now: float | None = None) -> Head:
        """Append ``events`` as records in one transaction; AuditUnavailable when they cannot
        be written (the caller then refuses the request)."""
        at = int((time.time() if now is None else now) * 1000)
        try:
            with self.store.write() as tx:
                head = _head(tx.get(HEAD, HEAD_KEY))
                key = self._key or tx.get(HEAD, PATH_KEY)
                if key is None:
                    key = os.urandom(32)
                    tx.put(HEAD, PATH_KEY, key)
                for event in events:
                    mac = _mac(key, event.path) if event.path else ""
                    raw = encode(head.count + 1, head.digest, at, event, mac)
                    tx.put(LOG, seq_key(head.count + 1), raw)
                    head = Head(head.count + 1, hashlib.sha256(raw).hexdigest())
                tx.put(HEAD, HEAD_KEY, _head_bytes(head))
            self._key = key
        except PolykeyError as exc:
            raise AuditUnavailable(exc.summary) from None
        except OSError as exc:
            raise AuditUnavailable(exc.strerror or type(exc).__name__) from None
        return head

    # --- reading ---------------------------------------------------------------------------------

    def head(self) -> Head:
        return _head(self.store.get(HEAD, HEAD_KEY))

    def records(self, start: int = 1, end: int | None = None) -> Iterator[Record]:
        """The records from ``start`` to ``end`` (the head's count) in order; NodeDamaged at
        the first one that cannot be read (``verify`` names them all)."""
        end = self.head().count if end is None else end
        for first in range(start, end + 1, READ_BATCH):
            seqs = range(first, min(first + READ_BATCH, end + 1))
            raws = self.store.get_many(LOG, [seq_key(s) for s in seqs])
            for seq, raw in zip(seqs, raws, strict=True):
                if not isinstance(raw, bytes):
                    raise NodeDamaged(f"audit record {seq} is missing")
                try:
                    yield decode(raw)
                except ValueError as exc:
                    raise NodeDamaged(f"audit record {seq} is malformed: {exc}") from None

    def verify(self, checkpoints: Iterable[tuple[int, str]] = ()) -> Verdict:
        """Check every record: present, authentic, in its place, following the one before;
        the head at the last; each signed checkpoint ``(count, digest)`` on its record."""
        problems: list[Problem] = []
        try:
            head: Head | None = self.head()
        except NodeDamaged as exc:
            problems.append(Problem(0, f"the head of the log: {exc.detail or exc.summary}"))
            head = None
        count = head.count if head is not None else self._found_count()
        digests = self._walk(count, problems)
        last = digests.get(count, GENESIS if count == 0 else "")
        if head is not None and last and last != head.digest:
            problems.append(Problem(count, "is not the record the head names (altered)"))
        if self._beyond(count):
            problems.append(Problem(count + 1, "lies beyond the head (the head was rolled back)"))
        checked = 0
        for cp_count, cp_digest in checkpoints:
            checked += 1
            if cp_count > count:
                problems.append(
                    Problem(
                        0,
                        f"a signed checkpoint counts {cp_count} records; the log holds "
                        f"{count} (records were cut from the end)",
                    )
                )
            elif digests.get(cp_count, cp_digest) != cp_digest:
                problems.append(Problem(cp_count, "does not match the signed checkpoint"))
        problems.sort(key=lambda p: p.seq)
        return Verdict(count, last, checked, tuple(problems))

    def _walk(self, count: int, problems: list[Problem]) -> dict[int, str]:
        """Every record's digest by seq (of those that read), problems noted."""
        digests: dict[int, str] = {}
        prev: str | None = GENESIS  # None: the record before is not in its place
        for seq, raw in self._stored(count, problems):
            link = _link(seq, raw, prev, problems)
            prev = link[1] if link is not None and link[0] else None
            if link is not None:
                digests[seq] = link[1]
        return digests

    def _stored(self, count: int, problems: list[Problem]) -> Iterator[tuple[int, bytes | None]]:
        """(seq, stored record) for 1..count; None for a missing one, b"" for one that fails
        authentication (noted here). One scan of the namespace when every record opens;
        else a batch at a time, and one at a time where a batch holds a damaged record."""
        try:
            found = dict(self.store.items(LOG))
        except NodeDamaged:
            found = None
        if found is not None:
            for seq in range(1, count + 1):
                yield seq, found.get(seq_key(seq))
            return
        for first in range(1, count + 1, READ_BATCH):
            seqs = list(range(first, min(first + READ_BATCH, count + 1)))
            yield from zip(seqs, self._read(seqs, problems), strict=True)

    def _read(self, seqs: list[int], problems: list[Problem]) -> list[bytes | None]:
        keys = [seq_key(s) for s in seqs]
        try:
            return [r if isinstance(r, bytes) else None for r in self.store.get_many(LOG, keys)]
        except NodeDamaged:
            pass  # one of the batch is damaged: read them one by one to name each
        out: list[bytes | None] = []
        for seq, key in zip(seqs, keys, strict=True):
            try:
                out.append(self.store.get(LOG, key))
            except NodeDamaged:
                problems.append(Problem(seq, "fails authentication (altered, or moved here)"))
                out.append(b"")
        return out

    def _beyond(self, count: int) -> bool:
        try:
            return self.store.get_many(LOG, [seq_key(count + 1)])[0] is not None
        except NodeDamaged:
            return True

    def _found_count(self) -> int:
        """With no head to trust: how far the records run without a gap."""
        seq = 0
        while True:
            try:
                if self.store.get_many(LOG, [seq_key(seq + 1)])[0] is None:
                    return seq
            except NodeDamaged:
                pass  # there, though damaged: named when the records are walked
            seq += 1


def _link(
    seq: int, raw: bytes | None, prev: str | None, problems: list[Problem]
) -> tuple[bool, str] | None:
    """(whether it is in its place, its digest) of the record stored at ``seq``, or None;
    problems noted. A record after one out of place (``prev`` None) is not judged by its
    link. The canonical form is matched, not parsed: a verify reads 100,000 of them."""
    if raw is None:
        problems.append(Problem(seq, "is missing (removed)"))
        return None
    if raw == b"":  # noted where it was read
        return None
    match = _CANONICAL.fullmatch(raw)
    if match is None:
        problems.append(Problem(seq, "is malformed"))
        return None
    digest = hashlib.sha256(raw).hexdigest()
    held = int(match.group(2))
    if held != seq:
        problems.append(Problem(seq, f"holds record {held} (reordered)"))
        return False, digest
    if prev is not None and match.group(1).decode() != prev:
        problems.append(Problem(seq, "does not follow the record before it (altered)"))
    return True, digest


def _mac(key: bytes, path: str) -> str:
    return hmac_sha256(key, path.encode("utf-8"))[:16].hex()


def _head(raw: bytes | None) -> Head:
    if raw is None:
        return Head()
    try:
        doc = json.loads(raw)
        return Head(int(doc["count"]), str(doc["digest"]))
    except (ValueError, KeyError, TypeError):
        raise NodeDamaged("the audit log's head is malformed") from None


def _head_bytes(head: Head) -> bytes:
    return json.dumps({"count": head.count, "digest": head.digest}, sort_keys=True).encode()


# --- what a peer's request records --------------------------------------------------------------

PEER_QUIET = frozenset({"peer.hello"})
"""Peer methods not recorded: they tell nothing of any vault."""


def peer_recorded(
    log: AuditLog,
    who: str,
    method: str,
    params: Mapping[str, Any],
    run: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run a peer's request (``run``) and record it: the vault it named (by id, once known),
    the commit it received or sent, a refusal by its error class. The answer goes out only
    once its record is written (AuditUnavailable otherwise). A paged fetch is recorded at
    its first page (a later page names the head, and serves nothing the first did not)."""
    if method in PEER_QUIET:
        return run()
    action = f"peer:{method}"
    named = params.get("vault")
    vault = named[:200] if isinstance(named, str) else ""
    try:
        result = run()
    except PolykeyError as exc:
        log.append([Event(who, action, vault, outcome="refused", error=type(exc).__name__)])
        raise
    if method == "vaults.fetch" and params.get("head") is not None:
        return result
    found = result.get("vault")
    if isinstance(found, dict) and isinstance(found.get("id"), str):
        vault = found["id"]
    head = result.get("head")
    log.append([Event(who, action, vault, commit=head if isinstance(head, str) else "")])
    return result
