"""A secret never reaches the disk in the clear: not in the node file, its WAL or SHM, nor in temp.

A random canary is stored as a record value, a record key and a namespace name, then overwritten,
deleted and put back through several operations (and a password change, and another process).
Every file that could hold it is then searched for the canary as raw bytes, hex and base64.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.node import FAST_INSECURE_KDF, Node
from polykey.store.records import Namespace
from tests.conftest import NodeFixture

MAX_SCANNED_BYTES = 64 << 20

CHILD = r"""
import sys
from pathlib import Path
from polykey.node import Node
from polykey.store.records import Namespace

path = Path(sys.argv[1])
password = sys.stdin.buffer.readline().rstrip(b"\n")
canary = sys.stdin.buffer.readline().rstrip(b"\n")
ns = Namespace("canary/child")
with Node.open(path, password, allow_weak=True) as node:
    with node.store.write() as tx:
        tx.put(ns, canary, canary)
    assert node.store.get(ns, canary) == canary
    with node.store.write() as tx:
        tx.put(ns, b"child", canary + b" again")
        tx.delete(ns, canary)
    assert node.check() == []
"""


def _forms(canary: bytes) -> dict[str, bytes]:
    """The canary as it could appear on disk: raw, hex, base64 at each of the 3 alignments."""
    forms = {
        "raw": canary,
        "random part": canary.removeprefix(b"CANARY-"),
        "hex": canary.hex().encode(),
        "HEX": canary.hex().upper().encode(),
        "utf-16": canary.decode().encode("utf-16-le"),
    }
    for shift in range(3):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            text = encode(b"\x00" * shift + canary)
            # Drop the blocks that mix in the prefix or the padding: the core is in any encoding
            # of any data holding the canary at this alignment.
            forms[f"{name}+{shift}"] = text[4 if shift else 0 : -4]
    return forms


def _files(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def _leaks(paths: list[Path], canary: bytes) -> list[str]:
    forms = _forms(canary)
    found = []
    for path in paths:
        try:
            if path.stat().st_size > MAX_SCANNED_BYTES:
                continue
            data = path.read_bytes()
        except (FileNotFoundError, PermissionError):
            continue
        found += [f"{path}: {name}" for name, form in forms.items() if form in data]
    return found


@pytest.fixture
def canary() -> bytes:
    return b"CANARY-" + secrets.token_hex(16).encode()


@dataclass
class TempDirs:
    private: Path  # TMPDIR of this test and its children, scanned whole
    original: Path  # the temp folder the test started with
    before: dict[Path, float]  # its top-level files then, with their mtimes

    def touched(self) -> list[Path]:
        """Top-level files of the original temp folder created or changed during the test."""
        out = []
        for path in self.original.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime != self.before.get(path):
                    out.append(path)
            except FileNotFoundError:
                continue
        return out


@pytest.fixture
def temp_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TempDirs:
    """TMPDIR for this process's tempfile module and for every child process."""
    original = Path(tempfile.gettempdir())
    before = {}
    for path in original.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if path.is_file():
                before[path] = path.stat().st_mtime
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # recomputed from TMPDIR on next use
    assert Path(tempfile.gettempdir()) == folder
    return TempDirs(folder, original, before)


def test_the_search_finds_a_canary_written_in_the_clear(tmp_path: Path, canary: bytes) -> None:
    """The scan itself works: each encoding is found when it is there."""
    for name, form in _forms(canary).items():
        planted = tmp_path / f"planted-{name}"
        planted.write_bytes(os.urandom(100) + form + os.urandom(100))
        assert f"{planted}: {name}" in _leaks([planted], canary)
    encoded = tmp_path / "encoded"
    encoded.write_bytes(base64.b64encode(b"xy" + canary + b"z"))
    assert _leaks([encoded], canary) != []


def test_a_canary_secret_never_reaches_the_disk_in_the_clear(
    fresh_node: NodeFixture, canary: bytes, temp_dirs: TempDirs, tmp_path: Path
) -> None:
    node = fresh_node.node
    password = fresh_node.password.encode()
    mutable = Namespace("canary/mutable")
    once = Namespace("canary/once", immutable=True)
    named = Namespace("vault/" + canary.decode())

    with node.store.write() as tx:
        tx.put(mutable, b"value", canary)
        tx.put(mutable, canary, b"key holds the canary")
        tx.put(once, canary, canary)
        tx.put(named, b"inside", b"a namespace named after the canary")
    assert node.store.get(mutable, b"value") == canary
    with node.store.write() as tx:
        tx.put(mutable, b"value", b"overwritten")
    with node.store.write() as tx:
        tx.delete(mutable, canary)
        tx.delete(once, canary)
    with node.store.write() as tx:
        tx.put(mutable, b"value", canary)  # back again, then away again
    with node.store.write() as tx:
        tx.put(mutable, b"value", b"overwritten again")
    node.change_password(b"a new password", kdf=FAST_INSECURE_KDF)
    password = b"a new password"
    with node.store.write() as tx:
        tx.put(mutable, b"after the password change", canary)

    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(fresh_node.path)],
        input=password + b"\n" + canary + b"\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode()
    assert canary not in child.stdout and canary not in child.stderr

    folder = fresh_node.path.parent
    companions = [folder / (fresh_node.path.name + s) for s in ("", "-wal", "-shm")]
    assert any(p.exists() for p in companions[1:]), "expected the WAL while the node is open"
    while_open = _leaks([*companions, *_files(temp_dirs.private), *_files(tmp_path)], canary)
    assert while_open == []

    node.close()
    with Node.open(fresh_node.path, password, allow_weak=True) as reopened:
        assert reopened.store.get(mutable, b"after the password change") == canary
        assert reopened.store.get(named, b"inside") is not None
        assert reopened.check() == []
    assert [p.name for p in folder.iterdir()] == [fresh_node.path.name]

    # SQLite's own temp files (none are expected with temp_store=MEMORY) would follow the TMPDIR
    # this process started with, so the original temp folder is searched too.
    scanned = [fresh_node.path, *_files(temp_dirs.private), *_files(tmp_path), *temp_dirs.touched()]
    assert _leaks(scanned, canary) == []
