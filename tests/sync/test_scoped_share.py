"""A folder shared alone (`pk vaults share work:prod/db NODEID`), between two real nodes over SSH
on loopback: the other node's copy holds nothing of other paths, in any object or commit;
pulls bring changes to the folder and nothing for changes elsewhere; push is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from dulwich.objects import Blob, Commit, Tree

from polykey.ids import decode_node_id
from polykey.vaults.objects import objects_ns, parse
from polykey.vaults.paths import InvalidSecretPath
from polykey.vaults.tags import parse_tags
from tests.conftest import NodeFixture
from tests.support import run_pk
from tests.sync.two_nodes import Pair, bootstrap_pair

FOLDER = {"prod/db/password": b"DB-PASSWORD-ONE", "prod/db/user": b"DB-USER-ONE"}
ELSEWHERE = {
    "prod/webfrontend/token": b"WEBFRONTEND-TOKEN-ONE",
    "othernotes/recipe": b"OTHERNOTES-RECIPE-ONE",
    "rootsecret": b"ROOTSECRET-VALUE-ONE",
}
# nothing of these may reach the other node: names, values, words of messages
LEAKS = (b"webfrontend", b"othernotes", b"rootsecret", b"WEBFRONTEND", b"OTHERNOTES", b"ROTATED")


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Alice holds vault `work` (the folder, secrets elsewhere, tags on both, messages naming
    other paths), shares work:prod/db with bob and serves it; bob has cloned it as `mine`."""
    s = bootstrap_pair(tmp_path_factory.mktemp("scoped"))
    s.a("vaults", "create", "work")
    for path, value in {**ELSEWHERE, **FOLDER}.items():  # messages name each path
        s.a("secrets", "write", f"work:{path}", stdin=value)
    s.a("tags", "add", "work:prod/webfrontend/token", "webfrontend-tag")
    s.a("tags", "add", "work:prod/db/password", "db")
    s.a("secrets", "write", "work:prod/webfrontend/token", stdin=b"WEBFRONTEND-TOKEN-TWO")
    s.a("vaults", "share", "work:prod/db", s.bob_id)
    s.start_alice()
    try:
        s.b("nodes", "add", s.alice_id, f"127.0.0.1:{s.port}")
        s.b("vaults", "clone", s.alice_id, "work", "mine")
        yield s
    finally:
        run_pk("agent", "stop", env=s.alice)


def _records(s: Pair, name: str) -> list[tuple[bytes, bytes]]:
    with s.bob_node() as node:
        vault_id = node.vaults.info(name).id
        return node.store.items(objects_ns(vault_id))


def test_the_clone_holds_nothing_of_other_paths_in_any_object_or_commit(scoped: Pair) -> None:
    scoped.b("vaults", "pull", "mine")
    assert scoped.b("secrets", "cat", "mine:prod/db/password") == "DB-PASSWORD-ONE"
    listed = scoped.b("secrets", "ls", "mine", "-R").split()
    assert listed == ["prod/", "prod/db/", "prod/db/password", "prod/db/user"]
    kinds = {"blob": 0, "tree": 0, "commit": 0}
    for key, record in _records(scoped, "mine"):
        assert not any(leak in record for leak in LEAKS), record[:80]
        obj = parse(record, key.hex().encode())
        if isinstance(obj, Blob):
            kinds["blob"] += 1
            data = obj.as_raw_string()
            assert data not in ELSEWHERE.values()
            if data not in FOLDER.values():  # the tag file: the folder's tags alone
                assert parse_tags(data) == {"prod/db/password": ["db"]}
        elif isinstance(obj, Tree):
            kinds["tree"] += 1
            names = {i.path for i in obj.iteritems()}
            assert names <= {b"prod", b"db", b"password", b"user", b".polykey-tags"}, names
        else:
            assert isinstance(obj, Commit)
            kinds["commit"] += 1
            made_here = (b"Add secret prod/db/", b"Update secret prod/db/", b"Change tags in")
            assert obj.message.startswith(made_here), obj.message
    assert kinds["blob"] and kinds["tree"] and kinds["commit"]
    assert "whole" in scoped.b("node", "check")


def test_scan_names_the_folder_and_the_vault_as_itself(scoped: Pair) -> None:
    out = scoped.b("vaults", "scan", scoped.alice_id)
    assert "work" in out and "folder prod/db" in out
    perms = scoped.a("vaults", "permissions", "work")
    assert "folder:prod/db" in perms


def test_a_pull_brings_changes_to_the_folder_and_nothing_for_changes_elsewhere(
    scoped: Pair,
) -> None:
    scoped.b("vaults", "pull", "mine")
    before = len(_records(scoped, "mine"))
    scoped.a("secrets", "write", "work:othernotes/recipe", stdin=b"OTHERNOTES-RECIPE-ROTATED")
    assert "up to date" in scoped.b("vaults", "pull", "mine")
    assert len(_records(scoped, "mine")) == before
    scoped.a("secrets", "write", "work:prod/db/password", stdin=b"DB-PASSWORD-TWO")
    assert "updated" in scoped.b("vaults", "pull", "mine")
    assert scoped.b("secrets", "cat", "mine:prod/db/password") == "DB-PASSWORD-TWO"
    assert len(_records(scoped, "mine")) == before + 5  # a commit, 3 trees, the new blob
    log = json.loads(scoped.b("vaults", "log", "mine", "--format", "json"))
    messages = [c["message"] for c in log["commits"]] if isinstance(log, dict) else []
    assert messages[:1] == ["Update secret prod/db/password."]


def _call(s: Pair, method: str, params: dict[str, Any]) -> Any:
    """As bob, one peer method on alice, straight over SSH (what a modified `pk` could send)."""
    from polykey.network.ssh import PeerClient, PeerError, ssh_key

    with s.bob_node() as node:
        key = node.key.signing

    async def run() -> Any:
        client = await PeerClient.connect(
            ssh_key(key.openssh_private_pem()), decode_node_id(s.alice_id), "127.0.0.1", s.port
        )
        try:
            return await client.call(method, params)
        except PeerError as exc:
            return exc
        finally:
            client.close()

    return asyncio.run(asyncio.wait_for(run(), 60))


def test_push_is_refused_by_the_share_and_by_the_serving_node(scoped: Pair) -> None:
    from polykey.network.ssh import PeerError

    refused = run_pk(
        "vaults", "share", "work:prod/db", scoped.bob_id, "--perm", "push", env=scoped.alice
    )
    assert refused.returncode == 3 and b"cannot write" in refused.stderr
    local = run_pk("secrets", "write", "mine:prod/db/x", env=scoped.bob, input=b"x")
    assert local.returncode == 38
    answer = _call(scoped, "vaults.receive", {"vault": "work", "head": "0" * 40, "objects": []})
    assert isinstance(answer, PeerError) and "only a folder" in answer.detail


def test_a_have_outside_the_derived_history_reveals_nothing(scoped: Pair) -> None:
    source_head = json.loads(scoped.a("vaults", "log", "work", "--format", "json"))
    commits = source_head["commits"] if isinstance(source_head, dict) else source_head
    real = [c["id"] for c in commits]
    plain = _call(scoped, "vaults.fetch", {"vault": "work", "haves": [], "at": [0, 0]})
    probed = _call(scoped, "vaults.fetch", {"vault": "work", "haves": real, "at": [0, 0]})
    assert plain == probed
    assert plain["writers"] == [scoped.alice_id] and plain["head"] not in real


def test_stock_git_is_not_served_the_vault_to_a_folder_grant(scoped: Pair) -> None:
    from dulwich.errors import NotGitRepository

    from polykey.sync.gitserve import VaultBackend

    with scoped.alice_node() as node:
        backend = VaultBackend(node.vaults, node.acl, decode_node_id(scoped.bob_id))
        with pytest.raises(NotGitRepository):
            backend.open_repository("work")


# --- the grant itself (trust/acl.py) --------------------------------------------------------


def test_a_folder_grant_reads_only_the_folder_and_never_pushes(fresh_node: NodeFixture) -> None:
    from polykey.keys.root import RootKey
    from polykey.trust.acl import Folder, FolderGrantRefused

    acl, vault_id = fresh_node.node.acl, fresh_node.node.vaults.create("work").id
    bob, carol = (RootKey.from_seed(bytes([n]) * 32).node_id for n in (1, 2))
    assert acl.grant(vault_id, bob, ["scan", "clone", "pull"], "prod/db/") == [
        "clone",
        "folder:prod/db",
        "pull",
        "scan",
    ]
    assert acl.permissions(vault_id, bob) == ["scan"]  # nothing of the whole vault to read
    assert acl.folder(vault_id, bob) == Folder("prod/db", ("clone", "pull", "scan"))
    assert acl.scope(vault_id, bob) == "prod/db" and acl.writers(vault_id) == []
    with pytest.raises(FolderGrantRefused, match="cannot write"):
        acl.grant(vault_id, carol, ["push"], "prod/db")
    with pytest.raises(FolderGrantRefused, match="holds folder prod/db"):
        acl.grant(vault_id, bob, ["pull"], "prod/web")
    with pytest.raises(InvalidSecretPath):
        acl.grant(vault_id, carol, ["pull"], "../prod")
    acl.grant(vault_id, carol, ["pull"])
    with pytest.raises(FolderGrantRefused, match="whole vault already"):
        acl.grant(vault_id, carol, ["pull"], "prod/db")
    assert acl.scope(vault_id, carol) is None
    acl.grant(vault_id, bob, ["pull"])  # the owner widens it: the whole vault
    assert acl.scope(vault_id, bob) is None and acl.permissions(vault_id, bob) == [
        "clone",
        "pull",
        "scan",
    ]


def test_a_mirrored_folder_grant_stays_a_folder_grant(fresh_node: NodeFixture) -> None:
    """A backup mirrors grants (``Acl.replace``): a folder stays, a push beside it goes, and
    a folder this version cannot read takes every read with it (never the whole vault)."""
    from polykey.ids import encode_node_id
    from polykey.keys.root import RootKey

    acl, vault_id = fresh_node.node.acl, fresh_node.node.vaults.create("work").id
    bob, carol, dave = (RootKey.from_seed(bytes([n]) * 32).node_id for n in (1, 2, 3))
    grants = {
        encode_node_id(bob): ["folder:prod/db", "pull", "push"],
        encode_node_id(carol): ["folder:../x", "pull", "scan"],
        encode_node_id(dave): ["folder:a", "folder:b", "clone"],
    }
    with fresh_node.node.store.write() as tx:
        acl.replace(tx, vault_id, grants)
    assert acl.grants(vault_id) == {
        encode_node_id(bob): ["folder:prod/db", "pull"],
        encode_node_id(carol): ["scan"],
    }
    assert acl.scope(vault_id, bob) == "prod/db" and acl.permissions(vault_id, carol) == ["scan"]
    assert acl.permissions(vault_id, dave) == [] and acl.folder(vault_id, dave) is None
