"""Salvage: the records of a damaged node file that still authenticate, and a new file of them.

A damaged root record (or manifest) makes every read of a node file fail, although each record
is sealed on its own and may be whole. :class:`DamagedNode` opens such a file read-only with its
password, never through its root or its manifests: each row of the ``record`` table is opened
with the associated data the format defines for the namespace the caller names (write-once
records at version 0, mutable records at the version their row holds). The root and the
manifests are used only where they still authenticate themselves: to name what was lost, and to
check the version of a mutable record (a record that an authenticated manifest, vouched for by
an authenticated root, lists at another version or not at all is an older or deleted value: it
is reported, not kept). :meth:`DamagedNode.create` then writes a new node file with the same
header and data key (so the same password, KDF parameters and recovery code) through
:class:`NodeFile` and :class:`Transaction`: a fresh root and fresh manifests.

Which namespaces exist is the business of the layers above (they pass the names, and derive
more names, such as a vault's, from what they salvaged); docs/spec/node-file.md ("Salvage")
is this module's specification.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from polykey.crypto.aead import SealBroken
from polykey.errors import NodeDamaged, NodeExists, NotANode, StorageError, WrongPassword
from polykey.store import header as hdr
from polykey.store.container import (
    APPLICATION_ID,
    JOURNALS,
    SCHEMA,
    SQLITE_MAGIC,
    connect,
    is_id,
    publish,
    show_key,
    sqlite_errors,
)
from polykey.store.nodefile import NodeFile
from polykey.store.records import (
    Kind,
    Manifest,
    Namespace,
    RecordKeys,
    Root,
    aad,
    decode_record,
)

__all__ = ["DamagedNode", "HeaderDamaged", "Lost", "Salvaged"]


class HeaderDamaged(NodeDamaged):
    """The node file's header is damaged, and nothing can be salvaged without it."""

    hint = (
        "The header holds the wrapped data key that every record needs: restore the node file "
        "from a copy, or make the node again (`pk bootstrap --recovery-code-file FILE` keeps the "
        "NodeId) and bring its vaults back from a backup node (`pk backup restore PATH`)."
    )


@dataclass(frozen=True)
class Lost:
    """Records of the damaged file that the new one will not hold."""

    namespace: str | None  # None: no salvaged record, root or manifest names their namespace
    key: bytes | None  # the record's key, where the record or an intact manifest names it
    problem: str
    count: int = 1
    rec_id: bytes | None = field(default=None, repr=False)  # the row's hidden name, if whole

    @property
    def place(self) -> str:
        where = self.namespace if self.namespace is not None else "an unnamed namespace"
        return where if self.key is None else f"{where}/{show_key(self.key)}"

    def __str__(self) -> str:
        counted = f"{self.count} records: " if self.count != 1 else ""
        return f"{self.place}: {counted}{self.problem}"


@dataclass
class Salvaged:
    """What authenticated in one namespace of the damaged file."""

    namespace: Namespace
    records: dict[bytes, bytes] = field(default_factory=dict, repr=False)  # values are secrets
    lost: list[Lost] = field(default_factory=list)
    # mutable records kept whose version nothing intact could vouch for (rollback unchecked)
    unchecked: int = 0


@dataclass
class _ManifestSeen:
    manifest: Manifest
    vouched: bool  # the intact root lists it at exactly this version


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot change the file: ``mode=ro``, and ``immutable`` when there is no
    write-ahead log to read (then SQLite makes no -wal or -shm beside the damaged file)."""
    wal = path.with_name(path.name + "-wal")
    immutable = "" if wal.exists() else "&immutable=1"
    with sqlite_errors():
        conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro{immutable}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute("PRAGMA cell_size_check = ON")
        conn.execute("PRAGMA trusted_schema = OFF")
    return conn


class DamagedNode:
    """A node file opened for salvage: read-only, unlocked, its root and manifests not trusted."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        header: hdr.Header,
        data_key: bytes,
        *,
        allow_weak: bool = False,
    ) -> None:
        self.path = path
        self._allow_weak = allow_weak
        self.header = header
        self._conn = conn
        self._data_key = data_key
        self._keys = RecordKeys(data_key)
        self._names: dict[bytes, str] = {}  # ns_id -> name, from anything that authenticated
        self._root: Root | None = None
        self._manifests: dict[bytes, _ManifestSeen] = {}
        self._read_ns: set[bytes] = set()
        self.problems: list[str] = []  # what is wrong with the root and the manifests
        self.unreadable: list[str] = []  # what SQLite could not read at all

    def __repr__(self) -> str:
        return f"DamagedNode({str(self.path)!r})"

    @classmethod
    def open(cls, path: Path, password: bytes, *, allow_weak: bool = False) -> DamagedNode:
        """Unlock ``path`` with its password; only the header and the wrapped key must be whole
        (else :class:`HeaderDamaged`; a wrong password is :class:`WrongPassword`)."""
        conn = cls._open_file(path)
        try:
            try:
                with sqlite_errors():
                    row = conn.execute("SELECT body, checksum FROM header WHERE id = 1").fetchone()
                if row is None:
                    raise NodeDamaged("the header row is missing")
                body, checksum = row
                if not isinstance(body, bytes) or not isinstance(checksum, bytes):
                    raise NodeDamaged("the header row has the wrong type")
                header = hdr.decode(body, checksum, allow_weak=allow_weak)
                data_key = hdr.unwrap_with_password(header, password, allow_weak=allow_weak)
            except (NodeDamaged, NotANode) as exc:
                raise HeaderDamaged(f"{path} ({exc.detail or exc.summary})") from None
            if data_key is None:
                raise WrongPassword()
            node = cls(path, conn, header, data_key, allow_weak=allow_weak)
            with sqlite_errors():
                conn.execute("BEGIN")  # one snapshot for the whole salvage
            node._load_root()
            node._load_manifests()
        except BaseException:
            conn.close()
            raise
        return node

    @staticmethod
    def _open_file(path: Path) -> sqlite3.Connection:
        from polykey.errors import NodeNotFound

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
        conn = _connect_read_only(path)
        try:
            with sqlite_errors():
                (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        except NodeDamaged as exc:
            conn.close()
            raise HeaderDamaged(f"{path} ({exc.detail})") from None
        if app_id != APPLICATION_ID:
            conn.close()
            raise NotANode(str(path))
        return conn

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("COMMIT")
        self._conn.close()

    def __enter__(self) -> DamagedNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the root and the manifests: names, and versions where they still authenticate ---------

    def _rows(self, sql: str, params: tuple[Any, ...], what: str) -> Iterator[tuple[Any, ...]]:
        """The rows of a query, as far as SQLite can read them; a failure is noted, not raised."""
        try:
            with sqlite_errors():
                yield from self._conn.execute(sql, params)
        except NodeDamaged as exc:
            self.unreadable.append(f"{what}: {exc.detail}")

    def _load_root(self) -> None:
        rows = list(self._rows("SELECT ver, sealed FROM root WHERE id = 1", (), "the root table"))
        if not rows:
            self.problems.append("the root record is missing")
            return
        ver, sealed = rows[0]
        if type(ver) is not int or not 0 <= ver < 1 << 63 or not isinstance(sealed, bytes):
            self.problems.append("the root record has a damaged version or value column")
            return
        try:
            root = Root.decode(self._keys.sealer.open(sealed, aad(Kind.ROOT, version=ver)))
        except SealBroken:
            self.problems.append("the root record failed authentication")
            return
        except NodeDamaged as exc:
            self.problems.append(exc.detail)
            return
        if root.epoch != ver:
            self.problems.append("the root record's version does not match its contents")
            return
        self._root = root
        for ns_id, (_, _, name) in root.namespaces.items():
            self._names[ns_id] = name

    def _load_manifests(self) -> None:
        seen: set[bytes] = set()
        query = "SELECT ns, ver, sealed FROM manifest"
        for ns_id, ver, sealed in self._rows(query, (), "the manifest table"):
            if not is_id(ns_id):
                self.problems.append("a manifest has a damaged name column")
                continue
            seen.add(ns_id)
            if type(ver) is not int or not 0 <= ver < 1 << 63 or not isinstance(sealed, bytes):
                self.problems.append(f"{self._manifest_place(ns_id)} has a damaged column")
                continue
            try:
                plain = self._keys.sealer.open(sealed, aad(Kind.MANIFEST, ns_id, version=ver))
                manifest = Manifest.decode(plain, self._manifest_place(ns_id))
            except SealBroken:
                self.problems.append(f"{self._manifest_place(ns_id)} failed authentication")
                continue
            except NodeDamaged as exc:
                self.problems.append(exc.detail)
                continue
            if self._keys.ns_id(manifest.name) != ns_id:
                self.problems.append(f"{self._manifest_place(ns_id)} names another namespace")
                continue
            self._names[ns_id] = manifest.name
            listed = self._root.namespaces.get(ns_id) if self._root is not None else None
            vouched = listed == (Kind.MUTABLE, ver, manifest.name)
            if self._root is not None and not vouched:
                self.problems.append(
                    f"the manifest of {manifest.name} was rolled back or replaced"
                    if listed is not None
                    else f"the manifest of {manifest.name} is not listed in the root"
                )
            self._manifests[ns_id] = _ManifestSeen(manifest, vouched)
        if self._root is not None:
            for ns_id, (kind, _, name) in self._root.namespaces.items():
                if kind == Kind.MUTABLE and ns_id not in seen:
                    self.problems.append(f"the manifest of {name} is missing")

    def _manifest_place(self, ns_id: bytes) -> str:
        name = self._names.get(ns_id)
        return f"the manifest of {name}" if name is not None else f"manifest {ns_id.hex()}"

    def describe_problems(self) -> list[str]:
        """The damage to the root and the manifests, each manifest named where anything now
        names its namespace (the names salvaged since opening included)."""
        out = []
        for problem in self.problems:
            named = problem
            for ns_id, name in self._names.items():
                named = named.replace(f"manifest {ns_id.hex()}", f"the manifest of {name}")
            out.append(named)
        return out

    # --- records ----------------------------------------------------------------------------------

    def read(self, ns: Namespace) -> Salvaged:
        """Every record of ``ns`` that authenticates under its name; the rest as :class:`Lost`."""
        ns_id = self._keys.ns_id(ns.name)
        self._names[ns_id] = ns.name
        self._read_ns.add(ns_id)
        out = Salvaged(ns)
        seen = _ManifestSeen(Manifest(ns.name), False)
        if not ns.immutable:
            seen = self._manifests.get(ns_id, seen)
        listed = seen.manifest.entries
        found: set[bytes] = set()
        query = "SELECT name, ver, sealed FROM record WHERE ns = ?"
        for rec_id, ver, sealed in self._rows(query, (ns_id,), f"the records of {ns.name}"):
            if not is_id(rec_id):
                out.lost.append(Lost(ns.name, None, "has a damaged name column"))
                continue
            found.add(rec_id)
            named = listed[rec_id][1] if rec_id in listed else None
            problem, key, value = self._open_record(ns, ns_id, rec_id, ver, sealed)
            if problem is not None or key is None or value is None:
                problem = problem or "failed authentication"
                out.lost.append(Lost(ns.name, named, problem, rec_id=rec_id))
                continue
            if not ns.immutable:
                if seen.vouched and (rec_id not in listed or listed[rec_id][0] != ver):
                    out.lost.append(
                        Lost(
                            ns.name,
                            key,
                            "is an older or deleted value (its intact manifest lists "
                            + ("another version)" if rec_id in listed else "no such record)"),
                        )
                    )
                    continue
                if not seen.vouched:
                    out.unchecked += 1
            out.records[key] = value
        if seen.vouched:
            for rec_id, (_, key) in listed.items():
                if rec_id not in found:
                    out.lost.append(Lost(ns.name, key, "is missing (its manifest lists it)"))
        return out

    def rec_id(self, ns: Namespace, key: bytes) -> bytes:
        """The hidden name a record of ``key`` has in ``ns`` (to name a lost record later)."""
        return self._keys.rec_id(self._keys.ns_id(ns.name), key)

    def _open_record(
        self, ns: Namespace, ns_id: bytes, rec_id: bytes, ver: Any, sealed: Any
    ) -> tuple[str | None, bytes | None, bytes | None]:
        if type(ver) is not int or not 0 <= ver < 1 << 63 or not isinstance(sealed, bytes):
            return "has a damaged version or value column", None, None
        if ns.immutable and ver != 0:
            return "has a version in a write-once namespace", None, None
        try:
            plain = self._keys.sealer.open(sealed, aad(ns.kind, ns_id, rec_id, ver))
            key, value = decode_record(plain, "record")
        except SealBroken:
            return "failed authentication", None, None
        except NodeDamaged:
            return "is malformed", None, None
        if self._keys.rec_id(ns_id, key) != rec_id:
            return "holds another record's name", None, None
        return None, key, value

    def unread(self) -> list[Lost]:
        """The rows of every namespace :meth:`read` was not asked for: a namespace no salvaged
        record names. The root or a manifest still names it where they authenticate."""
        out: list[Lost] = []
        query = "SELECT ns, count(*) FROM record GROUP BY ns"
        for ns_id, count in self._rows(query, (), "the record table"):
            if is_id(ns_id) and ns_id in self._read_ns:
                continue
            name = self._names.get(ns_id) if is_id(ns_id) else None
            problem = (
                "no salvaged record names this namespace"
                if is_id(ns_id)
                else "have a damaged namespace column"
            )
            out.append(Lost(name, None, problem, count))
        return out

    # --- the new node file --------------------------------------------------------------------

    def create(self, path: Path, fill: Callable[[NodeFile], None]) -> Path:
        """Make a new node file at ``path`` with this file's header and data key (the same
        password, KDF parameters and recovery code), filled by ``fill`` through
        :meth:`NodeFile.write`. It is built under a temporary name beside ``path`` and linked into
        place when whole, never replacing a file (:class:`NodeExists`)."""
        if path.exists() or path.is_symlink():
            raise NodeExists(str(path))
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{path.parent}: {exc.strerror}") from None
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.salvaging")
        umask = os.umask(0o077)  # SQLite makes the new file's -wal and -shm
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            self._start(tmp)
            store = NodeFile.open_with_key(
                tmp, self.header, self._data_key, allow_weak=self._allow_weak
            )
            try:
                fill(store)
                whole = store.checkpoint(truncate=True)
            finally:
                store.close()
            leftover = [j for j in JOURNALS if tmp.with_name(tmp.name + j).exists()]
            if not whole or leftover:
                raise StorageError(f"{path}: the new node file could not be made one file")
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            publish(tmp, path)
        except OSError as exc:
            raise StorageError(f"{path}: {exc.strerror or exc}") from None
        finally:
            os.umask(umask)
            for name in (tmp, *(tmp.with_name(tmp.name + j) for j in JOURNALS)):
                with contextlib.suppress(FileNotFoundError):
                    name.unlink()
        return path

    def _start(self, tmp: Path) -> None:
        """The empty node file: container, header, and a root at epoch 0 listing nothing."""
        with sqlite_errors():
            conn = connect(tmp)
        try:
            with sqlite_errors():
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {hdr.FORMAT}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(SCHEMA)
                body, checksum = self.header.encode()
                conn.execute("INSERT INTO header VALUES (1, ?, ?)", (body, checksum))
                sealed = self._keys.seal(Root().encode(), aad(Kind.ROOT, version=0))
                conn.execute("INSERT INTO root VALUES (1, 0, ?)", (sealed,))
        finally:
            conn.close()
