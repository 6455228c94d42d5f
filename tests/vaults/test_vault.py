"""One vault through the library: a signed commit per change, exact bytes, history, tags."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from dulwich.objects import Commit

from polykey.ids import encode_node_id
from polykey.node import Node
from polykey.vaults.errors import (
    IsADirectory,
    NotADirectory,
    RevisionNotFound,
    SecretExists,
    SecretNotFound,
)
from polykey.vaults.objects import CHUNK_BYTES
from polykey.vaults.vault import Vault, transfer
from tests.conftest import NodeFixture
from tests.support import PASSWORD, pk_env

# --- helpers ------------------------------------------------------------------------------------


def commit_of(vault: Vault, commit_id: bytes) -> Commit:
    return vault.objects().get_commit(commit_id)


def assert_sentence(message: str) -> None:
    assert message, "a commit message"
    assert "\n" not in message, message
    assert message[0].isupper(), message
    assert message.endswith("."), message


def assert_one_new_commit(node: Node, vault: Vault, before: bytes, returned: bytes | None) -> str:
    """HEAD moved by exactly one signed commit by this node, whose parent is ``before``."""
    head = vault.head()
    assert head is not None and head != before
    if returned is not None:
        assert returned == head
    commit = commit_of(vault, head)
    assert commit.parents == [before]
    ident = encode_node_id(node.node_id).encode()
    assert commit.author == ident + b" <" + ident + b">"
    assert commit.committer == commit.author
    assert commit.gpgsig is not None and commit.gpgsig.startswith(b"-----BEGIN SSH SIGNATURE")
    message: str = commit.message.decode()
    assert message.endswith("\n") and message.count("\n") == 1
    assert_sentence(message.strip())
    return message.strip()


@pytest.fixture
def vault(fresh_node: NodeFixture) -> Vault:
    v = fresh_node.node.vaults.create("work")
    v.write("db/password", b"hunter2")
    v.write("db/user", b"admin")
    v.write("api", b"token-1")
    v.set_tags("api", ["prod"], [])
    return v


# --- one commit per change ----------------------------------------------------------------------

Op = Callable[[Vault], bytes | None]

OPERATIONS: dict[str, tuple[Op, str | None]] = {
    "write new": (lambda v: v.write("new/secret", b"x"), "Add secret new/secret."),
    "write update": (lambda v: v.write("api", b"token-2"), "Update secret api."),
    "write many": (
        lambda v: v.write_many([("imp/a", b"1"), ("imp/b/c", b"2")], "Import 2 secrets into imp."),
        "Import 2 secrets into imp.",
    ),
    "remove one": (lambda v: v.remove(["api"]), "Remove secret api."),
    "remove several": (
        lambda v: v.remove(["api", "db/user"]),
        "Remove secrets api, db/user.",
    ),
    "remove recursive": (lambda v: v.remove(["db"], recursive=True), "Remove secret db."),
    "mkdir": (lambda v: v.mkdir("empty"), "Make directory empty."),
    "mkdir parents": (lambda v: v.mkdir("x/y/z", parents=True), "Make directory x/y/z."),
    "move": (lambda v: v.move_within("api", "keys/api"), "Move api to keys/api."),
    "move dir": (lambda v: v.move_within("db", "database"), "Move db to database."),
    "copy": (lambda v: v.move_within("api", "api2", copy=True), "Copy api to api2."),
    "move force": (
        lambda v: v.move_within("api", "db/user", force=True),
        "Move api to db/user.",
    ),
    "tag": (lambda v: v.set_tags("db/user", ["t1", "t2"], []), "Tag db/user with t1, t2."),
    "untag": (lambda v: v.set_tags("api", [], ["prod"]), "Remove tag prod from api."),
    "tag and untag": (
        lambda v: v.set_tags("api", ["new"], ["prod"]),
        "Tag api with new; remove tag prod from api.",
    ),
    "revert": (lambda v: v.revert("HEAD~2"), None),  # message checked below
}


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_each_change_is_exactly_one_signed_commit_by_the_node_with_a_sentence_message(
    fresh_node: NodeFixture, vault: Vault, name: str
) -> None:
    op, expected = OPERATIONS[name]
    before = vault.head()
    assert before is not None
    count = len(vault.log())
    returned = op(vault)
    message = assert_one_new_commit(fresh_node.node, vault, before, returned)
    assert len(vault.log()) == count + 1
    if expected is not None:
        assert message == expected
    else:
        assert message.startswith("Revert to ")


def test_creating_a_vault_is_one_root_commit_with_an_empty_tree(fresh_node: NodeFixture) -> None:
    vault = fresh_node.node.vaults.create("fresh")
    log = vault.log()
    assert [c.message for c in log] == ["Create vault fresh."]
    assert log[0].parents == ()
    assert log[0].signed
    assert vault.ls("", recursive=True) == []


def test_moving_across_vaults_is_one_commit_in_each_vault(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    src = node.vaults.create("src")
    dst = node.vaults.create("dst")
    src.write("k", b"v")
    sbefore, dbefore = src.head(), dst.head()
    assert sbefore is not None and dbefore is not None
    transfer(src, "k", dst, "moved/k")
    assert assert_one_new_commit(node, dst, dbefore, None) == "Move src:k to moved/k."
    assert assert_one_new_commit(node, src, sbefore, None) == "Move k to vault dst."
    assert dst.read("moved/k") == b"v"
    assert src.kind("k") is None


def test_copying_across_vaults_is_one_commit_in_the_destination_only(
    fresh_node: NodeFixture,
) -> None:
    node = fresh_node.node
    src = node.vaults.create("src")
    dst = node.vaults.create("dst")
    src.write("dir/k", b"v")
    sbefore, dbefore = src.head(), dst.head()
    assert dbefore is not None
    transfer(src, "dir", dst, "", copy=True)
    assert assert_one_new_commit(node, dst, dbefore, None) == "Copy src:dir to the vault root."
    assert src.head() == sbefore
    assert dst.read("dir/k") == src.read("dir/k") == b"v"


def test_a_refused_change_makes_no_commit(vault: Vault) -> None:
    head = vault.head()
    with pytest.raises(IsADirectory):
        vault.write("db", b"x")
    with pytest.raises(NotADirectory):
        vault.write("api/below", b"x")
    with pytest.raises(SecretExists):
        vault.move_within("api", "db/user")
    with pytest.raises(SecretNotFound):
        vault.remove(["missing"])
    with pytest.raises(IsADirectory):
        vault.remove(["db"])
    assert vault.head() == head


# --- secrets are bytes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)),
        bytes(range(256))[::-1] * 7,
        b"\x00",
        b"\x00" * 4096,
        b"",
        b"line\r\nwith crlf\r\n",
        b"no newline at end",
        b"\xff\xfe invalid utf-8 \xc3\x28",
        b"\n",
    ],
    ids=["all-bytes", "all-bytes-rev", "nul", "nuls", "empty", "crlf", "no-eol", "bad-utf8", "lf"],
)
def test_binary_secrets_round_trip_byte_for_byte(vault: Vault, data: bytes) -> None:
    vault.write("bin/secret", data)
    assert vault.read("bin/secret") == data
    assert b"".join(vault.read_parts("bin/secret")) == data
    assert vault.stat("bin/secret").size == len(data)


@pytest.mark.parametrize(
    "size",
    [CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 2 * CHUNK_BYTES, 3 * CHUNK_BYTES + 17],
)
def test_secrets_around_the_part_size_round_trip(
    fresh_node: NodeFixture, vault: Vault, size: int
) -> None:
    data = os.urandom(size)
    vault.write("large", data)
    assert vault.read("large") == data
    assert vault.stat("large").size == size
    assert fresh_node.node.check() == []


def test_an_older_value_reads_back_at_its_revision(vault: Vault) -> None:
    first = bytes(range(256))
    vault.write("k", first)
    vault.write("k", b"\x00second")
    assert vault.read("k", "HEAD~1") == first
    assert vault.read("k") == b"\x00second"


def _rss_child(args: list[str], env: dict[str, str], stdin: Path | None, stdout: Path) -> int:
    """Run a pk process, returning its peak RSS in KiB (fails the test on a non-zero exit)."""
    with contextlib.ExitStack() as files:
        out = files.enter_context(stdout.open("wb"))
        inp = files.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        proc = subprocess.Popen(
            [sys.executable, "-m", "polykey", *args],
            env=env,
            stdin=inp,
            stdout=out,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stderr.close()
    assert proc.returncode == 0, err
    return usage.ru_maxrss


BIG = 100 * 1000 * 1000
RSS_LIMIT_KIB = 5 * BIG // 1024


def test_a_100_mb_secret_is_written_and_read_by_a_process_with_peak_rss_under_5x(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    fresh_node.node.vaults.create("big")
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with source.open("wb") as f:
        for _ in range(BIG // CHUNK_BYTES + 1):
            part = os.urandom(min(CHUNK_BYTES, BIG - f.tell()))
            digest.update(part)
            f.write(part)
    assert source.stat().st_size == BIG
    env = pk_env(fresh_node.path, PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    write_rss = _rss_child(["secrets", "write", "big:blob"], env, source, tmp_path / "w.out")
    source.unlink()
    out = tmp_path / "read.bin"
    read_rss = _rss_child(["secrets", "cat", "big:blob"], env, None, out)
    assert out.stat().st_size == BIG
    check = hashlib.sha256()
    with out.open("rb") as f:
        while part := f.read(CHUNK_BYTES):
            check.update(part)
    assert check.digest() == digest.digest()
    print(f"peak RSS: write {write_rss} KiB, read {read_rss} KiB (limit {RSS_LIMIT_KIB} KiB)")
    assert write_rss < RSS_LIMIT_KIB, f"write peak RSS {write_rss} KiB"
    assert read_rss < RSS_LIMIT_KIB, f"read peak RSS {read_rss} KiB"


# --- reading and listing ------------------------------------------------------------------------


def test_ls_lists_one_directory_or_everything_and_hides_reserved_files(vault: Vault) -> None:
    vault.mkdir("empty")
    top = [(e.path, e.kind) for e in vault.ls()]
    assert top == [("api", "secret"), ("db", "dir"), ("empty", "dir")]
    everything = [(e.path, e.kind) for e in vault.ls("", recursive=True)]
    assert everything == [
        ("api", "secret"),
        ("db", "dir"),
        ("db/password", "secret"),
        ("db/user", "secret"),
        ("empty", "dir"),
    ]
    assert [e.path for e in vault.ls("db")] == ["db/password", "db/user"]
    assert [e.path for e in vault.ls("empty")] == []
    assert [(e.path, e.kind) for e in vault.ls("api")] == [("api", "secret")]
    with pytest.raises(SecretNotFound):
        vault.ls("nothing")


def test_kind_tells_secret_directory_or_nothing(vault: Vault) -> None:
    assert vault.kind("api") == "secret"
    assert vault.kind("db") == "dir"
    assert vault.kind("") == "dir"
    assert vault.kind("none") is None
    assert vault.kind("api/below") is None


def test_reading_a_directory_or_a_missing_secret_fails_naming_it(vault: Vault) -> None:
    with pytest.raises(IsADirectory, match="work:db"):
        vault.read("db")
    with pytest.raises(SecretNotFound, match="work:db/missing"):
        vault.read("db/missing")
    with pytest.raises(SecretNotFound, match="work:api/below"):
        vault.read("api/below")


def test_mkdir_needs_parents_unless_asked_and_refuses_an_existing_directory(
    vault: Vault,
) -> None:
    with pytest.raises(SecretNotFound):
        vault.mkdir("a/b")
    vault.mkdir("a/b", parents=True)
    assert vault.kind("a/b") == "dir"
    with pytest.raises(SecretExists):
        vault.mkdir("a/b")
    with pytest.raises(NotADirectory):
        vault.mkdir("api")


def test_an_emptied_directory_made_by_mkdir_stays_and_one_made_by_a_write_goes(
    vault: Vault,
) -> None:
    vault.mkdir("kept")
    vault.write("kept/x", b"1")
    vault.remove(["kept/x"])
    assert vault.kind("kept") == "dir"
    vault.remove(["db/password", "db/user"])
    assert vault.kind("db") is None


def test_stat_gives_size_times_last_commit_and_tags(vault: Vault) -> None:
    first = vault.log(1)[0]
    vault.write("api", b"longer token value")
    last = vault.log(1)[0]
    st = vault.stat("api")
    assert st.path == "api"
    assert st.size == len(b"longer token value")
    assert st.last_commit == last.id
    assert st.modified == last.time
    assert st.created <= first.time
    assert st.tags == ["prod"]
    with pytest.raises(IsADirectory):
        vault.stat("db")
    with pytest.raises(SecretNotFound):
        vault.stat("nope")


def test_move_into_an_existing_directory_lands_inside_it(vault: Vault) -> None:
    vault.move_within("api", "db")
    assert vault.read("db/api") == b"token-1"
    assert vault.kind("api") is None


def test_move_refuses_a_directory_into_itself(vault: Vault) -> None:
    head = vault.head()
    with pytest.raises(NotADirectory):
        vault.move_within("db", "db/inner")
    assert vault.head() == head


def test_move_and_copy_onto_an_existing_secret_need_force(vault: Vault) -> None:
    with pytest.raises(SecretExists):
        vault.move_within("api", "db/user")
    with pytest.raises(SecretExists):
        vault.move_within("api", "db/user", copy=True)
    vault.move_within("api", "db/user", copy=True, force=True)
    assert vault.read("db/user") == vault.read("api") == b"token-1"
    vault.move_within("db/password", "db/user", force=True)
    assert vault.read("db/user") == b"hunter2"
    assert vault.kind("db/password") is None


def test_moving_a_missing_secret_is_secret_not_found(vault: Vault) -> None:
    with pytest.raises(SecretNotFound, match="work:ghost"):
        vault.move_within("ghost", "x")


# --- history ------------------------------------------------------------------------------------


@pytest.fixture
def history(fresh_node: NodeFixture) -> tuple[Vault, list[bytes]]:
    """A vault with five commits after creation: add a, add b, modify a, delete b, add c/d."""
    v = fresh_node.node.vaults.create("h")
    ids = [v.head() or b""]
    ids.append(v.write("a", b"a1"))
    ids.append(v.write("b", b"b1"))
    ids.append(v.write("a", b"a2"))
    ids.append(v.remove(["b"]))
    ids.append(v.write("c/d", b"d1"))
    return v, ids


def test_log_lists_commits_newest_first_each_the_parent_of_the_one_before(
    history: tuple[Vault, list[bytes]],
) -> None:
    vault, ids = history
    log = vault.log()
    assert [c.id.encode() for c in log] == ids[::-1]
    assert [c.message for c in log] == [
        "Add secret c/d.",
        "Remove secret b.",
        "Update secret a.",
        "Add secret b.",
        "Add secret a.",
        "Create vault h.",
    ]
    for newer, older in itertools.pairwise(log):
        assert newer.parents == (older.id,)
        assert newer.time >= older.time
    assert all(c.signed for c in log)


@pytest.mark.parametrize("limit", [1, 2, 5, 6, 100])
def test_log_with_a_limit_gives_the_newest_n(
    history: tuple[Vault, list[bytes]], limit: int
) -> None:
    vault, ids = history
    assert [c.id.encode() for c in vault.log(limit)] == ids[::-1][:limit]


def test_log_of_a_path_lists_only_the_commits_that_change_it(
    history: tuple[Vault, list[bytes]],
) -> None:
    vault, ids = history
    assert [c.id.encode() for c in vault.log(path="a")] == [ids[3], ids[1]]
    assert [c.id.encode() for c in vault.log(path="b")] == [ids[4], ids[2]]
    assert [c.id.encode() for c in vault.log(path="c")] == [ids[5]]
    assert [c.id.encode() for c in vault.log(path="c/d")] == [ids[5]]
    assert vault.log(path="never") == []
    assert [c.id.encode() for c in vault.log(1, path="a")] == [ids[3]]


def test_diff_between_revisions_names_adds_modifies_and_deletes(
    history: tuple[Vault, list[bytes]],
) -> None:
    vault, ids = history
    changes = vault.diff(ids[2].decode(), ids[5].decode())
    assert [(c.kind, c.path) for c in changes] == [
        ("modify", "a"),
        ("delete", "b"),
        ("add", "c/d"),
    ]
    by_path = {c.path: c for c in changes}
    assert by_path["a"].old is not None and vault.read_blob(by_path["a"].old) == b"a1"
    assert by_path["a"].new is not None and vault.read_blob(by_path["a"].new) == b"a2"
    assert by_path["b"].new is None
    assert by_path["c/d"].old is None


def test_diff_against_head_by_default_and_nothing_between_equal_trees(
    history: tuple[Vault, list[bytes]],
) -> None:
    vault, _ = history
    assert [(c.kind, c.path) for c in vault.diff("HEAD~1")] == [("add", "c/d")]
    assert vault.diff("HEAD", "HEAD") == []
    reverse = vault.diff("HEAD", "HEAD~3")
    assert [(c.kind, c.path) for c in reverse] == [("modify", "a"), ("add", "b"), ("delete", "c/d")]


def test_diff_hides_the_tag_file_and_directory_markers(fresh_node: NodeFixture) -> None:
    vault = fresh_node.node.vaults.create("v")
    vault.write("s", b"1")
    vault.set_tags("s", ["t"], [])
    vault.mkdir("empty")
    assert vault.diff("HEAD~2") == []


def test_the_tree_at_a_revision_is_the_tree_of_that_time(
    history: tuple[Vault, list[bytes]],
) -> None:
    vault, ids = history
    at = {i: [e.path for e in vault.ls("", recursive=True, rev=ids[i].decode())] for i in range(6)}
    assert at[0] == []
    assert at[2] == ["a", "b"]
    assert at[4] == ["a"]
    assert at[5] == ["a", "c", "c/d"]
    assert vault.read("a", ids[1].decode()) == b"a1"
    assert vault.read("b", "HEAD~2") == b"b1"
    with pytest.raises(SecretNotFound):
        vault.read("b")


def test_revert_is_a_new_commit_restoring_content_without_rewriting_history(
    history: tuple[Vault, list[bytes]],
) -> None:
    vault, ids = history
    before = [c.id for c in vault.log()]
    new = vault.revert(ids[2].decode())
    after = [c.id for c in vault.log()]
    assert after == [new.decode(), *before]
    assert commit_of(vault, new).tree == commit_of(vault, ids[2]).tree
    assert commit_of(vault, new).parents == [ids[5]]
    assert vault.log(1)[0].message == f"Revert to {ids[2][:8].decode()}."
    assert vault.read("a") == b"a1"
    assert vault.read("b") == b"b1"
    assert vault.kind("c") is None
    assert vault.read("c/d", "HEAD~1") == b"d1"  # the past is still there


def test_revert_restores_the_tags_of_that_revision(fresh_node: NodeFixture) -> None:
    vault = fresh_node.node.vaults.create("v")
    vault.write("s", b"1")
    vault.set_tags("s", ["old"], [])
    vault.set_tags("s", ["new"], ["old"])
    vault.revert("HEAD~1")
    assert vault.tags() == {"s": ["old"]}


def test_head_tilde_n_counts_back_from_head(history: tuple[Vault, list[bytes]]) -> None:
    vault, ids = history
    for n in range(6):
        assert vault.resolve(f"HEAD~{n}") == ids[5 - n]
    assert vault.resolve("HEAD") == vault.resolve(None) == ids[5]


@pytest.mark.parametrize("length", [4, 7, 12, 40])
def test_abbreviated_commit_ids_resolve(history: tuple[Vault, list[bytes]], length: int) -> None:
    vault, ids = history
    for commit_id in ids:
        assert vault.resolve(commit_id[:length].decode()) == commit_id
    assert vault.resolve(f"{ids[3][:length].decode()}~2") == ids[1]


def test_revisions_that_do_not_exist_are_revision_not_found(
    fresh_node: NodeFixture, history: tuple[Vault, list[bytes]]
) -> None:
    vault, ids = history
    other = fresh_node.node.vaults.create("other")
    foreign = other.head()
    assert foreign is not None
    tree = commit_of(vault, ids[5]).tree.decode()
    missing = "0" * 40 if not any(i.startswith(b"0" * 40) for i in ids) else "f" * 40
    bad = ["HEAD~6", "HEAD~999999", "HEAD^", "head", "main", "abc", "", tree, foreign.decode()]
    for rev in [missing, *bad]:
        with pytest.raises(RevisionNotFound) as caught:
            vault.resolve(rev)
        assert caught.value.exit_code == 37
    with pytest.raises(RevisionNotFound):
        vault.read("a", "HEAD~6")
    with pytest.raises(RevisionNotFound):
        vault.diff("HEAD~10")
    with pytest.raises(RevisionNotFound):
        vault.revert(missing)
    assert vault.head() == ids[5]


# --- tags of secrets ----------------------------------------------------------------------------


def test_tagging_adds_and_removes_tags_each_in_one_commit(vault: Vault) -> None:
    count = len(vault.log())
    vault.set_tags("db/user", ["b", "a"], [])
    assert vault.tags()["db/user"] == ["a", "b"]
    vault.set_tags("db/user", [], ["a"])
    assert vault.tags()["db/user"] == ["b"]
    vault.set_tags("db/user", [], ["b"])
    assert "db/user" not in vault.tags()
    assert len(vault.log()) == count + 3


def test_tagging_a_missing_secret_or_with_an_invalid_tag_is_refused(vault: Vault) -> None:
    from polykey.vaults.errors import InvalidTag

    head = vault.head()
    with pytest.raises(SecretNotFound):
        vault.set_tags("ghost", ["t"], [])
    for bad in ["", "has space", "-lead", "x" * 65, "a/b"]:
        with pytest.raises(InvalidTag):
            vault.set_tags("api", [bad], [])
    assert vault.head() == head


def test_updating_a_secret_keeps_its_tags(vault: Vault) -> None:
    vault.write("api", b"rotated")
    assert vault.tags() == {"api": ["prod"]}


def test_moving_a_secret_within_a_vault_keeps_its_tags(vault: Vault) -> None:
    vault.move_within("api", "keys/api")
    assert vault.tags() == {"keys/api": ["prod"]}


def test_moving_a_directory_keeps_the_tags_of_everything_in_it(vault: Vault) -> None:
    vault.set_tags("db/password", ["pw"], [])
    vault.move_within("db", "store/database")
    assert vault.tags() == {"api": ["prod"], "store/database/password": ["pw"]}


def test_copying_a_secret_gives_the_copy_the_same_tags(vault: Vault) -> None:
    vault.move_within("api", "api-copy", copy=True)
    assert vault.tags() == {"api": ["prod"], "api-copy": ["prod"]}


def test_moving_a_secret_to_another_vault_takes_its_tags_along(
    fresh_node: NodeFixture, vault: Vault
) -> None:
    other = fresh_node.node.vaults.create("other")
    vault.set_tags("db/password", ["pw"], [])
    other.mkdir("nested")
    transfer(vault, "api", other, "api")
    transfer(vault, "db", other, "nested")  # an existing directory: lands inside it
    assert other.read("nested/db/password") == b"hunter2"
    assert other.tags() == {"api": ["prod"], "nested/db/password": ["pw"]}
    assert vault.tags() == {}


def test_copying_a_secret_to_another_vault_tags_both(fresh_node: NodeFixture, vault: Vault) -> None:
    other = fresh_node.node.vaults.create("other")
    transfer(vault, "api", other, "copied", copy=True)
    assert other.tags() == {"copied": ["prod"]}
    assert vault.tags() == {"api": ["prod"]}


def test_removing_a_secret_or_its_directory_drops_its_tags(vault: Vault) -> None:
    vault.set_tags("db/password", ["pw"], [])
    vault.remove(["api"])
    assert vault.tags() == {"db/password": ["pw"]}
    vault.remove(["db"], recursive=True)
    assert vault.tags() == {}
    vault.write("api", b"again")
    assert vault.stat("api").tags == []


@pytest.mark.parametrize("copy", [False, True], ids=["mv", "cp"])
def test_replacing_a_tagged_secret_with_force_leaves_only_the_moved_secrets_tags(
    vault: Vault, copy: bool
) -> None:
    vault.set_tags("db/user", ["user-tag"], [])
    vault.move_within("db/password", "db/user", force=True, copy=copy)
    assert vault.tags().get("db/user", []) == []


def test_replacing_a_tagged_secret_in_another_vault_leaves_only_the_moved_secrets_tags(
    fresh_node: NodeFixture, vault: Vault
) -> None:
    other = fresh_node.node.vaults.create("other")
    other.write("target", b"old")
    other.set_tags("target", ["old-tag"], [])
    transfer(vault, "db/user", other, "target", force=True)
    assert other.read("target") == b"admin"
    assert other.tags().get("target", []) == []
