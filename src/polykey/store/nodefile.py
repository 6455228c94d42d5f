"""The node file: a SQLite database of sealed records with rollback detection.

One :class:`NodeFile` is one open, unlocked node file. Reads run in a read transaction (a
consistent snapshot, even while other processes write); writes run in :meth:`NodeFile.write`,
one ``BEGIN IMMEDIATE`` transaction per logical operation, so a crash leaves the last committed
state and concurrent writers (threads or processes) serialise instead of failing.

Versions: every write transaction that changes a mutable record advances the root's ``epoch``;
the record, its namespace's manifest and the root are all sealed with that epoch bound into their
associated data, and each parent holds the exact version of its children. Putting back an older
ciphertext of any one of them no longer matches its parent and is reported as damage.

One file: commits land in SQLite's write-ahead log (``node.pk-wal``) first.
:meth:`NodeFile.checkpoint` copies them into the main file (the agent calls it when writes pause,
and before it stops), and :func:`copy_node` makes a consistent one-file copy with SQLite's backup
API while other processes read and write the node.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polykey.crypto.aead import OVERHEAD, SealBroken
from polykey.crypto.kdf import Argon2Params
from polykey.errors import (
    InvalidInput,
    NodeBusy,
    NodeDamaged,
    NodeExists,
    NodeNotFound,
    NotANode,
    StorageError,
    UnsafeParameters,
    UnsupportedVersion,
    WrongPassword,
    WrongRecoveryCode,
)
from polykey.store import header as hdr
from polykey.store.container import (
    APPLICATION_ID,
    BUSY_TIMEOUT_S,
    SCHEMA,
    connect,
    is_id,
    open_connection,
    publish,
    sealed_row,
    show_key,
    sqlite_errors,
)
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
from polykey.store.transaction import Transaction

__all__ = [
    "CopyTargetExists",
    "Damage",
    "NodeFile",
    "Transaction",
    "copy_node",
    "read_header",
    "show_key",
]

CHECKPOINT_WAIT_S = 2.0  # how long a TRUNCATE checkpoint waits for other readers and writers
JOURNALS = ("-wal", "-shm", "-journal")  # SQLite's files beside a database, by its name
GET_BATCH = 500  # record names asked in one query by get_many (SQLite allows 999 parameters)
GET_MANY = (
    "SELECT name, ver, CASE WHEN ?1 < 0 OR length(sealed) <= ?1 THEN sealed END, length(sealed)"
    " FROM record WHERE ns = ?2 AND name IN"
)
RECORD_OVERHEAD = OVERHEAD + 4  # a sealed record beyond its key and value: nonce, tag, key length


class CopyTargetExists(NodeExists):
    """A file already exists where the copy would go."""

    hint = "`pk node copy` never overwrites a file: choose a new path, or remove the old one first."


@dataclass(frozen=True)
class Damage:
    """One damaged place in a node file, named as precisely as the damage allows."""

    place: str
    problem: str
    # "record": a record fails authentication or is unreadable (restore it from a backup);
    # "history": every record authenticates, but a vault's history does not hold together.
    kind: str = "record"

    def __str__(self) -> str:
        return f"{self.place}: {self.problem}"


def read_header(path: Path, *, allow_weak: bool = False) -> hdr.Header:
    """The parsed header of a node file, without unlocking it."""
    conn, body, checksum = open_connection(path)
    try:
        return hdr.decode(body, checksum, allow_weak=allow_weak)
    finally:
        conn.close()


def copy_node(source: Path, target: Path) -> Path:
    """Copy the node file at ``source`` to ``target``: one file, consistent, whole or not at all.

    SQLite's backup API reads one snapshot of the node (its main file and its write-ahead log),
    so this is safe while an agent or other processes read and write it. No password is needed:
    every record stays sealed. The copy is built under a temporary name beside ``target``
    (mode 0600), checked (it opens as a node file and passes ``PRAGMA quick_check``), left with
    no write-ahead log of its own, then linked into place. An existing ``target`` is never
    replaced; a folder receives the copy under the node file's own name. Returns the copy's path.

    Sets the process umask to 077 while it runs (SQLite creates the copy's -wal and -shm).
    """
    if not source.exists():
        raise NodeNotFound(str(source))
    if target.is_dir():
        target = target / source.name
    _check_target(source, target)  # first: opening the source makes its -wal and -shm
    src, body, checksum = open_connection(source)
    try:
        _check_header(body, checksum)
        umask = os.umask(0o077)
        try:
            _backup(src, target)
        finally:
            os.umask(umask)
    finally:
        src.close()
    return target


def _check_header(body: bytes, checksum: bytes) -> None:
    """The header parses (checksum, magic, format); its KDF bounds matter to unlocking only."""
    with contextlib.suppress(UnsafeParameters, UnsupportedVersion):
        hdr.decode(body, checksum, allow_weak=True)


def _check_target(source: Path, target: Path) -> None:
    if target.parent.resolve() == source.parent.resolve() and any(
        target.name == source.name + suffix for suffix in JOURNALS
    ):
        raise InvalidInput(
            f"{target} is the name of the node file's own journal",
            hint="Choose another name for the copy.",
        )
    if target.exists() or target.is_symlink():
        with contextlib.suppress(OSError):
            if target.samefile(source):
                raise InvalidInput(
                    f"{target} is the node file itself",
                    hint="Copy it to another path, for example on another disk.",
                )
        raise CopyTargetExists(str(target))
    if not target.parent.is_dir():
        raise InvalidInput(
            f"{target.parent} is not a folder",
            hint="Create the folder first, or choose a path in a folder that exists.",
        )
    for suffix in JOURNALS:
        journal = target.with_name(target.name + suffix)
        if journal.exists() or journal.is_symlink():
            raise CopyTargetExists(
                str(journal),
                hint="SQLite would take this old journal for the copy's own: remove it, or "
                "choose another path.",
            )


def _backup(src: sqlite3.Connection, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.urandom(6).hex()}.copying")
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with sqlite_errors():
            dst = connect(tmp)
        try:
            with sqlite_errors():
                src.backup(dst)  # one step: one read transaction, one snapshot of the source
                busy, log_frames, copied = dst.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            dst.close()
        leftover = [
            j for j in JOURNALS if (p := tmp.with_name(tmp.name + j)).exists() and p.stat().st_size
        ]
        if busy or log_frames != copied or leftover:
            raise StorageError(f"{target}: the copy could not be made one file")
        _verify_copy(tmp, target)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            publish(tmp, target)
        except NodeExists:
            raise CopyTargetExists(str(target)) from None
    except OSError as exc:
        raise StorageError(f"{target}: {exc.strerror or exc}") from None
    finally:
        for name in (tmp, *(tmp.with_name(tmp.name + j) for j in JOURNALS)):
            with contextlib.suppress(FileNotFoundError):
                name.unlink()


def _verify_copy(tmp: Path, target: Path) -> None:
    """The copy opens as a node file, header and all, and SQLite finds its structure sound."""
    hint = (
        "The node file was read but its copy does not check: run `pk node check` on the node; "
        "to keep a damaged file as it is, stop the agent and copy it with cp."
    )
    try:
        conn, body, checksum = open_connection(tmp)
        try:
            _check_header(body, checksum)
            with sqlite_errors():
                problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        finally:
            conn.close()
    except (NodeDamaged, NotANode) as exc:
        problem = f"the copy for {target} does not open: {exc.summary}"
        raise NodeDamaged(problem, hint=hint) from None
    if problems != ["ok"]:
        raise NodeDamaged(f"the copy for {target} fails SQLite's quick_check", hint=hint)


class NodeFile:
    """An open, unlocked node file."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        header: hdr.Header,
        data_key: bytes,
        *,
        allow_weak: bool,
    ) -> None:
        self.path = path
        self.header = header
        self._conn = conn
        self._keys = RecordKeys(data_key)
        self._data_key = data_key
        self._allow_weak = allow_weak
        self._lock = threading.RLock()
        self._data_version: int | None = None
        self._root: Root | None = None
        self._manifests: dict[bytes, Manifest] = {}
        self._in_write = False
        self._in_read = False
        self._written_at: float | None = None

    def __repr__(self) -> str:
        return f"NodeFile({str(self.path)!r})"

    # --- opening and creating ---------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path, password: bytes, *, allow_weak: bool = False, load_root: bool = True
    ) -> NodeFile:
        """Unlock a node file; ``load_root=False`` defers reading the root (for checking)."""
        conn, body, checksum = open_connection(path)
        try:
            header = hdr.decode(body, checksum, allow_weak=allow_weak)
            data_key = hdr.unwrap_with_password(header, password, allow_weak=allow_weak)
            if data_key is None:
                raise WrongPassword()
            node = cls(path, conn, header, data_key, allow_weak=allow_weak)
            if load_root:
                node._load_root()
        except BaseException:
            conn.close()
            raise
        return node

    @classmethod
    def open_with_recovery(
        cls, path: Path, recovery_secret: bytes, *, allow_weak: bool = False
    ) -> NodeFile:
        conn, body, checksum = open_connection(path)
        try:
            header = hdr.decode(body, checksum, allow_weak=allow_weak)
            data_key = hdr.unwrap_with_recovery(header, recovery_secret)
            if data_key is None:
                raise WrongRecoveryCode()
            node = cls(path, conn, header, data_key, allow_weak=allow_weak)
            node._load_root()
        except BaseException:
            conn.close()
            raise
        return node

    @classmethod
    def create(
        cls,
        path: Path,
        password: bytes,
        recovery_secret: bytes,
        kdf: Argon2Params,
        *,
        allow_weak: bool = False,
        initial: Callable[[Transaction], None] | None = None,
    ) -> NodeFile:
        """Create a node file atomically: it appears complete at ``path``, or not at all."""
        if path.exists() or path.is_symlink():
            raise NodeExists(str(path))
        data_key = os.urandom(hdr.DATA_KEY_BYTES)
        header = hdr.new_header(data_key, password, recovery_secret, kdf, allow_weak=allow_weak)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{path.parent}: {exc.strerror}") from None
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.creating")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            with sqlite_errors():
                conn = connect(tmp)
            try:
                with sqlite_errors():
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {hdr.FORMAT}")
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(SCHEMA)
                    body, checksum = header.encode()
                    conn.execute("INSERT INTO header VALUES (1, ?, ?)", (body, checksum))
                node = cls(tmp, conn, header, data_key, allow_weak=allow_weak)
                with sqlite_errors():
                    (node._data_version,) = conn.execute("PRAGMA data_version").fetchone()
                node._root = Root()
                with node.write() as tx:
                    tx.touch_root()
                    if initial is not None:
                        initial(tx)
            finally:
                conn.close()
            publish(tmp, path)
        except OSError as exc:
            raise StorageError(f"{path}: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return cls.open_with_key(path, header, data_key, allow_weak=allow_weak)

    @classmethod
    def open_with_key(
        cls, path: Path, header: hdr.Header, data_key: bytes, *, allow_weak: bool
    ) -> NodeFile:
        conn, _, _ = open_connection(path)
        node = cls(path, conn, header, data_key, allow_weak=allow_weak)
        try:
            node._load_root()
        except BaseException:
            conn.close()
            raise
        return node

    def close(self) -> None:
        """Close the connection. When it is the last one open on the file, SQLite copies the
        write-ahead log into the main file and deletes ``-wal`` and ``-shm``: one file again."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> NodeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the header ---------------------------------------------------------------------------

    def verify_password(self, password: bytes) -> bool:
        """Whether ``password`` unwraps this file's data key (runs the KDF)."""
        from polykey.crypto.kdf import equal

        key = hdr.unwrap_with_password(self.header, password, allow_weak=self._allow_weak)
        return key is not None and equal(key, self._data_key)

    def change_password(self, new_password: bytes, kdf: Argon2Params) -> None:
        """Wrap the data key under a new password; the recovery wrap is unchanged."""
        header = hdr.rewrap_password(
            self.header, self._data_key, new_password, kdf, allow_weak=self._allow_weak
        )
        self._put_header(header)

    def _update_header(self, header: hdr.Header) -> None:
        """Within an open SQLite transaction: store ``header``."""
        body, checksum = header.encode()
        self._conn.execute(
            "UPDATE header SET body = ?, checksum = ? WHERE id = 1", (body, checksum)
        )

    def _put_header(self, header: hdr.Header) -> None:
        with self._lock, sqlite_errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._update_header(header)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._written_at = time.monotonic()
        self.header = header

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

    # --- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self, *, recovery_secret: bytes | None = None) -> Iterator[Transaction]:
        """One write transaction: everything put or deleted in it lands together or not at all.
        With ``recovery_secret`` (a key renewal), the header's recovery wrap is replaced in the
        same SQLite transaction: the new code unlocks the file exactly when the records of the
        renewal are there, the old code exactly when they are not."""
        header = None
        with self._lock:
            if self._in_write:
                raise RuntimeError("write transactions do not nest")
            if self._in_read:
                raise RuntimeError("a write cannot start inside a read snapshot")
            with sqlite_errors():
                self._conn.execute("BEGIN IMMEDIATE")
            self._in_write = True
            try:
                self._refresh()
                tx = Transaction(self)
                yield tx
                root, manifests = tx.apply()
                with sqlite_errors():
                    if recovery_secret is not None:
                        header = hdr.rewrap_recovery(self.header, self._data_key, recovery_secret)
                        self._update_header(header)
                    self._conn.execute("COMMIT")
            except BaseException:
                self._in_write = False
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                self._root = None
                self._manifests = {}
                raise
            self._in_write = False
            self._written_at = time.monotonic()
            self._root = root
            self._manifests.update(manifests)
            if header is not None:
                self.header = header

    # --- the write-ahead log and copies --------------------------------------------------------

    @property
    def written_at(self) -> float | None:
        """When (``time.monotonic()``) this connection last committed a write that no complete
        checkpoint has copied into the main file yet; None when the main file holds them all."""
        return self._written_at

    def checkpoint(self, *, truncate: bool = False, wait: float = CHECKPOINT_WAIT_S) -> bool:
        """Copy the write-ahead log into the main file; whether the main file now holds every
        commit. A busy file is an answer (False), never an error.

        By default PASSIVE: it never waits and never blocks a writer, and copies what no reader
        still needs (a reader of an older snapshot leaves the rest for the next checkpoint).
        ``truncate=True`` (before closing) also waits up to ``wait`` seconds for readers and
        writers of other connections, blocking new writers meanwhile, then empties the -wal."""
        with self._lock:
            if self._in_read or self._in_write:  # a checkpoint cannot run inside a transaction
                return False
            mode = "TRUNCATE" if truncate else "PASSIVE"
            timeout_ms = int(BUSY_TIMEOUT_S * 1000)
            try:
                with sqlite_errors():
                    if truncate:
                        self._conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                    try:
                        row = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                    finally:
                        if truncate:
                            self._conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            except NodeBusy:
                return False
            busy, log_frames, copied = row
            # log_frames is -1 when the file is not in WAL mode: nothing to copy
            done = bool(busy == 0 and copied == log_frames)
            if done:
                self._written_at = None
            return done

    def copy_to(self, target: Path) -> Path:
        """A consistent one-file copy of this node file at ``target`` (see :func:`copy_node`)."""
        return copy_node(self.path, target)

    # --- checking -----------------------------------------------------------------------------

    def check(self) -> list[Damage]:
        """Authenticate every record; report what is damaged, by name where it can be known."""
        with self._lock:
            damage: list[Damage] = []
            try:
                with self._read():
                    self._check_into(damage)
            except NodeDamaged as exc:
                damage.append(Damage("node file", exc.detail or exc.summary))
            return damage

    def _check_into(self, damage: list[Damage]) -> None:
        with sqlite_errors():
            problems = [row[0] for row in self._conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            damage.extend(Damage("SQLite structure", p) for p in problems[:20])
        try:
            self._load_root()
        except NodeDamaged as exc:
            damage.append(Damage("root", exc.detail))
            return
        root = self._root_now()
        manifests: dict[bytes, Manifest] = {}
        for ns_id, (kind, _, name) in root.namespaces.items():
            if kind == Kind.MUTABLE:
                try:
                    manifests[ns_id] = self._manifest(ns_id)
                except NodeDamaged as exc:
                    damage.append(Damage(name, exc.detail))
        with sqlite_errors():
            for ns_id, ver, sealed in self._conn.execute(
                "SELECT ns, ver, sealed FROM manifest"
            ).fetchall():
                entry = root.namespaces.get(ns_id) if is_id(ns_id) else None
                if entry is None or entry[0] != Kind.MUTABLE:
                    place = self._orphan_manifest_name(ns_id, ver, sealed)
                    damage.append(Damage(place, "is not listed in the root (rolled back?)"))
            rows = self._conn.execute("SELECT ns, name, ver, sealed FROM record")
            seen: set[tuple[bytes, bytes]] = set()
            for ns_id, rec_id, ver, sealed in rows:
                seen.add((ns_id, rec_id))
                problem = self._check_record(root, manifests, ns_id, rec_id, ver, sealed)
                if problem is not None:
                    damage.append(problem)
        for ns_id, manifest in manifests.items():
            for rec_id, (_, key) in manifest.entries.items():
                if (ns_id, rec_id) not in seen:
                    damage.append(Damage(f"{manifest.name}/{show_key(key)}", "record is missing"))

    def _orphan_manifest_name(self, ns_id: Any, ver: Any, sealed: Any) -> str:
        """Name an unlisted manifest by opening it, if its own row still authenticates."""
        if not is_id(ns_id):
            return "a manifest with a damaged name column"
        try:
            ver, sealed = sealed_row((ver, sealed), "manifest")
            plain = self._keys.open(sealed, aad(Kind.MANIFEST, ns_id, version=ver), "manifest")
            return f"the manifest of {Manifest.decode(plain, 'manifest').name}"
        except NodeDamaged:
            return f"manifest {ns_id.hex()}"

    def _check_record(
        self,
        root: Root,
        manifests: dict[bytes, Manifest],
        ns_id: bytes,
        rec_id: bytes,
        ver: Any,
        sealed: Any,
    ) -> Damage | None:
        entry = root.namespaces.get(ns_id) if is_id(ns_id) else None
        shown = rec_id.hex() if is_id(rec_id) else "?"
        if entry is None:
            return Damage(f"record {shown}", "belongs to no namespace in the root")
        kind, _, name = entry
        place = f"{name}/{shown}"
        if not is_id(rec_id):
            return Damage(place, "record has a damaged name column")
        try:
            ver, sealed = sealed_row((ver, sealed), place)
        except NodeDamaged:
            return Damage(place, "record has a damaged version or value column")
        if kind == Kind.MUTABLE:
            manifest = manifests.get(ns_id)
            if manifest is None:
                return None  # already reported with its manifest
            listed = manifest.entries.get(rec_id)
            if listed is None:
                return Damage(place, "record is not listed in its namespace")
            place = f"{name}/{show_key(listed[1])}"
            if listed[0] != ver:
                return Damage(place, "record was rolled back or replaced")
        elif ver != 0:
            return Damage(place, "record has a version in a write-once namespace")
        try:
            plain = self._keys.open(sealed, aad(kind, ns_id, rec_id, ver), place)
            key, _ = decode_record(plain, place)
        except NodeDamaged as exc:
            return Damage(place, exc.detail.removeprefix(place + " ") or "failed authentication")
        if self._keys.rec_id(ns_id, key) != rec_id:
            return Damage(place, "record holds another record's name")
        return None
