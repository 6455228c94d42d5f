"""One write transaction of a node file: buffered puts and deletes, applied at commit.

Applying advances the epoch and reseals every touched manifest and the root
(docs/spec/node-file.md, "Versions and rollback of one record").

Write-once records (git objects) are not all held until the end: once more than STREAM_BYTES
of them wait, they are sealed and written into the open SQLite transaction at once (its
``BEGIN IMMEDIATE`` came first), so landing a large history holds a few MiB, not the history.
They stay invisible to every other connection until the commit, and a rollback or a crash
removes them with the rest; a namespace first written this way is listed in the root when the
transaction is applied, as any other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from polykey.errors import NodeDamaged
from polykey.store.container import show_key, sqlite_errors
from polykey.store.records import (
    MAX_KEY_BYTES,
    Kind,
    Manifest,
    Namespace,
    RecordValue,
    Root,
    SealedRow,
    aad,
    decode_record,
    encode_record,
)

if TYPE_CHECKING:
    from polykey.store.reader import NodeReader


@dataclass
class Transaction:
    """The changes of one write transaction, applied when its ``with`` block ends."""

    node: NodeReader
    _puts: dict[tuple[Namespace, bytes], bytes | tuple[bytes | memoryview, ...] | None] = field(
        default_factory=dict,
        repr=False,  # values are secrets: never in a repr or a traceback
    )
    _drops: list[Namespace] = field(default_factory=list)
    _force_root: bool = False
    _waiting: int = 0  # bytes of write-once values put and not written yet
    _written: set[tuple[Namespace, bytes]] = field(default_factory=set, repr=False)

    def put(self, ns: Namespace, key: bytes, value: bytes) -> None:
        if not key or len(key) > MAX_KEY_BYTES:
            raise ValueError("record keys are 1 to 4096 bytes")
        self._puts[(ns, bytes(key))] = bytes(value)
        self._wait(ns, len(value))

    def put_parts(self, ns: Namespace, key: bytes, parts: tuple[bytes | memoryview, ...]) -> None:
        """Put a value given as parts, joined only when sealed (large values: one copy less)."""
        if not key or len(key) > MAX_KEY_BYTES:
            raise ValueError("record keys are 1 to 4096 bytes")
        self._puts[(ns, bytes(key))] = parts
        self._wait(ns, sum(len(p) for p in parts))

    def delete(self, ns: Namespace, key: bytes) -> None:
        place = (ns, bytes(key))
        if place in self._written:  # written already: deleted in the file too
            self._written.discard(place)
            self._delete_row(ns, place[1])
        self._puts[place] = None

    def get(self, ns: Namespace, key: bytes) -> bytes | None:
        if (ns, key) in self._puts:
            pending = self._puts[(ns, key)]
            return b"".join(pending) if isinstance(pending, tuple) else pending
        if ns in self._drops:
            return None
        if (ns, key) in self._written:
            return self._read_written(ns, key)
        return self.node._get(ns, key)

    def drop_namespace(self, ns: Namespace) -> None:
        """Delete a whole namespace (every record, its manifest, its root entry)."""
        self._drops.append(ns)
        for pending in [k for k in self._puts if k[0] == ns]:
            del self._puts[pending]
        written = [k for k in self._written if k[0] == ns]
        for place in written:
            self._written.discard(place)
            self._delete_row(ns, place[1])

    def _wait(self, ns: Namespace, size: int) -> None:
        """Count a write-once value waiting; write them all once STREAM_BYTES wait."""
        if not ns.immutable or ns in self._drops:
            return
        self._waiting += size
        if self._waiting >= STREAM_BYTES:
            self.stream()

    def stream(self) -> None:
        """Seal and write the write-once records put so far into the open transaction (they
        are listed when it is applied); other puts keep waiting for the end."""
        node = self.node
        rows = _Rows(node._conn)
        done = [
            (place, value)
            for place, value in self._puts.items()
            if place[0].immutable and value is not None and place[0] not in self._drops
        ]
        sealers: dict[Namespace, tuple[bytes, Callable[[bytes, RecordValue], SealedRow]]] = {}
        with sqlite_errors():
            for (ns, key), value in done:
                found = sealers.get(ns)
                if found is None:
                    ns_id = node._keys.ns_id(ns.name)
                    found = sealers[ns] = (ns_id, node._keys.write_once(ns_id))
                rows.add(_INSERT, (found[0], *found[1](key, value)))
            rows.flush()
        for place, _ in done:
            del self._puts[place]
            self._written.add(place)
        self._waiting = 0

    def _delete_row(self, ns: Namespace, key: bytes) -> None:
        ns_id = self.node._keys.ns_id(ns.name)
        with sqlite_errors():
            self.node._conn.execute(
                "DELETE FROM record WHERE ns = ? AND name = ?",
                (ns_id, self.node._keys.rec_id(ns_id, key)),
            )

    def _read_written(self, ns: Namespace, key: bytes) -> bytes:
        """A write-once record this transaction wrote already (its namespace may not be listed
        in the root yet: read here, by its row)."""
        keys = self.node._keys
        ns_id = keys.ns_id(ns.name)
        rec_id = keys.rec_id(ns_id, key)
        place = f"record {show_key(key)} in {ns.name}"
        with sqlite_errors():
            row = self.node._conn.execute(
                "SELECT sealed FROM record WHERE ns = ? AND name = ?", (ns_id, rec_id)
            ).fetchone()
        if row is None:
            raise NodeDamaged(f"{place} is missing")
        stored, value = decode_record(
            keys.open(row[0], aad(Kind.IMMUTABLE, ns_id, rec_id, 0), place), place
        )
        if stored != key:
            raise NodeDamaged(f"{place} holds another record")
        return value

    def touch_root(self) -> None:
        """Advance the epoch even if nothing versioned changes (used at creation)."""
        self._force_root = True

    def apply(self) -> tuple[Root, dict[bytes, Manifest]]:
        node = self.node
        keys = node._keys
        conn = node._conn
        old_root = node._root_now()
        root = Root(old_root.epoch + 1, dict(old_root.namespaces))
        need_root = self._force_root
        manifests: dict[bytes, Manifest] = {}
        entries: dict[Namespace, tuple[bytes, bool]] = {}  # (ns_id, registered) of each
        sealers: dict[Namespace, Callable[[bytes, RecordValue], SealedRow]] = {}  # write-once
        rows = _Rows(conn)
        with sqlite_errors():
            need_root = self._apply_drops(root) or need_root
            need_root = self._list_written(root) or need_root
            for (ns, key), value in self._puts.items():
                ns_id, registered = entries.get(ns) or entries.setdefault(
                    ns, node._namespace_entry(ns)
                )
                registered = registered and ns not in self._drops
                if value is None and not registered:
                    continue
                if not registered and ns_id not in root.namespaces:
                    root.namespaces[ns_id] = (ns.kind, 0, ns.name)
                    need_root = True
                if ns.immutable:
                    if value is None:
                        rows.flush()
                        conn.execute(
                            "DELETE FROM record WHERE ns = ? AND name = ?",
                            (ns_id, keys.rec_id(ns_id, key)),
                        )
                    else:
                        seal = sealers.get(ns) or sealers.setdefault(ns, keys.write_once(ns_id))
                        rows.add(_INSERT, (ns_id, *seal(key, value)))
                    continue
                rec_id = keys.rec_id(ns_id, key)
                manifest = manifests.get(ns_id)
                if manifest is None:
                    current = node._manifest(ns_id) if registered else Manifest(ns.name)
                    manifest = Manifest(ns.name, dict(current.entries))
                    manifests[ns_id] = manifest
                if value is None:
                    if manifest.entries.pop(rec_id, None) is not None:
                        rows.flush()
                        conn.execute(
                            "DELETE FROM record WHERE ns = ? AND name = ?", (ns_id, rec_id)
                        )
                    continue
                sealed = keys.seal(
                    encode_record(key, value), aad(Kind.MUTABLE, ns_id, rec_id, root.epoch)
                )
                rows.add(_REPLACE, (ns_id, rec_id, root.epoch, sealed))
                manifest.entries[rec_id] = (root.epoch, key)
            rows.flush()
            for ns_id, manifest in manifests.items():
                sealed = keys.seal(manifest.encode(), aad(Kind.MANIFEST, ns_id, version=root.epoch))
                conn.execute(
                    "INSERT OR REPLACE INTO manifest VALUES (?, ?, ?)",
                    (ns_id, root.epoch, sealed),
                )
                root.namespaces[ns_id] = (Kind.MUTABLE, root.epoch, manifest.name)
                need_root = True
            if not need_root:
                return old_root, {}
            sealed = keys.seal(root.encode(), aad(Kind.ROOT, version=root.epoch))
            conn.execute("INSERT OR REPLACE INTO root VALUES (1, ?, ?)", (root.epoch, sealed))
        return root, manifests

    def _list_written(self, root: Root) -> bool:
        """List in the root the namespaces first written by ``stream``; whether it changes."""
        changed = False
        for ns in {place[0] for place in self._written}:
            ns_id, registered = self.node._namespace_entry(ns)
            if not registered and ns_id not in root.namespaces:
                root.namespaces[ns_id] = (ns.kind, 0, ns.name)
                changed = True
        return changed

    def _apply_drops(self, root: Root) -> bool:
        """Delete the namespaces dropped; whether the root changes."""
        changed = False
        for ns in self._drops:
            ns_id = self.node._keys.ns_id(ns.name)
            if root.namespaces.pop(ns_id, None) is not None:
                self.node._conn.execute("DELETE FROM record WHERE ns = ?", (ns_id,))
                self.node._conn.execute("DELETE FROM manifest WHERE ns = ?", (ns_id,))
                changed = True
        return changed


_INSERT = "INSERT OR IGNORE INTO record VALUES (?, ?, 0, ?)"  # write-once: the first stays
_REPLACE = "INSERT OR REPLACE INTO record VALUES (?, ?, ?, ?)"
BATCH_ROWS = 8192  # sealed records written with one statement (sorted once: in key order)
BATCH_BYTES = 8 * 1024 * 1024  # and at most this much of them held at once
STREAM_BYTES = 16 * 1024 * 1024  # write-once values waiting before they are written at once


def _place(row: tuple[bytes | bytearray | int, ...]) -> tuple[bytes | bytearray | int, ...]:
    return row[:2]  # (ns, name): the record table's key


class _Rows:
    """Sealed records on their way into the file, written a batch at a time (a statement per
    batch, not per record), in the order they were added."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.sql = ""
        self.rows: list[tuple[bytes | bytearray | int, ...]] = []
        self.size = 0

    def add(self, sql: str, row: tuple[bytes | bytearray | int, ...]) -> None:
        if sql != self.sql:
            self.flush()
            self.sql = sql
        self.rows.append(row)
        self.size += len(row[-1])  # type: ignore[arg-type]
        if len(self.rows) >= BATCH_ROWS or self.size >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.rows.sort(key=_place)  # in key order: the table's pages fill one after the other
            self.conn.executemany(self.sql, self.rows)
            self.rows = []
            self.size = 0
