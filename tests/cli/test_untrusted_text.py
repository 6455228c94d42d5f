"""Text that another node chose never drives the user's terminal (defect 4 of the hardening).

A peer chooses commit messages and authors, secret values (and so `grep` lines and `diff -p`
patches), notifications, the vault names and permissions its scan answers, and its error
messages. Each test puts such a string, holding OSC 52 (write the clipboard), CSI 2J (clear the
screen), an 8-bit CSI, DEL, a bidi override and a carriage return, into a node the way a peer's
data lands there (the project's own APIs in this process, or a scripted hostile origin over real
SSH), then runs real `pk` processes: their human output shows it escaped, never raw.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit, ShaFile, Tree
from hypothesis import given
from hypothesis import strategies as st

from polykey.cli.safe_text import indented, shown
from polykey.crypto import sshsig
from polykey.crypto.signing import SigningKey
from polykey.ids import decode_node_id
from polykey.network.graph import Address
from polykey.network.ssh import _frame
from polykey.node import Node
from tests.cli.helpers import CliNode, text
from tests.support import run_pk
from tests.sync.test_tgit_corpus import HostileOrigin

HOSTILE = "evil\x1b]52;c;cGsgd2FzIGhlcmU=\x07\x1b[2J\x9b31m\x7f\u202etxt.exe\r!"
FORGED = "ffffffffffff  2000-01-01 00:00:00 UTC  Forged line."
MESSAGE = f"{HOSTILE}\n{FORGED}"
VALUE = f"pw {HOSTILE}\n".encode()
RAW = [b"\x1b", b"\x07", b"\x7f", b"\r", "\x9b".encode(), "\u202e".encode()]
VISIBLE = "evil\\x1b]52;c;cGsgd2FzIGhlcmU=\\x07\\x1b[2J\\x9b31m\\x7f\\u202etxt.exe"
PEER_KEY = SigningKey(bytes(range(7, 39)))
BIDI_PATH = "docs/report\u202etxt.exe"  # shows as docs/reportexe.txt when obeyed


def assert_escaped(result: subprocess.CompletedProcess[bytes], *, exit_code: int = 0) -> str:
    """Nothing raw on either stream, the hostile text visible; returns stdout + stderr."""
    assert result.returncode == exit_code, text(result.stderr)
    assert b"Traceback" not in result.stderr
    for stream in (result.stdout, result.stderr):
        for byte in RAW:
            assert byte not in stream, (byte, stream)
    shown = text(result.stdout) + text(result.stderr)
    assert VISIBLE in shown, shown
    return shown


def pk(node: CliNode, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_pk(*args, env=node.env(PK_NO_AGENT="1"), input=b"")


# --- data a peer sent, as it lies in the node file ----------------------------------------------


@pytest.fixture
def planted(cli_node: CliNode, other_node: CliNode) -> CliNode:
    """Vault `work` with a commit whose message and secret came from a peer, and a notification
    from a node this node knows."""
    with Node.open(cli_node.path, cli_node.password.encode(), allow_weak=True) as n:
        work = n.vaults.create("work")
        work.write(BIDI_PATH, b"x")  # paths refuse controls, not bidi overrides
        work.write_many([("db/password", VALUE)], MESSAGE)
        sender = decode_node_id(other_node.node_id)
        n.graph.add(sender, Address("127.0.0.1", 1))
        n.notifications.receive(sender, MESSAGE)
    return cli_node


@pytest.mark.parametrize(
    "args",
    [
        ("vaults", "log", "work"),
        ("secrets", "history", "work:db/password"),
        ("notifications", "read"),
        ("secrets", "grep", "pw"),
        ("vaults", "diff", "work", "HEAD~1", "-p"),
    ],
    ids=["vaults-log", "secrets-history", "notifications", "grep", "diff-patch"],
)
def test_peer_text_in_the_node_is_shown_escaped(planted: CliNode, args: tuple[str, ...]) -> None:
    shown = assert_escaped(pk(planted, *args))
    for line in shown.splitlines():  # a newline in the text cannot start a line of output
        assert not line.startswith("ffffffffffff"), shown


@pytest.mark.parametrize(
    "args",
    [
        ("secrets", "ls", "-R", "work"),
        ("secrets", "find", "report"),
        ("vaults", "show", "work", "HEAD"),
        ("vaults", "diff", "work", "HEAD~2", "HEAD~1"),
        ("secrets", "stat", f"work:{BIDI_PATH}"),
    ],
    ids=["ls", "find", "show", "diff", "stat"],
)
def test_a_secret_path_with_a_bidi_override_is_shown_escaped(
    planted: CliNode, args: tuple[str, ...]
) -> None:
    result = pk(planted, *args)
    assert result.returncode == 0, text(result.stderr)
    assert "\u202e".encode() not in result.stdout, result.stdout
    assert "docs/report\\u202etxt.exe" in text(result.stdout), result.stdout


def test_json_output_keeps_the_text_exactly_and_escapes_it_by_construction(
    planted: CliNode,
) -> None:
    result = pk(planted, "vaults", "log", "work", "--format", "json")
    assert result.returncode == 0, text(result.stderr)
    for byte in RAW:
        assert byte not in result.stdout
    assert json.loads(result.stdout)["commits"][0]["message"] == MESSAGE


def test_secrets_cat_prints_the_value_unchanged(planted: CliNode) -> None:
    result = pk(planted, "secrets", "cat", "work:db/password")
    assert result.returncode == 0, text(result.stderr)
    assert result.stdout == VALUE  # the user's data: `cat` is for getting it byte for byte


# --- a hostile origin over real SSH -------------------------------------------------------------


def _raw(obj: ShaFile) -> bytes:
    return bytes([obj.type_num]) + obj.as_raw_string()


def _hostile_history() -> dict[str, object]:
    """A vault whose one commit, signed by the origin, has a hostile message and author."""
    blob = Blob.from_string(VALUE)
    tree = Tree()
    tree.add(b"password", 0o100644, blob.id)
    c = Commit()
    c.tree = tree.id
    c.author = c.committer = f"{HOSTILE} <x>".encode()
    c.author_time = c.commit_time = 1_700_000_000
    c.author_timezone = c.commit_timezone = 0
    c.message = MESSAGE.encode() + b"\n"
    c.gpgsig = sshsig.sign(PEER_KEY, c.raw_without_sig(), "git").encode()
    return {
        "vault": {"id": "vhostile0000000000000000000", "name": "work"},
        "head": c.id.decode(),
        "writers": [],
        "objects": [_raw(o) for o in (blob, tree, c)],
    }


def _error(message: str, request_id: int = 2) -> bytes:
    return _frame({"jsonrpc": "2.0", "id": request_id, "error": {"code": 1, "message": message}})


@pytest.fixture(scope="module")
def origin() -> Iterator[HostileOrigin]:
    peer = HostileOrigin(PEER_KEY)
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
def victim(cli_node: CliNode, origin: HostileOrigin, tmp_path: Path) -> Iterator[CliNode]:
    with Node.open(cli_node.path, cli_node.password.encode(), allow_weak=True) as n:
        n.graph.add(decode_node_id(origin.node_id), Address("127.0.0.1", origin.port))
    try:
        yield cli_node
    finally:
        origin.answer = lambda m, p: {}


def test_a_scan_shows_the_origins_vault_names_and_permissions_escaped(
    victim: CliNode, origin: HostileOrigin
) -> None:
    origin.answer = lambda m, p: {
        "vaults": [{"id": "v" + "0" * 26, "name": HOSTILE, "permissions": ["clone", HOSTILE]}]
    }
    assert_escaped(pk(victim, "vaults", "scan", origin.node_id))


def test_the_origins_error_message_is_shown_escaped(victim: CliNode, origin: HostileOrigin) -> None:
    origin.answer = lambda m, p: _error(MESSAGE)
    shown = assert_escaped(pk(victim, "vaults", "clone", origin.node_id, "work"), exit_code=51)
    assert shown.startswith("pk: error: ") and len(shown.splitlines()) == 2, shown


def test_a_cloned_history_and_a_refused_pull_are_shown_escaped(
    victim: CliNode, origin: HostileOrigin
) -> None:
    origin.answer = lambda m, p: _hostile_history()
    cloned = pk(victim, "vaults", "clone", origin.node_id, "work")
    assert cloned.returncode == 0, text(cloned.stderr)
    assert_escaped(pk(victim, "vaults", "log", "work"))
    origin.answer = lambda m, p: _error(MESSAGE)
    shown = assert_escaped(pk(victim, "vaults", "pull", "--all"))
    assert "work: refused: " in shown


# --- the function itself ------------------------------------------------------------------------


def _drives_a_terminal(ch: str) -> bool:
    code = ord(ch)
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or ch in "\u061c\u200e\u200f\u2028\u2029"
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
        or 0xD800 <= code <= 0xDFFF
    )


@given(st.text())
def test_shown_leaves_no_character_that_drives_a_terminal(value: str) -> None:
    one_line = shown(value)
    assert not any(_drives_a_terminal(ch) for ch in one_line)
    multi = shown(value, multiline=True)
    assert not any(_drives_a_terminal(ch) for ch in multi if ch not in "\n\t")
    if not any(_drives_a_terminal(ch) for ch in value):
        assert one_line == value  # ordinary text (any script, emoji) is left as it is


def test_shown_names_each_escaped_character_by_its_code() -> None:
    assert shown("a\x1b[2Jb\x9b\x7f\u202e\ud800\t\n\r") == (
        "a\\x1b[2Jb\\x9b\\x7f\\u202e\\ud800\\x09\\x0a\\x0d"
    )
    assert shown("a\tb\nc\r", multiline=True) == "a\tb\nc\\x0d"
    assert indented("subject\nbody\x1b", 4) == "subject\n    body\\x1b"
    assert shown(42) == "42"
