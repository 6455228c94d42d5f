"""`pk vaults ...` as a user runs it: every command in human and --format json output."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from polykey.node import Node
from tests.cli.helpers import (
    CliNode,
    Result,
    assert_error,
    assert_json_error,
    assert_ok,
    json_stdout,
)
from tests.support import run_pk

COMMIT_LINE = re.compile(
    r"[0-9a-f]{12}  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  "
    r"(?P<author>v[0-9a-v]{10})  (?P<message>.+\.)"
)
VAULT_ID = re.compile(r"v[0-9a-v]{26}")


def pk(node: CliNode, *args: str, input: bytes | None = b"") -> Result:
    """Run `pk` on this node, never through an agent, with standard input not a terminal."""
    return run_pk(*args, env=node.env(PK_NO_AGENT="1"), input=input)


def human(result: Result) -> list[str]:
    assert_ok(result)
    return result.stdout.decode().splitlines()


def doc(result: Result) -> dict[str, Any]:
    assert_ok(result)
    return json_stdout(result)


@pytest.fixture
def node(cli_node: CliNode) -> CliNode:
    """Vault work (tag prod): db/password, db/user, api/token; vault home: wifi."""
    with Node.open(cli_node.path, cli_node.password.encode(), allow_weak=True) as n:
        work = n.vaults.create("work", ["prod"])
        work.write("db/password", b"hunter2\n")
        work.write("db/user", b"admin\n")
        work.write("api/token", b"tok-1\n")
        home = n.vaults.create("home")
        home.write("wifi", b"pass\n")
    return cli_node


def opened(node: CliNode) -> Node:
    """The node in this process, to check what a command did without another `pk` process."""
    return Node.open(node.path, node.password.encode(), allow_weak=True)


def vault_ids(node: CliNode) -> dict[str, str]:
    with opened(node) as n:
        return {i.name: i.id for i in n.vaults.all()}


def commit_ids(node: CliNode, vault: str) -> list[str]:
    with opened(node) as n:
        return [c.id for c in n.vaults.open(vault).log()]


def read(node: CliNode, vault: str, path: str) -> bytes:
    with opened(node) as n:
        return n.vaults.open(vault).read(path)


# --- create -------------------------------------------------------------------------------------


def test_vaults_create_prints_the_name_and_new_id(node: CliNode) -> None:
    lines = human(pk(node, "vaults", "create", "new"))
    match = re.fullmatch(r"Created vault new \((v[0-9a-v]{26})\)\.", lines[0])
    assert match is not None and len(lines) == 1, lines
    assert vault_ids(node)["new"] == match[1]


def test_vaults_create_json_gives_name_and_id_and_keeps_tags(node: CliNode) -> None:
    created = doc(
        pk(node, "vaults", "create", "tagged", "--tag", "b", "--tag", "a", "--format", "json")
    )
    assert set(created) == {"name", "id"} and created["name"] == "tagged"
    assert VAULT_ID.fullmatch(created["id"])
    listed = doc(pk(node, "vaults", "list", "--tag", "a", "--format", "json"))["vaults"]
    assert [(v["name"], v["tags"]) for v in listed] == [("tagged", ["a", "b"])]


def test_vaults_create_of_an_existing_name_is_exit_32(node: CliNode) -> None:
    before = vault_ids(node)
    assert "work" in assert_error(pk(node, "vaults", "create", "work"), 32)
    assert assert_json_error(pk(node, "vaults", "create", "work", "--format", "json"), 32)
    assert vault_ids(node) == before


@pytest.mark.parametrize("name", ["bad name", "../x", ".hidden", "a/b"])
def test_vaults_create_with_an_invalid_name_is_exit_3(node: CliNode, name: str) -> None:
    assert "vault name" in assert_error(pk(node, "vaults", "create", name), 3)
    assert list(vault_ids(node)) == ["home", "work"]


# --- list ---------------------------------------------------------------------------------------


def test_vaults_list_shows_each_vault_with_id_and_tags_sorted_by_name(node: CliNode) -> None:
    ids = vault_ids(node)
    assert human(pk(node, "vaults", "list")) == [
        f"home\t{ids['home']}",
        f"work\t{ids['work']}\tprod",
    ]


def test_vaults_list_json_gives_every_field(node: CliNode) -> None:
    vaults = doc(pk(node, "vaults", "list", "--format", "json"))["vaults"]
    assert [v["name"] for v in vaults] == ["home", "work"]
    for v in vaults:
        assert set(v) == {"name", "id", "created", "tags"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", v["created"])


def test_vaults_list_with_a_tag_shows_only_vaults_with_it(node: CliNode) -> None:
    assert [line.split("\t")[0] for line in human(pk(node, "vaults", "list", "--tag", "prod"))] == [
        "work"
    ]
    assert human(pk(node, "vaults", "list", "--tag", "none")) == []
    assert doc(pk(node, "vaults", "list", "--tag", "none", "--format", "json")) == {"vaults": []}


# --- rename -------------------------------------------------------------------------------------


def test_vaults_rename_keeps_the_id_and_the_secrets(node: CliNode) -> None:
    ids = vault_ids(node)
    assert human(pk(node, "vaults", "rename", "work", "job")) == ["Renamed vault work to job."]
    assert vault_ids(node) == {"home": ids["home"], "job": ids["work"]}
    assert read(node, "job", "db/user") == b"admin\n"
    renamed = doc(pk(node, "vaults", "rename", "job", "work", "--format", "json"))
    assert renamed == {"old": "job", "new": "work"}
    assert vault_ids(node) == ids


def test_vaults_rename_onto_an_existing_name_or_from_a_missing_one_fails(node: CliNode) -> None:
    ids = vault_ids(node)
    assert "home" in assert_error(pk(node, "vaults", "rename", "work", "home"), 32)
    assert (
        "nope"
        in assert_json_error(pk(node, "vaults", "rename", "nope", "x", "--format", "json"), 31)[
            "message"
        ]
    )
    assert vault_ids(node) == ids


# --- rm -----------------------------------------------------------------------------------------


def test_vaults_rm_with_yes_removes_the_vault_and_its_secrets(node: CliNode) -> None:
    assert human(pk(node, "vaults", "rm", "work", "--yes")) == ["Removed vault work."]
    assert list(vault_ids(node)) == ["home"]
    assert "work" in assert_error(pk(node, "secrets", "cat", "work:db/user"), 31)
    with opened(node) as n:
        assert n.check() == []


def test_vaults_rm_json_reports_the_removed_id(node: CliNode) -> None:
    ids = vault_ids(node)
    removed = doc(pk(node, "vaults", "rm", "home", "-y", "--format", "json"))
    assert removed == {"name": "home", "id": ids["home"], "removed": True}
    assert list(vault_ids(node)) == ["work"]


def test_vaults_rm_without_yes_and_no_terminal_is_exit_2_and_removes_nothing(
    node: CliNode,
) -> None:
    message = assert_error(pk(node, "vaults", "rm", "work", input=b"y\n"), 2)
    assert "confirmation" in message
    assert assert_json_error(pk(node, "vaults", "rm", "work", "--format", "json", input=b""), 2)
    assert "work" in vault_ids(node)


# --- log ----------------------------------------------------------------------------------------


def test_vaults_log_lists_commits_newest_first_one_line_each(node: CliNode) -> None:
    lines = human(pk(node, "vaults", "log", "work"))
    messages = []
    for line in lines:
        match = COMMIT_LINE.fullmatch(line)
        assert match is not None, line
        messages.append(match["message"])
    assert messages == [
        "Add secret api/token.",
        "Add secret db/user.",
        "Add secret db/password.",
        "Create vault work.",
    ]
    assert [line[:12] for line in lines] == [c[:12] for c in commit_ids(node, "work")]
    authors = {m["author"] for m in map(COMMIT_LINE.fullmatch, lines) if m is not None}
    assert authors == {node.node_id[:11]}


def test_vaults_log_json_gives_full_commits(node: CliNode) -> None:
    node_id = node.node_id
    commits = doc(pk(node, "vaults", "log", "work", "--format", "json"))["commits"]
    assert len(commits) == 4
    for newer, older in itertools.pairwise(commits):
        assert newer["parents"] == [older["id"]]
    for c in commits:
        assert set(c) == {"id", "author", "time", "message", "parents", "signed"}
        assert re.fullmatch(r"[0-9a-f]{40}", c["id"])
        assert c["author"] == f"{node_id} <{node_id}>"
        assert c["signed"] is True
        assert c["message"].endswith(".")


def test_vaults_log_n_limits_and_path_filters(node: CliNode) -> None:
    assert len(human(pk(node, "vaults", "log", "work", "-n", "2"))) == 2
    limited = doc(pk(node, "vaults", "log", "work", "-n", "1", "--format", "json"))["commits"]
    assert [c["message"] for c in limited] == ["Add secret api/token."]
    only = human(pk(node, "vaults", "log", "work", "--path", "db/user"))
    assert [line.split("  ")[-1] for line in only] == ["Add secret db/user."]
    under = doc(pk(node, "vaults", "log", "work", "--path", "db", "--format", "json"))["commits"]
    assert [c["message"] for c in under] == ["Add secret db/user.", "Add secret db/password."]
    assert_error(pk(node, "vaults", "log", "work", "-n", "0"), 2)


# --- diff and show ------------------------------------------------------------------------------


@pytest.fixture
def changed(node: CliNode) -> CliNode:
    """work after: modify db/password, delete db/user, add new/key (three more commits)."""
    with opened(node) as n:
        work = n.vaults.open("work")
        work.write("db/password", b"hunter3\n")
        work.remove(["db/user"])
        work.write("new/key", b"k\n")
    return node


def test_vaults_diff_marks_added_modified_and_deleted_secrets(changed: CliNode) -> None:
    assert human(pk(changed, "vaults", "diff", "work", "HEAD~3")) == [
        "M  db/password",
        "D  db/user",
        "A  new/key",
    ]
    assert human(pk(changed, "vaults", "diff", "work", "HEAD~3", "HEAD~2")) == ["M  db/password"]


def test_vaults_diff_json_lists_changes_and_patch_shows_content(changed: CliNode) -> None:
    plain = doc(pk(changed, "vaults", "diff", "work", "HEAD~2", "--format", "json"))
    assert plain == {
        "changes": [{"kind": "delete", "path": "db/user"}, {"kind": "add", "path": "new/key"}]
    }
    patched = doc(
        pk(changed, "vaults", "diff", "work", "HEAD~3", "HEAD~2", "-p", "--format", "json")
    )
    assert patched["changes"] == [{"kind": "modify", "path": "db/password"}]
    assert "-hunter2" in patched["patches"]["db/password"]
    assert "+hunter3" in patched["patches"]["db/password"]
    lines = human(pk(changed, "vaults", "diff", "work", "HEAD~3", "HEAD~2", "--patch"))
    assert lines[0] == "M  db/password" and "-hunter2" in lines and "+hunter3" in lines


def test_vaults_show_lists_the_tree_at_a_revision(changed: CliNode) -> None:
    assert human(pk(changed, "vaults", "show", "work", "HEAD~3")) == [
        "api/",
        "api/token",
        "db/",
        "db/password",
        "db/user",
    ]
    ids = commit_ids(changed, "work")
    shown = doc(pk(changed, "vaults", "show", "work", ids[0][:7], "--format", "json"))
    assert shown["commit"] == ids[0]
    assert {e["path"]: e["kind"] for e in shown["entries"]} == {
        "api": "dir",
        "api/token": "secret",
        "db": "dir",
        "db/password": "secret",
        "new": "dir",
        "new/key": "secret",
    }


def test_vaults_show_of_the_first_commit_is_empty(node: CliNode) -> None:
    assert human(pk(node, "vaults", "show", "work", "HEAD~3")) == []


# --- revert -------------------------------------------------------------------------------------


def test_vaults_revert_restores_content_in_a_new_commit_keeping_history(changed: CliNode) -> None:
    before = commit_ids(changed, "work")
    lines = human(pk(changed, "vaults", "revert", "work", "HEAD~3"))
    assert len(lines) == 1
    assert re.fullmatch(r"Reverted work to HEAD~3 in commit [0-9a-f]{12}\.", lines[0]), lines
    after = commit_ids(changed, "work")
    assert after[1:] == before
    assert lines[0].rstrip(".").endswith(after[0][:12])
    assert read(changed, "work", "db/password") == b"hunter2\n"
    assert read(changed, "work", "db/user") == b"admin\n"
    with opened(changed) as n:
        vault = n.vaults.open("work")
        assert vault.kind("new/key") is None
        assert vault.log(1)[0].message == f"Revert to {before[3][:8]}."


def test_vaults_revert_json_gives_the_new_commit(changed: CliNode) -> None:
    target = commit_ids(changed, "work")[2]
    reverted = doc(pk(changed, "vaults", "revert", "work", target[:10], "--format", "json"))
    assert set(reverted) == {"commit"}
    assert commit_ids(changed, "work")[0] == reverted["commit"]
    assert read(changed, "work", "db/user") == b"admin\n"


@pytest.mark.parametrize("rev", ["HEAD~9", "abcdef12", "HEAD^", "not-a-rev"])
def test_vaults_revert_to_a_revision_that_does_not_exist_is_exit_37(
    node: CliNode, rev: str
) -> None:
    before = commit_ids(node, "work")
    assert "No such revision" in assert_error(pk(node, "vaults", "revert", "work", rev), 37)
    error = assert_json_error(pk(node, "vaults", "revert", "work", rev, "--format", "json"), 37)
    assert "No such revision" in error["message"]
    assert commit_ids(node, "work") == before


# --- vault tags ---------------------------------------------------------------------------------


def test_vaults_tag_and_untag_change_the_vaults_tags(node: CliNode) -> None:
    assert human(pk(node, "vaults", "tag", "home", "family")) == ["Vault home: tags family."]
    assert human(pk(node, "vaults", "tag", "home", "abc")) == ["Vault home: tags abc, family."]
    assert doc(pk(node, "vaults", "untag", "home", "abc", "--format", "json")) == {
        "name": "home",
        "tags": ["family"],
    }
    assert human(pk(node, "vaults", "untag", "home", "family")) == ["Vault home: tags none."]
    tagged = doc(pk(node, "vaults", "tag", "home", "x", "--format", "json"))
    assert tagged == {"name": "home", "tags": ["x"]}
    listed = doc(pk(node, "vaults", "list", "--tag", "x", "--format", "json"))["vaults"]
    assert [v["name"] for v in listed] == ["home"]


def test_vaults_tag_with_an_invalid_tag_is_exit_3(node: CliNode) -> None:
    assert "tag" in assert_error(pk(node, "vaults", "tag", "home", "bad tag"), 3).lower()
    with opened(node) as n:
        assert {i.name: i.tags for i in n.vaults.all()} == {"home": [], "work": ["prod"]}


# --- errors -------------------------------------------------------------------------------------

ERRORS = [
    (("vaults", "log", "nope"), 31),
    (("vaults", "diff", "nope", "HEAD"), 31),
    (("vaults", "show", "work", "HEAD~42"), 37),
    (("vaults", "diff", "work", "HEAD", "0000000"), 37),
    (("vaults", "untag", "nope", "t"), 31),
    (("vaults", "rm", "nope", "--yes"), 31),
    (("vaults", "create"), 2),
    (("vaults", "frobnicate"), 2),
    (("vaults", "log", "work", "--path", "../x"), 3),
]


@pytest.mark.parametrize(("args", "code"), ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_vaults_errors_are_one_line_and_a_hint_with_the_documented_code(
    node: CliNode, args: tuple[str, ...], code: int
) -> None:
    assert_error(pk(node, *args), code)
    error = assert_json_error(pk(node, *args, "--format", "json"), code)
    assert "Traceback" not in json.dumps(error)
