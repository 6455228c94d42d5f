"""A child delegated one folder (`pk child create f1 --vault work:prod/db`), each node its own
process on loopback: the child's copy is the vault derived to that folder and holds nothing of
other paths, in any object or commit; it runs a program with the folder's secrets; the parent
refuses its push; its own child may hold only a folder within it. Then the parent revokes it
without knowing where it serves peers: the child's agent takes the parent's chain on its
background sync schedule and refuses the grandchild, with no `pk child pull`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dulwich.objects import Blob, Commit, Tree

from polykey.ids import decode_node_id
from polykey.node import Node
from polykey.vaults.objects import objects_ns, parse
from tests.child.test_children import _json, _peer, refused_soon
from tests.support import run_pk
from tests.sync.test_three_agents import Peer

FOLDER = {"prod/db/DB_PASSWORD": b"DB-PASSWORD-ONE", "prod/db/DB_USER": b"DB-USER-ONE"}
ELSEWHERE = {"prod/web/TOKEN": b"WEBTOKEN-VALUE", "rootsecret": b"ROOTSECRET-VALUE"}
LEAKS = (b"prod/web", b"WEBTOKEN", b"rootsecret", b"ROOTSECRET")  # names, values, messages
SYNC_S = 5  # the child's agent's --sync-interval (the least it takes)


@dataclass
class Folders:
    p: Peer
    f: Peer
    g: Peer
    tmp: Path


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Folders]:
    tmp = tmp_path_factory.mktemp("folders")
    p, f, g = (_peer(n, tmp) for n in ("p", "f", "g"))
    try:
        p("bootstrap")
        p.node_id = p("keys", "public").split()[0]
        p("vaults", "create", "work")
        for path, value in {**ELSEWHERE, **FOLDER}.items():  # each commit's message names it
            p("secrets", "write", f"work:{path}", stdin=value)
        p.start()
        yield Folders(p, f, g, tmp)
    finally:
        for peer in (g, f, p):
            if peer.started:
                peer.stop()


def held_records(node_path: Path, password: bytes, vault: str) -> list[tuple[bytes, bytes]]:
    """Every object record a node holds for ``vault`` (its objects namespace, as stored)."""
    with Node.open(node_path, password, allow_weak=True) as node:
        return node.store.items(objects_ns(node.vaults.info(vault).id))


def assert_only_the_folder(
    records: list[tuple[bytes, bytes]],
    paths: set[str],
    values: set[bytes],
    leaks: tuple[bytes, ...] = LEAKS,
) -> None:
    """No object or commit names or holds anything but ``paths`` (their ``values``, any
    version): the checks of tests/sync/test_scoped_share.py, on any node's records."""
    names = {part.encode() for path in paths for part in path.split("/")}
    kinds = set()
    for key, record in records:
        assert not any(leak in record for leak in leaks), record[:80]
        obj = parse(record, key.hex().encode())
        kinds.add(type(obj))
        if isinstance(obj, Blob):
            assert obj.as_raw_string() in values
        elif isinstance(obj, Tree):
            assert {i.path for i in obj.iteritems()} <= names
        else:
            assert isinstance(obj, Commit)
            assert obj.message.startswith((b"Add secret prod/db/", b"Update secret prod/db/"))
    assert kinds == {Blob, Tree, Commit}


def _receive_as(node_path: Path, password: bytes, to: Peer, vault: str) -> Any:
    """As that node, ``vaults.receive`` on ``to`` straight over SSH (what a modified `pk` could
    send): the answer, or the PeerError."""
    from polykey.network.ssh import PeerClient, PeerError, ssh_key

    with Node.open(node_path, password, allow_weak=True) as node:
        key = node.key.signing

    async def run() -> Any:
        client = await PeerClient.connect(
            ssh_key(key.openssh_private_pem()), decode_node_id(to.node_id), "127.0.0.1", to.port
        )
        try:
            return await client.call(
                "vaults.receive", {"vault": vault, "head": "0" * 40, "objects": []}
            )
        except PeerError as exc:
            return exc
        finally:
            client.close()

    return asyncio.run(asyncio.wait_for(run(), 60))


def test_a_folder_child_holds_the_derived_folder_alone_and_runs_a_program_with_it(
    folders: Folders,
) -> None:
    from polykey.network.ssh import PeerError

    p, f = folders.p, folders.f
    made = _json(
        p, "child", "create", "f1", "--vault", "work:prod/db/", "--reshare",
        "--to", f.env["PK_NODE"], "--child-password-file", f.env["PK_PASSWORD_FILE"],
    )  # fmt: skip
    f.node_id = str(made["node_id"])
    pulled = _json(f, "child", "pull")
    assert pulled["vaults"] == [{"vault": "work", "cloned": True, "path": "prod/db"}]
    out = f("secrets", "env", "work:prod/db", "--", "sh", "-c", 'printf %s "$DB_PASSWORD"')
    assert out == "DB-PASSWORD-ONE"
    assert f("secrets", "ls", "work", "-R").split() == [
        "prod/", "prod/db/", "prod/db/DB_PASSWORD", "prod/db/DB_USER",
    ]  # fmt: skip
    records = held_records(Path(f.env["PK_NODE"]), b"f password", "work")
    assert_only_the_folder(records, set(FOLDER), set(FOLDER.values()))
    assert "folder prod/db" in f("vaults", "scan", p.node_id)
    answer = _receive_as(Path(f.env["PK_NODE"]), b"f password", p, "work")
    assert isinstance(answer, PeerError) and "only a folder" in answer.detail
    p("secrets", "write", "work:prod/db/DB_PASSWORD", stdin=b"DB-PASSWORD-TWO")
    p("secrets", "write", "work:rootsecret", stdin=b"ROOTSECRET-VALUE-2")
    assert [v.get("updated") for v in _json(f, "child", "pull")["vaults"]] == [True]
    assert f("secrets", "cat", "work:prod/db/DB_PASSWORD") == "DB-PASSWORD-TWO"
    records = held_records(Path(f.env["PK_NODE"]), b"f password", "work")
    assert_only_the_folder(records, set(FOLDER), {*FOLDER.values(), b"DB-PASSWORD-TWO"})


def test_a_grandchild_may_hold_only_a_folder_within_its_parents_folder(
    folders: Folders,
) -> None:
    f, g = folders.f, folders.g
    started = run_pk("agent", "start", "--background", "--port", str(f.port),
                     "--sync-interval", str(SYNC_S), env=f.env)  # fmt: skip
    assert started.returncode == 0, started.stderr.decode()
    f.started = True
    for beyond in ("work", "work:prod", "work:prod/web"):
        refused = f.fails("child", "create", "gx", "--vault", beyond, "--token")
        assert b"may not hand on" in refused.stderr, beyond
    token = f("child", "create", "g1", "--vault", "work:prod/db/DB_USER", "--token").strip()
    joined = _json(g, "child", "join", "-", stdin=token.encode())
    g.node_id = str(joined["node_id"])
    assert joined["vaults"] == [{"vault": "work", "cloned": True, "path": "prod/db/DB_USER"}]
    assert g("secrets", "ls", "work", "-R").split() == ["prod/", "prod/db/", "prod/db/DB_USER"]
    assert g("secrets", "cat", "work:prod/db/DB_USER") == "DB-USER-ONE"
    records = held_records(Path(g.env["PK_NODE"]), b"g password", "work")
    leaks = (*LEAKS, b"DB_PASSWORD", b"DB-PASSWORD")
    assert_only_the_folder(records, {"prod/db/DB_USER"}, {b"DB-USER-ONE"}, leaks)


def test_a_revocation_reaches_the_child_on_its_sync_schedule(folders: Folders) -> None:
    """The parent does not know where F serves peers (F was written to a file and pulled
    before its agent ran): F's agent takes P's chain at its next background sync."""
    p, g = folders.p, folders.g
    g("vaults", "pull", "work")  # F serves G
    revoked = _json(p, "child", "revoke", "f1")
    assert revoked["revoked"] is True and revoked["told"] is False
    assert refused_soon(g, "work", SYNC_S * 6)
