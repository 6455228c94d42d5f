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

Here: opening, creating, the header, writing and the write-ahead log. The reads are
:class:`~polykey.store.reader.NodeReader`'s (store/reader.py), the whole-file check is
store/damage.py, the copy store/copies.py.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from polykey.crypto.kdf import Argon2Params
from polykey.errors import (
    NodeBusy,
    NodeExists,
    StorageError,
    WrongPassword,
    WrongRecoveryCode,
)
from polykey.store import header as hdr
from polykey.store.container import (
    APPLICATION_ID,
    BUSY_TIMEOUT_S,
    SCHEMA,
    connect,
    open_connection,
    publish,
    show_key,
    sqlite_errors,
)
from polykey.store.copies import copy_node
from polykey.store.damage import Damage, find_damage
from polykey.store.reader import NodeReader
from polykey.store.records import Root
from polykey.store.transaction import Transaction

__all__ = [
    "Damage",
    "NodeFile",
    "Transaction",
    "copy_node",
    "read_header",
    "show_key",
]

CHECKPOINT_WAIT_S = 2.0  # how long a TRUNCATE checkpoint waits for other readers and writers


def read_header(path: Path, *, allow_weak: bool = False) -> hdr.Header:
    """The parsed header of a node file, without unlocking it."""
    conn, body, checksum = open_connection(path)
    try:
        return hdr.decode(body, checksum, allow_weak=allow_weak)
    finally:
        conn.close()


class NodeFile(NodeReader):
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
        super().__init__(conn, data_key)
        self.path = path
        self.header = header
        self._data_key = data_key
        self._allow_weak = allow_weak
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
        return find_damage(self)
