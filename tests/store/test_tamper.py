"""Tampering with a closed node file through SQLite itself.

The attacker of docs/spec/node-file.md can rewrite any row but knows neither the password nor the
keys: every swap, replay, rollback, deletion, copy or move below must be refused on read with
``NodeDamaged`` (never an old or foreign plaintext) and listed by ``check()``, naming the
namespace wherever the damage leaves it knowable.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from polykey.errors import NodeDamaged, NotANode
from polykey.node import Node
from polykey.store.nodefile import Damage
from polykey.store.records import Namespace
from tests.conftest import NodeFixture
from tests.support import PASSWORD

SECRETS = Namespace("tamper/secrets")
OTHER = Namespace("tamper/other")
OBJECTS = Namespace("tamper/objects", immutable=True)
PW = PASSWORD.encode()

Row = tuple[bytes, bytes]  # (ns, name) columns of a record row


def _sql(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
    return rows


def _record_rows(path: Path) -> set[Row]:
    return {(ns, name) for ns, name in _sql(path, "SELECT ns, name FROM record")}


@dataclass
class Victim:
    """A node file with known records, where each record's row is known by its columns."""

    path: Path
    node: Node | None
    rows: dict[tuple[str, bytes], Row] = field(default_factory=dict)
    values: dict[tuple[Namespace, bytes], bytes] = field(default_factory=dict)

    def put(self, ns: Namespace, key: bytes, value: bytes) -> Row:
        """Write one record in its own transaction and return its row (new or overwritten)."""
        assert self.node is not None
        before = _record_rows(self.path)
        with self.node.store.write() as tx:
            tx.put(ns, key, value)
        self.values[(ns, key)] = value
        new = _record_rows(self.path) - before
        if new:
            (row,) = new
            self.rows[(ns.name, key)] = row
        return self.rows[(ns.name, key)]

    def row(self, ns: Namespace, key: bytes) -> Row:
        return self.rows[(ns.name, key)]

    def close(self) -> Path:
        if self.node is not None:
            self.node.close()
            self.node = None
        return self.path

    def record(self, ns: Namespace, key: bytes) -> tuple[int, bytes]:
        ns_col, name = self.row(ns, key)
        ((ver, sealed),) = _sql(
            self.path, "SELECT ver, sealed FROM record WHERE ns = ? AND name = ?", (ns_col, name)
        )
        return ver, sealed

    def manifest(self, ns: Namespace) -> tuple[int, bytes]:
        ns_col = next(row[0] for (name, _), row in self.rows.items() if name == ns.name)
        ((ver, sealed),) = _sql(
            self.path, "SELECT ver, sealed FROM manifest WHERE ns = ?", (ns_col,)
        )
        return ver, sealed

    def ns_column(self, ns: Namespace) -> bytes:
        return next(row[0] for (name, _), row in self.rows.items() if name == ns.name)


@pytest.fixture
def victim(fresh_node: NodeFixture) -> Victim:
    v = Victim(fresh_node.path, fresh_node.node)
    v.put(SECRETS, b"a", b"alpha secret")
    v.put(SECRETS, b"b", b"bravo secret")
    v.put(OTHER, b"c", b"charlie secret")
    v.put(OBJECTS, b"o1", b"object one")
    v.put(OBJECTS, b"o2", b"object two")
    return v


def _root(path: Path) -> tuple[int, bytes]:
    ((ver, sealed),) = _sql(path, "SELECT ver, sealed FROM root WHERE id = 1")
    return ver, sealed


def _set_root(path: Path, saved: tuple[int, bytes]) -> None:
    _sql(path, "UPDATE root SET ver = ?, sealed = ? WHERE id = 1", saved)


def _set_manifest(path: Path, ns_col: bytes, saved: tuple[int, bytes]) -> None:
    _sql(path, "UPDATE manifest SET ver = ?, sealed = ? WHERE ns = ?", (*saved, ns_col))


def _set_record(path: Path, row: Row, saved: tuple[int, bytes]) -> None:
    _sql(path, "UPDATE record SET ver = ?, sealed = ? WHERE ns = ? AND name = ?", (*saved, *row))


def _reads(node: Node, values: dict[tuple[Namespace, bytes], bytes]) -> dict[str, str]:
    """Read every known record: each must be its exact value or NodeDamaged, nothing else.

    A write-once record may also read as absent (it has no manifest to miss it; see the limits in
    docs/spec/node-file.md); a mutable one may not. Returns the refused places, ``namespace/key``.
    """
    refused: dict[str, str] = {}
    for (ns, key), value in values.items():
        try:
            got = node.store.get(ns, key)
        except NodeDamaged as exc:
            refused[f"{ns.name}/{key.decode()}"] = exc.detail
            continue
        assert got is None or got == value, f"{ns.name}/{key!r} read a wrong value"
        if got is None:
            assert ns.immutable, f"{ns.name}/{key!r} silently reads as absent"
            refused[f"{ns.name}/{key.decode()}"] = "reads as absent"
    return refused


def _check(path: Path) -> list[Damage]:
    """What a check reports, through a Node if the file still opens as one, else the file."""
    try:
        node = Node.open(path, PW, allow_weak=True)
    except NodeDamaged:
        return Node.check_file(path, PW, allow_weak=True)
    with node:
        return node.check()


def _places(damage: list[Damage]) -> list[str]:
    return [d.place for d in damage]


# --- swaps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "one", "two"), [(SECRETS, b"a", b"b"), (OBJECTS, b"o1", b"o2")], ids=["mutable", "once"]
)
def test_two_records_with_swapped_ciphertexts_are_damaged(
    victim: Victim, ns: Namespace, one: bytes, two: bytes
) -> None:
    first, second = victim.record(ns, one), victim.record(ns, two)
    path = victim.close()
    _set_record(path, victim.row(ns, one), (first[0], second[1]))
    _set_record(path, victim.row(ns, two), (second[0], first[1]))
    with Node.open(path, PW, allow_weak=True) as node:
        refused = _reads(node, victim.values)
        assert set(refused) == {f"{ns.name}/{one.decode()}", f"{ns.name}/{two.decode()}"}
        with pytest.raises(NodeDamaged):
            node.store.items(ns)
        damage = node.check()
    assert len(damage) == 2, damage
    assert all(place.startswith(ns.name + "/") for place in _places(damage)), damage
    if not ns.immutable:  # a manifest names the keys of its records
        assert sorted(_places(damage)) == [f"{ns.name}/{one.decode()}", f"{ns.name}/{two.decode()}"]


def test_two_manifests_with_swapped_ciphertexts_are_damaged(victim: Victim) -> None:
    mine, theirs = victim.manifest(SECRETS), victim.manifest(OTHER)
    path = victim.close()
    _set_manifest(path, victim.ns_column(SECRETS), (mine[0], theirs[1]))
    _set_manifest(path, victim.ns_column(OTHER), (theirs[0], mine[1]))
    with Node.open(path, PW, allow_weak=True) as node:
        refused = _reads(node, victim.values)
        damage = node.check()
    assert set(refused) == {"tamper/secrets/a", "tamper/secrets/b", "tamper/other/c"}
    assert sorted(_places(damage)) == ["tamper/other", "tamper/secrets"]


# --- replays and rollbacks -------------------------------------------------------------------


@pytest.mark.parametrize("keep_new_version", [False, True], ids=["old version", "new version"])
def test_an_older_ciphertext_of_an_overwritten_record_is_refused(
    victim: Victim, keep_new_version: bool
) -> None:
    old = victim.record(SECRETS, b"a")
    victim.put(SECRETS, b"a", b"alpha secret, rotated")
    new = victim.record(SECRETS, b"a")
    path = victim.close()
    _set_record(path, victim.row(SECRETS, b"a"), (new[0] if keep_new_version else old[0], old[1]))
    with Node.open(path, PW, allow_weak=True) as node:
        assert set(_reads(node, victim.values)) == {"tamper/secrets/a"}
        with pytest.raises(NodeDamaged):
            node.store.items(SECRETS)
        assert node.store.keys(SECRETS) == [b"a", b"b"]  # the manifest itself is intact
        damage = node.check()
    assert _places(damage) == ["tamper/secrets/a"], damage


def test_a_deleted_record_put_back_stays_deleted_and_is_reported(victim: Victim) -> None:
    old = victim.record(SECRETS, b"a")
    row = victim.row(SECRETS, b"a")
    assert victim.node is not None
    with victim.node.store.write() as tx:
        tx.delete(SECRETS, b"a")
    del victim.values[(SECRETS, b"a")]
    path = victim.close()
    _sql(path, "INSERT INTO record VALUES (?, ?, ?, ?)", (*row, *old))
    with Node.open(path, PW, allow_weak=True) as node:
        assert node.store.get(SECRETS, b"a") is None
        assert node.store.keys(SECRETS) == [b"b"]
        assert _reads(node, victim.values) == {}
        damage = node.check()
    assert len(damage) == 1, damage
    assert damage[0].place.startswith("tamper/secrets/"), damage


def test_a_manifest_rolled_back_alone_is_damaged(victim: Victim) -> None:
    old = victim.manifest(SECRETS)
    victim.put(SECRETS, b"d", b"delta secret")
    path = victim.close()
    _set_manifest(path, victim.ns_column(SECRETS), old)
    with Node.open(path, PW, allow_weak=True) as node:
        refused = _reads(node, victim.values)
        for read in (node.store.keys, node.store.items, node.store.count):
            with pytest.raises(NodeDamaged):
                read(SECRETS)
        damage = node.check()
    assert set(refused) == {"tamper/secrets/a", "tamper/secrets/b", "tamper/secrets/d"}
    assert _places(damage) == ["tamper/secrets"], damage


def test_the_root_rolled_back_alone_is_damaged(victim: Victim) -> None:
    old = _root(victim.path)
    victim.put(SECRETS, b"a", b"alpha secret, rotated")
    path = victim.close()
    _set_root(path, old)
    with Node.open(path, PW, allow_weak=True) as node:
        refused = _reads(node, victim.values)
        damage = node.check()
    assert set(refused) == {"tamper/secrets/a", "tamper/secrets/b"}
    assert _places(damage) == ["tamper/secrets"], damage


def test_root_and_manifest_rolled_back_together_leave_the_newer_record_refused(
    victim: Victim,
) -> None:
    old_root, old_manifest = _root(victim.path), victim.manifest(SECRETS)
    victim.put(SECRETS, b"a", b"alpha secret, rotated")
    path = victim.close()
    _set_root(path, old_root)
    _set_manifest(path, victim.ns_column(SECRETS), old_manifest)
    with Node.open(path, PW, allow_weak=True) as node:
        refused = _reads(node, victim.values)
        damage = node.check()
    assert set(refused) == {"tamper/secrets/a"}
    assert _places(damage) == ["tamper/secrets/a"], damage


def _roll_root_back_past_a_new_namespace(victim: Victim) -> Path:
    old = _root(victim.path)
    victim.put(Namespace("tamper/later"), b"l", b"lima secret")
    path = victim.close()
    _set_root(path, old)
    return path


def test_the_root_rolled_back_to_before_a_namespace_existed_is_reported_by_check(
    victim: Victim,
) -> None:
    path = _roll_root_back_past_a_new_namespace(victim)
    assert _check(path) != []


def test_the_root_rolled_back_to_before_a_namespace_existed_is_damage_on_read(
    victim: Victim,
) -> None:
    path = _roll_root_back_past_a_new_namespace(victim)
    later = Namespace("tamper/later")
    with Node.open(path, PW, allow_weak=True) as node:
        with pytest.raises(NodeDamaged):
            node.store.get(later, b"l")
        with pytest.raises(NodeDamaged):
            node.store.keys(later)


# --- deletions, copies and moves -------------------------------------------------------------


def test_a_deleted_record_row_is_damaged(victim: Victim) -> None:
    path = victim.close()
    _sql(path, "DELETE FROM record WHERE ns = ? AND name = ?", victim.row(SECRETS, b"a"))
    with Node.open(path, PW, allow_weak=True) as node:
        assert set(_reads(node, victim.values)) == {"tamper/secrets/a"}
        with pytest.raises(NodeDamaged):
            node.store.items(SECRETS)
        damage = node.check()
    assert [(d.place, d.problem) for d in damage] == [("tamper/secrets/a", "record is missing")]


def test_a_deleted_manifest_row_is_damaged(victim: Victim) -> None:
    path = victim.close()
    _sql(path, "DELETE FROM manifest WHERE ns = ?", (victim.ns_column(SECRETS),))
    with Node.open(path, PW, allow_weak=True) as node:
        assert set(_reads(node, victim.values)) == {"tamper/secrets/a", "tamper/secrets/b"}
        damage = node.check()
    assert _places(damage) == ["tamper/secrets"], damage


def test_a_deleted_root_row_is_damaged(victim: Victim) -> None:
    path = victim.close()
    _sql(path, "DELETE FROM root")
    with pytest.raises(NodeDamaged):
        Node.open(path, PW, allow_weak=True)
    assert _places(Node.check_file(path, PW, allow_weak=True)) != []


def test_a_deleted_header_row_is_refused_before_any_unlocking(victim: Victim) -> None:
    path = victim.close()
    _sql(path, "DELETE FROM header")
    # docs/spec/node-file.md lists a missing header row under NotANode; the code says NodeDamaged.
    with pytest.raises((NodeDamaged, NotANode)):
        Node.open(path, PW, allow_weak=True)
    with pytest.raises((NodeDamaged, NotANode)):
        Node.check_file(path, PW, allow_weak=True)


@pytest.mark.parametrize(
    ("ns", "key"), [(SECRETS, b"a"), (OBJECTS, b"o1")], ids=["mutable", "once"]
)
def test_a_row_copied_under_another_name_is_reported(
    victim: Victim, ns: Namespace, key: bytes
) -> None:
    ver, sealed = victim.record(ns, key)
    path = victim.close()
    _sql(
        path,
        "INSERT INTO record VALUES (?, ?, ?, ?)",
        (victim.ns_column(ns), os.urandom(16), ver, sealed),
    )
    with Node.open(path, PW, allow_weak=True) as node:
        assert _reads(node, victim.values) == {}  # the original is untouched
        if ns.immutable:
            for read in (node.store.items, node.store.keys):
                with pytest.raises(NodeDamaged):
                    read(ns)
        else:
            assert node.store.keys(ns) == [b"a", b"b"]
        damage = node.check()
    assert len(damage) == 1, damage
    assert damage[0].place.startswith(ns.name + "/"), damage


def test_a_row_copied_into_a_write_once_namespace_does_not_change_its_count(
    victim: Victim,
) -> None:
    ver, sealed = victim.record(OBJECTS, b"o1")
    path = victim.close()
    _sql(
        path,
        "INSERT INTO record VALUES (?, ?, ?, ?)",
        (victim.ns_column(OBJECTS), os.urandom(16), ver, sealed),
    )
    with Node.open(path, PW, allow_weak=True) as node:
        try:
            count = node.store.count(OBJECTS)
        except NodeDamaged:
            return
    assert count == 2


@pytest.mark.parametrize(
    ("ns", "key", "target"),
    [(SECRETS, b"a", OTHER), (OBJECTS, b"o1", OTHER), (SECRETS, b"a", OBJECTS)],
    ids=["mutable to mutable", "once to mutable", "mutable to once"],
)
def test_a_record_moved_to_another_namespace_is_reported(
    victim: Victim, ns: Namespace, key: bytes, target: Namespace
) -> None:
    row = victim.row(ns, key)
    path = victim.close()
    _sql(
        path,
        "UPDATE record SET ns = ? WHERE ns = ? AND name = ?",
        (victim.ns_column(target), *row),
    )
    with Node.open(path, PW, allow_weak=True) as node:
        refused = _reads(node, victim.values)
        # Write-once records have no manifest: a moved one reads as absent (docs/spec limits).
        assert set(refused) == {f"{ns.name}/{key.decode()}"}
        assert node.store.get(target, key) is None
        if target.immutable:
            with pytest.raises(NodeDamaged):
                node.store.items(target)
        damage = node.check()
    places = _places(damage)
    assert any(p.startswith(target.name + "/") for p in places), damage
    if not ns.immutable:
        assert f"{ns.name}/{key.decode()}" in places, damage


def test_a_manifest_moved_to_another_namespace_is_damaged(victim: Victim) -> None:
    path = victim.close()
    _sql(path, "DELETE FROM manifest WHERE ns = ?", (victim.ns_column(OTHER),))
    _sql(
        path,
        "UPDATE manifest SET ns = ? WHERE ns = ?",
        (victim.ns_column(OTHER), victim.ns_column(SECRETS)),
    )
    with Node.open(path, PW, allow_weak=True) as node:
        refused = _reads(node, victim.values)
        damage = node.check()
    assert set(refused) == {"tamper/secrets/a", "tamper/secrets/b", "tamper/other/c"}
    assert sorted(_places(damage)) == ["tamper/other", "tamper/secrets"], damage


# --- columns of the wrong SQLite type --------------------------------------------------------


@dataclass(frozen=True)
class Retype:
    """One SQL update that stores a column as the wrong type, and what it damages."""

    sql: Callable[[Victim], tuple[str, tuple[Any, ...]]]
    ns: Namespace | None  # the namespace whose reads must fail; None: the whole file
    key: bytes = b""


RETYPES: dict[str, Retype] = {
    "root ver text": Retype(lambda v: ("UPDATE root SET ver = 'x'", ()), None),
    "root ver negative": Retype(lambda v: ("UPDATE root SET ver = -ver", ()), None),
    "root sealed text": Retype(lambda v: ("UPDATE root SET sealed = hex(sealed)", ()), None),
    "manifest sealed text": Retype(
        lambda v: (
            "UPDATE manifest SET sealed = hex(sealed) WHERE ns = ?",
            (v.ns_column(SECRETS),),
        ),
        SECRETS,
        b"a",
    ),
    "manifest ver text": Retype(
        lambda v: ("UPDATE manifest SET ver = 'x' WHERE ns = ?", (v.ns_column(SECRETS),)),
        SECRETS,
        b"a",
    ),
    "manifest ns integer": Retype(
        lambda v: ("UPDATE manifest SET ns = 7 WHERE ns = ?", (v.ns_column(SECRETS),)),
        SECRETS,
        b"a",
    ),
    "record sealed text": Retype(
        lambda v: (
            "UPDATE record SET sealed = hex(sealed) WHERE ns = ? AND name = ?",
            v.row(SECRETS, b"a"),
        ),
        SECRETS,
        b"a",
    ),
    "record ver text": Retype(
        lambda v: (
            "UPDATE record SET ver = 'x' WHERE ns = ? AND name = ?",
            v.row(SECRETS, b"a"),
        ),
        SECRETS,
        b"a",
    ),
    "once record name integer": Retype(
        lambda v: (
            "UPDATE record SET name = 12345 WHERE ns = ? AND name = ?",
            v.row(OBJECTS, b"o1"),
        ),
        OBJECTS,
        b"o1",
    ),
}


def _retype_params(marks: dict[str, pytest.MarkDecorator]) -> list[Any]:
    return [
        pytest.param(name, id=name, marks=[marks[name]] if name in marks else [])
        for name in RETYPES
    ]


def _apply_retype(victim: Victim, name: str) -> Path:
    sql, params = RETYPES[name].sql(victim)
    path = victim.close()
    _sql(path, sql, params)
    return path


@pytest.mark.parametrize(
    "name",
    _retype_params({}),
)
def test_a_column_of_the_wrong_type_is_reported_by_check(victim: Victim, name: str) -> None:
    path = _apply_retype(victim, name)
    damage = Node.check_file(path, PW, allow_weak=True)
    assert damage != []
    ns = RETYPES[name].ns
    if ns is not None:
        assert any(ns.name in place for place in _places(damage)), damage


@pytest.mark.parametrize(
    "name",
    _retype_params({}),
)
def test_a_column_of_the_wrong_type_is_node_damaged_on_read(victim: Victim, name: str) -> None:
    path = _apply_retype(victim, name)
    retype = RETYPES[name]
    if retype.ns is None:
        with pytest.raises(NodeDamaged):
            Node.open(path, PW, allow_weak=True)
        return
    with Node.open(path, PW, allow_weak=True) as node:
        refused = _reads(node, victim.values)
        assert f"{retype.ns.name}/{retype.key.decode()}" in refused
        with pytest.raises(NodeDamaged):
            node.store.items(retype.ns)
