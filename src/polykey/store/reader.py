"""The read side of an open node file: snapshots, cached root and manifests, verified reads.

:class:`NodeReader` holds the connection and the record keys. Every read runs in a read
transaction (a consistent snapshot, even while other processes write) and is checked against
the versions its parents hold, so an older ciphertext put back is reported as damage
(docs/spec/node-file.md, "Versions and rollback of one record"). The decoded root and
manifests are cached until ``PRAGMA data_version`` shows that another connection committed.
:class:`~polykey.store.nodefile.NodeFile` builds on it: opening, writing, checking.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from polykey.crypto.aead import OVERHEAD, SealBroken
from polykey.errors import NodeDamaged
from polykey.store.container import is_id, sealed_row, show_key, sqlite_errors
from polykey.store.records import (
    MAX_KEY_BYTES,
    Kind,
    Manifest,
    Namespace,
    RecordKeys,
    Root,
    aad,
    decode_record,
)

GET_BATCH = 500  # record names asked in one query by get_many (SQLite allows 999 parameters)
GET_MANY = (
    "SELECT name, ver, CASE WHEN ?1 < 0 OR length(sealed) <= ?1 THEN sealed END, length(sealed)"
    " FROM record WHERE ns = ?2 AND name IN"
)
RECORD_OVERHEAD = OVERHEAD + 4  # a sealed record beyond its key and value: nonce, tag, key length


class NodeReader:
    """The reads of an open, unlocked node file; :class:`NodeFile` adds the rest."""

    def __init__(self, conn: sqlite3.Connection, data_key: bytes) -> None:
        self._conn = conn
        self._keys = RecordKeys(data_key)
        self._lock = threading.RLock()
        self._data_version: int | None = None
        self._root: Root | None = None
        self._manifests: dict[bytes, Manifest] = {}
        self._in_write = False
        self._in_read = False

    # --- snapshots and caches -----------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        with self._lock:
            if self._in_write or self._in_read:
                yield
                return
            with sqlite_errors():
                self._conn.execute("BEGIN")
            self._in_read = True
            try:
                self._refresh()
                yield
            finally:
                self._in_read = False
                with sqlite_errors():
                    self._conn.execute("COMMIT")

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """Many reads as one: every read inside sees the same state of the file, and costs no
        transaction of its own. Other threads' reads and writes wait until it ends, so keep
        it short (a page of objects, not a network wait)."""
        return self._read()

    def _refresh(self) -> None:
        """Drop cached root and manifests when another connection has committed."""
        with sqlite_errors():
            (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if version != self._data_version:
            self._data_version = version
            self._root = None
            self._manifests = {}
        if self._root is None:
            self._load_root()

    def _load_root(self) -> None:
        with sqlite_errors():
            row = self._conn.execute("SELECT ver, sealed FROM root WHERE id = 1").fetchone()
        if row is None:
            raise NodeDamaged("the root record is missing")
        ver, sealed = sealed_row(row, "the root record")
        plain = self._keys.open(sealed, aad(Kind.ROOT, version=ver), "the root record")
        root = Root.decode(plain)
        if root.epoch != ver:
            raise NodeDamaged("the root record's version does not match its contents")
        self._root = root
        self._manifests = {}

    def _root_now(self) -> Root:
        if self._root is None:
            self._load_root()
        assert self._root is not None
        return self._root

    def _manifest(self, ns_id: bytes) -> Manifest:
        cached = self._manifests.get(ns_id)
        if cached is not None:
            return cached
        _, ver, name = self._root_now().namespaces[ns_id]
        with sqlite_errors():
            row = self._conn.execute(
                "SELECT ver, sealed FROM manifest WHERE ns = ?", (ns_id,)
            ).fetchone()
        place = f"the manifest of {name}"
        if row is None:
            raise NodeDamaged(f"{place} is missing")
        row_ver, sealed = sealed_row(row, place)
        if row_ver != ver:
            raise NodeDamaged(f"{place} was rolled back or replaced")
        manifest = Manifest.decode(
            self._keys.open(sealed, aad(Kind.MANIFEST, ns_id, version=ver), place), place
        )
        if manifest.name != name:
            raise NodeDamaged(f"{place} names another namespace")
        self._manifests[ns_id] = manifest
        return manifest

    def _namespace_entry(self, ns: Namespace) -> tuple[bytes, bool]:
        """(ns_id, registered) after checking that the namespace's kind is the expected one."""
        ns_id = self._keys.ns_id(ns.name)
        entry = self._root_now().namespaces.get(ns_id)
        if entry is None:
            return ns_id, False
        if entry[0] != ns.kind or entry[2] != ns.name:
            raise NodeDamaged(f"namespace {ns.name} has the wrong kind")
        return ns_id, True

    # --- reading ------------------------------------------------------------------------------

    def get(self, ns: Namespace, key: bytes) -> bytes | None:
        with self._read():
            return self._get(ns, key)

    def get_many(
        self, ns: Namespace, keys: list[bytes], *, read_up_to: int | None = None
    ) -> list[bytes | int | None]:
        """The values of ``keys`` in order (None for a missing record), as one snapshot: a
        write-once namespace is read a batch of rows per query, each record checked as
        :meth:`get` checks it. ``read_up_to``: a value larger than this is not read, its size
        (an int) stands for it (read it with :meth:`get`), so a batch holds no large values."""
        with self._read():
            return self._get_many(ns, keys, read_up_to)

    def _get_many(
        self, ns: Namespace, keys: list[bytes], read_up_to: int | None
    ) -> list[bytes | int | None]:
        if not ns.immutable:
            return [self._get(ns, key) for key in keys]
        ns_id, registered = self._namespace_entry(ns)
        if not registered:
            self._unregistered(ns, ns_id)
            return [None] * len(keys)
        rec_id = self._keys.rec_id
        names = [rec_id(ns_id, key) for key in keys]
        rows: dict[bytes, tuple[Any, Any, Any]] = {}
        limit = -1 if read_up_to is None else read_up_to + RECORD_OVERHEAD + MAX_KEY_BYTES
        conn = self._conn
        with sqlite_errors():
            for start in range(0, len(names), GET_BATCH):
                chunk = names[start : start + GET_BATCH]
                marks = ",".join("?" * len(chunk))  # placeholders only: no value in the text
                query = f"{GET_MANY} ({marks})"
                for name, ver, sealed, length in conn.execute(query, (limit, ns_id, *chunk)):
                    rows[name] = (ver, sealed, length)
        out: list[bytes | int | None] = []
        opener = self._keys.sealer.open
        aad_of = self._keys.immutable_aad(ns_id)
        where = f"record in {ns.name}"
        for key, name in zip(keys, names, strict=True):
            row = rows.get(name)
            if row is None:
                out.append(None)
                continue
            ver, sealed, length = row
            if sealed is None and type(length) is int and read_up_to is not None:
                size = length - RECORD_OVERHEAD - len(key)
                if size > read_up_to:  # left for get(), which checks it
                    out.append(size)
                    continue
            if type(ver) is not int or ver != 0 or type(sealed) is not bytes:
                place = f"record {show_key(key)} in {ns.name}"
                sealed_row((ver, sealed), place)
                raise NodeDamaged(f"{place} was rolled back or replaced")
            try:
                plain = opener(sealed, aad_of(name))
            except SealBroken:
                problem = f"record {show_key(key)} in {ns.name} failed authentication"
                raise NodeDamaged(problem) from None
            stored_key, value = decode_record(plain, where)
            if stored_key != key:
                raise NodeDamaged(f"record {show_key(key)} in {ns.name} holds another record")
            out.append(value)
        return out

    def _unregistered(self, ns: Namespace, ns_id: bytes) -> None:
        """A namespace the root does not list must have no rows (else the root was rolled back)."""
        with sqlite_errors():
            found = self._conn.execute(
                "SELECT 1 FROM manifest WHERE ns = ? UNION ALL "
                "SELECT 1 FROM record WHERE ns = ? LIMIT 1",
                (ns_id, ns_id),
            ).fetchone()
        if found is not None:
            raise NodeDamaged(f"namespace {ns.name} has records but the root does not list it")

    def _get(self, ns: Namespace, key: bytes) -> bytes | None:
        ns_id, registered = self._namespace_entry(ns)
        if not registered:
            self._unregistered(ns, ns_id)
            return None
        rec_id = self._keys.rec_id(ns_id, key)
        place = f"record {show_key(key)} in {ns.name}"
        if ns.immutable:
            expected = 0
        else:
            entry = self._manifest(ns_id).entries.get(rec_id)
            if entry is None:
                return None
            expected = entry[0]
        with sqlite_errors():
            row = self._conn.execute(
                "SELECT ver, sealed FROM record WHERE ns = ? AND name = ?", (ns_id, rec_id)
            ).fetchone()
        if row is None:
            if ns.immutable:
                return None
            raise NodeDamaged(f"{place} is missing")
        row_ver, sealed = sealed_row(row, place)
        if row_ver != expected:
            raise NodeDamaged(f"{place} was rolled back or replaced")
        stored_key, value = decode_record(
            self._keys.open(sealed, aad(ns.kind, ns_id, rec_id, expected), place), place
        )
        if stored_key != key:
            raise NodeDamaged(f"{place} holds another record")
        return value

    def contains(self, ns: Namespace, key: bytes) -> bool:
        """Whether a record exists (write-once namespaces: without decrypting it)."""
        with self._read():
            ns_id, registered = self._namespace_entry(ns)
            if not registered:
                self._unregistered(ns, ns_id)
                return False
            rec_id = self._keys.rec_id(ns_id, key)
            if not ns.immutable:
                return rec_id in self._manifest(ns_id).entries
            with sqlite_errors():
                row = self._conn.execute(
                    "SELECT 1 FROM record WHERE ns = ? AND name = ?", (ns_id, rec_id)
                ).fetchone()
            return row is not None

    def keys(self, ns: Namespace) -> list[bytes]:
        """The keys of a namespace, sorted."""
        with self._read():
            ns_id, registered = self._namespace_entry(ns)
            if not registered:
                self._unregistered(ns, ns_id)
                return []
            if not ns.immutable:
                return sorted(key for _, key in self._manifest(ns_id).entries.values())
            return sorted(key for key, _ in self._scan(ns, ns_id))

    def items(self, ns: Namespace) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of a namespace, sorted by key."""
        with self._read():
            ns_id, registered = self._namespace_entry(ns)
            if not registered:
                self._unregistered(ns, ns_id)
                return []
            if ns.immutable:
                return sorted(self._scan(ns, ns_id))
            out = []
            for _, key in self._manifest(ns_id).entries.values():
                value = self._get(ns, key)
                assert value is not None
                out.append((key, value))
            return sorted(out)

    def count(self, ns: Namespace) -> int:
        """How many records (write-once namespaces: every record is opened to count it)."""
        with self._read():
            ns_id, registered = self._namespace_entry(ns)
            if not registered:
                self._unregistered(ns, ns_id)
                return 0
            if not ns.immutable:
                return len(self._manifest(ns_id).entries)
            return sum(1 for _ in self._scan(ns, ns_id))

    def _scan(self, ns: Namespace, ns_id: bytes) -> Iterator[tuple[bytes, bytes]]:
        with sqlite_errors():
            rows = self._conn.execute(
                "SELECT name, ver, sealed FROM record WHERE ns = ?", (ns_id,)
            ).fetchall()
        for rec_id, ver_col, sealed_col in rows:
            place = f"record {rec_id.hex() if is_id(rec_id) else '?'} in {ns.name}"
            if not is_id(rec_id):
                raise NodeDamaged(f"{place} has a damaged name column")
            ver, sealed = sealed_row((ver_col, sealed_col), place)
            if ver != 0:
                raise NodeDamaged(f"{place} has a version in a write-once namespace")
            key, value = decode_record(
                self._keys.open(sealed, aad(Kind.IMMUTABLE, ns_id, rec_id, 0), place), place
            )
            if self._keys.rec_id(ns_id, key) != rec_id:
                raise NodeDamaged(f"{place} holds another record")
            yield key, value

    @property
    def epoch(self) -> int:
        """The number of versioned write transactions this node file has committed."""
        with self._read():
            return self._root_now().epoch
