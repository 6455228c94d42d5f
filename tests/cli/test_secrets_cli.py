"""`pk secrets ...` and `pk tags ...` as a user runs them, in human and --format json output."""

from __future__ import annotations

import base64
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mnemonic import Mnemonic

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


def pk(node: CliNode, *args: str, input: bytes | None = b"", **env: str) -> Result:
    """Run `pk` on this node, never through an agent, with standard input not a terminal."""
    return run_pk(*args, env=node.env(PK_NO_AGENT="1", **env), input=input)


def human(result: Result) -> list[str]:
    assert_ok(result)
    return result.stdout.decode().splitlines()


def doc(result: Result) -> dict[str, Any]:
    assert_ok(result)
    return json_stdout(result)


def opened(node: CliNode) -> Node:
    """The node in this process, to check what a command did without another `pk` process."""
    return Node.open(node.path, node.password.encode(), allow_weak=True)


def read(node: CliNode, vault: str, path: str, rev: str | None = None) -> bytes:
    with opened(node) as n:
        return n.vaults.open(vault).read(path, rev)


def kind(node: CliNode, vault: str, path: str) -> str | None:
    with opened(node) as n:
        return n.vaults.open(vault).kind(path)


def commits(node: CliNode, vault: str) -> list[str]:
    with opened(node) as n:
        return [c.message for c in n.vaults.open(vault).log()]


def tags(node: CliNode, vault: str) -> dict[str, list[str]]:
    with opened(node) as n:
        return n.vaults.open(vault).tags()


@pytest.fixture
def node(cli_node: CliNode) -> CliNode:
    """Vault work: db/password, db/user, api/token (tag prod); vault home: wifi (tag prod)."""
    with Node.open(cli_node.path, cli_node.password.encode(), allow_weak=True) as n:
        work = n.vaults.create("work")
        work.write("db/password", b"hunter2\n")
        work.write("db/user", b"admin\n")
        work.write("api/token", b"tok-1\n")
        work.set_tags("api/token", ["prod"], [])
        home = n.vaults.create("home")
        home.write("wifi", b"Pass Phrase\n")
        home.set_tags("wifi", ["prod"], [])
    return cli_node


# --- write, create, dir -------------------------------------------------------------------------


def test_secrets_write_stores_standard_input_exactly_in_one_commit(node: CliNode) -> None:
    before = commits(node, "work")
    assert human(pk(node, "secrets", "write", "work:new/secret", input=b"s3cr3t")) == []
    assert read(node, "work", "new/secret") == b"s3cr3t"
    assert commits(node, "work") == ["Add secret new/secret.", *before]
    written = doc(pk(node, "secrets", "write", "work:new/secret", "--format", "json", input=b"2"))
    assert set(written) == {"vault", "path", "commit"}
    assert (written["vault"], written["path"]) == ("work", "new/secret")
    assert commits(node, "work")[0] == "Update secret new/secret."
    assert read(node, "work", "new/secret") == b"2"


def test_secrets_write_and_cat_round_trip_every_byte_value(node: CliNode) -> None:
    data = bytes(range(256)) + b"\x00\x00\n\r\n"
    assert human(pk(node, "secrets", "write", "work:bin", input=data)) == []
    cat = pk(node, "secrets", "cat", "work:bin")
    assert cat.returncode == 0 and cat.stdout == data
    as_json = doc(pk(node, "secrets", "cat", "work:bin", "--format", "json"))
    assert as_json == {
        "secrets": [{"address": "work:bin", "base64": base64.b64encode(data).decode()}]
    }


def test_secrets_write_of_an_empty_value_stores_an_empty_secret(node: CliNode) -> None:
    assert human(pk(node, "secrets", "write", "work:empty", input=b"")) == []
    assert read(node, "work", "empty") == b""


def test_secrets_create_stores_a_local_files_bytes(node: CliNode, tmp_path: Path) -> None:
    local = tmp_path / "key.bin"
    local.write_bytes(b"\x00\xffbinary\x00")
    assert human(pk(node, "secrets", "create", str(local), "work:keys/bin")) == []
    assert read(node, "work", "keys/bin") == b"\x00\xffbinary\x00"
    created = doc(pk(node, "secrets", "create", str(local), "home:k", "--format", "json"))
    assert (created["vault"], created["path"]) == ("home", "k")
    assert read(node, "home", "k") == local.read_bytes()


def test_secrets_create_from_a_missing_local_file_is_a_usage_error(
    node: CliNode, tmp_path: Path
) -> None:
    assert_error(pk(node, "secrets", "create", str(tmp_path / "none"), "work:x"), 2)
    assert kind(node, "work", "x") is None


def test_secrets_dir_imports_a_tree_in_one_commit(node: CliNode, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for rel, data in {"a": b"1", "sub/b": b"2", "sub/deeper/c": b"\x00"}.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    before = commits(node, "work")
    assert human(pk(node, "secrets", "dir", str(tree), "work:imported")) == ["Imported 3 secrets."]
    assert commits(node, "work") == ["Import 3 secrets into imported.", *before]
    assert read(node, "work", "imported/sub/deeper/c") == b"\x00"
    into_root = doc(pk(node, "secrets", "dir", str(tree), "home", "--format", "json"))
    assert into_root["count"] == 3 and re.fullmatch(r"[0-9a-f]{40}", into_root["commit"])
    assert commits(node, "home")[0] == "Import 3 secrets into the vault root."
    assert read(node, "home", "sub/b") == b"2"


def test_secrets_dir_refuses_an_empty_folder_and_a_symbolic_link(
    node: CliNode, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no files" in assert_error(
        pk(node, "secrets", "dir", str(empty), "work:x"), 3, hint=False
    )
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "real").write_bytes(b"x")
    (linked / "link").symlink_to(linked / "real")
    assert "symbolic link" in assert_error(
        pk(node, "secrets", "dir", str(linked), "work:x"), 3, hint=True
    )
    assert kind(node, "work", "x") is None


# --- cat ----------------------------------------------------------------------------------------


def test_secrets_cat_prints_several_secrets_one_after_the_other(node: CliNode) -> None:
    result = pk(node, "secrets", "cat", "work:db/user", "home:wifi", "work:db/user")
    assert_ok(result)
    assert result.stdout == b"admin\nPass Phrase\nadmin\n"
    listed = doc(pk(node, "secrets", "cat", "work:db/user", "home:wifi", "--format", "json"))
    assert listed == {
        "secrets": [
            {"address": "work:db/user", "value": "admin\n"},
            {"address": "home:wifi", "value": "Pass Phrase\n"},
        ]
    }


def test_secrets_cat_with_rev_prints_an_older_value(node: CliNode) -> None:
    assert pk(node, "secrets", "write", "work:db/user", input=b"root\n").returncode == 0
    assert pk(node, "secrets", "cat", "work:db/user").stdout == b"root\n"
    old = pk(node, "secrets", "cat", "work:db/user", "work:db/password", "--rev", "HEAD~1")
    assert_ok(old)
    assert old.stdout == b"admin\nhunter2\n"
    as_json = doc(pk(node, "secrets", "cat", "work:db/user", "--rev", "HEAD~1", "--format", "json"))
    assert as_json["secrets"][0]["value"] == "admin\n"


def in_terminal(node: CliNode, *args: str, answer: bytes = b"") -> tuple[int, bytes]:
    """Run `pk` (no agent) with standard input, output and error on a pseudo-terminal, typing
    ``answer``; the exit code and everything the terminal showed (newlines as CR LF)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "polykey", *args],
        env=node.env(PK_NO_AGENT="1"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    if answer:
        os.write(master, answer)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=60), out


def test_secrets_cat_separates_values_that_do_not_end_with_a_newline(node: CliNode) -> None:
    pk(node, "secrets", "write", "work:a", input=b"one")
    pk(node, "secrets", "write", "work:b", input=b"two")
    pk(node, "secrets", "write", "work:empty", input=b"")
    assert pk(node, "secrets", "cat", "work:a", "work:b").stdout == b"one\ntwo"
    assert pk(node, "secrets", "cat", "work:b").stdout == b"two"  # piped: the bytes as stored
    both = pk(node, "secrets", "cat", "work:a", "work:empty", "work:db/user", "work:b")
    assert both.stdout == b"one\n\nadmin\ntwo"
    code, shown_ = in_terminal(node, "secrets", "cat", "work:b")
    assert (code, shown_) == (0, b"two\r\n")  # on a terminal the value ends before the prompt
    code, shown_ = in_terminal(node, "secrets", "cat", "work:db/user")
    assert (code, shown_) == (0, b"admin\r\n")


def test_secrets_cat_of_an_entry_folder_prints_it_as_pass_show_does(node: CliNode) -> None:
    assert pk(node, "secrets", "cat", "work:db").stdout == b"hunter2\nuser: admin\n"
    listed = doc(pk(node, "secrets", "cat", "work:db", "home:wifi", "--format", "json"))
    assert listed["secrets"][0] == {
        "address": "work:db",
        "entry": True,
        "value": "hunter2\nuser: admin\n",
    }
    pk(node, "secrets", "write", "work:mail/password", input=b"pw")
    pk(node, "secrets", "write", "work:mail/url", input=b"https://mail.example\n")
    pk(node, "secrets", "write", "work:mail/username", input=b"bob")
    pk(node, "secrets", "write", "work:mail/notes", input=b"line one\nline two\n")
    pk(node, "secrets", "write", "work:mail/recovery", input=b"multi\nline\n")
    expected = b"pw\nusername: bob\nurl: https://mail.example\nline one\nline two\n"
    assert pk(node, "secrets", "cat", "work:mail").stdout == expected
    assert pk(node, "secrets", "cat", "work:db", "work:mail").stdout == (
        b"hunter2\nuser: admin\n" + expected
    )
    old = pk(node, "secrets", "cat", "work:mail", "--rev", "HEAD~1")  # before recovery: the same
    assert old.stdout == expected


def test_secrets_cat_of_a_folder_that_is_no_entry_says_how_to_list_it(node: CliNode) -> None:
    error = assert_error(pk(node, "secrets", "cat", "work:api"), 35)
    assert "work:api" in error and "not an entry" in error
    result = pk(node, "secrets", "cat", "work:api")
    assert b"pk secrets ls work:api" in result.stderr


def test_secrets_cat_of_an_entry_folder_through_the_agents_fast_path(
    node: CliNode, tmp_path: Path
) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = node.env(PK_RUNTIME_DIR=str(runtime))
    assert run_pk("agent", "start", "--background", env=env).returncode == 0
    try:
        entry = run_pk("secrets", "cat", "work:db", env=env)  # the fast path steps aside
        assert (entry.returncode, entry.stdout) == (0, b"hunter2\nuser: admin\n"), entry.stderr
        plain = run_pk("secrets", "cat", "work:api", env=env)
        assert plain.returncode == 35 and b"pk secrets ls work:api" in plain.stderr
        assert run_pk("secrets", "cat", "work:db/user", env=env).stdout == b"admin\n"
    finally:
        assert run_pk("agent", "stop", env=env).returncode == 0


def test_secrets_cat_of_a_missing_secret_names_it(node: CliNode) -> None:
    result = pk(node, "secrets", "cat", "work:db/user", "work:db/ghost")
    assert "work:db/ghost" in assert_error(result, 33)
    error = assert_json_error(pk(node, "secrets", "cat", "home:nope", "--format", "json"), 33)
    assert "home:nope" in error["message"]


# --- ls -----------------------------------------------------------------------------------------


def test_secrets_ls_lists_one_level_with_directories_marked(node: CliNode) -> None:
    assert human(pk(node, "secrets", "ls", "work")) == ["api/", "db/"]
    assert human(pk(node, "secrets", "ls", "work:db")) == ["db/password", "db/user"]


def test_secrets_ls_recursive_lists_everything(node: CliNode) -> None:
    assert human(pk(node, "secrets", "ls", "work", "-R")) == [
        "api/",
        "api/token",
        "db/",
        "db/password",
        "db/user",
    ]
    entries = doc(pk(node, "secrets", "ls", "work:db", "--recursive", "--format", "json"))
    assert entries == {
        "entries": [
            {"vault": "work", "path": "db/password", "kind": "secret"},
            {"vault": "work", "path": "db/user", "kind": "secret"},
        ]
    }


def test_secrets_ls_with_a_tag_spans_every_vault(node: CliNode) -> None:
    assert human(pk(node, "secrets", "ls", "--tag", "prod")) == ["home:wifi", "work:api/token"]
    only = doc(pk(node, "secrets", "ls", "work", "--tag", "prod", "--format", "json"))
    assert only == {"entries": [{"vault": "work", "path": "api/token", "kind": "secret"}]}
    assert human(pk(node, "secrets", "ls", "--tag", "unused")) == []


def test_secrets_ls_without_vault_or_tag_is_a_usage_error(node: CliNode) -> None:
    assert_error(pk(node, "secrets", "ls"), 2)
    assert_json_error(pk(node, "secrets", "ls", "--format", "json"), 2)


# --- rm -----------------------------------------------------------------------------------------


def test_secrets_rm_removes_secrets_in_one_commit_per_vault(node: CliNode) -> None:
    work, home = commits(node, "work"), commits(node, "home")
    assert human(pk(node, "secrets", "rm", "work:db/user", "work:api/token", "home:wifi")) == []
    assert commits(node, "work") == ["Remove secrets db/user, api/token.", *work]
    assert commits(node, "home") == ["Remove secret wifi.", *home]
    assert kind(node, "work", "db/user") is None and kind(node, "home", "wifi") is None


def test_secrets_rm_json_and_recursive_directory(node: CliNode) -> None:
    assert "directory" in assert_error(pk(node, "secrets", "rm", "work:db"), 35)
    removed = doc(pk(node, "secrets", "rm", "-r", "work:db", "--format", "json"))
    assert removed["removed"] == ["work:db"]
    assert set(removed["commits"]) == {"work"}
    assert kind(node, "work", "db") is None
    assert kind(node, "work", "api/token") == "secret"


def test_secrets_rm_drops_the_tags_of_what_it_removes(node: CliNode) -> None:
    assert human(pk(node, "secrets", "rm", "work:api/token")) == []
    assert human(pk(node, "secrets", "ls", "--tag", "prod")) == ["home:wifi"]


# --- mv and cp ----------------------------------------------------------------------------------


def test_secrets_mv_within_a_vault_keeps_content_and_tags(node: CliNode) -> None:
    assert human(pk(node, "secrets", "mv", "work:api/token", "work:keys/token")) == []
    assert read(node, "work", "keys/token") == b"tok-1\n"
    assert kind(node, "work", "api/token") is None
    assert tags(node, "work") == {"keys/token": ["prod"]}
    assert commits(node, "work")[0] == "Move api/token to keys/token."


def test_secrets_mv_across_vaults_moves_content_and_tags(node: CliNode) -> None:
    moved = doc(pk(node, "secrets", "mv", "work:api/token", "home:token", "--format", "json"))
    assert moved == {"from": "work:api/token", "to": "home:token", "moved": True}
    assert read(node, "home", "token") == b"tok-1\n"
    assert kind(node, "work", "api/token") is None
    assert human(pk(node, "secrets", "ls", "--tag", "prod")) == ["home:token", "home:wifi"]
    assert commits(node, "home")[0] == "Move work:api/token to token."
    assert commits(node, "work")[0] == "Move api/token to vault home."


def test_secrets_mv_a_directory_into_another_vaults_root(node: CliNode) -> None:
    assert human(pk(node, "secrets", "mv", "work:db", "home:")) == []
    assert read(node, "home", "db/password") == b"hunter2\n"
    assert kind(node, "work", "db") is None


def test_secrets_cp_within_and_across_vaults_keeps_the_source(node: CliNode) -> None:
    assert human(pk(node, "secrets", "cp", "work:db/user", "work:db/user2")) == []
    copied = doc(pk(node, "secrets", "cp", "work:api/token", "home:copy", "--format", "json"))
    assert copied == {"from": "work:api/token", "to": "home:copy", "copied": True}
    assert read(node, "work", "db/user2") == read(node, "work", "db/user") == b"admin\n"
    assert read(node, "home", "copy") == read(node, "work", "api/token") == b"tok-1\n"
    assert human(pk(node, "secrets", "ls", "--tag", "prod")) == [
        "home:copy",
        "home:wifi",
        "work:api/token",
    ]


@pytest.mark.parametrize("verb", ["mv", "cp"])
def test_secrets_mv_and_cp_onto_an_existing_secret_need_force(node: CliNode, verb: str) -> None:
    before = commits(node, "work")
    message = assert_error(pk(node, "secrets", verb, "work:db/user", "work:db/password"), 34)
    assert "work:db/password" in message
    assert_json_error(
        pk(node, "secrets", verb, "work:db/user", "home:wifi", "--format", "json"), 34
    )
    assert commits(node, "work") == before
    assert human(pk(node, "secrets", verb, "work:db/user", "work:db/password", "--force")) == []
    assert read(node, "work", "db/password") == b"admin\n"
    assert human(pk(node, "secrets", verb, "work:api/token", "home:wifi", "-f")) == []
    assert read(node, "home", "wifi") == b"tok-1\n"


# --- mkdir --------------------------------------------------------------------------------------


def test_secrets_mkdir_makes_an_empty_directory_and_p_makes_parents(node: CliNode) -> None:
    assert human(pk(node, "secrets", "mkdir", "work:empty")) == []
    assert human(pk(node, "secrets", "ls", "work")) == ["api/", "db/", "empty/"]
    assert "-p" in assert_error(pk(node, "secrets", "mkdir", "work:a/b/c"), 33)
    made = doc(pk(node, "secrets", "mkdir", "work:a/b/c", "-p", "--format", "json"))
    assert (made["vault"], made["path"]) == ("work", "a/b/c")
    assert kind(node, "work", "a/b/c") == "dir"
    assert commits(node, "work")[:2] == ["Make directory a/b/c.", "Make directory empty."]
    assert_error(pk(node, "secrets", "mkdir", "work:empty"), 34)


# --- stat and history ---------------------------------------------------------------------------


def test_secrets_stat_shows_size_times_last_commit_and_tags(node: CliNode) -> None:
    lines = human(pk(node, "secrets", "stat", "work:api/token"))
    with opened(node) as n:
        last = n.vaults.open("work").log(path="api/token")[0].id
    assert lines[0] == "Path      work:api/token"
    assert lines[1] == "Size      6 bytes"
    assert re.fullmatch(r"Created   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[2])
    assert re.fullmatch(r"Modified  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[3])
    assert lines[4:] == [f"Commit    {last}", "Tags      prod"]
    st = doc(pk(node, "secrets", "stat", "work:db/user", "--format", "json"))
    assert set(st) == {"vault", "path", "size", "created", "modified", "last_commit", "tags"}
    assert (st["vault"], st["path"], st["size"], st["tags"]) == ("work", "db/user", 6, [])
    assert st["created"] <= st["modified"]


def test_secrets_history_lists_the_commits_that_changed_one_secret(node: CliNode) -> None:
    assert pk(node, "secrets", "write", "work:db/user", input=b"root\n").returncode == 0
    lines = human(pk(node, "secrets", "history", "work:db/user"))
    messages = [m["message"] for m in map(COMMIT_LINE.fullmatch, lines) if m is not None]
    assert messages == ["Update secret db/user.", "Add secret db/user."]
    listed = doc(pk(node, "secrets", "history", "work:db/password", "--format", "json"))
    assert [c["message"] for c in listed["commits"]] == ["Add secret db/password."]
    assert "work:db/ghost" in assert_error(pk(node, "secrets", "history", "work:db/ghost"), 33)


# --- edit ---------------------------------------------------------------------------------------

EDITOR = """#!/bin/sh
printf '%s\\n' "$1" > "$PK_TEST_EDITOR_LOG"
stat -c '%a' "$1" >> "$PK_TEST_EDITOR_LOG"
stat -c '%a' "$(dirname "$1")" >> "$PK_TEST_EDITOR_LOG"
printf 'appended line\\n' >> "$1"
"""


def _visible_fstype(mount_point: str) -> str | None:
    """The filesystem type of the mount on top at ``mount_point`` (the last /proc/mounts line)."""
    found = None
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == mount_point:
            found = fields[2]
    return found


@pytest.fixture
def editor(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """EDITOR set to a script that logs its file, the modes, then appends a line."""
    script = tmp_path / "editor.sh"
    script.write_text(EDITOR)
    script.chmod(0o700)
    log = tmp_path / "editor.log"
    return {"EDITOR": str(script), "VISUAL": "", "PK_TEST_EDITOR_LOG": str(log)}, log


def _edit_env(node: CliNode, extra: dict[str, str]) -> dict[str, str]:
    env = node.env(PK_NO_AGENT="1", **extra)
    env.pop("XDG_RUNTIME_DIR", None)  # the RAM-backed folder is then /dev/shm
    return env


def test_secrets_edit_runs_the_editor_on_a_private_ram_file_that_is_gone_after(
    node: CliNode, editor: tuple[dict[str, str], Path]
) -> None:
    extra, log = editor
    env = _edit_env(node, extra)
    if _visible_fstype("/dev/shm") not in ("tmpfs", "ramfs"):
        assert_error(run_pk("secrets", "edit", "work:db/user", env=env, input=b""), 5)
        return
    result = run_pk("secrets", "edit", "work:db/user", env=env, input=b"")
    assert human(result) == []
    assert read(node, "work", "db/user") == b"admin\nappended line\n"
    assert commits(node, "work")[0] == "Update secret db/user."
    file, file_mode, dir_mode = log.read_text().splitlines()
    assert file.startswith("/dev/shm/pk-edit-"), file
    assert Path(file).name == "user"
    assert (file_mode, dir_mode) == ("600", "700")
    assert not Path(file).exists()
    assert not Path(file).parent.exists()


def test_secrets_edit_json_creates_a_new_secret_and_reports_no_change(
    node: CliNode, editor: tuple[dict[str, str], Path]
) -> None:
    extra, _ = editor
    env = _edit_env(node, extra)
    if _visible_fstype("/dev/shm") not in ("tmpfs", "ramfs"):
        pytest.skip("/dev/shm is not RAM-backed here; the refusal is tested above")
    created = doc(run_pk("secrets", "edit", "work:new/note", "--format", "json", env=env))
    assert created["changed"] is True and created["path"] == "new/note"
    assert read(node, "work", "new/note") == b"appended line\n"
    before = commits(node, "work")
    untouched = {**env, "EDITOR": "true"}
    assert human(run_pk("secrets", "edit", "work:new/note", env=untouched)) == ["No changes."]
    same = run_pk("secrets", "edit", "work:new/note", "--format", "json", env=untouched)
    assert doc(same) == {"changed": False}
    assert commits(node, "work") == before


def test_secrets_edit_saves_nothing_when_the_editor_fails(
    node: CliNode, editor: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    extra, log = editor
    failing = tmp_path / "failing-editor.sh"
    failing.write_text(EDITOR + "exit 1\n")
    failing.chmod(0o700)
    env = {**_edit_env(node, extra), "EDITOR": str(failing)}
    if _visible_fstype("/dev/shm") not in ("tmpfs", "ramfs"):
        pytest.skip("/dev/shm is not RAM-backed here")
    before = commits(node, "work")
    message = assert_error(run_pk("secrets", "edit", "work:db/user", env=env), 3, hint=False)
    assert "status 1" in message and "nothing saved" in message
    assert commits(node, "work") == before
    assert read(node, "work", "db/user") == b"admin\n"
    file = Path(log.read_text().splitlines()[0])
    assert not file.exists() and not file.parent.exists()


def test_secrets_edit_of_a_directory_is_exit_35(
    node: CliNode, editor: tuple[dict[str, str], Path]
) -> None:
    extra, log = editor
    if _visible_fstype("/dev/shm") not in ("tmpfs", "ramfs"):
        pytest.skip("/dev/shm is not RAM-backed here")
    assert_error(run_pk("secrets", "edit", "work:db", env=_edit_env(node, extra)), 35)
    assert not log.exists()


def _namespace_works() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt 2>/dev/null && echo ok"],
        capture_output=True,
        check=False,
    )
    return probe.stdout.strip() == b"ok"


needs_namespace = pytest.mark.skipif(
    not _namespace_works(), reason="needs a private mount namespace (unshare -m, root)"
)

UNMOUNT_SHM = 'while grep -q " /dev/shm " /proc/mounts; do umount /dev/shm || exit 99; done'
DISK_OVER_SHM = 'mount --bind "$PK_TEST_DISK_DIR" /dev/shm || exit 99'


def _pk_in_namespace(setup: str, args: list[str], env: dict[str, str]) -> Result:
    """`pk ARGS` in a private mount namespace after ``setup`` changed what /dev/shm is."""
    script = f'{setup}; exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "polykey", *args],
        env=env,
        capture_output=True,
        input=b"",
        timeout=60,
        check=False,
    )


@needs_namespace
def test_secrets_edit_refuses_when_no_ram_backed_folder_exists(
    node: CliNode, editor: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    extra, log = editor
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**_edit_env(node, extra), "TMPDIR": str(tmpdir)}
    refused = _pk_in_namespace(UNMOUNT_SHM, ["secrets", "edit", "work:db/user"], env)
    assert "RAM-backed" in assert_error(refused, 5)
    assert not log.exists()
    assert read(node, "work", "db/user") == b"admin\n"
    allowed = _pk_in_namespace(
        UNMOUNT_SHM, ["secrets", "edit", "work:db/user", "--allow-disk-temp"], env
    )
    assert human(allowed) == []
    file = log.read_text().splitlines()[0]
    assert file.startswith(f"{tmpdir}/pk-edit-"), file
    assert list(tmpdir.iterdir()) == []
    assert read(node, "work", "db/user") == b"admin\nappended line\n"


@needs_namespace
def test_secrets_edit_refuses_a_disk_folder_mounted_over_dev_shm(
    node: CliNode, editor: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    extra, _ = editor
    disk = tmp_path / "disk"
    disk.mkdir()
    env = {**_edit_env(node, extra), "PK_TEST_DISK_DIR": str(disk)}
    result = _pk_in_namespace(DISK_OVER_SHM, ["secrets", "edit", "work:db/user"], env)
    assert result.returncode == 5, (result.returncode, result.stderr)


# --- generate -----------------------------------------------------------------------------------


def test_secrets_generate_stores_a_24_character_password_and_prints_it(node: CliNode) -> None:
    (printed,) = human(pk(node, "secrets", "generate", "work:gen"))
    value = read(node, "work", "gen").decode()
    allowed = set(string.ascii_letters + string.digits + string.punctuation)
    assert printed == value and len(value) == 24 and set(value) <= allowed
    made = doc(pk(node, "secrets", "generate", "work:gen2", "--format", "json"))
    assert (made["vault"], made["path"]) == ("work", "gen2")
    assert made["value"].encode() == read(node, "work", "gen2") != read(node, "work", "gen")


def test_secrets_generate_takes_the_length_as_pass_does_and_no_symbols(node: CliNode) -> None:
    (value,) = human(pk(node, "secrets", "generate", "work:g1", "32"))
    assert len(value) == 32 and read(node, "work", "g1") == value.encode()
    (value,) = human(pk(node, "secrets", "generate", "work:g2", "12", "--length", "12", "-n"))
    assert len(value) == 12 and value.isalnum()
    assert_error(pk(node, "secrets", "generate", "work:g3", "12", "--length", "13"), 2)
    assert_error(pk(node, "secrets", "generate", "work:g3", "-n", "--charset", "hex"), 2)
    assert kind(node, "work", "g3") is None


def test_secrets_generate_over_an_existing_secret_asks_or_needs_force(node: CliNode) -> None:
    before = read(node, "work", "api/token")
    refused = pk(node, "secrets", "generate", "work:api/token")
    assert "work:api/token" in assert_error(refused, 34)
    assert b"--force" in refused.stderr
    assert read(node, "work", "api/token") == before
    code, shown_ = in_terminal(node, "secrets", "generate", "work:api/token", answer=b"n\n")
    assert code == 34 and b"Replace it?" in shown_
    assert read(node, "work", "api/token") == before
    code, shown_ = in_terminal(node, "secrets", "generate", "work:api/token", answer=b"y\n")
    new = read(node, "work", "api/token")
    assert code == 0 and new != before and new in shown_
    (forced,) = human(pk(node, "secrets", "generate", "work:api/token", "-f"))
    assert read(node, "work", "api/token") == forced.encode() != new


def test_secrets_generate_of_an_entry_folder_replaces_its_password(node: CliNode) -> None:
    assert_error(pk(node, "secrets", "generate", "work:db"), 34)
    made = doc(pk(node, "secrets", "generate", "work:db", "--force", "--format", "json"))
    assert made["path"] == "db/password"
    assert read(node, "work", "db/password") == made["value"].encode()
    assert read(node, "work", "db/user") == b"admin\n"
    error = assert_error(pk(node, "secrets", "generate", "work:api", "-f"), 35)
    assert "not an entry" in error


def test_secrets_generate_with_length_and_digits_charset(node: CliNode) -> None:
    made = doc(
        pk(
            node,
            "secrets",
            "generate",
            "work:pin",
            "--length",
            "40",
            "--charset",
            "digits",
            "--show",
            "--format",
            "json",
        )
    )
    assert re.fullmatch(r"[0-9]{40}", made["value"])
    assert read(node, "work", "pin") == made["value"].encode()


def test_secrets_generate_words_makes_a_bip39_passphrase(node: CliNode) -> None:
    lines = human(pk(node, "secrets", "generate", "work:phrase", "--words", "6", "--show"))
    assert len(lines) == 1
    words = lines[0].split("-")
    assert len(words) == 6
    assert set(words) <= set(Mnemonic("english").wordlist)
    assert read(node, "work", "phrase") == lines[0].encode()


@pytest.mark.parametrize(
    ("options", "code"),
    [(("--charset", "klingon"), 3), (("--length", "3"), 2), (("--words", "2"), 2)],
)
def test_secrets_generate_refuses_bad_options(
    node: CliNode, options: tuple[str, ...], code: int
) -> None:
    assert_error(pk(node, "secrets", "generate", "work:bad", *options), code)
    assert kind(node, "work", "bad") is None


# --- find and grep ------------------------------------------------------------------------------


def test_secrets_find_matches_paths_across_vaults(node: CliNode) -> None:
    assert human(pk(node, "secrets", "find", "WIFI")) == ["home:wifi"]
    assert human(pk(node, "secrets", "find", "*word")) == ["work:db/password"]
    assert human(pk(node, "secrets", "find", "db/*")) == ["work:db/password", "work:db/user"]
    assert human(pk(node, "secrets", "find", "nothing-like-it")) == []
    found = doc(pk(node, "secrets", "find", "i", "--vault", "work", "--format", "json"))
    assert found == {"matches": [{"vault": "work", "path": "api/token"}]}


def test_secrets_grep_prints_matching_lines_across_vaults(node: CliNode) -> None:
    assert human(pk(node, "secrets", "grep", "^(adm|Pass)")) == [
        "home:wifi: Pass Phrase",
        "work:db/user: admin",
    ]
    assert human(pk(node, "secrets", "grep", "pass", "-i", "--vault", "home")) == [
        "home:wifi: Pass Phrase"
    ]
    assert human(pk(node, "secrets", "grep", "pass", "--vault", "home")) == []
    found = doc(pk(node, "secrets", "grep", "hunter", "--format", "json"))
    assert found == {"matches": [{"vault": "work", "path": "db/password", "line": "hunter2"}]}
    assert "regular expression" in assert_error(pk(node, "secrets", "grep", "("), 3, hint=False)


# --- tags ---------------------------------------------------------------------------------------


def test_tags_add_and_rm_change_a_secrets_tags_in_one_commit_each(node: CliNode) -> None:
    before = commits(node, "work")
    assert human(pk(node, "tags", "add", "work:db/user", "b", "a")) == []
    assert tags(node, "work")["db/user"] == ["a", "b"]
    assert commits(node, "work") == ["Tag db/user with b, a.", *before]
    removed = doc(pk(node, "tags", "rm", "work:db/user", "a", "--format", "json"))
    assert removed["removed"] == ["a"] and removed["path"] == "db/user"
    assert tags(node, "work")["db/user"] == ["b"]
    assert commits(node, "work")[0] == "Remove tag a from db/user."
    added = doc(pk(node, "tags", "add", "home:wifi", "b", "--format", "json"))
    assert added["added"] == ["b"] and added["vault"] == "home"
    assert human(pk(node, "secrets", "ls", "--tag", "b")) == ["home:wifi", "work:db/user"]
    assert human(pk(node, "tags", "rm", "work:db/user", "b")) == []
    assert "db/user" not in tags(node, "work")
    assert len(commits(node, "work")) == len(before) + 3


def test_tags_list_counts_secrets_and_vaults_per_tag(node: CliNode) -> None:
    assert pk(node, "vaults", "tag", "home", "family").returncode == 0
    assert human(pk(node, "tags", "list")) == [
        "family\t0 secrets\t1 vaults",
        "prod\t2 secrets\t0 vaults",
    ]
    assert doc(pk(node, "tags", "list", "--format", "json")) == {
        "tags": {
            "family": {"secrets": 0, "vaults": 1},
            "prod": {"secrets": 2, "vaults": 0},
        }
    }


def test_tags_of_a_missing_secret_or_invalid_tag_fail(node: CliNode) -> None:
    before = commits(node, "work")
    assert "work:ghost" in assert_error(pk(node, "tags", "add", "work:ghost", "t"), 33)
    assert_error(pk(node, "tags", "add", "work:db/user", "bad tag"), 3)
    assert_json_error(pk(node, "tags", "rm", "work:db/user", "--format", "json"), 2)
    assert commits(node, "work") == before


# --- errors -------------------------------------------------------------------------------------

ERRORS: list[tuple[tuple[str, ...], int]] = [
    (("secrets", "cat", "work"), 2),
    (("secrets", "cat", "work:api"), 35),
    (("secrets", "write", "work:../escape"), 3),
    (("secrets", "write", "work:.git/config"), 3),
    (("secrets", "write", "work:a\x01b"), 3),
    (("secrets", "write", "work:db"), 35),
    (("secrets", "write", "work:api/token/below"), 35),
    (("secrets", "write", "work:DB/x"), 36),
    (("secrets", "write", "nope:x"), 31),
    (("secrets", "rm", "work:ghost"), 33),
    (("secrets", "stat", "work:db"), 35),
    (("secrets", "mv", "work:ghost", "work:x"), 33),
    (("secrets", "ls", "work:ghost"), 33),
    (("secrets", "bogus"), 2),
    (("tags", "add", "work:db/user"), 2),
]


@pytest.mark.parametrize(("args", "code"), ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_secrets_errors_are_one_line_and_a_hint_with_the_documented_code(
    node: CliNode, args: tuple[str, ...], code: int
) -> None:
    before = commits(node, "work")
    assert_error(pk(node, *args, input=b"value"), code)
    assert_json_error(pk(node, *args, "--format", "json", input=b"value"), code)
    assert commits(node, "work") == before


def test_an_undecodable_byte_in_a_path_argument_is_exit_3(node: CliNode) -> None:
    address = os.fsdecode(b"work:bad\xffname")
    assert_error(pk(node, "secrets", "write", address, input=b"x"), 3)
    assert_error(pk(node, "secrets", "cat", address), 3)
