"""The node file: a SQLite database of sealed records with rollback detection.

One :class:`NodeFile` is one open, unlocked node file. Reads run in a read transaction (a
consistent snapshot, even while other processes write); writes run in :meth:`NodeFile.write`,
one ``BEGIN IMMEDIATE`` transaction per logical operation, so a crash leaves the last committed
state and concurrent writers (threads or processes) serialise instead of failing.

Versions: every write transaction that changes a mutable record advances the root's ``epoch``;
the record, its namespace's manifest and the root are all sealed with that epoch bound into their
associated data, and each parent holds the exact version of its children. Putting back an older
ciphertext of any one of them no longer matches its parent and is reported as damage.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from polykey.crypto.kdf import Argon2Params
from polykey.errors import (
    NodeBusy,
    NodeDamaged,
    NodeExists,
    NodeNotFound,
    NotANode,
    StorageError,
    WrongPassword,
    WrongRecoveryCode,
)
from polykey.store import header as hdr
from polykey.store.records import (
    ID_BYTES,
    MAX_KEY_BYTES,
    Kind,
    Manifest,
    Namespace,
    RecordKeys,
    Root,
    aad,
    decode_record,
    encode_record,
)

SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x504B4E44  # "PKND"
BUSY_TIMEOUT_S = 60.0
SCHEMA = """
CREATE TABLE header (id INTEGER PRIMARY KEY CHECK (id = 1), body BLOB NOT NULL,
                     checksum BLOB NOT NULL);
CREATE TABLE root (id INTEGER PRIMARY KEY CHECK (id = 1), ver INTEGER NOT NULL,
                   sealed BLOB NOT NULL);
CREATE TABLE manifest (ns BLOB PRIMARY KEY, ver INTEGER NOT NULL, sealed BLOB NOT NULL)
    WITHOUT ROWID;
CREATE TABLE record (ns BLOB NOT NULL, name BLOB NOT NULL, ver INTEGER NOT NULL,
                     sealed BLOB NOT NULL, PRIMARY KEY (ns, name)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Damage:
    """One damaged place in a node file, named as precisely as the damage allows."""

    place: str
    problem: str

    def __str__(self) -> str:
        return f"{self.place}: {self.problem}"


def sealed_row(row: Any, place: str) -> tuple[int, bytes]:
    """(version, sealed) of a row, refusing the wrong SQLite types a damaged file may hold."""
    ver, sealed = row
    if type(ver) is not int or not 0 <= ver < 1 << 63 or not isinstance(sealed, bytes):
        raise NodeDamaged(f"{place} has a damaged version or value column")
    return ver, sealed


def is_id(value: Any) -> bool:
    return isinstance(value, bytes) and len(value) == ID_BYTES


def show_key(key: bytes) -> str:
    """A record key as text for messages: UTF-8 when printable, else hex."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return key.hex()
    return text if text.isprintable() else key.hex()


@contextlib.contextmanager
def _sqlite_errors() -> Iterator[None]:
    """Turn SQLite's exceptions into the node file's user-facing errors."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise NodeBusy() from None
        if "disk" in text or "full" in text or "readonly" in text or "unable to open" in text:
            raise StorageError(str(exc)) from None
        raise NodeDamaged(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise NodeDamaged(str(exc)) from None
    except (UnicodeDecodeError, OverflowError) as exc:
        # sqlite3 fails to decode the error text of a schema damaged into invalid UTF-8
        raise NodeDamaged(f"the SQLite structure is damaged ({type(exc).__name__})") from None


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        f"file:{quote(str(path))}?mode=rw",
        uri=True,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_S,
        check_same_thread=False,
    )
    for pragma in (
        "PRAGMA synchronous = FULL",
        "PRAGMA secure_delete = ON",
        "PRAGMA cell_size_check = ON",
        "PRAGMA trusted_schema = OFF",
        "PRAGMA temp_store = MEMORY",
    ):
        conn.execute(pragma)
    return conn


def _open_connection(path: Path) -> tuple[sqlite3.Connection, bytes, bytes]:
    """Connect to an existing node file and read its header row; no key is needed."""
    if not path.exists():
        raise NodeNotFound(str(path))
    if not path.is_file():
        raise NotANode(f"{path} is not a file")
    try:
        with path.open("rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StorageError(f"{path}: {exc.strerror}") from None
    if magic != SQLITE_MAGIC:
        raise NotANode(str(path))
    with _sqlite_errors():
        conn = _connect(path)
    try:
        with _sqlite_errors():
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            if app_id != APPLICATION_ID:
                raise NotANode(str(path))
            row = conn.execute("SELECT body, checksum FROM header WHERE id = 1").fetchone()
        if row is None:
            raise NodeDamaged("the header row is missing")
        body, checksum = row
        if not isinstance(body, bytes) or not isinstance(checksum, bytes):
            raise NodeDamaged("the header row has the wrong type")
    except BaseException:
        conn.close()
        raise
    return conn, body, checksum


def read_header(path: Path, *, allow_weak: bool = False) -> hdr.Header:
    """The parsed header of a node file, without unlocking it."""
    conn, body, checksum = _open_connection(path)
    try:
        return hdr.decode(body, checksum, allow_weak=allow_weak)
    finally:
        conn.close()


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

    def __repr__(self) -> str:
        return f"NodeFile({str(self.path)!r})"

    # --- opening and creating ---------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path, password: bytes, *, allow_weak: bool = False, load_root: bool = True
    ) -> NodeFile:
        """Unlock a node file; ``load_root=False`` defers reading the root (for checking)."""
        conn, body, checksum = _open_connection(path)
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
        conn, body, checksum = _open_connection(path)
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
            with _sqlite_errors():
                conn = _connect(tmp)
            try:
                with _sqlite_errors():
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {hdr.FORMAT}")
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(SCHEMA)
                    body, checksum = header.encode()
                    conn.execute("INSERT INTO header VALUES (1, ?, ?)", (body, checksum))
                node = cls(tmp, conn, header, data_key, allow_weak=allow_weak)
                with _sqlite_errors():
                    (node._data_version,) = conn.execute("PRAGMA data_version").fetchone()
                node._root = Root()
                with node.write() as tx:
                    tx.touch_root()
                    if initial is not None:
                        initial(tx)
            finally:
                conn.close()
            _publish(tmp, path)
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
        conn, _, _ = _open_connection(path)
        node = cls(path, conn, header, data_key, allow_weak=allow_weak)
        try:
            node._load_root()
        except BaseException:
            conn.close()
            raise
        return node

    def close(self) -> None:
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
        body, checksum = header.encode()
        with self._lock, _sqlite_errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "UPDATE header SET body = ?, checksum = ? WHERE id = 1", (body, checksum)
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        self.header = header

    # --- snapshots and caches -----------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        with self._lock:
            if self._in_write:
                yield
                return
            with _sqlite_errors():
                self._conn.execute("BEGIN")
            try:
                self._refresh()
                yield
            finally:
                with _sqlite_errors():
                    self._conn.execute("COMMIT")

    def _refresh(self) -> None:
        """Drop cached root and manifests when another connection has committed."""
        with _sqlite_errors():
            (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if version != self._data_version:
            self._data_version = version
            self._root = None
            self._manifests = {}
        if self._root is None:
            self._load_root()

    def _load_root(self) -> None:
        with _sqlite_errors():
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
        with _sqlite_errors():
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

    def _unregistered(self, ns: Namespace, ns_id: bytes) -> None:
        """A namespace the root does not list must have no rows (else the root was rolled back)."""
        with _sqlite_errors():
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
        with _sqlite_errors():
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
            with _sqlite_errors():
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
        with _sqlite_errors():
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
    def write(self) -> Iterator[Transaction]:
        """One write transaction: everything put or deleted in it lands together or not at all."""
        with self._lock:
            if self._in_write:
                raise RuntimeError("write transactions do not nest")
            with _sqlite_errors():
                self._conn.execute("BEGIN IMMEDIATE")
            self._in_write = True
            try:
                self._refresh()
                tx = Transaction(self)
                yield tx
                root, manifests = tx.apply()
                with _sqlite_errors():
                    self._conn.execute("COMMIT")
            except BaseException:
                self._in_write = False
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                self._root = None
                self._manifests = {}
                raise
            self._in_write = False
            self._root = root
            self._manifests.update(manifests)

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
        with _sqlite_errors():
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
        with _sqlite_errors():
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


@dataclass
class Transaction:
    """The changes of one write transaction, applied when its ``with`` block ends."""

    node: NodeFile
    _puts: dict[tuple[Namespace, bytes], bytes | tuple[bytes | memoryview, ...] | None] = field(
        default_factory=dict
    )
    _drops: list[Namespace] = field(default_factory=list)
    _force_root: bool = False

    def put(self, ns: Namespace, key: bytes, value: bytes) -> None:
        if not key or len(key) > MAX_KEY_BYTES:
            raise ValueError("record keys are 1 to 4096 bytes")
        self._puts[(ns, bytes(key))] = bytes(value)

    def put_parts(self, ns: Namespace, key: bytes, parts: tuple[bytes | memoryview, ...]) -> None:
        """Put a value given as parts, joined only when sealed (large values: one copy less)."""
        if not key or len(key) > MAX_KEY_BYTES:
            raise ValueError("record keys are 1 to 4096 bytes")
        self._puts[(ns, bytes(key))] = parts

    def delete(self, ns: Namespace, key: bytes) -> None:
        self._puts[(ns, bytes(key))] = None

    def get(self, ns: Namespace, key: bytes) -> bytes | None:
        if (ns, key) in self._puts:
            pending = self._puts[(ns, key)]
            return b"".join(pending) if isinstance(pending, tuple) else pending
        if ns in self._drops:
            return None
        return self.node._get(ns, key)

    def drop_namespace(self, ns: Namespace) -> None:
        """Delete a whole namespace (every record, its manifest, its root entry)."""
        self._drops.append(ns)
        for pending in [k for k in self._puts if k[0] == ns]:
            del self._puts[pending]

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
        with _sqlite_errors():
            for ns in self._drops:
                ns_id = keys.ns_id(ns.name)
                if root.namespaces.pop(ns_id, None) is not None:
                    conn.execute("DELETE FROM record WHERE ns = ?", (ns_id,))
                    conn.execute("DELETE FROM manifest WHERE ns = ?", (ns_id,))
                    need_root = True
            for (ns, key), value in self._puts.items():
                ns_id, registered = node._namespace_entry(ns)
                registered = registered and ns not in self._drops
                if value is None and not registered:
                    continue
                if not registered and ns_id not in root.namespaces:
                    root.namespaces[ns_id] = (ns.kind, 0, ns.name)
                    need_root = True
                rec_id = keys.rec_id(ns_id, key)
                if ns.immutable:
                    if value is None:
                        conn.execute(
                            "DELETE FROM record WHERE ns = ? AND name = ?", (ns_id, rec_id)
                        )
                    else:
                        sealed = keys.seal(
                            encode_record(key, value), aad(Kind.IMMUTABLE, ns_id, rec_id, 0)
                        )
                        conn.execute(
                            "INSERT OR IGNORE INTO record VALUES (?, ?, 0, ?)",
                            (ns_id, rec_id, sealed),
                        )
                    continue
                manifest = manifests.get(ns_id)
                if manifest is None:
                    current = node._manifest(ns_id) if registered else Manifest(ns.name)
                    manifest = Manifest(ns.name, dict(current.entries))
                    manifests[ns_id] = manifest
                if value is None:
                    if manifest.entries.pop(rec_id, None) is not None:
                        conn.execute(
                            "DELETE FROM record WHERE ns = ? AND name = ?", (ns_id, rec_id)
                        )
                    continue
                sealed = keys.seal(
                    encode_record(key, value), aad(Kind.MUTABLE, ns_id, rec_id, root.epoch)
                )
                conn.execute(
                    "INSERT OR REPLACE INTO record VALUES (?, ?, ?, ?)",
                    (ns_id, rec_id, root.epoch, sealed),
                )
                manifest.entries[rec_id] = (root.epoch, key)
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


def _publish(tmp: Path, path: Path) -> None:
    """Move a finished node file into place without ever replacing an existing one."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise NodeExists(str(path)) from None
    except OSError:
        # Filesystems without hard links (FAT on a USB stick): check, then rename.
        if path.exists():
            raise NodeExists(str(path)) from None
        os.rename(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
