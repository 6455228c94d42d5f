"""A vault derived to one folder (vaults/derive.py, docs/spec/derived.md): only that folder in
every object, the same history always gives the same derived commits, only new commits are
derived, messages come from the change under the folder alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from dulwich.objects import Blob, Commit, ObjectID, Tree

from polykey.crypto import sshsig
from polykey.ids import encode_node_id
from polykey.keys.root import RootKey
from polykey.store.nodefile import NodeFile
from polykey.vaults import tree as trees
from polykey.vaults.derive import DERIVED, derive, view_id
from polykey.vaults.objects import ObjectCache, objects_ns, parse
from polykey.vaults.paths import InvalidSecretPath, split_path
from polykey.vaults.tags import TAGS_FILE, parse_tags, write_tags
from polykey.vaults.vault import BRANCH, GIT_NAMESPACE, Vault
from tests.conftest import NodeFixture

VECTORS = Path(__file__).parents[2] / "docs" / "spec" / "derived-vectors.json"
PATH = "prod/db"


def put(
    vault: Vault,
    files: dict[str, bytes | None],
    message: str,
    when: int,
    *,
    parents: list[bytes] | None = None,
    tags: dict[str, list[str]] | None = None,
) -> bytes:
    """One signed commit at a fixed time (so that its id is known): ``files`` put (None:
    removed) on the first parent's tree (default: the head), ``tags`` as the tag file."""
    with vault.store.write() as tx:
        objects = vault.objects(tx)
        head = vault.head(tx)
        parents = parents if parents is not None else ([head] if head else [])
        base = objects.get_commit(parents[0]).tree if parents else objects.add(Tree())
        ops: list[tuple[tuple[str, ...], trees.Op]] = [
            (split_path(p), trees.Put(objects.add_blob(d)) if d is not None else trees.Delete(True))
            for p, d in files.items()
        ]
        tree = trees.apply(objects, base, trees.plan(ops)) if ops else base
        if tags is not None:
            tree = write_tags(objects, tree, tags)
        ident = encode_node_id(vault.key.node_id).encode()
        commit = Commit()
        commit.tree = cast(ObjectID, tree)
        commit.parents = [cast(ObjectID, p) for p in parents]
        commit.author = commit.committer = ident + b" <" + ident + b">"
        commit.author_time = commit.commit_time = when
        commit.author_timezone = commit.commit_timezone = 0
        commit.encoding = b"UTF-8"
        commit.message = message.encode() + b"\n"
        raw = commit.raw_without_sig()
        commit.gpgsig = sshsig.sign(vault.key.signing, raw, GIT_NAMESPACE).encode()
        sha = objects.add(commit)
        tx.put(vault.refs, BRANCH, sha)
        return sha


def fixed_vault(store: NodeFile, doc: dict[str, Any]) -> Vault:
    key = RootKey.from_seed(bytes.fromhex(doc["seed"]))
    return Vault(store, doc["vault_id"], "work", key, ObjectCache())


def build(vault: Vault, history: list[dict[str, Any]]) -> list[bytes]:
    """The source history of a vector, commit by commit."""
    made: list[bytes] = []
    for step in history:
        files = {p: (v.encode() if v is not None else None) for p, v in step["files"].items()}
        parents = [made[i] for i in step["parents"]]
        made.append(
            put(vault, files, step["message"], step["time"], parents=parents, tags=step.get("tags"))
        )
    return made


def mapped(vault: Vault, sha: bytes) -> bytes | None:
    vid = view_id(vault.id, PATH)
    raw = vault.store.get(DERIVED, bytes.fromhex(vid[1:]) + bytes.fromhex(sha.decode()))
    assert raw is not None, "not derived"
    return raw.hex().encode() if raw else None


@pytest.fixture
def vectors() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(VECTORS.read_text()))


@pytest.fixture
def vault(fresh_node: NodeFixture, vectors: dict[str, Any]) -> Vault:
    return fixed_vault(fresh_node.node.store, vectors)


def test_the_vectors_derive_to_the_commits_the_spec_names(
    vault: Vault, vectors: dict[str, Any]
) -> None:
    source = build(vault, vectors["history"])
    assert [s.decode() for s in source] == vectors["source"]
    view = derive(vault, vectors["path"])
    assert view.id == vectors["view_id"]
    derived = [mapped(vault, s) for s in source]
    assert [d.decode() if d else None for d in derived] == vectors["derived"]
    assert view.head() == derived[-1]
    assert [c.message for c in view.log()] == vectors["messages"]


def test_every_object_of_the_view_holds_only_the_folder(
    vault: Vault, vectors: dict[str, Any]
) -> None:
    build(vault, vectors["history"])
    view = derive(vault, PATH)
    db_values = {
        v.encode()
        for step in vectors["history"]
        for p, v in step["files"].items()
        if p.startswith(PATH + "/") and v is not None
    }
    seen = {"blob": 0, "tree": 0, "commit": 0}
    for key, record in vault.store.items(objects_ns(view.id)):
        obj = parse(record, key.hex().encode())
        if isinstance(obj, Blob):
            seen["blob"] += 1
            data = obj.as_raw_string()
            if data not in db_values:  # then it is the tag file: tags of the folder alone
                assert set(parse_tags(data)) <= {f"{PATH}/password", f"{PATH}/user"}
        elif isinstance(obj, Tree):
            seen["tree"] += 1
            names = {item.path for item in obj.iteritems()}
            assert names <= {b"prod", b"db", b"password", b"user", TAGS_FILE}, names
        else:
            assert isinstance(obj, Commit)
            seen["commit"] += 1
            text = obj.message + obj.author + obj.committer
            assert b"web" not in text and b"other" not in text and b"rotate" not in text.lower()
    assert all(seen.values()), seen


def test_the_same_history_derives_to_the_same_commits_on_another_node_file(
    vault: Vault, vectors: dict[str, Any], tmp_path: Path
) -> None:
    from polykey.node import FAST_INSECURE_KDF, Node

    build(vault, vectors["history"])
    first = derive(vault, PATH).head()
    other, _ = Node.bootstrap(tmp_path / "b.pk", b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with other:
        again = fixed_vault(other.store, vectors)
        build(again, vectors["history"])
        assert derive(again, PATH).head() == first


def test_a_pull_derives_only_new_commits_and_other_paths_bring_none(vault: Vault) -> None:
    put(vault, {"prod/db/password": b"one", "prod/web/token": b"w"}, "Start.", 1000)
    view = derive(vault, PATH)
    head = view.head()
    count = vault.store.count(objects_ns(view.id))
    put(vault, {"prod/web/token": b"w2"}, "Rotate prod/web/token.", 1001)
    put(vault, {"other/x": b"x"}, "Add secret other/x.", 1002)
    assert derive(vault, PATH).head() == head
    assert vault.store.count(objects_ns(view.id)) == count  # nothing new in the view
    put(vault, {"prod/db/password": b"two"}, "Rotate the db password after prod/web.", 1003)
    newer = derive(vault, PATH).head()
    assert newer is not None and newer != head
    commit = view.objects().get_commit(newer)
    assert commit.parents == [head]
    assert commit.message == b"Update secret prod/db/password.\n"
    assert commit.author_time == 1003
    assert view.read("prod/db/password") == b"two"
    assert vault.store.count(objects_ns(view.id)) == count + 5  # commit, 3 trees, 1 blob


def test_a_removed_folder_is_an_empty_tree_and_a_new_one_a_root(vault: Vault) -> None:
    put(vault, {"a": b"1"}, "Create.", 10)
    assert derive(vault, PATH).head() is None
    put(vault, {"prod/db/k": b"v"}, "Add.", 11)
    view = derive(vault, PATH)
    first = view.head()
    assert first is not None and view.objects().get_commit(first).parents == []
    put(vault, {"prod/db/k": None}, "Remove secret prod/db/k and more.", 12)
    gone = derive(vault, PATH).head()
    assert gone is not None
    commit = view.objects().get_commit(gone)
    assert commit.parents == [first] and view.ls() == []
    assert commit.message == b"Remove secret prod/db/k.\n"


def test_a_merge_keeps_both_derived_sides_so_every_pull_fast_forwards(vault: Vault) -> None:
    from polykey.vaults.graph import is_ancestor

    base = put(vault, {"prod/db/a": b"1", "x": b"0"}, "Base.", 100)
    ours = put(vault, {"prod/db/a": b"2"}, "Ours.", 101, parents=[base])
    view = derive(vault, PATH)
    seen_ours = view.head()
    theirs = put(vault, {"prod/db/b": b"3"}, "Theirs.", 102, parents=[base])
    seen_theirs = derive(vault, PATH).head()
    merged = put(vault, {"prod/db/b": b"3"}, "Merge.", 103, parents=[ours, theirs])
    head = derive(vault, PATH).head()
    assert head is not None and seen_ours is not None and seen_theirs is not None
    store = view.object_store(shared=True)
    assert is_ancestor(store, seen_ours, head) and is_ancestor(store, seen_theirs, head)
    commit = view.objects().get_commit(head)
    assert len(commit.parents) == 2 and commit.message == b"Merge changes to prod/db.\n"
    assert mapped(vault, merged) == head


def test_a_single_secret_may_be_the_path(vault: Vault) -> None:
    put(vault, {"prod/db": b"secret", "prod/web": b"other"}, "Both.", 5, tags={"prod/web": ["t"]})
    view = derive(vault, PATH)
    assert view.read("prod/db") == b"secret"
    assert [e.path for e in view.ls(recursive=True)] == ["prod", "prod/db"]
    assert view.tags() == {}


def test_a_path_outside_the_rules_is_refused(vault: Vault) -> None:
    put(vault, {"a": b"1"}, "Create.", 10)
    for bad in ("../prod", "/prod", "prod/.git", ""):
        with pytest.raises(InvalidSecretPath):
            derive(vault, bad)


def test_salvage_keeps_the_views_and_derives_nothing_again(tmp_path: Path) -> None:
    from polykey.node import FAST_INSECURE_KDF, Node
    from polykey.salvage import salvage

    path = tmp_path / "node.pk"
    node, _ = Node.bootstrap(path, b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        work = node.vaults.create("work")
        work.write("prod/db/password", b"p")
        work.write("prod/web/token", b"w")
        view = derive(work, PATH)
        held = sorted(node.store.items(objects_ns(view.id)))
        head = view.head()
    report = salvage(path, tmp_path / "new.pk", b"pw", allow_weak=True)
    assert report.ok and not report.lost, report
    with Node.open(tmp_path / "new.pk", b"pw", allow_weak=True) as again:
        assert sorted(again.store.items(objects_ns(view.id))) == held
        assert derive(again.vaults.open("work"), PATH).head() == head
