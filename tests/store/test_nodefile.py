"""The node file's semantics: records, transactions, handles, creation and refusal to open.

Everything here goes through the public API of ``NodeFile`` and ``Node``; the only direct SQLite
access edits the plaintext header, the way a newer Polykey or a hostile file would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from polykey.errors import (
    NodeDamaged,
    NodeExists,
    NodeNotFound,
    NotANode,
    StorageError,
    UnsafeParameters,
    UnsupportedVersion,
    WrongPassword,
)
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.store.nodefile import NodeFile
from polykey.store.records import Namespace
from tests.conftest import NodeFixture
from tests.support import PASSWORD

MUTABLE = Namespace("test/mutable")
ONCE = Namespace("test/once", immutable=True)
BOTH = [pytest.param(MUTABLE, id="mutable"), pytest.param(ONCE, id="write-once")]
PW = PASSWORD.encode()


@pytest.fixture
def store(fresh_node: NodeFixture) -> NodeFile:
    return fresh_node.node.store


@pytest.fixture
def closed_node(fresh_node: NodeFixture) -> Path:
    """A node file holding one record in each kind of namespace, closed (WAL checkpointed)."""
    with fresh_node.node.store.write() as tx:
        tx.put(MUTABLE, b"m", b"mutable value")
        tx.put(ONCE, b"o", b"write-once value")
    fresh_node.node.close()
    return fresh_node.path


@contextlib.contextmanager
def _second_handle(path: Path) -> Iterator[NodeFile]:
    handle = NodeFile.open(path, PW, allow_weak=True)
    try:
        yield handle
    finally:
        handle.close()


def _edit_header(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the header JSON and recompute its SHA-256 column, as a consistent writer would."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (body,) = conn.execute("SELECT body FROM header WHERE id = 1").fetchone()
        doc = json.loads(body)
        edit(doc)
        new = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        conn.execute(
            "UPDATE header SET body = ?, checksum = ? WHERE id = 1",
            (new, hashlib.sha256(new).digest()),
        )
        conn.commit()


# --- records ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ns", BOTH)
def test_a_put_record_reads_back_its_value(store: NodeFile, ns: Namespace) -> None:
    with store.write() as tx:
        tx.put(ns, b"alpha", b"one")
        tx.put(ns, b"beta", b"two")
    assert store.get(ns, b"alpha") == b"one"
    assert store.get(ns, b"beta") == b"two"


@pytest.mark.parametrize("ns", BOTH)
def test_a_missing_key_reads_as_none(store: NodeFile, ns: Namespace) -> None:
    assert store.get(ns, b"never") is None  # namespace not registered yet
    with store.write() as tx:
        tx.put(ns, b"present", b"x")
    assert store.get(ns, b"never") is None  # namespace registered, key absent
    assert not store.contains(ns, b"never")


def test_overwriting_a_mutable_record_replaces_its_value(store: NodeFile) -> None:
    with store.write() as tx:
        tx.put(MUTABLE, b"k", b"first")
    with store.write() as tx:
        tx.put(MUTABLE, b"k", b"second")
    assert store.get(MUTABLE, b"k") == b"second"
    assert store.count(MUTABLE) == 1
    assert store.items(MUTABLE) == [(b"k", b"second")]


def test_a_write_once_record_keeps_its_first_value(store: NodeFile) -> None:
    with store.write() as tx:
        tx.put(ONCE, b"k", b"first")
    with store.write() as tx:
        tx.put(ONCE, b"k", b"second")
    assert store.get(ONCE, b"k") == b"first"
    assert store.count(ONCE) == 1
    assert store.check() == []


@pytest.mark.parametrize("ns", BOTH)
def test_a_deleted_record_is_gone_and_its_neighbours_stay(store: NodeFile, ns: Namespace) -> None:
    with store.write() as tx:
        tx.put(ns, b"keep", b"kept")
        tx.put(ns, b"drop", b"dropped")
    with store.write() as tx:
        tx.delete(ns, b"drop")
    assert store.get(ns, b"drop") is None
    assert not store.contains(ns, b"drop")
    assert store.keys(ns) == [b"keep"]
    assert store.items(ns) == [(b"keep", b"kept")]
    assert store.count(ns) == 1
    assert store.check() == []


@pytest.mark.parametrize("ns", BOTH)
def test_deleting_a_missing_key_changes_nothing(store: NodeFile, ns: Namespace) -> None:
    with store.write() as tx:
        tx.delete(ns, b"ghost")  # namespace not registered
    assert store.keys(ns) == []
    with store.write() as tx:
        tx.put(ns, b"real", b"r")
    with store.write() as tx:
        tx.delete(ns, b"ghost")
    assert store.items(ns) == [(b"real", b"r")]
    assert store.check() == []


@pytest.mark.parametrize("ns", BOTH)
def test_keys_are_sorted_and_items_pair_each_key_with_its_value(
    store: NodeFile, ns: Namespace
) -> None:
    pairs = {b"delta": b"4", b"alpha": b"1", b"charlie": b"3", b"bravo": b"2"}
    with store.write() as tx:
        for key, value in pairs.items():
            tx.put(ns, key, value)
    assert store.keys(ns) == sorted(pairs)
    assert store.items(ns) == sorted(pairs.items())


@pytest.mark.parametrize("ns", BOTH)
def test_count_and_contains_follow_puts_and_deletes(store: NodeFile, ns: Namespace) -> None:
    assert store.count(ns) == 0
    with store.write() as tx:
        for i in range(5):
            tx.put(ns, b"k%d" % i, b"v")
    assert store.count(ns) == 5
    assert all(store.contains(ns, b"k%d" % i) for i in range(5))
    with store.write() as tx:
        tx.delete(ns, b"k0")
        tx.delete(ns, b"k3")
    assert store.count(ns) == 3
    assert [store.contains(ns, b"k%d" % i) for i in range(5)] == [False, True, True, False, True]


def test_namespaces_with_the_same_key_hold_separate_values(store: NodeFile) -> None:
    other = Namespace("test/other")
    with store.write() as tx:
        tx.put(MUTABLE, b"same", b"in mutable")
        tx.put(other, b"same", b"in other")
        tx.put(ONCE, b"same", b"in once")
    assert store.get(MUTABLE, b"same") == b"in mutable"
    assert store.get(other, b"same") == b"in other"
    assert store.get(ONCE, b"same") == b"in once"
    with store.write() as tx:
        tx.delete(other, b"same")
    assert store.get(MUTABLE, b"same") == b"in mutable"
    assert store.get(other, b"same") is None


def test_a_transaction_reads_its_own_pending_writes(store: NodeFile) -> None:
    with store.write() as tx:
        tx.put(MUTABLE, b"k", b"old")
    with store.write() as tx:
        tx.put(MUTABLE, b"k", b"new")
        tx.put(MUTABLE, b"n", b"fresh")
        assert tx.get(MUTABLE, b"k") == b"new"
        assert tx.get(MUTABLE, b"n") == b"fresh"
        tx.delete(MUTABLE, b"k")
        assert tx.get(MUTABLE, b"k") is None


def test_a_put_then_delete_in_one_transaction_leaves_nothing(store: NodeFile) -> None:
    with store.write() as tx:
        tx.put(MUTABLE, b"k", b"v")
        tx.delete(MUTABLE, b"k")
    assert store.get(MUTABLE, b"k") is None
    assert store.count(MUTABLE) == 0


@pytest.mark.parametrize("ns", BOTH)
def test_a_transaction_that_raises_leaves_nothing_written(store: NodeFile, ns: Namespace) -> None:
    with store.write() as tx:
        tx.put(ns, b"before", b"committed")
    epoch = store.epoch

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.write() as tx:
        tx.put(ns, b"before", b"changed")
        tx.put(ns, b"added", b"added")
        tx.delete(ns, b"before")
        tx.put(Namespace("test/new-in-failed-tx"), b"x", b"y")
        raise Boom
    assert store.get(ns, b"before") == b"committed"
    assert store.get(ns, b"added") is None
    assert store.keys(Namespace("test/new-in-failed-tx")) == []
    assert store.epoch == epoch
    assert store.check() == []
    with store.write() as tx:  # the handle is still usable
        tx.put(ns, b"after", b"ok")
    assert store.keys(ns) == [b"after", b"before"]


def test_a_failed_transaction_is_invisible_after_reopening(fresh_node: NodeFixture) -> None:
    store = fresh_node.node.store
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.put(MUTABLE, b"k", b"v")
        raise RuntimeError("abandon")
    fresh_node.node.close()
    with Node.open(fresh_node.path, PW, allow_weak=True) as node:
        assert node.store.get(MUTABLE, b"k") is None
        assert node.check() == []


def test_write_transactions_do_not_nest(store: NodeFile) -> None:
    with pytest.raises(RuntimeError), store.write(), store.write():
        pass
    with store.write() as tx:
        tx.put(MUTABLE, b"k", b"v")
    assert store.get(MUTABLE, b"k") == b"v"


@pytest.mark.parametrize("key", [b"", b"k" * 4097])
def test_an_empty_or_oversized_key_is_refused(store: NodeFile, key: bytes) -> None:
    with pytest.raises(ValueError), store.write() as tx:
        tx.put(MUTABLE, key, b"v")
    assert store.count(MUTABLE) == 0


def test_a_key_of_the_maximum_length_round_trips(store: NodeFile) -> None:
    key = bytes(range(256)) * 16
    with store.write() as tx:
        tx.put(MUTABLE, key, b"v")
    assert store.get(MUTABLE, key) == b"v"
    assert store.keys(MUTABLE) == [key]


def test_the_epoch_advances_only_for_versioned_writes(store: NodeFile) -> None:
    start = store.epoch
    with store.write() as tx:
        tx.put(MUTABLE, b"k", b"v")
    assert store.epoch == start + 1
    with store.write():
        pass
    assert store.epoch == start + 1
    with store.write() as tx:
        tx.put(ONCE, b"k", b"v")  # registers the write-once namespace
    assert store.epoch == start + 2
    with store.write() as tx:
        tx.put(ONCE, b"k2", b"v")  # a write-once record in a registered namespace
    assert store.epoch == start + 2


# --- dropping a namespace --------------------------------------------------------------------


@pytest.mark.parametrize("ns", BOTH)
def test_dropping_a_namespace_removes_all_its_records_and_nothing_else(
    store: NodeFile, ns: Namespace
) -> None:
    other = Namespace("test/bystander")
    with store.write() as tx:
        for i in range(5):
            tx.put(ns, b"k%d" % i, b"v%d" % i)
        tx.put(other, b"k0", b"bystander")
    epoch = store.epoch
    with store.write() as tx:
        tx.drop_namespace(ns)
        assert tx.get(ns, b"k0") is None
    assert store.keys(ns) == []
    assert store.items(ns) == []
    assert store.count(ns) == 0
    assert store.get(ns, b"k0") is None
    assert not store.contains(ns, b"k0")
    assert store.get(other, b"k0") == b"bystander"
    assert store.epoch == epoch + 1
    assert store.check() == []


@pytest.mark.parametrize("ns", BOTH)
def test_a_namespace_dropped_and_refilled_in_one_transaction_holds_only_the_new_records(
    store: NodeFile, ns: Namespace
) -> None:
    with store.write() as tx:
        tx.put(ns, b"old", b"old")
    with store.write() as tx:
        tx.put(ns, b"queued before the drop", b"x")
        tx.drop_namespace(ns)
        tx.put(ns, b"new", b"new")
        assert tx.get(ns, b"new") == b"new"
        assert tx.get(ns, b"old") is None
    assert store.items(ns) == [(b"new", b"new")]
    assert store.check() == []


@pytest.mark.parametrize("ns", BOTH)
def test_a_dropped_namespace_can_be_filled_again_later(
    fresh_node: NodeFixture, ns: Namespace
) -> None:
    store = fresh_node.node.store
    with store.write() as tx:
        tx.put(ns, b"k", b"first life")
    with store.write() as tx:
        tx.drop_namespace(ns)
    with store.write() as tx:
        tx.put(ns, b"k2", b"second life")
    assert store.items(ns) == [(b"k2", b"second life")]
    fresh_node.node.close()
    with Node.open(fresh_node.path, PW, allow_weak=True) as node:
        assert node.store.items(ns) == [(b"k2", b"second life")]
        assert node.check() == []


def test_a_drop_in_a_failed_transaction_changes_nothing(store: NodeFile) -> None:
    with store.write() as tx:
        tx.put(MUTABLE, b"k", b"v")
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.drop_namespace(MUTABLE)
        raise RuntimeError("abandon")
    assert store.items(MUTABLE) == [(b"k", b"v")]
    assert store.check() == []


def test_dropping_an_unknown_namespace_changes_nothing(store: NodeFile) -> None:
    epoch = store.epoch
    with store.write() as tx:
        tx.drop_namespace(Namespace("test/never-made"))
    assert store.epoch == epoch
    assert store.check() == []


# --- two handles on one file ---------------------------------------------------------------


def test_writes_are_visible_across_two_handles_on_one_file(fresh_node: NodeFixture) -> None:
    first = fresh_node.node.store
    with _second_handle(fresh_node.path) as second:
        assert second.get(MUTABLE, b"k") is None  # second caches an empty namespace
        with first.write() as tx:
            tx.put(MUTABLE, b"k", b"from first")
            tx.put(ONCE, b"o", b"once from first")
        assert second.get(MUTABLE, b"k") == b"from first"
        assert second.get(ONCE, b"o") == b"once from first"
        with second.write() as tx:
            tx.put(MUTABLE, b"k", b"from second")
            tx.put(MUTABLE, b"k2", b"also from second")
        assert first.get(MUTABLE, b"k") == b"from second"
        assert first.keys(MUTABLE) == [b"k", b"k2"]
        with first.write() as tx:
            tx.delete(MUTABLE, b"k2")
        assert second.keys(MUTABLE) == [b"k"]
        assert second.count(MUTABLE) == 1
        assert first.epoch == second.epoch
        with second.write() as tx:
            tx.drop_namespace(MUTABLE)
        assert first.keys(MUTABLE) == []
        assert first.get(MUTABLE, b"k") is None
        assert first.check() == []
        assert second.check() == []


def test_interleaved_writes_from_two_handles_lose_nothing(fresh_node: NodeFixture) -> None:
    first = fresh_node.node.store
    with _second_handle(fresh_node.path) as second:
        for i in range(20):
            writer = first if i % 2 == 0 else second
            with writer.write() as tx:
                tx.put(MUTABLE, b"k%02d" % i, b"v%d" % i)
        expected = [(b"k%02d" % i, b"v%d" % i) for i in range(20)]
        assert first.items(MUTABLE) == expected
        assert second.items(MUTABLE) == expected


def test_a_reader_sees_the_last_commit_while_another_handle_writes(
    fresh_node: NodeFixture,
) -> None:
    first = fresh_node.node.store
    with first.write() as tx:
        tx.put(MUTABLE, b"k", b"committed")
    with _second_handle(fresh_node.path) as second:
        with first.write() as tx:
            tx.put(MUTABLE, b"k", b"pending")
            assert second.get(MUTABLE, b"k") == b"committed"
        assert second.get(MUTABLE, b"k") == b"pending"


# --- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ns", BOTH)
def test_binary_keys_and_values_round_trip(fresh_node: NodeFixture, ns: Namespace) -> None:
    records = {
        b"\x00": bytes(range(256)),
        b"\xff\xfe\x00nul inside": b"\x00" * 64,
        "clé/ünïcode".encode(): "välue ✓".encode(),
        bytes(range(255, -1, -1)): os.urandom(1000),
    }
    with fresh_node.node.store.write() as tx:
        for key, value in records.items():
            tx.put(ns, key, value)
    fresh_node.node.close()
    with Node.open(fresh_node.path, PW, allow_weak=True) as node:
        assert node.store.items(ns) == sorted(records.items())
        for key, value in records.items():
            assert node.store.get(ns, key) == value


@pytest.mark.parametrize("ns", BOTH)
def test_an_empty_value_is_stored_and_differs_from_absent(store: NodeFile, ns: Namespace) -> None:
    with store.write() as tx:
        tx.put(ns, b"empty", b"")
    assert store.get(ns, b"empty") == b""
    assert store.contains(ns, b"empty")
    assert store.items(ns) == [(b"empty", b"")]


@pytest.mark.parametrize("ns", BOTH)
def test_a_one_mebibyte_value_round_trips(fresh_node: NodeFixture, ns: Namespace) -> None:
    value = os.urandom(1 << 20)
    with fresh_node.node.store.write() as tx:
        tx.put(ns, b"big", value)
    assert fresh_node.node.store.get(ns, b"big") == value
    fresh_node.node.close()
    with Node.open(fresh_node.path, PW, allow_weak=True) as node:
        assert node.store.get(ns, b"big") == value
        assert node.check() == []


# --- the file on disk ------------------------------------------------------------------------


def test_the_node_file_and_its_companions_are_private(fresh_node: NodeFixture) -> None:
    with fresh_node.node.store.write() as tx:
        tx.put(MUTABLE, b"k", b"v")
    folder = fresh_node.path.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert fresh_node.path in files
    for file in files:  # node.pk and, while it is open, node.pk-wal and node.pk-shm
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


def test_closing_the_last_handle_leaves_one_file(closed_node: Path) -> None:
    assert [p.name for p in closed_node.parent.iterdir()] == [closed_node.name]


def test_bootstrap_refuses_an_existing_node_and_leaves_no_temporary_file(
    fresh_node: NodeFixture,
) -> None:
    node_id = fresh_node.node.node_id
    fresh_node.node.close()
    before = fresh_node.path.read_bytes()
    with pytest.raises(NodeExists):
        Node.bootstrap(fresh_node.path, b"other password", kdf=FAST_INSECURE_KDF, allow_weak=True)
    assert fresh_node.path.read_bytes() == before
    assert [p.name for p in fresh_node.path.parent.iterdir()] == [fresh_node.path.name]
    with Node.open(fresh_node.path, PW, allow_weak=True) as node:
        assert node.node_id == node_id


@pytest.mark.parametrize("kind", ["file", "directory", "dangling symlink"])
def test_bootstrap_refuses_any_existing_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "node.pk"
    if kind == "file":
        path.write_bytes(b"not mine to replace")
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "nowhere")
    with pytest.raises(NodeExists):
        Node.bootstrap(path, PW, kdf=FAST_INSECURE_KDF, allow_weak=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.pk"]
    if kind == "file":
        assert path.read_bytes() == b"not mine to replace"
    assert not (tmp_path / "nowhere").exists()


def test_bootstrap_below_a_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"x")
    with pytest.raises(StorageError):
        Node.bootstrap(tmp_path / "plain" / "node.pk", PW, kdf=FAST_INSECURE_KDF, allow_weak=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


# --- what opening refuses --------------------------------------------------------------------


def test_a_missing_file_is_node_not_found(tmp_path: Path) -> None:
    with pytest.raises(NodeNotFound):
        Node.open(tmp_path / "absent.pk", PW, allow_weak=True)
    assert list(tmp_path.iterdir()) == []  # opening did not create it


def _random_file(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _plain_sqlite(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE header (id INTEGER PRIMARY KEY, body BLOB, checksum BLOB)")
        conn.execute("INSERT INTO header VALUES (1, x'00', x'00')")
        conn.commit()


def _directory(path: Path) -> None:
    path.mkdir()


def _sqlite_magic_then_garbage(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4080))


@pytest.mark.parametrize(
    "make",
    [_random_file, _empty_file, _plain_sqlite, _directory],
    ids=["random bytes", "empty file", "plain SQLite database", "directory"],
)
def test_something_else_is_not_a_node(tmp_path: Path, make: Callable[[Path], None]) -> None:
    path = tmp_path / "thing"
    make(path)
    with pytest.raises(NotANode):
        Node.open(path, PW, allow_weak=True)


def test_sqlite_magic_followed_by_garbage_is_refused_as_damaged_or_not_a_node(
    tmp_path: Path,
) -> None:
    path = tmp_path / "thing"
    _sqlite_magic_then_garbage(path)
    with pytest.raises((NotANode, NodeDamaged)):
        Node.open(path, PW, allow_weak=True)


def test_a_header_with_format_99_is_unsupported_version(closed_node: Path) -> None:
    def newer(doc: dict[str, Any]) -> None:
        doc["format"] = 99

    _edit_header(closed_node, newer)
    with pytest.raises(UnsupportedVersion) as info:
        Node.open(closed_node, PW, allow_weak=True)
    assert info.value.exit_code == 16


def test_a_header_whose_checksum_does_not_match_is_node_damaged(closed_node: Path) -> None:
    with contextlib.closing(sqlite3.connect(closed_node)) as conn:
        conn.execute("UPDATE header SET body = replace(body, 'polykey-node', 'polykey-nodf')")
        conn.commit()
    with pytest.raises(NodeDamaged):
        Node.open(closed_node, PW, allow_weak=True)


def test_a_header_with_another_magic_is_not_a_node(closed_node: Path) -> None:
    def foreign(doc: dict[str, Any]) -> None:
        doc["magic"] = "something-else"

    _edit_header(closed_node, foreign)
    with pytest.raises(NotANode):
        Node.open(closed_node, PW, allow_weak=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_kib", 2**30),  # 1 TiB
        ("iterations", 2**20),
        ("lanes", 2**16),
        ("memory_kib", 0),
        ("memory_kib", "65536"),
    ],
)
def test_a_header_asking_for_unsafe_kdf_work_is_refused_without_running_it(
    closed_node: Path, field: str, value: object
) -> None:
    def hostile(doc: dict[str, Any]) -> None:
        doc["kdf"][field] = value

    _edit_header(closed_node, hostile)
    with pytest.raises(UnsafeParameters) as info:
        Node.open(closed_node, PW, allow_weak=True)
    assert info.value.exit_code == 17


@pytest.mark.parametrize(
    ("memory_kib", "iterations", "named", "bound"),
    [
        (4 * 1024 * 1024, 3, "memory", "65536 KiB"),
        (64 * 1024, 64, "iterations", "3"),
        (4 * 1024 * 1024, 64, "memory", "65536 KiB"),
    ],
    ids=["4-GiB", "64-passes", "both"],
)
def test_a_header_asking_for_more_than_bootstrap_makes_is_refused_before_any_key_derivation(
    closed_node: Path,
    monkeypatch: pytest.MonkeyPatch,
    memory_kib: int,
    iterations: int,
    named: str,
    bound: str,
) -> None:
    """Within the hard bounds, but more than `pk bootstrap` ever asks for: a hostile header."""

    def no_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Argon2id ran for a header above the ceiling")

    _edit_header(closed_node, lambda doc: doc["kdf"].update(memory_kib=memory_kib))
    _edit_header(closed_node, lambda doc: doc["kdf"].update(iterations=iterations))
    monkeypatch.setattr("polykey.crypto.kdf.Argon2id", no_work)
    with pytest.raises(UnsafeParameters) as info:
        Node.open(closed_node, PW, allow_weak=True)
    message, hint = info.value.message, info.value.user_hint
    assert named in message and bound in message, message
    assert "\n" not in message and "\n" not in hint
    assert f"--kdf-max-{named}" in hint and f"PK_KDF_MAX_{named.upper()}" in hint, hint


def test_the_fast_test_kdf_is_refused_unless_weak_parameters_are_allowed(
    closed_node: Path,
) -> None:
    with pytest.raises(UnsafeParameters):
        Node.open(closed_node, PW)


def test_a_wrong_password_is_wrong_password(closed_node: Path) -> None:
    with pytest.raises(WrongPassword) as info:
        Node.open(closed_node, b"not the password", allow_weak=True)
    assert info.value.exit_code == 12
    with Node.open(closed_node, PW, allow_weak=True) as node:  # nothing was changed by trying
        assert node.store.get(MUTABLE, b"m") == b"mutable value"


def test_a_header_with_an_edited_salt_no_longer_unlocks(closed_node: Path) -> None:
    def resalt(doc: dict[str, Any]) -> None:
        doc["kdf"]["salt"] = "AAAAAAAAAAAAAAAAAAAAAA=="

    _edit_header(closed_node, resalt)
    with pytest.raises(WrongPassword):
        Node.open(closed_node, PW, allow_weak=True)


def test_a_changed_password_unlocks_and_the_old_one_does_not(fresh_node: NodeFixture) -> None:
    with fresh_node.node.store.write() as tx:
        tx.put(MUTABLE, b"k", b"kept across the change")
    fresh_node.node.change_password(b"new password", kdf=FAST_INSECURE_KDF)
    fresh_node.node.close()
    with pytest.raises(WrongPassword):
        Node.open(fresh_node.path, PW, allow_weak=True)
    with Node.open(fresh_node.path, b"new password", allow_weak=True) as node:
        assert node.store.get(MUTABLE, b"k") == b"kept across the change"
        assert node.check() == []
