"""A bad reserved file already in a vault (`.polykey-tags` a peer sent before receiving checked
it): local writes keep working, tag reads fail clearly naming the vault and the file, the next
tag change replaces it, and it is never reported as damage to the node file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich.objects import ObjectID, Tree

from polykey.errors import NodeDamaged
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults import tags as tags_module
from polykey.vaults.errors import BadTagFile, TagFileFull
from polykey.vaults.objects import encode, objects_ns, refs_ns
from polykey.vaults.tags import MAX_TAGS_BYTES, TAGS_FILE, parse_tags
from polykey.vaults.vault import BRANCH, Vault, transfer
from tests.support import PASSWORD, pk_env, run_pk

BAD = {
    "not-json": b"{not json",
    "nested-100000": b"[" * 100_000 + b"]" * 100_000,
    "deep-in-shape": b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "too-large": b'{"a": ["t"]' + b" " * MAX_TAGS_BYTES + b"}",
    "a-list": b'["a", "t"]',
    "tags-not-a-list": b'{"a": "t"}',
    "invalid-tag": b'{"a": ["not a tag"]}',
    "invalid-path": b'{"../a": ["t"]}',
    "not-utf8": b'{"a": ["\xff"]}',
    "a-folder": b"",  # the entry is a folder (below)
}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node, _ = Node.bootstrap(
        tmp_path / "n.pk", PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True
    )
    with node:  # closing twice is harmless
        yield node


def plant_tags(node: Node, vault: Vault, content: bytes, *, folder: bool = False) -> bytes:
    """Give the vault's root a `.polykey-tags` with this content (or a folder), in a signed
    commit written straight to its records; returns the entry's object id."""
    with node.store.write() as tx:
        objects = vault.objects(tx)
        head = vault.head(tx)
        assert head is not None
        root = objects.get_tree(objects.get_commit(head).tree)
        if folder:
            inner = Tree()
            inner.add(b"x", 0o100644, ObjectID(objects.add_blob(b'{"a": ["t"]}')))
            sha, mode = objects.add(inner), 0o040000
        else:
            sha, mode = objects.add_blob(content), 0o100644
        new = Tree()
        for item in root.iteritems():
            if item.path != TAGS_FILE:
                new.add(item.path, item.mode, item.sha)
        new.add(TAGS_FILE, mode, ObjectID(sha))
        objects.add(new)
        commit = vault._new_commit(new.id, [head], "Plant a tag file.")
        tx.put(objects_ns(vault.id), bytes.fromhex(commit.id.decode()), encode(commit))
        tx.put(refs_ns(vault.id), BRANCH, commit.id)
    return sha


def tag_entry(vault: Vault) -> tuple[int, bytes] | None:
    head = vault.head()
    assert head is not None
    root = vault.objects().get_tree(vault.objects().get_commit(head).tree)
    if TAGS_FILE not in root:
        return None
    mode, sha = root[TAGS_FILE]
    return mode, sha


@pytest.fixture(params=list(BAD))
def bad_vault(request: pytest.FixtureRequest, node: Node) -> tuple[Node, Vault, bytes]:
    vault = node.vaults.create("work")
    vault.write("a", b"secret a")
    vault.write("d/b", b"secret b")
    sha = plant_tags(node, vault, BAD[request.param], folder=request.param == "a-folder")
    return node, vault, sha


def test_reading_tags_names_the_vault_and_the_file_and_is_not_damage(
    bad_vault: tuple[Node, Vault, bytes],
) -> None:
    node, vault, _ = bad_vault
    with pytest.raises(BadTagFile) as caught:
        vault.tags()
    assert not isinstance(caught.value, NodeDamaged)
    assert caught.value.message.startswith("The vault's tag file is not valid: work:.polykey-tags")
    assert "\n" not in caught.value.message and len(caught.value.message) < 200
    assert node.check() == []  # the node file is whole


def test_local_changes_work_and_keep_the_bad_file(bad_vault: tuple[Node, Vault, bytes]) -> None:
    node, vault, _ = bad_vault
    before = tag_entry(vault)
    vault.write("new", b"new secret")
    vault.write("a", b"changed")
    vault.mkdir("empty")
    vault.move_within("d/b", "moved")
    vault.move_within("a", "copied", copy=True)
    vault.remove(["copied"])
    other = node.vaults.create("other")
    transfer(vault, "moved", other, "from-work")
    assert tag_entry(vault) == before  # kept byte for byte: nothing is lost
    assert vault.read("new") == b"new secret"
    assert vault.stat("a").tags == []
    assert [e.path for e in vault.ls()] == ["a", "empty", "new"]
    assert vault.log()[0].message == "Move moved to vault other."


def test_the_next_tag_change_replaces_the_bad_file_and_history_keeps_it(
    bad_vault: tuple[Node, Vault, bytes],
) -> None:
    node, vault, _ = bad_vault
    before = vault.head()
    vault.set_tags("a", ["fresh"], [])
    assert vault.tags() == {"a": ["fresh"]}
    assert vault.resolve("HEAD~1") == before
    with pytest.raises(BadTagFile):
        vault.tags("HEAD~1")  # the old file is still there, in the history
    vault.set_tags("a", [], ["fresh"])
    assert tag_entry(vault) is None
    assert node.check() == []


def test_a_tag_removal_replaces_the_bad_file_too(bad_vault: tuple[Node, Vault, bytes]) -> None:
    _, vault, _ = bad_vault
    vault.set_tags("a", [], ["whatever"])
    assert vault.tags() == {}


def test_tags_carried_into_a_vault_whose_tag_file_is_bad_fail_clearly(node: Node) -> None:
    bad = node.vaults.create("work")
    bad.write("a", b"x")
    plant_tags(node, bad, b"not json")
    source = node.vaults.create("source")
    source.write("s", b"tagged secret")
    source.set_tags("s", ["keep"], [])
    before = (bad.head(), source.head())
    with pytest.raises(BadTagFile, match=r"work:\.polykey-tags is not JSON") as caught:
        transfer(source, "s", bad, "s")  # its tags would be dropped: refused instead
    assert "Tag any secret" in caught.value.user_hint
    assert (bad.head(), source.head()) == before
    bad.set_tags("a", ["t"], [])
    transfer(source, "s", bad, "s")
    assert bad.tags() == {"a": ["t"], "s": ["keep"]}


def test_the_writer_never_makes_a_tag_file_larger_than_receivers_take(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = node.vaults.create("work")
    vault.write("a", b"x")
    vault.set_tags("a", ["one"], [])
    monkeypatch.setattr(tags_module, "MAX_TAGS_BYTES", 40)
    before = vault.head()
    with pytest.raises(TagFileFull):
        vault.set_tags("a", ["two", "three", "four"], [])
    assert vault.head() == before


@pytest.mark.parametrize(
    "doc",
    [{}, {"a": ["t"]}, {"d/b": ["a.b_c-d", "b:c"], "x y/z": ["t"]}],
)
def test_tag_files_the_writer_makes_parse_back(doc: dict[str, list[str]]) -> None:
    body = json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"
    assert parse_tags(body) == doc


@pytest.mark.parametrize("name", ["not-json", "nested-100000", "a-folder"])
def test_pk_with_a_bad_tag_file_writes_and_says_what_is_wrong(node: Node, name: str) -> None:
    vault = node.vaults.create("work")
    vault.write("a", b"secret a")
    plant_tags(node, vault, BAD[name], folder=name == "a-folder")
    good = node.vaults.create("good")
    good.write("g", b"secret g")
    good.set_tags("g", ["t"], [])
    path = node.store.path
    node.close()
    env = pk_env(path, PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    wrote = run_pk("secrets", "write", "work:b", env=env, input=b"value")
    assert wrote.returncode == 0, wrote.stderr
    listed = run_pk("tags", "list", env=env)
    err = listed.stderr.decode()
    assert listed.returncode == 0, err  # one vault's bad file does not hide the others' tags
    assert listed.stdout.startswith(b"t\t1 secrets")
    assert err.startswith("pk: warning: the tag file of vault work is malformed")
    assert "Traceback" not in err and "damaged" not in err
    found = run_pk("secrets", "ls", "--tag", "t", "--format", "json", env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["unreadable_tags"] == ["work"]
    read = run_pk("secrets", "stat", "work:a", env=env)
    assert read.returncode == 0, read.stderr
    tagged = run_pk("tags", "add", "work:a", "t", env=env)
    assert tagged.returncode == 0, tagged.stderr
    assert b"work" in run_pk("secrets", "ls", "--tag", "t", env=env).stdout
    assert run_pk("node", "check", env=env).returncode == 0
