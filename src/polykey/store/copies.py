"""One-file copies of a node file, made while other processes read and write it.

:func:`copy_node` copies with SQLite's backup API (one snapshot of the main file and its
write-ahead log), checks the copy, and links it into place under a name nobody holds: whole or
not at all, and never over an existing file. Every record stays sealed, so no password is needed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from polykey.errors import (
    InvalidInput,
    NodeDamaged,
    NodeExists,
    NodeNotFound,
    NotANode,
    StorageError,
    UnsafeParameters,
    UnsupportedVersion,
)
from polykey.store import header as hdr
from polykey.store.container import JOURNALS, connect, open_connection, publish, sqlite_errors


class CopyTargetExists(NodeExists):
    """A file already exists where the copy would go."""

    hint = "`pk node copy` never overwrites a file: choose a new path, or remove the old one first."


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
