"""Hostile objects from a peer are refused before anything lands (sync.checks.validate)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree

from polykey.crypto import sshsig
from polykey.crypto.signing import SigningKey
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.sync.checks import UpdateRefused, local_tree_stats, validate
from polykey.vaults.vault import Vault

OWNER = SigningKey(bytes(range(32)))
STRANGER = SigningKey(bytes(range(1, 33)))


def raw(obj: ShaFile) -> bytes:
    return bytes([obj.type_num]) + obj.as_raw_string()


def commit(
    tree: Tree, key: SigningKey | None = OWNER, parents: list[bytes] | None = None
) -> Commit:
    c = Commit()
    c.tree = tree.id
    c.parents = [ObjectID(p) for p in parents or []]
    c.author = c.committer = b"node <node>"
    c.author_time = c.commit_time = 1_700_000_000
    c.author_timezone = c.commit_timezone = 0
    c.message = b"Add secret.\n"
    if key is not None:
        c.gpgsig = sshsig.sign(key, c.raw_without_sig(), "git").encode()
    return c


def tree_with(name: bytes, mode: int = 0o100644, data: bytes = b"secret") -> tuple[Tree, Blob]:
    blob = Blob.from_string(data)
    tree = Tree()
    tree.add(name, mode, blob.id)
    return tree, blob


def check(
    objects: list[ShaFile], head: Commit, known: Callable[[bytes], bool] | None = None
) -> None:
    validate([raw(o) for o in objects], head.id, known or (lambda _s: False), {OWNER.public})


def test_a_well_formed_signed_history_is_accepted() -> None:
    tree, blob = tree_with(b"password")
    c = commit(tree)
    check([blob, tree, c], c)


@pytest.mark.parametrize(
    "name", [b"..", b".", b".git", b".GIT", b"a\x00b", b"a\x01b", b".polykeyx", b"\xff\xfe"]
)
def test_forbidden_names_in_a_tree_are_refused(name: bytes) -> None:
    blob = Blob.from_string(b"x")
    tree = Tree()
    tree.add(name, 0o100644, blob.id)
    c = commit(tree)
    with pytest.raises(UpdateRefused):
        check([blob, tree, c], c)


@pytest.mark.parametrize("mode", [0o120000, 0o160000, 0o100755])
def test_links_submodules_and_executables_are_refused(mode: int) -> None:
    tree, blob = tree_with(b"link", mode)
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="link, submodule"):
        check([blob, tree, c], c)


def test_names_differing_only_by_case_are_refused() -> None:
    blob = Blob.from_string(b"x")
    tree = Tree()
    tree.add(b"Key", 0o100644, blob.id)
    tree.add(b"key", 0o100644, blob.id)
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="case"):
        check([blob, tree, c], c)


def test_an_unsigned_commit_is_refused() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree, key=None)
    with pytest.raises(UpdateRefused, match="not signed"):
        check([blob, tree, c], c)


def test_a_commit_signed_by_another_node_is_refused() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree, key=STRANGER)
    with pytest.raises(UpdateRefused, match="allowed to write"):
        check([blob, tree, c], c)


def test_a_signature_over_other_content_is_refused() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree)
    c.message = b"Changed after signing.\n"
    with pytest.raises(UpdateRefused):
        check([blob, tree, c], c)


def test_a_tree_naming_a_missing_object_is_refused() -> None:
    tree, _ = tree_with(b"a")
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="missing"):
        check([tree, c], c)


def test_a_deep_tree_is_refused() -> None:
    blob = Blob.from_string(b"x")
    objects: list[ShaFile] = [blob]
    inner = Tree()
    inner.add(b"leaf", 0o100644, blob.id)
    objects.append(inner)
    for _ in range(70):
        outer = Tree()
        outer.add(b"d", 0o040000, inner.id)
        objects.append(outer)
        inner = outer
    c = commit(inner)
    with pytest.raises(UpdateRefused, match="deep"):
        check([*objects, c], c)


def test_tag_objects_and_unknown_types_are_refused() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="type"):
        validate([raw(blob), raw(tree), raw(c), b"\x04tag"], c.id, lambda _s: False, {OWNER.public})


def test_a_head_that_is_not_a_commit_is_refused() -> None:
    tree, blob = tree_with(b"a")
    with pytest.raises(UpdateRefused):
        validate([raw(blob), raw(tree)], tree.id, lambda _s: False, {OWNER.public})


def test_object_ids_are_computed_locally_so_a_wrong_name_cannot_enter() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree)
    accepted = validate([raw(blob), raw(tree), raw(c)], c.id, lambda _s: False, {OWNER.public})
    assert set(accepted) == {blob.id, tree.id, c.id}
    assert accepted[blob.id][1:] == b"secret"


# --- object types, and trees the vault already holds ---------------------------------------


def test_a_folder_entry_naming_a_blob_or_a_file_entry_naming_a_tree_is_refused() -> None:
    blob = Blob.from_string(b"x")
    inner, inner_blob = tree_with(b"k")
    for name, mode, target in ((b"dir", 0o040000, blob), (b"file", 0o100644, inner)):
        tree = Tree()
        tree.add(name, mode, target.id)
        c = commit(tree)
        with pytest.raises(UpdateRefused, match="object is a"):
            check([blob, inner, inner_blob, tree, c], c)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Node, Vault]]:
    """A real node whose vault holds `big/` (1,000 secrets) and `deep/` (60 folders deep)."""
    node, _ = Node.bootstrap(tmp_path / "n.pk", b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        vault = node.vaults.create("v")
        items = [(f"big/{i:04d}", b"v") for i in range(1000)]
        items.append(("/".join(["deep"] + [f"d{i}" for i in range(60)]) + "/leaf", b"v"))
        vault.write_many(items, "Fill.")
        yield node, vault


def _held_tree(vault: Vault, name: bytes) -> ObjectID:
    objects = vault.objects()
    head = vault.head()
    assert head is not None
    root = objects.get_tree(objects.get_commit(head).tree)
    return ObjectID(next(i.sha for i in root.iteritems() if i.path == name))


def _check_held(node: Node, vault: Vault, objects: list[ShaFile], head: bytes | ShaFile) -> None:
    """Validate as a push into ``vault`` would: objects it holds may be named, not sent."""
    local = vault.objects()

    def known(sha: bytes) -> bool:
        return node.store.contains(local.ns, bytes.fromhex(sha.decode()))

    head_id = head if isinstance(head, bytes) else head.id
    stats = local_tree_stats(local)
    validate([raw(o) for o in objects], head_id, known, {OWNER.public}, stats, local=local)


def test_new_trees_naming_a_large_held_tree_many_times_are_refused(
    held: tuple[Node, Vault],
) -> None:
    node, vault = held
    big = _held_tree(vault, b"big")  # 1,000 paths
    bomb = Tree()
    for i in range(1000):  # 1,000 x 1,000 paths, in a tree of a few KiB
        bomb.add(f"copy{i:04d}".encode(), 0o040000, big)
    c = commit(bomb)
    with pytest.raises(UpdateRefused, match="more than 1,000,000 paths"):
        _check_held(node, vault, [bomb, c], c)
    fine = Tree()
    for i in range(900):
        fine.add(f"copy{i:04d}".encode(), 0o040000, big)
    c = commit(fine)
    _check_held(node, vault, [fine, c], c)  # 901,800 paths: allowed


def test_new_folders_above_a_deep_held_tree_count_its_depth(held: tuple[Node, Vault]) -> None:
    node, vault = held
    tree = Tree()
    tree.add(b"deep", 0o040000, _held_tree(vault, b"deep"))  # 61 folders below `deep`
    chain: list[ShaFile] = []
    for level in range(5):
        chain.append(tree)
        parent = Tree()
        parent.add(f"up{level}".encode(), 0o040000, tree.id)
        tree = parent
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="nested too deep"):
        _check_held(node, vault, [*chain, tree, c], c)


def test_a_new_folder_naming_a_held_blob_is_refused(held: tuple[Node, Vault]) -> None:
    node, vault = held
    blob = Blob.from_string(b"v")  # held: every secret of `big/` is this blob
    tree = Tree()
    tree.add(b"dir", 0o040000, blob.id)
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="that object is a blob"):
        _check_held(node, vault, [tree, c], c)


def test_a_commit_naming_a_blob_as_its_tree_or_a_tree_as_its_parent_is_refused() -> None:
    tree, blob = tree_with(b"k")
    as_tree = commit(blob)  # type: ignore[arg-type]  # dulwich takes any object's id
    with pytest.raises(UpdateRefused, match="that object is a blob"):
        check([blob, as_tree], as_tree)
    as_parent = commit(tree, parents=[tree.id])
    with pytest.raises(UpdateRefused, match="that object is a tree"):
        check([blob, tree, as_parent], as_parent)


def test_parents_held_by_the_vault_are_enough(held: tuple[Node, Vault]) -> None:
    node, vault = held
    head = vault.head()
    assert head is not None
    tree, blob = tree_with(b"a", data=b"new")
    second = commit(tree, parents=[head])
    _check_held(node, vault, [blob, tree, second], second)


def test_a_held_object_cannot_be_named_when_the_vault_cannot_be_asked_its_type() -> None:
    tree, _ = tree_with(b"a")
    first = commit(tree)
    tree2, blob2 = tree_with(b"a", data=b"new")
    second = commit(tree2, parents=[first.id])
    with pytest.raises(UpdateRefused, match="cannot be checked"):
        check([blob2, tree2, second], second, known=lambda sha: sha == first.id)


# --- every named object is of the type its place says, whether it was sent or is held -------


def _named(vault: Vault, kind: str, held: bool) -> tuple[ObjectID, list[ShaFile]]:
    """An object of ``kind``: one the vault holds (nothing to send), or a new one (and what to
    send for it)."""
    if held:
        head = vault.head()
        assert head is not None
        ids = {"blob": Blob.from_string(b"v").id, "tree": _held_tree(vault, b"big"), "commit": head}
        return ObjectID(ids[kind]), []
    if kind == "blob":
        blob = Blob.from_string(b"a new blob")
        return blob.id, [blob]
    tree, blob = tree_with(b"k", data=b"a new tree")
    if kind == "tree":
        return tree.id, [tree, blob]
    c = commit(tree)
    return c.id, [c, tree, blob]


def _commit_on(tree_id: bytes, parents: list[bytes]) -> Commit:
    c = commit(Tree())
    c.tree = ObjectID(tree_id)
    c.parents = [ObjectID(p) for p in parents]
    c.gpgsig = sshsig.sign(OWNER, c.raw_without_sig(), "git").encode()
    return c


def _entry(name: bytes, mode: int, target: bytes) -> Tree:
    tree = Tree()
    tree.add(name, mode, ObjectID(target))
    return tree


WRONG_TYPES = [  # (what names it, the kind of object named) -> what is sent and the new head
    ("commit-tree", "blob"),
    ("commit-tree", "commit"),
    ("parent", "tree"),
    ("parent", "blob"),
    ("file-entry", "tree"),
    ("file-entry", "commit"),
    ("folder-entry", "blob"),
    ("folder-entry", "commit"),
]


@pytest.mark.parametrize("where", ["received", "held"])
@pytest.mark.parametrize(("place", "kind"), WRONG_TYPES, ids=["-".join(c) for c in WRONG_TYPES])
def test_an_object_named_in_a_place_for_another_type_is_refused(
    held: tuple[Node, Vault], place: str, kind: str, where: str
) -> None:
    node, vault = held
    target, sent = _named(vault, kind, where == "held")
    head = vault.head()
    assert head is not None
    if place == "commit-tree":
        c = _commit_on(target, [head])
        objects = [*sent, c]
    elif place == "parent":
        tree, blob = tree_with(b"x", data=b"on a wrong parent")
        c = _commit_on(tree.id, [head, target])
        objects = [*sent, tree, blob, c]
    else:
        tree = _entry(b"entry", 0o100644 if place == "file-entry" else 0o040000, target)
        c = _commit_on(tree.id, [head])
        objects = [*sent, tree, c]
    with pytest.raises(UpdateRefused, match=f"that object is a {kind}"):
        _check_held(node, vault, objects, c)


@pytest.mark.parametrize("where", ["received", "held"])
@pytest.mark.parametrize("kind", ["blob", "tree"])
def test_a_new_head_that_is_not_a_commit_is_refused_sent_or_held(
    held: tuple[Node, Vault], kind: str, where: str
) -> None:
    node, vault = held
    target, sent = _named(vault, kind, where == "held")
    with pytest.raises(UpdateRefused, match="not a commit"):
        _check_held(node, vault, sent, target)


def test_objects_the_new_head_does_not_reach_are_not_kept(held: tuple[Node, Vault]) -> None:
    node, vault = held
    head = vault.head()
    assert head is not None
    tree, blob = tree_with(b"x", data=b"reached")
    c = _commit_on(tree.id, [head])
    stray_tree, stray_blob = tree_with(b"y", data=b"not reached")
    local = vault.objects()
    kept = validate(
        [raw(o) for o in (stray_blob, stray_tree, blob, tree, c)],
        c.id,
        lambda sha: node.store.contains(local.ns, bytes.fromhex(sha.decode())),
        {OWNER.public},
        local=local,
    )
    assert set(kept) == {c.id, tree.id, blob.id}


# --- reserved files: `.polykey-tags` (root only, a small JSON file) and `.polykey-dir` -------

GOOD_TAGS = b'{\n "big/0001": [\n  "a",\n  "b:c"\n ]\n}\n'
BAD_TAGS = [
    pytest.param(b"not json", "not JSON", id="not-json"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "not an object", id="nested-100000"),
    pytest.param(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not an object", id="deep"),
    pytest.param(b'{"a": ["t"]' + b" " * (9 << 20) + b"}", "larger than", id="too-large"),
    pytest.param(b"[]", "not an object", id="a-list"),
    pytest.param(b'{"a": "t"}', "not an object", id="tags-not-a-list"),
    pytest.param(b'{"a": [1]}', "not an object", id="tag-not-text"),
    pytest.param(b'{"a": [["t"]]}', "not an object", id="tag-a-list"),
    pytest.param(b'{"a": ["no spaces"]}', "tag", id="invalid-tag"),
    pytest.param(b'{"../a": ["t"]}', "path", id="invalid-path"),
    pytest.param(b'{"a/.git/x": ["t"]}', "path", id="dot-git-path"),
    pytest.param(b'{"\xff": ["t"]}', "not JSON", id="not-utf8"),
]


def _with_root_entries(
    vault: Vault, entries: list[tuple[bytes, int, bytes]], sent: list[ShaFile]
) -> tuple[list[ShaFile], Commit]:
    head = vault.head()
    assert head is not None
    root = Tree()
    for name, mode, sha in entries:
        root.add(name, mode, ObjectID(sha))
    c = _commit_on(root.id, [head])
    return [*sent, root, c], c


def _held_blob(vault: Vault, data: bytes) -> ObjectID:
    """A blob the vault holds as the content of an ordinary secret."""
    vault.write("planted", data)
    entry = vault.lookup(("planted",))
    assert entry is not None
    return ObjectID(entry[1])


@pytest.mark.parametrize("where", ["received", "held"])
@pytest.mark.parametrize(("content", "reason"), BAD_TAGS)
def test_a_bad_tag_file_is_refused_sent_or_held(
    held: tuple[Node, Vault], content: bytes, reason: str, where: str
) -> None:
    node, vault = held
    sent: list[ShaFile] = []
    if where == "held":
        sha = _held_blob(vault, content)
    else:
        blob = Blob.from_string(content)
        sha, sent = blob.id, [blob]
    objects, c = _with_root_entries(vault, [(b".polykey-tags", 0o100644, sha)], sent)
    with pytest.raises(UpdateRefused, match=rf"\.polykey-tags.*{reason}"):
        _check_held(node, vault, objects, c)


@pytest.mark.parametrize("where", ["received", "held"])
def test_a_valid_tag_file_is_accepted_sent_or_held(held: tuple[Node, Vault], where: str) -> None:
    node, vault = held
    sent: list[ShaFile] = []
    if where == "held":
        sha = _held_blob(vault, GOOD_TAGS)
    else:
        blob = Blob.from_string(GOOD_TAGS)
        sha, sent = blob.id, [blob]
    objects, c = _with_root_entries(vault, [(b".polykey-tags", 0o100644, sha)], sent)
    _check_held(node, vault, objects, c)


def test_a_tag_file_that_is_a_folder_is_refused(held: tuple[Node, Vault]) -> None:
    node, vault = held
    inner, inner_blob = tree_with(b"a", data=GOOD_TAGS)
    objects, c = _with_root_entries(
        vault, [(b".polykey-tags", 0o040000, inner.id)], [inner, inner_blob]
    )
    with pytest.raises(UpdateRefused, match=r"\.polykey-tags.*is a folder"):
        _check_held(node, vault, objects, c)


@pytest.mark.parametrize("where", ["received", "held"])
def test_a_tag_file_below_the_root_is_refused(held: tuple[Node, Vault], where: str) -> None:
    node, vault = held
    tags = Blob.from_string(GOOD_TAGS)
    folder = _entry(b".polykey-tags", 0o100644, tags.id)
    sent: list[ShaFile] = [tags, folder]
    if where == "held":  # a root the vault holds, with a tag file, named as a folder
        vault.set_tags("big/0001", ["t"], [])
        head = vault.head()
        assert head is not None
        folder_id, sent = vault.objects().get_commit(head).tree, []
    else:
        folder_id = folder.id
    objects, c = _with_root_entries(vault, [(b"sub", 0o040000, folder_id)], sent)
    with pytest.raises(UpdateRefused, match=r"\.polykey-tags.*only at the root"):
        _check_held(node, vault, objects, c)


@pytest.mark.parametrize(
    ("mode", "content"),
    [(0o100644, b"not empty"), (0o040000, None)],
    ids=["not-empty", "a-folder"],
)
def test_a_folder_marker_must_be_an_empty_file(
    held: tuple[Node, Vault], mode: int, content: bytes | None
) -> None:
    node, vault = held
    if content is None:
        target, blob = tree_with(b"a")
        sent: list[ShaFile] = [target, blob]
    else:
        target = Blob.from_string(content)  # type: ignore[assignment]
        sent = [target]
    folder = _entry(b".polykey-dir", mode, target.id)
    objects, c = _with_root_entries(vault, [(b"d", 0o040000, folder.id)], [*sent, folder])
    with pytest.raises(UpdateRefused, match=r"\.polykey-dir"):
        _check_held(node, vault, objects, c)
    empty = Blob.from_string(b"")
    fine = _entry(b".polykey-dir", 0o100644, empty.id)
    objects, c = _with_root_entries(vault, [(b"d", 0o040000, fine.id)], [empty, fine])
    _check_held(node, vault, objects, c)
