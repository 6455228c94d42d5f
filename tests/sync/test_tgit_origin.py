"""A hostile origin answering `pk vaults clone`, `pull` and `scan`, beyond the scripted answers
of test_tgit_corpus.py (whose docstring maps these tests to T-GIT-03, 07, 08, 09 and T-NET-14):
objects of the wrong type, malformed `.polykey-tags`, terminal escapes, a trickled reply,
objects beyond the history, a hang-up at the hello, another protocol version.

The origin is that module's HostileOrigin (an SSH server built from network/ssh.py's pieces,
with the node key the victim pinned), taught three more tricks here: a hello of its choosing,
replies sent in small slow pieces, and JSON-RPC errors. The victim is a real `pk` process on a
node that cloned `work` (v1) from it. Whatever the origin does, the victim either refuses with a
clear exit code, leaving every vault, origin record and the node file exactly as they were, or
takes exactly what it asked for; nothing a peer chose reaches the terminal unescaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree

from polykey.codec import from_wire
from polykey.crypto import sshsig
from polykey.network.ssh import _frame, _read_frame
from polykey.node import Node
from polykey.vaults.objects import objects_ns
from tests.sync.test_tgit_corpus import History, HostileOrigin, Victim, template, victim
from tests.sync.test_validate import OWNER, tree_with

__all__ = ["template", "victim"]  # the victim's node, a clone of `work` from ``origin``


class Refusal(dict[str, Any]):
    """An answer that is a JSON-RPC error with this ``message``."""


class ScriptedOrigin(HostileOrigin):
    """HostileOrigin, and: ``hello`` is its answer to the hello (None: the right one; bytes:
    written raw, then the channel closes); ``trickle`` (bytes, seconds) sends every frame in
    pieces of that many bytes, waiting that long between them; an answer may be a Refusal.
    ``asked`` lists the methods received, in order."""

    def __init__(self) -> None:
        self.hello: Any = None
        self.trickle: tuple[int, float] | None = None
        self.asked: list[str] = []
        super().__init__(OWNER)

    def reset(self) -> None:
        self.answer = lambda m, p: {}
        self.silent = False
        self.hello = None
        self.trickle = None
        self.asked = []

    async def _send(self, proc: Any, data: bytes) -> None:
        if self.trickle is None:
            proc.stdout.write(data)
            return
        size, pause = self.trickle
        for at in range(0, len(data), size):
            proc.stdout.write(data[at : at + size])
            await proc.stdout.drain()
            await asyncio.sleep(pause)

    async def _process(self, proc: Any) -> None:
        self.channels += 1
        try:
            while True:
                try:
                    request = await _read_frame(proc.stdin)
                except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                    return
                assert request is not None
                method = str(request.get("method"))
                self.asked.append(method)
                if method != "peer.hello":
                    result: Any = self.answer(method, from_wire(request.get("params", {})))
                elif self.hello is None:
                    result = {"version": 1, "node_id": self.node_id}
                else:
                    result = self.hello
                if isinstance(result, bytes):
                    await self._send(proc, result)
                    return
                reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
                if isinstance(result, Refusal):
                    reply["error"] = {"code": -32000, **result, "data": {"exit_code": 51}}
                else:
                    reply["result"] = result
                await self._send(proc, _frame(reply))
        finally:
            with contextlib.suppress(Exception):
                proc.exit(0)


@pytest.fixture(scope="module")
def origin() -> Iterator[ScriptedOrigin]:
    peer = ScriptedOrigin()
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture(autouse=True)
def _fresh_origin(origin: ScriptedOrigin) -> Iterator[None]:
    origin.reset()
    yield
    origin.reset()


def signed(
    tree: Tree | bytes, parents: list[bytes] | None = None, message: bytes = b"Add secret.\n"
) -> Commit:
    """A commit signed by the origin; ``tree`` may be any object's id (a wrong type)."""
    c = Commit()
    c.tree = ObjectID(tree if isinstance(tree, bytes) else tree.id)
    c.parents = [ObjectID(p) for p in parents or []]
    c.author = c.committer = b"node <node>"
    c.author_time = c.commit_time = 1_700_000_000
    c.author_timezone = c.commit_timezone = 0
    c.message = message
    c.gpgsig = sshsig.sign(OWNER, c.raw_without_sig(), "git").encode()
    return c


def object_count(victim: Victim, vault: str = "work") -> int:
    with Node.open(victim.path, b"victim pw", allow_weak=True) as node:
        return len(node.store.keys(objects_ns(node.vaults.info(vault).id)))


def nothing_changed(victim: Victim, before: dict[str, Any], result: Any, codes: Any) -> None:
    codes = codes if isinstance(codes, tuple) else (codes,)
    assert result.returncode in codes, (result.returncode, result.stdout, result.stderr)
    assert victim.state() == before
    assert before["damage"] == []


# --- objects of the wrong type ----------------------------------------------------------------


def _commit_tree_is_a_blob(h: History) -> tuple[ShaFile, list[ShaFile]]:
    c = signed(h.b1.id)
    return c, [h.b1, c]


def _commit_parent_is_a_tree(h: History) -> tuple[ShaFile, list[ShaFile]]:
    c = signed(h.t1, parents=[h.t1.id])
    return c, [h.b1, h.t1, c]


def _commit_parent_is_a_blob(h: History) -> tuple[ShaFile, list[ShaFile]]:
    c = signed(h.t1, parents=[h.b1.id])
    return c, [h.b1, h.t1, c]


def _folder_is_a_blob(h: History) -> tuple[ShaFile, list[ShaFile]]:
    top = Tree()
    top.add(b"folder", 0o040000, h.b1.id)
    c = signed(top)
    return c, [h.b1, top, c]


def _file_is_a_tree(h: History) -> tuple[ShaFile, list[ShaFile]]:
    top = Tree()
    top.add(b"file", 0o100644, h.t1.id)
    c = signed(top)
    return c, [h.b1, h.t1, top, c]


def _file_is_a_commit(h: History) -> tuple[ShaFile, list[ShaFile]]:
    inner = signed(h.t1)
    top = Tree()
    top.add(b"file", 0o100644, inner.id)
    c = signed(top)
    return c, [h.b1, h.t1, inner, top, c]


WRONG_TYPES = [
    pytest.param(_commit_tree_is_a_blob, id="commit-tree-is-a-blob"),
    pytest.param(_commit_parent_is_a_tree, id="commit-parent-is-a-tree"),
    pytest.param(_commit_parent_is_a_blob, id="commit-parent-is-a-blob"),
    pytest.param(_folder_is_a_blob, id="folder-is-a-blob"),
    pytest.param(_file_is_a_tree, id="file-is-a-tree"),
    pytest.param(_file_is_a_commit, id="file-is-a-commit"),
]


@pytest.mark.parametrize("make", WRONG_TYPES)
def test_a_clone_whose_objects_name_objects_of_the_wrong_type_is_refused(
    victim: Victim,
    origin: ScriptedOrigin,
    make: Callable[[History], tuple[ShaFile, list[ShaFile]]],
) -> None:
    h = History()
    head, objects = make(h)
    origin.answer = lambda m, p: h.reply(head, objects, name="typed")
    before = victim.state()
    result = victim.pk("vaults", "clone", origin.node_id, "typed")
    nothing_changed(victim, before, result, 53)


def _pull_tree_is_a_local_blob(h: History) -> tuple[ShaFile, list[ShaFile]]:
    c = signed(h.b1.id, parents=[h.c1.id])  # the victim holds b1 (the blob of v1)
    return c, [c]


def _pull_tree_is_a_local_commit(h: History) -> tuple[ShaFile, list[ShaFile]]:
    c = signed(h.c1.id, parents=[h.c1.id])
    return c, [c]


def _pull_parent_is_a_local_tree(h: History) -> tuple[ShaFile, list[ShaFile]]:
    c = signed(h.t2, parents=[h.c1.id, h.t1.id])  # a merge whose second parent is v1's tree
    return c, [h.b2, h.t2, c]


def _pull_parent_is_a_local_blob(h: History) -> tuple[ShaFile, list[ShaFile]]:
    c = signed(h.t2, parents=[h.c1.id, h.b1.id])
    return c, [h.b2, h.t2, c]


def _pull_file_is_a_local_tree(h: History) -> tuple[ShaFile, list[ShaFile]]:
    top = Tree()
    top.add(b"password", 0o100644, h.t1.id)
    c = signed(top, parents=[h.c1.id])
    return c, [top, c]


def _pull_folder_is_a_local_blob(h: History) -> tuple[ShaFile, list[ShaFile]]:
    top = Tree()
    top.add(b"password", 0o040000, h.b1.id)
    c = signed(top, parents=[h.c1.id])
    return c, [top, c]


def _pull_folder_is_a_local_commit(h: History) -> tuple[ShaFile, list[ShaFile]]:
    top = Tree()
    top.add(b"password", 0o040000, h.c1.id)
    c = signed(top, parents=[h.c1.id])
    return c, [top, c]


LOCAL_WRONG_TYPES = [
    pytest.param(_pull_tree_is_a_local_blob, id="tree-is-a-local-blob"),
    pytest.param(_pull_tree_is_a_local_commit, id="tree-is-a-local-commit"),
    pytest.param(_pull_parent_is_a_local_tree, id="parent-is-a-local-tree"),
    pytest.param(_pull_parent_is_a_local_blob, id="parent-is-a-local-blob"),
    pytest.param(_pull_file_is_a_local_tree, id="file-is-a-local-tree"),
    pytest.param(_pull_folder_is_a_local_blob, id="folder-is-a-local-blob"),
    pytest.param(_pull_folder_is_a_local_commit, id="folder-is-a-local-commit"),
]


@pytest.mark.parametrize("make", LOCAL_WRONG_TYPES)
def test_a_pull_naming_the_vaults_own_objects_as_the_wrong_type_is_refused(
    victim: Victim,
    origin: ScriptedOrigin,
    make: Callable[[History], tuple[ShaFile, list[ShaFile]]],
) -> None:
    """The new objects name objects the victim already holds (so they are not sent): their
    type is the victim's to check, from its own store."""
    h = History()
    head, objects = make(h)
    origin.answer = lambda m, p: h.reply(head, objects)
    before = victim.state()
    result = victim.pk("vaults", "pull", "work")
    nothing_changed(victim, before, result, 53)


# --- the reserved tag file --------------------------------------------------------------------


def _with_tags(content: ShaFile) -> Callable[[History, list[bytes]], tuple[Commit, list[ShaFile]]]:
    """A commit on ``parents`` whose tree holds the secret `password` and, as `.polykey-tags`,
    ``content`` (a blob, or a tree: a folder)."""

    def make(h: History, parents: list[bytes]) -> tuple[Commit, list[ShaFile]]:
        top = Tree()
        top.add(b"password", 0o100644, h.b2.id)
        top.add(b".polykey-tags", 0o040000 if isinstance(content, Tree) else 0o100644, content.id)
        c = signed(top, parents=parents)
        inside = [h.b1] if isinstance(content, Tree) else []  # what the folder holds
        return c, [h.b2, *inside, content, top, c]

    return make


_NESTED = b'{"password": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
TAG_FILES = [
    pytest.param(Blob.from_string(b"{not json"), id="not-json"),
    pytest.param(Blob.from_string(b"\xff\xfe{}"), id="not-utf-8"),
    pytest.param(Blob.from_string(_NESTED), id="nested-100000-deep"),
    pytest.param(Blob.from_string(b"[1, 2]"), id="a-list"),
    pytest.param(Blob.from_string(b'{"password": "not a list"}'), id="tags-not-a-list"),
    pytest.param(Blob.from_string(b'{"../../x": ["a"]}'), id="path-outside-the-vault"),
    pytest.param(Blob.from_string(b'{"password": ["\\u001b]52;c;eA==\\u0007"]}'), id="escape-tag"),
    pytest.param(tree_with(b"password", data=b"v1")[0], id="a-folder"),
]


@pytest.mark.parametrize("content", TAG_FILES)
def test_a_pull_bringing_a_malformed_tag_file_is_refused(
    victim: Victim, origin: ScriptedOrigin, content: ShaFile
) -> None:
    h = History()
    head, objects = _with_tags(content)(h, [h.c1.id])
    origin.answer = lambda m, p: h.reply(head, objects)
    before = victim.state()
    result = victim.pk("vaults", "pull", "work")
    nothing_changed(victim, before, result, 53)


@pytest.mark.parametrize("content", [TAG_FILES[0], TAG_FILES[2], TAG_FILES[-1]])
def test_a_clone_bringing_a_malformed_tag_file_registers_nothing(
    victim: Victim, origin: ScriptedOrigin, content: ShaFile
) -> None:
    h = History()
    head, objects = _with_tags(content)(h, [])
    origin.answer = lambda m, p: h.reply(head, objects, name="tagged")
    before = victim.state()
    result = victim.pk("vaults", "clone", origin.node_id, "tagged")
    nothing_changed(victim, before, result, 53)


# --- text that reaches the terminal -----------------------------------------------------------

ESCAPES = [
    "\x1b[2J\x1b[H",  # clear the screen
    "\x1b]52;c;cm0gLXJmIH4K\x07",  # OSC 52: write the clipboard
    "\x1b]0;title\x1b\\",  # OSC 0 ended by ST: the window title
    "\u009b31m",  # C1 CSI
    "\u009d52;c;eA==\u009c",  # C1 OSC 52, ended by C1 ST
    "a\rforged line",
]
_C1 = re.compile("[\u0080-\u009f]")


def no_controls(*outputs: bytes) -> None:
    """Nothing a terminal would act on: no ESC, no C1 control, no carriage return or BEL."""
    for out in outputs:
        assert b"\x1b" not in out, out
        assert b"\x07" not in out and b"\r" not in out, out
        assert not _C1.search(out.decode("utf-8", "replace")), out


def test_a_scan_shows_vault_names_and_permissions_from_the_origin_escaped(
    victim: Victim, origin: ScriptedOrigin
) -> None:
    vaults = [
        {"id": f"v{i:026d}", "name": f"vault{text}", "permissions": ["clone", text]}
        for i, text in enumerate(ESCAPES)
    ]
    origin.answer = lambda m, p: {"vaults": vaults}
    result = victim.pk("vaults", "scan", origin.node_id)
    assert result.returncode == 0, result.stderr
    no_controls(result.stdout, result.stderr)
    assert result.stdout.count(b"vault") == len(ESCAPES)


def test_a_clone_shows_a_vault_name_or_an_error_from_the_origin_escaped(
    victim: Victim, origin: ScriptedOrigin
) -> None:
    h = History()
    text = "".join(ESCAPES)
    before = victim.state()
    origin.answer = lambda m, p: h.reply(h.c1, [h.b1, h.t1, h.c1], name=f"work{text}")
    by_id = victim.pk("vaults", "clone", origin.node_id, h.vault_id)  # the origin names it
    origin.answer = lambda m, p: Refusal(message=f"No such vault: {text}")
    refused = victim.pk("vaults", "clone", origin.node_id, "elsewhere")
    assert by_id.returncode == 3 and b"Not a valid vault name" in by_id.stderr, by_id.stderr
    assert refused.returncode == 51 and b"No such vault" in refused.stderr, refused.stderr
    no_controls(by_id.stdout, by_id.stderr, refused.stdout, refused.stderr)
    assert victim.state() == before


def test_commit_messages_from_the_origin_are_logged_escaped(
    victim: Victim, origin: ScriptedOrigin
) -> None:
    h = History()
    message = ("Change the password." + "".join(ESCAPES) + "\n").encode()
    c = signed(h.t2, parents=[h.c1.id], message=message)
    origin.answer = lambda m, p: h.reply(c, [h.b2, h.t2, c])
    pulled = victim.pk("vaults", "pull", "work")
    assert pulled.returncode == 0, pulled.stderr
    log = victim.pk("vaults", "log", "work")
    assert log.returncode == 0, log.stderr
    assert b"Change the password." in log.stdout
    no_controls(pulled.stdout, pulled.stderr, log.stdout, log.stderr)


# --- a slow origin, a hasty one, and one that gives too much ----------------------------------


def test_a_reply_trickled_in_small_pieces_is_waited_for_and_lands(
    victim: Victim, origin: ScriptedOrigin
) -> None:
    """Every frame, the hello too, in pieces of 32 bytes 5 ms apart: the puller reassembles
    them (the reply timeout bounds a trickle that never ends: docs/spec/peer-protocol.md)."""
    h = History()
    origin.trickle = (32, 0.005)
    origin.answer = lambda m, p: h.v2()
    result = victim.pk("vaults", "pull", "work")
    assert result.returncode == 0, result.stderr
    assert b"updated" in result.stdout
    assert victim.state()["vaults"]["work"][0] == h.c2.id


BROKE, VERSION = (50, b"connection broke"), (51, b"speaks protocol")


@pytest.mark.parametrize(
    ("hello", "command", "outcome"),
    [
        pytest.param(b"", "clone", BROKE, id="closed-before-the-hello"),
        pytest.param(None, "clone", BROKE, id="closed-after-the-hello-clone"),
        pytest.param(None, "pull", BROKE, id="closed-after-the-hello-pull"),
        pytest.param({"version": 2}, "clone", VERSION, id="version-2-clone"),
        pytest.param({"version": 2}, "pull", VERSION, id="version-2-pull"),
        pytest.param({"version": "1"}, "clone", VERSION, id="version-as-text"),
        pytest.param({"node_id": "x"}, "clone", VERSION, id="no-version"),
        pytest.param(["version", 1], "clone", (50, b"malformed"), id="hello-not-an-object"),
        pytest.param({"version": "\x1b]52;c;eA==\x07"}, "pull", VERSION, id="escape-as-version"),
    ],
)
def test_an_origin_that_hangs_up_or_speaks_another_version_changes_nothing(
    victim: Victim,
    origin: ScriptedOrigin,
    hello: Any,
    command: str,
    outcome: tuple[int, bytes],
) -> None:
    origin.hello = hello
    origin.answer = lambda m, p: b""  # a request after the hello: the channel closes
    before = victim.state()
    args = ("clone", origin.node_id, "work", "copy") if command == "clone" else ("pull", "work")
    result = victim.pk("vaults", *args)
    code, says = outcome
    nothing_changed(victim, before, result, code)
    assert says in result.stderr, result.stderr
    if outcome == VERSION:  # the hint speaks of versions, not of vaults
        assert b"pk: hint: The two nodes run versions" in result.stderr, result.stderr
    if hello is not None:
        assert "vaults.fetch" not in origin.asked  # nothing is asked of a node without a hello
    no_controls(result.stdout, result.stderr)


def _unrequested() -> list[ShaFile]:
    """500 blobs of 1 KiB, and a signed commit with its own tree: nothing v2 reaches."""
    junk: list[ShaFile] = [Blob.from_string(os.urandom(1024)) for _ in range(500)]
    tree, blob = tree_with(b"elsewhere", data=b"not in this vault's history")
    return [*junk, blob, tree, signed(tree)]


@pytest.mark.parametrize("command", ["clone", "pull"])
def test_objects_the_reply_carries_beyond_the_history_are_not_stored(
    victim: Victim, origin: ScriptedOrigin, command: str
) -> None:
    h = History()
    extra = _unrequested()
    if command == "pull":
        origin.answer = lambda m, p: h.reply(h.c2, [h.b2, h.t2, h.c2, *extra])
        before = object_count(victim)
        result = victim.pk("vaults", "pull", "work")
        stored = object_count(victim) - before
    else:
        origin.answer = lambda m, p: h.reply(h.c1, [h.b1, h.t1, h.c1, *extra], name="extra")
        result = victim.pk("vaults", "clone", origin.node_id, "extra")
        stored = object_count(victim, "extra")
    assert result.returncode == 0, result.stderr
    assert victim.state()["damage"] == []
    assert stored == 3, f"{stored} objects stored for a history of 3"
