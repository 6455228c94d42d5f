"""The hostile-git corpus (reference/security.md T-GIT-01…15) and the transport items of T-NET
that apply to our SSH design (T-NET-01 pinning, 10 ACL, 14 slow peers), against sharing.

Where an item is covered elsewhere, the mapping below names the test; the rest are here. Three
kinds of attack are run: objects fed to `sync.checks.validate` in-process (the one gate every clone,
pull and push goes through); a hostile *origin* (an SSH server built from network/ssh.py's
server pieces, speaking the `polykey` subsystem with scripted answers) against a real `pk`
process; and a hostile *client* (asyncssh with a node key) against a real agent. Two more
modules go on from here: test_tgit_packs.py (K) sends hand-made packs through stock `git push`
to a real agent, and test_tgit_origin.py (O) teaches the hostile origin more answers.

Mapping (S = test_share.py, V = test_validate.py, P = ../vaults/test_paths.py, K and O as
above; names without a file are in this module; [id] is a case of
test_a_hostile_origin_cannot_change_a_clone, K[id] one of K::test_a_hostile_pack_over_stock_
git_push_is_refused_and_the_agent_keeps_serving, which also bounds the agent's peak memory):

T-GIT-01 `.git` aliases, `..`: V::test_forbidden_names_in_a_tree_are_refused,
  P::test_names_that_git_treats_as_dot_git_are_refused; test_t_git_01_names_read_as_dot_git_or_
  dot_dot_are_refused, test_t_git_01_a_nested_dot_dot_is_refused, [dot-git] over the network;
  test_t_git_01_ntfs_stream_names_of_dot_git_are_refused,
  test_t_git_01_backslash_paths_are_refused,
  test_t_git_01_windows_device_and_drive_names_are_refused. `GIT~2` is accepted, as git
  does: only `git~1` can name the `.git` a checkout creates first.
T-GIT-02 symlinks: V::test_links_submodules_and_executables_are_refused;
  test_t_git_02_a_symlink_at_clone_registers_nothing, [symlink] in a later pull,
  test_t_git_11_12_hostile_pushes_change_nothing[symlink] in a push.
T-GIT-03 gitlinks, `.gitmodules`: V::test_links_submodules_and_executables_are_refused (160000);
  test_t_git_03_gitmodules_names_are_refused. Nothing can be spawned: fetch never runs git.
  Our own reserved file, `.polykey-tags`, not JSON, nested 100,000 deep, of the wrong shape, or
  a folder: O::test_a_pull_bringing_a_malformed_tag_file_is_refused,
  O::test_a_clone_bringing_a_malformed_tag_file_registers_nothing.
T-GIT-04 odd modes: V (100755); test_t_git_04_odd_modes_are_refused, [executable] push.
T-GIT-05 collisions: V::test_names_differing_only_by_case_are_refused;
  test_t_git_05_names_that_collide_after_normalising_are_refused (NFC/NFD, Kelvin, ß).
T-GIT-06 bombs: between nodes no pack or zlib stream is parsed (objects travel raw, in frames
  of at most 64 MiB): S::test_a_malformed_peer_frame_closes_that_channel_and_the_agent_keeps_
  serving[oversized] (server side), [oversized-frame] (client side); packs from stock `git push`:
  test_git_push.py::test_hostile_packs_are_refused_before_they_are_expanded;
  test_t_git_06_a_path_of_10000_folders_is_refused_quickly;
  test_t_git_06_a_tree_dag_bomb_does_not_hang_a_clone,
  test_t_git_06_a_cloned_vault_can_be_listed_in_bounded_time (the bomb is refused).
  Over stock `git push`, under a bound on the agent's peak memory: delta chains 10,000 deep
  K[ofs-chain-10000, ref-chain-10000 (deepest first), growing-chain-10000]; delta bombs
  K[delta-1KiB-to-1GiB, two-deltas-of-200MiB, three-deltas-of-100MiB, three-deltas-of-60MiB,
  five-deltas-of-60MiB]; zlib bombs and streams longer than their header K[header-says-1GiB,
  header-says-10GiB, 1KiB-header-1GiB-stream, 60MiB-header-1GiB-stream,
  blob-of-200MiB-in-200KiB, blob-of-60MiB-in-60KiB] (each object is held once).
T-GIT-07 content not hashing to its id: V::test_object_ids_are_computed_locally_so_a_wrong_name_
  cannot_enter; test_t_git_07_content_that_does_not_hash_to_the_named_id_is_refused,
  [tampered-blob]. Objects named as another type (a blob as a commit's tree, a tree as its
  parent, a tree as a file, ...), sent or already held:
  O::test_a_clone_whose_objects_name_objects_of_the_wrong_type_is_refused,
  O::test_a_pull_naming_the_vaults_own_objects_as_the_wrong_type_is_refused.
T-GIT-08 truncated transfers, missing bases: S::test_a_clone_cut_off_midway_leaves_no_partial_
  vault_and_a_retry_completes; thin packs from stock git: test_git_push.py;
  test_t_git_08_missing_bases_and_cut_objects_are_refused,
  test_t_git_08_a_truncated_reply_at_clone_registers_nothing, [truncated-frame], [empty-frame],
  [not-json], [missing-parent]; O::test_an_origin_that_hangs_up_or_speaks_another_version_
  changes_nothing[closed-before-the-hello, closed-after-the-hello-*]. Broken packs over stock
  `git push`: deltas on themselves or on nothing K[ref-delta-on-itself, ref-delta-cycle,
  ofs-delta-on-itself, ofs-before-the-pack, ofs-2-to-the-62, ofs-into-the-header,
  ofs-into-an-entry]; delta instructions out of bounds K[copy-past-the-base, copy-at-4GiB,
  result-smaller-than-declared, result-larger-than-declared, insert-larger-than-declared,
  wrong-base-size, instruction-zero, instruction-cut]; zlib streams K[stream-smaller-than-header,
  not-zlib]; the frame K[garbage-before-the-trailer, wrong-checksum, no-trailer,
  count-above-objects-sent, count-below-objects-sent, count-2-to-the-32-minus-1,
  endless-size-varint, type-5, tag-object]. More objects than the history needs are not
  stored: O::test_objects_the_reply_carries_beyond_the_history_are_not_stored (clone, pull),
  K::test_a_signed_push_carrying_objects_beyond_its_history_stores_only_its_history.
T-GIT-09 protocol garbage: our frames, server side: S (3 malformed frames, no hello); git
  pkt-lines to the agent's upload-pack and receive-pack: test_t_git_09_pkt_line_garbage_closes_
  the_git_service_and_the_agent_keeps_serving; malformed replies to a puller: [no-head],
  [number-as-head], [objects-not-a-list], [bad-base64], [nested-json]; a hello of another
  version, of none, or not an object: O::test_an_origin_that_hangs_up_or_speaks_another_
  version_changes_nothing. Terminal escapes (ESC, OSC 52, C1) in what an origin names:
  O::test_a_scan_shows_vault_names_and_permissions_from_the_origin_escaped,
  O::test_a_clone_shows_a_vault_name_or_an_error_from_the_origin_escaped,
  O::test_commit_messages_from_the_origin_are_logged_escaped.
T-GIT-10 ref attacks: no ref names cross, the head is an object id: [path-as-head] (pull),
  test_t_git_10_a_push_naming_a_path_as_head_changes_nothing (push); refs in a stock
  `git push`: test_git_push.py::test_any_ref_but_main_and_deletes_are_refused.
T-GIT-11 rewrites and replays: S::test_a_peer_serving_an_older_state_is_refused,
  S::test_local_commits_make_a_pull_that_needs_a_merge_fail_and_change_nothing;
  [rewritten-history], test_t_git_11_12_hostile_pushes_change_nothing[not-fast-forward].
T-GIT-12 signatures: V::test_an_unsigned_commit_is_refused, V::test_a_commit_signed_by_another_
  node_is_refused, V::test_a_signature_over_other_content_is_refused,
  S::test_push_without_the_push_grant_is_refused_and_changes_nothing; [stranger-signed],
  test_t_git_11_12_hostile_pushes_change_nothing[stranger-signed, unsigned]. Revoked keys: no
  key renewal yet. Commits are not bound to a vault id; the writers are per vault.
T-GIT-13 a reply for another vault: test_t_git_13_a_pull_answered_with_another_vault_is_refused,
  test_t_git_13_a_clone_answered_with_another_vault_is_refused;
  test_a_clone_named_by_a_hostile_origin_must_be_a_valid_vault_name.
T-GIT-14 kills: S::test_a_clone_cut_off_midway_leaves_no_partial_vault_and_a_retry_completes
  (serving agent killed mid-clone); test_t_git_14_kills_during_a_pull_leave_the_old_or_the_new_
  state (the puller killed at a sweep of moments, then the serving agent killed mid-pull).
T-GIT-15 fuzzing: test_t_git_15_fuzzed_tree_names_never_admit_a_dot_git_alias,
  test_t_git_15_fuzzed_objects_are_only_ever_refused_cleanly; P (hypothesis over paths).
T-NET-01 wrong key: S::test_a_node_whose_key_is_not_the_pinned_one_is_unreachable;
  test_t_net_01_a_clone_from_a_node_with_another_key_never_reaches_it.
T-NET-10 ACL: S::test_a_vault_not_shared_answers_like_a_missing_one,
  S::test_after_unshare_pull_is_refused_and_the_clone_is_unchanged,
  test_git_clone.py::test_stock_git_without_permission_sees_no_repository,
  test_three_agents.py; test_t_net_10_revocation_applies_to_the_next_request_on_an_open_channel.
T-NET-14 slow peers: test_t_net_14_stalled_connections_and_idle_channels_do_not_block_others
  (server side); test_an_agent_keeps_answering_while_a_peer_call_hangs (client side);
  test_limits.py: the bounds on connections, handshakes in progress, connections per NodeId,
  channels per connection, and silent stock git clients; an origin trickling its replies 32
  bytes at a time: O::test_a_reply_trickled_in_small_pieces_is_waited_for_and_lands.

T-NET-02…09, 11…13 concern Noise/TLS handshakes, relays, discovery, sigchains, identities,
pairing and merge policy, none of which exist yet (SSH with pinned keys is the transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from dulwich.objects import Blob, Commit, ShaFile, Tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polykey.codec import from_wire
from polykey.crypto.signing import SigningKey
from polykey.ids import decode_node_id, encode_node_id, node_id_from_bytes
from polykey.network.graph import Address
from polykey.network.ssh import (
    MAX_CHANNELS_PER_CONNECTION,
    PeerClient,
    PeerError,
    PeerLimits,
    PeerUnreachable,
    ssh_key,
)
from polykey.network.sshserver import _Server
from polykey.network.wire import frame_of as _frame
from polykey.network.wire import read_frame as _read_frame
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.sync.checks import UpdateRefused, validate
from tests.support import pk_env, run_pk
from tests.sync.test_share import Pair, free_port, pair  # noqa: F401 - the two-node fixture
from tests.sync.test_three_agents import agent_pid, stop_agent
from tests.sync.test_validate import OWNER, STRANGER, commit, raw, tree_with

BUG = "BUG: "
PUSHER = SigningKey(bytes(range(2, 34)))
READER = SigningKey(bytes(range(3, 35)))
REVOKED = SigningKey(bytes(range(4, 36)))
IMPOSTOR = SigningKey(bytes(range(5, 37)))


def node_id(key: SigningKey) -> str:
    return encode_node_id(node_id_from_bytes(key.public))


def refused(objects: list[ShaFile], head: ShaFile, match: str | None = None) -> None:
    with pytest.raises(UpdateRefused, match=match):
        validate([raw(o) for o in objects], head.id, lambda _s: False, {OWNER.public})


def one_entry(name: bytes, mode: int = 0o100644) -> tuple[list[ShaFile], Commit]:
    tree, blob = tree_with(name, mode)
    c = commit(tree)
    return [blob, tree, c], c


# --- in-process: what validate() lets through -------------------------------------------------

DOT_GIT_ALIASES = [
    ".GIT",
    ".Git",
    ".gIt",
    ".git.",
    ".git ",
    ".git. . ",
    ".git...",
    "git~1",
    "GIT~1",
    "Git~1.",
    ".gi\u200ct",
    ".g\u200dit",
    "\ufeff.git",
    ".git\u200e",
    "\u206a.GIT",
    "..",
    ".",
]


@pytest.mark.parametrize("name", DOT_GIT_ALIASES, ids=ascii)
def test_t_git_01_names_read_as_dot_git_or_dot_dot_are_refused(name: str) -> None:
    objects, head = one_entry(name.encode())
    refused(objects, head, "forbidden name")


def test_t_git_01_a_nested_dot_dot_is_refused() -> None:
    blob = Blob.from_string(b"x")
    inner = Tree()
    inner.add(b"..", 0o040000, blob.id)
    inner.add(b"b", 0o100644, blob.id)
    outer = Tree()
    outer.add(b"a", 0o040000, inner.id)
    c = commit(outer)
    refused([blob, inner, outer, c], c, "forbidden name")


@pytest.mark.parametrize("name", [".git::$INDEX_ALLOCATION", ".git:", "git~1:stream", ".GIT.:x"])
def test_t_git_01_ntfs_stream_names_of_dot_git_are_refused(name: str) -> None:
    objects, head = one_entry(name.encode())
    refused(objects, head)


@pytest.mark.parametrize("name", [".git\\hooks\\post-checkout", "..\\..\\escape", "a\\.git"])
def test_t_git_01_backslash_paths_are_refused(name: str) -> None:
    objects, head = one_entry(name.encode())
    refused(objects, head)


@pytest.mark.parametrize("name", ["C:x", "con", "nul.txt", "AUX", "com1.env", "lpt\u00b9"])
def test_t_git_01_windows_device_and_drive_names_are_refused(name: str) -> None:
    objects, head = one_entry(name.encode())
    refused(objects, head)


@pytest.mark.parametrize(
    "name", [".gitmodules", ".GITMODULES", ".gitmodules.", "gitmod~1", ".gitmodules\r", "x\r"]
)
def test_t_git_03_gitmodules_names_are_refused(name: str) -> None:
    objects, head = one_entry(name.encode())
    refused(objects, head, "forbidden name")


@pytest.mark.parametrize("mode", [0o104755, 0o100777, 0o100664, 0o100600, 0o100000, 0o040755])
def test_t_git_04_odd_modes_are_refused(mode: int) -> None:
    objects, head = one_entry(b"secret", mode)
    refused(objects, head, "odd mode")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("\u00e9", "e\u0301"),  # é in NFC and NFD
        ("\u00c9t\u00e9", "e\u0301t\u00e9"),  # and differing by case too
        ("A.txt", "a.txt"),
        ("\u212a", "k"),  # KELVIN SIGN normalises to K
        ("stra\u00dfe", "STRASSE"),  # full case folding
    ],
    ids=["nfc-nfd", "nfd-and-case", "case", "kelvin", "sharp-s"],
)
def test_t_git_05_names_that_collide_after_normalising_are_refused(first: str, second: str) -> None:
    blob = Blob.from_string(b"x")
    tree = Tree()
    tree.add(first.encode(), 0o100644, blob.id)
    tree.add(second.encode(), 0o100644, blob.id)
    c = commit(tree)
    refused([blob, tree, c], c, "differ by case")


def test_t_git_06_a_path_of_10000_folders_is_refused_quickly() -> None:
    blob = Blob.from_string(b"x")
    objects: list[ShaFile] = [blob]
    inner = Tree()
    inner.add(b"leaf", 0o100644, blob.id)
    objects.append(inner)
    for _ in range(10_000):
        outer = Tree()
        outer.add(b"d", 0o040000, inner.id)
        objects.append(outer)
        inner = outer
    c = commit(inner)
    started = time.monotonic()
    refused([*objects, c], c, "too deep")
    assert time.monotonic() - started < 5


def test_t_git_07_content_that_does_not_hash_to_the_named_id_is_refused() -> None:
    tree, _ = tree_with(b"password", data=b"what the tree names")
    c = commit(tree)
    refused([Blob.from_string(b"something else"), tree, c], c, "missing")
    # the head is named by id too: a commit whose content is not that id is not the head
    forged = commit(tree)
    forged.message = b"Another message.\n"
    with pytest.raises(UpdateRefused, match="head is missing"):
        validate([raw(forged), raw(tree)], c.id, lambda _s: False, {OWNER.public})


def test_t_git_08_missing_bases_and_cut_objects_are_refused() -> None:
    tree, blob = tree_with(b"a")
    parent = commit(tree)
    child = commit(tree, parents=[parent.id])
    refused([blob, tree, child], child, "missing objects")  # a thin transfer without its base
    for cut in (raw(child)[: len(raw(child)) // 2], raw(tree)[:-7]):
        with pytest.raises(UpdateRefused):
            validate([raw(blob), raw(tree), cut], child.id, lambda _s: False, {OWNER.public})


# --- T-GIT-15: fuzzing validate() ---------------------------------------------------------------

_IGNORED = dict.fromkeys(
    map(
        ord,
        "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
        "\u206a\u206b\u206c\u206d\u206e\u206f\ufeff",
    )
)


def reads_as_dot_git(name: bytes) -> bool:
    """Whether a checkout on HFS+ (ignorable code points, case) or NTFS (trailing dots and
    spaces, the 8.3 name) could open ``name`` as `.git` (git's is_hfs_dotgit/is_ntfs_dotgit,
    written again here; NTFS streams and backslashes have their own tests above)."""
    text = name.decode("utf-8", "replace")
    plain = text.translate(_IGNORED).casefold()
    return plain.rstrip(". ") in {".git", "git~1"}


TOKENS = [
    ".git",
    ".GIT",
    "git~1",
    ".",
    " ",
    "\u200c",
    "\ufeff",
    "e\u0301",
    "\u00e9",
    "a",
    "/",
    "\x00",
    "\x7f",
    "\r",
    "..",
    "~",
    "\xff",
]


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    st.one_of(
        st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6).map(
            lambda parts: "".join(parts).encode("utf-8", "surrogateescape")
        ),
        st.binary(min_size=1, max_size=12),
    )
)
def test_t_git_15_fuzzed_tree_names_never_admit_a_dot_git_alias(name: bytes) -> None:
    if b"/" in name or b"\x00" in name:
        return  # not representable as one tree entry
    objects, head = one_entry(name)
    try:
        validate([raw(o) for o in objects], head.id, lambda _s: False, {OWNER.public})
    except UpdateRefused:
        return
    text = name.decode("utf-8")  # accepted names are text ...
    assert not reads_as_dot_git(name)  # ... never `.git` under another spelling
    assert text not in (".", "..")
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def known_like_a_pull(sha: bytes) -> bool:
    """What a pull asks the node file: whether it holds the object with this (hex) id."""
    return bytes.fromhex(sha.decode()) == b"\x00" * 20


_KINDS = {1: b"commit", 2: b"tree", 3: b"blob"}
_TREE, _BLOB = tree_with(b"a")
_REAL = [raw(_BLOB), raw(_TREE), raw(commit(_TREE))]


def git_id(obj: bytes) -> bytes:
    """The id validate() computes for ``obj`` (type byte, then the raw object)."""
    if not obj or obj[0] not in _KINDS:
        return b"0" * 40
    header = b"%s %d\x00" % (_KINDS[obj[0]], len(obj) - 1)
    return hashlib.sha1(header + obj[1:]).hexdigest().encode()


@st.composite
def hostile_object(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["junk", "flipped", "cut", "spliced", "real"]))
    if how == "junk":
        return bytes([draw(st.sampled_from([0, 1, 2, 3, 4, 7, 255]))]) + draw(
            st.binary(max_size=200)
        )
    base = draw(st.sampled_from(_REAL))
    at = draw(st.integers(1, len(base) - 1))
    if how == "flipped":
        return base[:at] + bytes([base[at] ^ draw(st.integers(1, 255))]) + base[at + 1 :]
    if how == "cut":
        return base[:at]
    if how == "spliced":
        return base[:at] + draw(st.binary(min_size=1, max_size=40)) + base[at:]
    return base


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(hostile_object(), min_size=1, max_size=4), st.data())
def test_t_git_15_fuzzed_objects_are_only_ever_refused_cleanly(
    objects: list[bytes], data: st.DataObject
) -> None:
    """Damaged real objects and junk: validate() refuses (UpdateRefused) or accepts, and asks
    the node file only about well-formed ids (a pull's lookup decodes them as hex)."""
    head = git_id(data.draw(st.sampled_from([*objects, _REAL[2]])))
    with contextlib.suppress(UpdateRefused):
        validate(objects, head, known_like_a_pull, {OWNER.public})


# --- a hostile origin: an SSH server answering `polykey` requests from a script ---------------

Answer = Callable[[str, dict[str, Any]], Any]


class HostileOrigin:
    """Serves the `polykey` subsystem with the node key ``key`` from a thread of this process;
    ``answer(method, params)`` gives a result (a dict) or raw bytes to write before closing
    the channel. The hello is answered, unless ``silent``: then nothing is ever answered."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.node_id = node_id(key)
        self.answer: Answer = lambda m, p: {}
        self.silent = False
        self.channels = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._run(self._start())
        self.port = int(self.server.sockets[0].getsockname()[1])

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> Any:
        return await asyncssh.create_server(
            lambda: _Server(PeerLimits(), self._process),
            "127.0.0.1",
            0,
            server_host_keys=[ssh_key(self.key.openssh_private_pem())],
            encoding=None,
            allow_scp=False,
            allow_pty=False,
            line_editor=False,
        )

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
                if self.silent:
                    await asyncio.Event().wait()
                if method == "peer.hello":
                    result: Any = {"version": 1, "node_id": self.node_id}
                else:
                    result = self.answer(method, from_wire(request.get("params", {})))
                if isinstance(result, bytes):
                    proc.stdout.write(result)
                    return
                proc.stdout.write(_frame({"jsonrpc": "2.0", "id": request["id"], "result": result}))
        finally:
            with contextlib.suppress(Exception):
                proc.exit(0)

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        self._run(shut())
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class History:
    """A vault as the hostile origin holds it: v1, then v2 on top (both signed by it)."""

    vault_id: str = "vhostile0000000000000000000"

    def __post_init__(self) -> None:
        self.t1, self.b1 = tree_with(b"password", data=b"v1")
        self.c1 = commit(self.t1)
        self.t2, self.b2 = tree_with(b"password", data=b"v2")
        self.c2 = commit(self.t2, parents=[self.c1.id])

    def reply(
        self, head: ShaFile, objects: list[ShaFile], vault_id: str | None = None, name: str = "work"
    ) -> dict[str, Any]:
        return {
            "vault": {"id": vault_id or self.vault_id, "name": name},
            "head": head.id.decode(),
            "writers": [],
            "objects": [raw(o) for o in objects],
        }

    def v1(self) -> dict[str, Any]:
        return self.reply(self.c1, [self.b1, self.t1, self.c1])

    def v2(self, **kw: Any) -> dict[str, Any]:
        return self.reply(self.c2, [self.b2, self.t2, self.c2], **kw)


def frame_bytes(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


@dataclass
class Victim:
    path: Path
    env: dict[str, str]

    def pk(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        r = run_pk(*args, env=self.env, timeout=timeout)
        assert b"Traceback" not in r.stderr
        return r

    def state(self) -> dict[str, Any]:
        """Every vault with its head and origin, and whether the node file checks whole."""
        with Node.open(self.path, b"victim pw", allow_weak=True) as node:
            vaults = {
                i.name: (node.vaults.open(i.name).head(), i.origin) for i in node.vaults.all()
            }
            return {"vaults": vaults, "damage": node.check()}


@pytest.fixture(scope="module")
def origin() -> Iterator[HostileOrigin]:
    peer = HostileOrigin(OWNER)
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture(scope="module")
def template(origin: HostileOrigin, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node with `work` cloned (by `pk`) from the hostile origin at v1."""
    path = tmp_path_factory.mktemp("template") / "victim.pk"
    node, _ = Node.bootstrap(path, b"victim pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        node.graph.add(decode_node_id(origin.node_id), Address("127.0.0.1", origin.port))
    history = History()
    origin.answer = lambda m, p: history.v1()
    env = pk_env(path, PK_PASSWORD="victim pw", PK_RUNTIME_DIR=str(path.parent / "r"))
    r = run_pk("vaults", "clone", origin.node_id, "work", env=env)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def victim(template: Path, origin: HostileOrigin, tmp_path: Path) -> Iterator[Victim]:
    path = tmp_path / "victim.pk"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{template}{suffix}").exists():
            shutil.copy(f"{template}{suffix}", f"{path}{suffix}")
    env = pk_env(path, PK_PASSWORD="victim pw", PK_RUNTIME_DIR=str(tmp_path / "run"))
    try:
        yield Victim(path, env)
    finally:
        origin.answer = lambda m, p: {}
        origin.silent = False


def _with_head(value: Any) -> Answer:
    return lambda m, p: {**History().v2(), "head": value}


def _without(key: str) -> Answer:
    return lambda m, p: {k: v for k, v in History().v2().items() if k != key}


def _symlink() -> Answer:
    h = History()
    tree, blob = tree_with(b"link", 0o120000, b"../../..")
    c = commit(tree, parents=[h.c1.id])
    return lambda m, p: h.reply(c, [blob, tree, c])


def _dot_git() -> Answer:
    h = History()
    hooks, blob = tree_with(b"post-checkout", data=b"#!/bin/sh\necho owned\n")
    top = Tree()
    top.add(b".git", 0o040000, hooks.id)
    c = commit(top, parents=[h.c1.id])
    return lambda m, p: h.reply(c, [blob, hooks, top, c])


def _rewritten() -> Answer:
    h = History()
    c = commit(h.t2)  # v2 without v1 under it
    return lambda m, p: h.reply(c, [h.b2, h.t2, c])


def _stranger() -> Answer:
    h = History()
    c = commit(h.t2, key=STRANGER, parents=[h.c1.id])
    return lambda m, p: h.reply(c, [h.b2, h.t2, c])


def _tampered_blob() -> Answer:
    h = History()
    return lambda m, p: h.reply(h.c2, [Blob.from_string(b"not v2"), h.t2, h.c2])


def _missing_parent() -> Answer:
    h = History()
    elsewhere = commit(h.t1, parents=[h.c1.id])
    elsewhere.message = b"A commit never sent.\n"
    c = commit(h.t2, parents=[elsewhere.id])
    return lambda m, p: h.reply(c, [h.b2, h.t2, c])


def _bug(reason: str) -> Any:
    return pytest.mark.xfail(strict=True, reason=BUG + reason)


MALFORMED = "malformed replies from an origin are an Internal error (exit 70) in the puller"
REFUSED = (50, 51, 53)  # unreachable, refused by the peer, refused here: any clear refusal
ATTACKS = [
    pytest.param(_symlink(), 53, "link", id="symlink"),
    pytest.param(_dot_git(), 53, "forbidden name", id="dot-git"),
    pytest.param(_rewritten(), 53, "rewrote the history", id="rewritten-history"),
    pytest.param(_stranger(), 53, "allowed to write", id="stranger-signed"),
    pytest.param(_tampered_blob(), 53, "missing", id="tampered-blob"),
    pytest.param(_missing_parent(), 53, "missing", id="missing-parent"),
    pytest.param(lambda m, p: frame_bytes(b""), 50, "connection broke", id="empty-frame"),
    pytest.param(lambda m, p: b"\x7f\xff\xff\xff", 50, "connection broke", id="oversized-frame"),
    pytest.param(
        lambda m, p: (4000).to_bytes(4, "big") + b'{"jsonrpc": "2.0", "id": 2, "res',
        50,
        "connection broke",
        id="truncated-frame",
    ),
    pytest.param(lambda m, p: frame_bytes(b"hello"), 50, "connection broke", id="not-json"),
    pytest.param(_with_head("../../../../tmp/x"), REFUSED, "", id="path-as-head"),
    pytest.param(_with_head(7), REFUSED, "", id="number-as-head"),
    pytest.param(_without("head"), REFUSED, "", id="no-head"),
    pytest.param(
        lambda m, p: {**History().v2(), "objects": 5}, REFUSED, "", id="objects-not-a-list"
    ),
    pytest.param(
        lambda m, p: frame_bytes(
            b'{"jsonrpc":"2.0","id":2,"result":{"vault":{"id":"v","name":"work"},'
            b'"head":"00","writers":[],"objects":[{"$b64":"not base64!"}]}}'
        ),
        REFUSED,
        "",
        id="bad-base64",
    ),
    pytest.param(
        lambda m, p: frame_bytes(b"[" * 50_000 + b"]" * 50_000), REFUSED, "", id="nested-json"
    ),
]


@pytest.mark.parametrize(("answer", "exit_code", "message"), ATTACKS)
def test_a_hostile_origin_cannot_change_a_clone(
    victim: Victim,
    origin: HostileOrigin,
    answer: Answer,
    exit_code: int | tuple[int, ...],
    message: str,
) -> None:
    before = victim.state()
    origin.answer = answer
    result = victim.pk("vaults", "pull", "work")
    codes = exit_code if isinstance(exit_code, tuple) else (exit_code,)
    assert result.returncode in codes, result.stderr
    assert message.encode() in result.stderr
    assert victim.state() == before
    assert before["damage"] == []


def test_t_git_13_a_pull_answered_with_another_vault_is_refused(
    victim: Victim, origin: HostileOrigin
) -> None:
    before = victim.state()
    origin.answer = lambda m, p: History().v2(vault_id="vanothervault00000000000000", name="x")
    result = victim.pk("vaults", "pull", "work")
    assert result.returncode in REFUSED, result.stdout
    assert victim.state() == before


def test_t_git_13_a_clone_answered_with_another_vault_is_refused(
    victim: Victim, origin: HostileOrigin
) -> None:
    before = victim.state()
    origin.answer = lambda m, p: (
        History().v1() | {"vault": {"id": "vanothervault00000000000000", "name": "other"}}
    )
    result = victim.pk("vaults", "clone", origin.node_id, "payroll")
    assert result.returncode != 0, result.stdout
    assert victim.state() == before


def test_a_clone_named_by_a_hostile_origin_must_be_a_valid_vault_name(
    victim: Victim, origin: HostileOrigin
) -> None:
    before = victim.state()
    h = History()
    origin.answer = lambda m, p: h.reply(h.c1, [h.b1, h.t1, h.c1], name="../../escape")
    result = victim.pk("vaults", "clone", origin.node_id, "../../escape")
    assert result.returncode == 3, result.stderr
    assert b"Not a valid vault name" in result.stderr
    assert victim.state() == before


def test_t_git_02_a_symlink_at_clone_registers_nothing(
    victim: Victim, origin: HostileOrigin
) -> None:
    tree, blob = tree_with(b"link", 0o120000, b"/etc/passwd")
    c = commit(tree)
    origin.answer = lambda m, p: History().reply(c, [blob, tree, c], name="linked")
    before = victim.state()
    result = victim.pk("vaults", "clone", origin.node_id, "linked")
    assert result.returncode == 53 and b"link" in result.stderr
    assert victim.state() == before


def test_t_git_08_a_truncated_reply_at_clone_registers_nothing(
    victim: Victim, origin: HostileOrigin
) -> None:
    body = _frame({"jsonrpc": "2.0", "id": 2, "result": History().v1()})
    origin.answer = lambda m, p: body[: len(body) // 2]
    before = victim.state()
    result = victim.pk("vaults", "clone", origin.node_id, "work", "second")
    assert result.returncode == 50, result.stderr
    assert victim.state() == before


def test_t_net_01_a_clone_from_a_node_with_another_key_never_reaches_it(
    victim: Victim, origin: HostileOrigin
) -> None:
    asked = {"n": 0}

    def count(m: str, p: dict[str, Any]) -> Any:
        asked["n"] += 1
        return History().v1()

    origin.answer = count
    impostor = node_id(IMPOSTOR)  # the victim believes IMPOSTOR's node is at the origin's port
    assert victim.pk("nodes", "add", impostor, f"127.0.0.1:{origin.port}").returncode == 0
    before = victim.state()
    result = victim.pk("vaults", "clone", impostor, "work", "copy")
    assert result.returncode == 50, result.stderr
    assert asked["n"] == 0  # no request was sent: the host key did not match the pinned one
    assert victim.state() == before


def _dag_bomb(levels: int) -> tuple[list[ShaFile], Commit]:
    blob = Blob.from_string(b"x")
    level = Tree()
    level.add(b"leaf", 0o100644, blob.id)
    objects: list[ShaFile] = [blob, level]
    for _ in range(levels):
        up = Tree()
        up.add(b"a", 0o040000, level.id)
        up.add(b"b", 0o040000, level.id)
        objects.append(up)
        level = up
    return objects, commit(level)


def test_t_git_06_a_tree_dag_bomb_does_not_hang_a_clone(
    victim: Victim, origin: HostileOrigin
) -> None:
    """40 levels of trees, each naming the one below twice: 42 objects, 2^40 paths. Each
    object is checked once; walking every path for its depth would never end."""
    objects, c = _dag_bomb(40)
    origin.answer = lambda m, p: History().reply(c, [*objects, c], name="bomb")
    before = victim.state()
    result = victim.pk("vaults", "clone", origin.node_id, "bomb", timeout=8)
    assert result.returncode == 53, result.stderr
    assert b"paths" in result.stderr
    assert victim.state() == before


def test_t_git_06_a_cloned_vault_can_be_listed_in_bounded_time(
    victim: Victim, origin: HostileOrigin
) -> None:
    objects, c = _dag_bomb(40)
    origin.answer = lambda m, p: History().reply(c, [*objects, c], name="bomb")
    if victim.pk("vaults", "clone", origin.node_id, "bomb", timeout=8).returncode == 0:
        listed = victim.pk("secrets", "ls", "-R", "bomb", timeout=5)
        assert listed.returncode == 0


def test_an_agent_keeps_answering_while_a_peer_call_hangs(
    victim: Victim, origin: HostileOrigin
) -> None:
    assert victim.pk("agent", "start", "--background").returncode == 0
    origin.silent = True
    seen = origin.channels
    ping = subprocess.Popen(
        [sys.executable, "-m", "polykey", "nodes", "ping", origin.node_id],
        env=victim.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while origin.channels == seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert origin.channels > seen, "the ping never reached the origin"
        listed = victim.pk("vaults", "list", timeout=5)  # hangs behind the ping
        assert listed.returncode == 0 and b"work" in listed.stdout
    finally:
        ping.kill()
        ping.wait()
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(agent_pid(victim.env), signal.SIGKILL)  # type: ignore[arg-type]


# --- hostile clients against a real agent ---------------------------------------------------


@dataclass
class Owner:
    env: dict[str, str]
    node_id: str
    port: int
    path: Path

    def pk(self, *args: str, stdin: bytes | None = None) -> str:
        r = run_pk(*args, env=self.env, input=stdin)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()

    def head(self, vault: str = "work") -> bytes | None:
        with Node.open(self.path, b"owner pw", allow_weak=True) as node:
            return node.vaults.open(vault).head()


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owner]:
    """An agent serving `work` (READER may clone, PUSHER may push) and `acl` (REVOKED)."""
    folder = tmp_path_factory.mktemp("owner")
    path = folder / "owner.pk"
    node, _ = Node.bootstrap(path, b"owner pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        acl = node.acl
        work = node.vaults.create("work")
        work.write("db/password", b"owner's")
        acl.grant(work.id, decode_node_id(node_id(READER)), ["scan", "clone", "pull"])
        acl.grant(work.id, decode_node_id(node_id(PUSHER)), ["clone", "pull", "push"])
        other = node.vaults.create("acl")
        other.write("k", b"v")
        acl.grant(other.id, decode_node_id(node_id(REVOKED)), ["scan", "clone", "pull"])
        me = Owner(
            pk_env(path, PK_PASSWORD="owner pw", PK_RUNTIME_DIR=str(folder / "r")),
            encode_node_id(node.node_id),
            free_port(),
            path,
        )
    me.pk("agent", "start", "--background", "--port", str(me.port))
    try:
        yield me
    finally:
        stop_agent(me.env)


def talk(owner: Owner, key: SigningKey, job: Callable[[PeerClient], Any]) -> Any:
    async def run() -> Any:
        client = await PeerClient.connect(
            ssh_key(key.openssh_private_pem()),
            decode_node_id(owner.node_id),
            "127.0.0.1",
            owner.port,
        )
        try:
            return await asyncio.wait_for(job(client), 20)
        finally:
            client.close()

    return asyncio.run(run())


def still_serving(owner: Owner) -> None:
    reply = talk(owner, READER, lambda c: c.call("vaults.fetch", {"vault": "work", "haves": []}))
    assert reply["head"] == owner.head().decode()  # type: ignore[union-attr]


GARBAGE = [b"-001", b"zzzz", b"0003", b"0010short", b"ffff" + b"w" * 100, b"0000" * 3 + b"\xff"]


@pytest.mark.parametrize("garbage", GARBAGE, ids=ascii)
@pytest.mark.parametrize(
    ("service", "key"),
    [("git-upload-pack", READER), ("git-receive-pack", PUSHER)],
    ids=["upload-pack", "receive-pack"],
)
def test_t_git_09_pkt_line_garbage_closes_the_git_service_and_the_agent_keeps_serving(
    owner: Owner, service: str, key: SigningKey, garbage: bytes
) -> None:
    before = owner.head()

    async def attack(client: PeerClient) -> bytes:
        proc = await client.conn.create_process(f"{service} 'work'", encoding=None)
        advert = b""
        while not advert.endswith(b"0000"):  # the refs, then a flush
            chunk = await proc.stdout.read(65536)
            assert chunk, advert
            advert += chunk
        assert b"refs/heads/main" in advert
        proc.stdin.write(garbage)
        proc.stdin.write_eof()
        rest = b""
        while chunk := await proc.stdout.read(65536):
            rest += chunk
        await proc.wait_closed()
        return rest

    rest = talk(owner, key, attack)  # within talk's 20 s: no hang
    assert b"PACK" not in rest  # nothing was served for garbage
    assert owner.head() == before
    still_serving(owner)


def _push(owner: Owner, make: Callable[[bytes, list[bytes]], dict[str, Any]]) -> Any:
    """Fetch `work` as PUSHER, then send what ``make(head, objects)`` builds as a push."""

    async def job(client: PeerClient) -> Any:
        current = await client.call("vaults.fetch", {"vault": "work", "haves": []})
        params = make(current["head"].encode(), current["objects"])
        try:
            return await client.call("vaults.receive", {"vault": "work", **params})
        except (PeerError, PeerUnreachable) as exc:
            return exc

    return talk(owner, PUSHER, job)


def _tree_of(head: bytes, objects: list[bytes]) -> Tree:
    for o in objects:
        obj = ShaFile.from_raw_string(o[0], o[1:])
        if obj.id == head:
            assert isinstance(obj, Commit)
            tree_id = obj.tree
    for o in objects:
        obj = ShaFile.from_raw_string(o[0], o[1:])
        if obj.id == tree_id:
            assert isinstance(obj, Tree)
            return obj
    raise AssertionError("no tree")


def _on_top(key: SigningKey | None, name: bytes, mode: int = 0o100644, parent: bool = True) -> Any:
    def make(head: bytes, objects: list[bytes]) -> dict[str, Any]:
        tree = _tree_of(head, objects)
        blob = Blob.from_string(b"pushed")
        tree.add(name, mode, blob.id)
        c = commit(tree, key=key, parents=[head] if parent else [])
        return {"head": c.id.decode(), "objects": [raw(blob), raw(tree), raw(c)]}

    return make


PUSHES = [
    pytest.param(_on_top(STRANGER, b"x"), "allowed to write", id="stranger-signed"),
    pytest.param(_on_top(PUSHER, b"x", parent=False), "fast-forward", id="not-fast-forward"),
    pytest.param(_on_top(PUSHER, b".git"), "forbidden name", id="dot-git"),
    pytest.param(_on_top(PUSHER, b"x", 0o120000), "link", id="symlink"),
    pytest.param(_on_top(PUSHER, b"x", 0o100755), "odd mode", id="executable"),
    pytest.param(_on_top(None, b"x"), "not signed", id="unsigned"),
]


@pytest.mark.parametrize(("make", "message"), PUSHES)
def test_t_git_11_12_hostile_pushes_change_nothing(
    owner: Owner, make: Callable[[bytes, list[bytes]], dict[str, Any]], message: str
) -> None:
    before = owner.head()
    outcome = _push(owner, make)
    assert isinstance(outcome, PeerError), outcome
    assert message in str(outcome)
    assert owner.head() == before
    still_serving(owner)


@pytest.mark.parametrize("head", ["../../../../tmp/x", "refs/heads/..", "HEAD", "z" * 40])
def test_t_git_10_a_push_naming_a_path_as_head_changes_nothing(owner: Owner, head: str) -> None:
    before = owner.head()

    def make(current: bytes, objects: list[bytes]) -> dict[str, Any]:
        params = _on_top(PUSHER, b"x")(current, objects)
        return {**params, "head": head}

    outcome = _push(owner, make)
    assert isinstance(outcome, PeerError | PeerUnreachable), outcome  # an error or a closed channel
    assert owner.head() == before
    still_serving(owner)


def test_t_net_10_revocation_applies_to_the_next_request_on_an_open_channel(
    owner: Owner,
) -> None:
    async def job(client: PeerClient) -> tuple[str, str, str, list[Any]]:
        first = await client.call("vaults.fetch", {"vault": "acl", "haves": []})
        assert first["vault"]["name"] == "acl"
        await asyncio.to_thread(owner.pk, "vaults", "unshare", "acl", node_id(REVOKED))
        messages = []
        for params in (
            {"vault": "acl", "haves": []},  # the same channel, straight after
            {"vault": "acl", "haves": [first["head"]]},  # guessing ids it knows
            {"vault": first["vault"]["id"], "haves": []},
            {"vault": "no-such-vault", "haves": []},
        ):
            try:
                await client.call("vaults.fetch", params)
                messages.append("fetched")
            except PeerError as exc:
                messages.append(exc.message)
        scan = await client.call("vaults.scan", {})
        return messages[0], messages[1], messages[3], [messages[2], scan["vaults"]]

    same, guessed, missing, (by_id, scanned) = talk(owner, REVOKED, job)
    assert same.endswith("No such vault: acl")
    assert same == guessed == missing.replace("no-such-vault", "acl")
    assert "No such vault: v" in by_id
    assert scanned == []


def test_t_net_14_stalled_connections_and_idle_channels_do_not_block_others(
    owner: Owner,
) -> None:
    stalled = []
    try:
        for i in range(40):  # connections that never finish the SSH handshake, from other
            # loopback addresses (one address holds at most 16 handshakes: test_limits.py)
            source = (f"127.0.0.{2 + i // 16}", 0)
            sock = socket.create_connection(
                ("127.0.0.1", owner.port), timeout=5, source_address=source
            )
            sock.sendall(b"SSH-2.0-slow"[: i % 12])
            stalled.append(sock)

        async def hold_channels(client: PeerClient) -> None:
            peer = decode_node_id(owner.node_id)
            # the connection's own channel plus as many idle ones as one connection may hold
            more = MAX_CHANNELS_PER_CONNECTION - 1
            idle = [await PeerClient.over(client.conn, peer) for _ in range(more)]
            half = idle[0]
            half.writer.write((1000).to_bytes(4, "big") + b'{"jsonrpc": "2.0", "id"')
            started = time.monotonic()
            still_serving_from_thread = asyncio.to_thread(still_serving, owner)
            await asyncio.wait_for(still_serving_from_thread, 10)
            assert time.monotonic() - started < 10
            for channel in idle:
                channel.close_channel()

        talk(owner, READER, hold_channels)
    finally:
        for sock in stalled:
            sock.close()
    still_serving(owner)


# --- T-GIT-14: kills during a pull ------------------------------------------------------------


def _runtime(env: dict[str, str]) -> Path:
    digest = hashlib.sha256(str(Path(env["PK_NODE"]).resolve()).encode()).hexdigest()[:16]
    return Path(env["PK_RUNTIME_DIR"]) / digest


def _head(path: Path, password: bytes) -> tuple[bytes | None, list[Any]]:
    with Node.open(path, password, allow_weak=True) as node:
        return node.vaults.open("work").head(), node.check()


def test_t_git_14_kills_during_a_pull_leave_the_old_or_the_new_state(
    pair: Pair,  # noqa: F811
) -> None:
    bob_pk = pair.tmp / "bob.pk"
    spill = pair.tmp / "bob-tmp"  # where a temp file of bob's processes would land
    spill.mkdir()
    pair.bob["TMPDIR"] = str(spill)
    pair.b("vaults", "clone", pair.alice_id, "work")
    old, _ = _head(bob_pk, b"bob pw")

    def bulk(tag: str) -> bytes:
        with Node.open(pair.tmp / "alice.pk", b"alice pw", allow_weak=True) as node:
            return node.vaults.open("work").write_many(
                [(f"{tag}/{i:03d}", os.urandom(8192)) for i in range(400)], "Bulk."
            )

    new = bulk("bulk")
    alice_log = _runtime(pair.alice) / "agent.log"

    def pull_once_alice_has_it() -> subprocess.Popen[bytes]:
        seen = alice_log.read_text().count("vaults.fetch")
        puller = subprocess.Popen(
            [sys.executable, "-m", "polykey", "vaults", "pull", "work"],
            env=pair.bob,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while alice_log.read_text().count("vaults.fetch") <= seen:
            assert time.monotonic() < deadline, "the pull never reached alice"
            time.sleep(0.01)
        return puller

    # the puller dies at later and later moments once alice has its request
    head, cut = old, 0
    for delay in [0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.5]:
        puller = pull_once_alice_has_it()
        time.sleep(delay)
        puller.kill()
        puller.wait()
        head, damage = _head(bob_pk, b"bob pw")
        assert damage == []
        assert head in (old, new)
        if head == new:
            break
        cut += 1
    assert cut, "no kill cut a pull short"
    if head != new:
        assert "updated" in pair.b("vaults", "pull", "work")
    assert _head(bob_pk, b"bob pw") == (new, [])
    assert len(pair.b("secrets", "ls", "work:bulk").split()) == 400
    assert sorted(p.name for p in pair.tmp.iterdir() if p.name.startswith("bob.")) in (
        ["bob.pk"],
        ["bob.pk", "bob.pk-shm", "bob.pk-wal"],
    )  # no spill or temp files next to the node ...
    assert list(spill.iterdir()) == []  # ... nor in the temp folder, after every kill

    # the serving agent dies once it has the request (it is collecting or sending)
    newer = bulk("more")
    puller = pull_once_alice_has_it()
    os.kill(agent_pid(pair.alice) or 0, signal.SIGKILL)
    _, err = puller.communicate(timeout=60)
    assert puller.returncode in (0, 50), err
    assert _head(bob_pk, b"bob pw") == ((newer if puller.returncode == 0 else new), [])
