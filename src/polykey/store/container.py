"""The SQLite container of a node file: connecting, the schema, errors, atomic creation.

docs/spec/node-file.md ("SQLite container") is this module's specification.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from polykey.errors import NodeBusy, NodeDamaged, NodeExists, NodeNotFound, NotANode, StorageError
from polykey.store.records import ID_BYTES

SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x504B4E44  # "PKND"
BUSY_TIMEOUT_S = 60.0
JOURNALS = ("-wal", "-shm", "-journal")  # SQLite's files beside a database, by its name
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
def sqlite_errors() -> Iterator[None]:
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


def connect(path: Path) -> sqlite3.Connection:
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


def open_connection(path: Path) -> tuple[sqlite3.Connection, bytes, bytes]:
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
    with sqlite_errors():
        conn = connect(path)
    try:
        with sqlite_errors():
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


def publish(tmp: Path, path: Path) -> None:
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
