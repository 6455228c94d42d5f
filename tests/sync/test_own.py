"""A person's own nodes in one process (real node files, the peer methods and checks of
sync/, reached through Peers.attach instead of SSH): sync, convergence, backup, restore.

The same flows over real SSH between agents are in tests/sync/test_own_agents.py.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polykey.backup import NotMyBackup, backup, restore
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.sync.own import sync_all
from polykey.sync.server import PeerService
from polykey.vaults.errors import VaultError
from polykey.vaults.merge import conflict_copies
from tests.support import PASSWORD


def make(path: Path) -> Node:
    node, _ = Node.bootstrap(path, PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True)
    return node


def service(node: Node) -> PeerService:
    return PeerService(node.vaults, node.acl, node.node_id, node.notifications)


def connect(nodes: list[Node]) -> None:
    """Every node reaches every other in this process, and all are linked."""
    for a, b in itertools.permutations(nodes, 2):
        a.peers.attach(b.node_id, a.node_id, service(b).handle)
    for a, b in itertools.combinations(nodes, 2):
        a.link(b.node_id)
        b.link(a.node_id)
        assert a.links.is_mine(b.node_id) and b.links.is_mine(a.node_id)


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[Node]]:
    nodes = [make(tmp_path / f"{n}.pk") for n in "abc"]
    connect(nodes)
    try:
        yield nodes
    finally:
        for n in nodes:
            n.close()


def sync(a: Node, b: Node) -> list[dict[str, object]]:
    return sync_all(a.vaults, a.acl, a.peers, b.node_id)


def secrets(node: Node, vault: str) -> dict[str, bytes]:
    v = node.vaults.open(vault)
    return {e.path: v.read(e.path) for e in v.ls("", recursive=True) if e.kind == "secret"}


def test_a_vault_goes_to_a_linked_node_with_its_id_tags_and_grants(trio: list[Node]) -> None:
    import os

    from polykey.keys.root import RootKey

    a, b, _ = trio
    friend = RootKey.from_seed(os.urandom(32)).node_id  # a node of someone else
    vault = a.vaults.create("team", ["work"])
    vault.write("db/password", b"one")
    a.acl.grant(vault.id, friend, ["pull"])
    (result,) = sync(a, b)
    assert result["how"] == "sent"
    info = b.vaults.info("team")
    assert (info.id, info.tags) == (vault.id, ["work"])
    assert b.acl.grants(vault.id) == a.acl.grants(vault.id)
    assert b.acl.permissions(vault.id, friend) == ["pull"]
    assert secrets(b, "team") == {"db/password": b"one"}
    assert [e.id for e in b.vaults.open("team").log()] == [e.id for e in vault.log()]


def test_edits_on_two_nodes_merge_and_both_end_the_same(trio: list[Node]) -> None:
    a, b, _ = trio
    a.vaults.create("team").write("shared", b"base")
    sync(a, b)
    a.vaults.open("team").write("a-only", b"a")
    b.vaults.open("team").write("b-only", b"b")
    a.vaults.open("team").write("shared", b"from a")
    b.vaults.open("team").write("shared", b"from b")
    (result,) = sync(a, b)
    assert result["how"] == "merged" and len(result["conflicts"]) == 1  # type: ignore[arg-type]
    assert a.vaults.open("team").head() == b.vaults.open("team").head()
    got = secrets(a, "team")
    assert got == secrets(b, "team")
    (copy,) = conflict_copies(a.vaults.open("team"))
    assert {got["shared"], got[copy.copy]} == {b"from a", b"from b"}


def test_a_vault_only_the_other_node_holds_comes_here(trio: list[Node]) -> None:
    a, b, _ = trio
    b.vaults.create("laptop-only").write("k", b"v")
    a.vaults.create("laptop-only")  # the same name, another vault: the adopted one is renamed
    results = sync(a, b)
    adopted = [r for r in results if r.get("how") == "adopted"]
    assert [r["vault"] for r in adopted] == ["laptop-only-2"]
    assert secrets(a, "laptop-only-2") == {"k": b"v"}


def test_an_unlinked_node_cannot_sync_or_adopt(trio: list[Node]) -> None:
    a, b, _ = trio
    a.vaults.create("team").write("k", b"v")
    b.unlink(a.node_id)
    results = sync(a, b)
    assert all("error" in r for r in results), results
    with pytest.raises(Exception, match="No such vault"):
        b.vaults.info("team")


# --- convergence ----------------------------------------------------------------------------

PATHS = ["a", "b", "d", "d/c", "d/e", "D"]
Step = tuple[str, int, str, int]  # ("edit" | "rm" | "sync", node, path, other node / value)


@st.composite
def steps(draw: st.DrawFn) -> list[Step]:
    out: list[Step] = []
    for i in range(draw(st.integers(4, 18))):
        kind = draw(st.sampled_from(["edit", "edit", "rm", "sync", "sync"]))
        node = draw(st.integers(0, 2))
        out.append(
            (
                kind,
                node,
                draw(st.sampled_from(PATHS)),
                draw(st.integers(0, 2)) if kind == "sync" else i,
            )
        )
    return out


@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps())
def test_random_edits_and_sync_orders_converge_and_lose_no_value(
    tmp_path_factory: pytest.TempPathFactory, plan: list[Step]
) -> None:
    """Three linked nodes edit and delete at random and sync in random orders; then each syncs
    with the others until quiet. Every node ends with the same head and tree, no merge
    ping-pong (a last round changes nothing), and every value ever written is at its path,
    in a conflict copy, or in the history."""
    base = tmp_path_factory.mktemp("conv")
    nodes = [make(base / f"{n}.pk") for n in "abc"]
    try:
        connect(nodes)
        nodes[0].vaults.create("v").write("a", b"start")
        sync(nodes[0], nodes[1])
        sync(nodes[0], nodes[2])
        written = {b"start"}
        for kind, i, path, extra in plan:
            vault = nodes[i].vaults.open("v")
            if kind == "edit":
                value = f"{path}={extra}@{i}".encode()
                try:
                    vault.write(path, value)
                except Exception:  # a path that is a folder here ("d" vs "d/c"): skipped
                    continue
                written.add(value)
            elif kind == "rm":
                with contextlib.suppress(VaultError):
                    vault.remove([path])
            elif extra != i:
                sync(nodes[i], nodes[extra])
        for _ in range(2):  # gossip until quiet: a chain a-b, b-c, then a-b again
            for x, y in ((0, 1), (1, 2), (0, 2)):
                sync(nodes[x], nodes[y])
        heads = {n.vaults.open("v").head() for n in nodes}
        assert len(heads) == 1
        for x, y in ((0, 1), (1, 2), (0, 2)):  # quiet: nothing new is made
            assert all(r.get("how") == "up-to-date" for r in sync(nodes[x], nodes[y]))
        assert {n.vaults.open("v").head() for n in nodes} == heads
        vault = nodes[0].vaults.open("v")
        present = set(secrets(nodes[0], "v").values())
        history: set[bytes] = set()
        for commit in vault.walk():
            for e in _blobs(vault, commit.tree):
                history.add(e)
        assert written <= present | history
    finally:
        for n in nodes:
            n.close()


def _blobs(vault, tree_id: bytes) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    import stat

    objects = vault.objects()
    for entry in objects.get_tree(tree_id).items():
        if stat.S_ISDIR(entry.mode):
            yield from _blobs(vault, entry.sha)
        else:
            yield objects.get_blob_data(entry.sha)


# --- backups ----------------------------------------------------------------------------------


def test_backup_holds_every_vault_and_restore_brings_a_lost_node_back(tmp_path: Path) -> None:
    node = make(tmp_path / "node.pk")
    other = make(tmp_path / "other.pk")
    try:
        team = node.vaults.create("team", ["work"])
        team.write("db/password", b"p1")
        node.acl.grant(team.id, other.node_id, ["pull", "push"])
        node.vaults.create("empty-ish").write("x", b"y")
        first = backup(
            node,
            tmp_path / "usb" / "backup.pk",
            b"backup pw",
            kdf=FAST_INSECURE_KDF,
            allow_weak=True,
        )
        assert first["created"] is True
        team.write("db/password", b"p2")
        node.vaults.rename("empty-ish", "renamed")
        again = backup(node, tmp_path / "usb" / "backup.pk", b"backup pw", allow_weak=True)
        assert again["created"] is False
        hows = {r["vault"]: r["how"] for r in again["vaults"]}
        assert hows == {"team": "sent", "renamed": "up-to-date"}
        with Node.open(tmp_path / "usb" / "backup.pk", b"backup pw", allow_weak=True) as b:
            assert secrets(b, "team") == {"db/password": b"p2"}
            assert b.vaults.info("renamed").tags == []
            assert b.acl.permissions(team.id, other.node_id) == ["pull", "push"]
        team_id = team.id
    finally:
        node.close()
        other.close()
    (tmp_path / "node.pk").unlink()  # the laptop is lost; a new node with a new key
    fresh = make(tmp_path / "new.pk")
    try:
        done = restore(fresh, tmp_path / "usb" / "backup.pk", b"backup pw", allow_weak=True)
        assert {r["vault"] for r in done["vaults"]} == {"team", "renamed"}
        info = fresh.vaults.info("team")
        assert (info.id, info.tags) == (team_id, ["work"])
        assert secrets(fresh, "team") == {"db/password": b"p2"}
        assert len(fresh.vaults.open("team").log()) == 3
        assert fresh.acl.permissions(team_id, other.node_id) == ["pull", "push"]
    finally:
        fresh.close()


def test_backup_refuses_the_node_itself_a_copy_of_it_and_another_persons_node(
    tmp_path: Path,
) -> None:
    import shutil

    node = make(tmp_path / "node.pk")
    stranger = make(tmp_path / "stranger.pk")
    stranger.close()
    try:
        with pytest.raises(NotMyBackup, match="this node itself"):
            backup(node, tmp_path / "node.pk", PASSWORD.encode(), allow_weak=True)
        node.store.checkpoint(truncate=True)
        shutil.copy(tmp_path / "node.pk", tmp_path / "copy.pk")
        with pytest.raises(NotMyBackup, match="copy of this node"):
            backup(node, tmp_path / "copy.pk", PASSWORD.encode(), allow_weak=True)
        with pytest.raises(NotMyBackup, match="not linked"):
            backup(node, tmp_path / "stranger.pk", PASSWORD.encode(), allow_weak=True)
    finally:
        node.close()


def test_restore_repairs_a_damaged_record_from_the_backup(tmp_path: Path) -> None:
    import sqlite3

    node = make(tmp_path / "node.pk")
    vault = node.vaults.create("team")
    vault.write("k", b"the value")
    backup(node, tmp_path / "b.pk", b"bpw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    node.close()
    # damage the records one at a time until one that holds the vault's objects no longer reads
    db = sqlite3.connect(tmp_path / "node.pk")
    rows = db.execute("SELECT ns, name, length(sealed) FROM record").fetchall()
    db.close()
    damaged = None
    for ns, name, size in rows:
        flip(tmp_path / "node.pk", ns, name, size // 2)
        try:
            with Node.open(tmp_path / "node.pk", PASSWORD.encode(), allow_weak=True) as n:
                damage = n.check()
                try:
                    ok = n.vaults.open("team").read("k") == b"the value"
                except Exception:
                    ok = False
        except Exception:  # the node does not open: a record of another kind
            damage, ok = [], True
        if damage and not ok and any("objects" in d.place for d in damage):
            damaged = name
            break
        flip(tmp_path / "node.pk", ns, name, size // 2)  # not this one: put it back
    assert damaged is not None
    with Node.open(tmp_path / "node.pk", PASSWORD.encode(), allow_weak=True) as n:
        done = restore(n, tmp_path / "b.pk", b"bpw", allow_weak=True)
        assert done["repaired"], done
        assert n.vaults.open("team").read("k") == b"the value"
        assert not n.check()


def flip(path: Path, ns: bytes, name: bytes, at: int) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    (blob,) = db.execute("SELECT sealed FROM record WHERE ns=? AND name=?", (ns, name)).fetchone()
    blob = bytearray(blob)
    blob[at] ^= 1
    db.execute("UPDATE record SET sealed=? WHERE ns=? AND name=?", (bytes(blob), ns, name))
    db.commit()
    db.close()


def test_commits_of_a_node_no_longer_linked_still_clone_and_pull(trio: list[Node]) -> None:
    """The history keeps the commits a linked node made; after the unlink, a third node that
    may pull still clones it: the owner names former writers, whose signatures are checked."""
    from polykey.sync.client import clone, pull

    a, b, c = trio
    a.vaults.create("team").write("k", b"from a")
    sync(a, b)
    b.vaults.open("team").write("k2", b"from b")
    sync(b, a)
    c.unlink(a.node_id)  # c becomes a stranger that a shares with, not one of a's own
    b.unlink(a.node_id)
    assert not a.links.is_mine(b.node_id)
    team = a.vaults.info("team")
    a.acl.grant(team.id, c.node_id, ["clone", "pull"])
    clone(c.vaults, c.peers, a.node_id, "team", "copy")
    assert secrets(c, "copy") == {"k": b"from a", "k2": b"from b"}
    a.vaults.open("team").write("k3", b"later")
    assert pull(c.vaults, c.peers, "copy")["updated"]
