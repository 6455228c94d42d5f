"""Two nodes as separate processes on loopback: share, clone, pull, unshare, refusals."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree

from polykey.errors import PolykeyError
from polykey.node import Node
from polykey.vaults.objects import refs_ns
from polykey.vaults.vault import BRANCH
from tests.support import pk_env, run_pk
from tests.sync.two_nodes import Pair, bootstrap_pair, free_port

# many tests take these from here (two_nodes.py is the home of Pair and free_port)
__all__ = ["Pair", "free_port", "pair"]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = bootstrap_pair(tmp_path)
    p.a("vaults", "create", "work")
    p.a("secrets", "write", "work:db/password", stdin=b"first")
    p.a("vaults", "share", "work", p.bob_id)
    p.start_alice()
    p.b("nodes", "add", p.alice_id, f"127.0.0.1:{p.port}")
    try:
        yield p
    finally:
        run_pk("agent", "stop", env=p.alice)


def test_clone_then_pull_brings_each_update_and_checks_clean(pair: Pair) -> None:
    assert "work" in pair.b("vaults", "scan", pair.alice_id)
    pair.b("vaults", "clone", pair.alice_id, "work", "mine")
    assert pair.b("secrets", "cat", "mine:db/password") == "first"
    pair.a("secrets", "write", "work:db/password", stdin=b"second")
    assert "updated" in pair.b("vaults", "pull", "mine")
    assert pair.b("secrets", "cat", "mine:db/password") == "second"
    assert "up to date" in pair.b("vaults", "pull", "mine")
    alice_log = pair.a("vaults", "log", "work")
    assert pair.b("vaults", "log", "mine") == alice_log
    assert "whole" in pair.b("node", "check")


def test_a_clone_keeps_the_writers_its_origin_names(pair: Pair) -> None:
    """The writers travel with each fetch reply; the clone keeps them, so that its history
    verifies later (`pk export git` trusts exactly them)."""
    import json

    carol = pk_env(pair.tmp / "carol.pk", PK_PASSWORD="carol pw")
    assert run_pk("bootstrap", env=carol).returncode == 0
    carol_nid = run_pk("keys", "public", env=carol).stdout.decode().split()[0]
    pair.a("vaults", "share", "work", carol_nid, "--perm", "push")
    pair.b("vaults", "clone", pair.alice_id, "work", "mine")
    out = pair.b("export", "git", "mine", str(pair.tmp / "repo"), "--yes", "--format", "json")
    assert json.loads(out)["signers"] == sorted([pair.alice_id, pair.bob_id, carol_nid])


def test_a_vault_not_shared_answers_like_a_missing_one(pair: Pair) -> None:
    pair.a("vaults", "create", "private")
    hidden = run_pk("vaults", "clone", pair.alice_id, "private", env=pair.bob)
    missing = run_pk("vaults", "clone", pair.alice_id, "no-such-vault", env=pair.bob)
    assert hidden.returncode == missing.returncode == 51
    assert b"No such vault: private" in hidden.stderr
    assert b"No such vault: no-such-vault" in missing.stderr
    assert "private" not in pair.b("vaults", "scan", pair.alice_id)


def test_after_unshare_pull_is_refused_and_the_clone_is_unchanged(pair: Pair) -> None:
    pair.b("vaults", "clone", pair.alice_id, "work")
    pair.a("secrets", "write", "work:db/password", stdin=b"secret after unshare")
    pair.a("vaults", "unshare", "work", pair.bob_id)
    refused = run_pk("vaults", "pull", "work", env=pair.bob)
    assert refused.returncode == 51
    assert pair.b("secrets", "cat", "work:db/password") == "first"


def test_a_node_whose_key_is_not_the_pinned_one_is_unreachable(pair: Pair) -> None:
    carol = pk_env(pair.tmp / "carol.pk", PK_PASSWORD="carol pw")
    assert run_pk("bootstrap", env=carol).returncode == 0
    carol_id = run_pk("keys", "public", env=carol).stdout.decode().split()[0]
    pair.b("nodes", "add", carol_id, f"127.0.0.1:{pair.port}")  # alice answers there
    result = run_pk("nodes", "ping", carol_id, env=pair.bob)
    assert result.returncode == 50
    assert b"Traceback" not in result.stderr


def test_a_clone_that_may_only_pull_refuses_local_changes_and_stays_whole(pair: Pair) -> None:
    pair.b("vaults", "clone", pair.alice_id, "work")
    before = pair.b("vaults", "log", "work")
    refused = run_pk("secrets", "write", "work:local", env=pair.bob, input=b"bob's own")
    assert refused.returncode == 38, refused.stderr
    assert b"takes no changes from this node" in refused.stderr
    assert b"--perm push" in refused.stderr
    assert pair.b("vaults", "log", "work") == before
    pair.a("secrets", "write", "work:db/password", stdin=b"alice's new")
    pair.b("vaults", "pull", "work")  # a fast-forward, as ever
    assert pair.b("secrets", "cat", "work:db/password") == "alice's new"


def test_edits_on_both_sides_merge_on_pull_and_push_sends_the_merge(pair: Pair) -> None:
    """Both edit within one sync window (different secrets, and one secret both changed): the
    pull merges, keeping the other value of the secret both changed beside it; the push then
    fast-forwards the origin, and both nodes show one history."""
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    pair.b("vaults", "clone", pair.alice_id, "work")
    pair.a("secrets", "write", "work:alice-only", stdin=b"a")
    pair.a("secrets", "write", "work:db/password", stdin=b"alice's new")
    pair.b("secrets", "write", "work:bob-only", stdin=b"b")
    pair.b("secrets", "write", "work:db/password", stdin=b"bob's new")
    (pulled,) = json.loads(pair.b("--format", "json", "vaults", "pull", "work"))["pulled"]
    assert pulled["how"] == "merged"
    (conflict,) = pulled["conflicts"]
    assert conflict["path"] == "db/password"
    values = {
        pair.b("secrets", "cat", "work:db/password"),
        pair.b("secrets", "cat", f"work:{conflict['copy']}"),
    }
    assert values == {"alice's new", "bob's new"}
    assert pair.b("secrets", "cat", "work:alice-only") == "a"
    pair.b("vaults", "push", "work")
    assert pair.a("vaults", "log", "work") == pair.b("vaults", "log", "work")
    listed = pair.a("secrets", "ls", "-R", "work")
    assert "alice-only" in listed and "bob-only" in listed and conflict["copy"] in listed


def test_push_merges_first_when_the_origin_moved_on(pair: Pair) -> None:
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    pair.b("vaults", "clone", pair.alice_id, "work")
    pair.a("secrets", "write", "work:alice-only", stdin=b"a")
    pair.b("secrets", "write", "work:bob-only", stdin=b"b")
    pair.b("vaults", "push", "work")  # refused as not a fast-forward, so: pull, merge, push
    assert pair.a("secrets", "cat", "work:bob-only") == "b"
    assert pair.b("secrets", "cat", "work:alice-only") == "a"
    assert pair.a("vaults", "log", "work") == pair.b("vaults", "log", "work")


def test_a_peer_serving_an_older_state_is_refused(pair: Pair) -> None:
    pair.a("secrets", "write", "work:db/password", stdin=b"second")
    pair.b("vaults", "clone", pair.alice_id, "work")
    run_pk("agent", "stop", env=pair.alice)
    with Node.open(pair.tmp / "alice.pk", b"alice pw", allow_weak=True) as node:
        vault = node.vaults.open("work")
        older = vault.resolve("HEAD~1")
        with node.store.write() as tx:  # alice's file rolled back (a restored old copy)
            tx.put(refs_ns(vault.id), BRANCH, older)
    pair.start_alice()
    result = run_pk("vaults", "pull", "work", env=pair.bob)
    assert result.returncode == 53, result.stderr
    assert b"older state" in result.stderr
    assert pair.b("secrets", "cat", "work:db/password") == "second"


def test_push_to_a_node_that_granted_push_lands_there_and_others_pull_it(pair: Pair) -> None:
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    pair.b("vaults", "clone", pair.alice_id, "work")
    pair.b("secrets", "write", "work:from-bob", stdin=b"bob wrote this")
    assert "Pushed" in pair.b("vaults", "push", "work", pair.alice_id)
    assert pair.a("secrets", "cat", "work:from-bob") == "bob wrote this"
    assert "nothing to push" in pair.b("vaults", "push", "work", pair.alice_id)
    pair.b("secrets", "write", "work:from-bob-2", stdin=b"no NodeId needed")
    assert f"Pushed work to {pair.alice_id}." in pair.b("vaults", "push", "work")  # the origin
    assert pair.a("secrets", "cat", "work:from-bob-2") == "no NodeId needed"
    pair.a("secrets", "write", "work:db/password", stdin=b"after the push")
    assert "updated" in pair.b("vaults", "pull", "work")
    assert pair.b("secrets", "cat", "work:db/password") == "after the push"


def test_push_without_the_push_grant_is_refused_and_changes_nothing(pair: Pair) -> None:
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    pair.b("vaults", "clone", pair.alice_id, "work")
    pair.b("secrets", "write", "work:from-bob", stdin=b"x")
    pair.a("vaults", "unshare", "work", pair.bob_id)  # push taken back after bob's commit
    pair.a("vaults", "share", "work", pair.bob_id)
    before = pair.a("vaults", "log", "work")
    result = run_pk("vaults", "push", "work", pair.alice_id, env=pair.bob)
    assert result.returncode == 51
    assert b"does not take pushes to work from this node" in result.stderr
    assert b"--perm push" in result.stderr  # the reason, not "no such vault"
    assert pair.a("vaults", "log", "work") == before


def test_sharing_notifies_and_a_queued_notification_arrives_once_the_node_is_back(
    pair: Pair,
) -> None:
    import time

    bob_port = free_port()
    pair.a("nodes", "add", pair.bob_id, f"127.0.0.1:{bob_port}")
    pair.b("agent", "start", "--background", "--port", str(bob_port))
    try:
        pair.a("vaults", "create", "second")
        assert "The node was told." in pair.a("vaults", "share", "second", pair.bob_id)
        assert "Vault second" in pair.b("notifications", "read")
        pair.b("agent", "stop")
        assert "Queued" in pair.a("notifications", "send", pair.bob_id, "while you were away")
        pair.b("agent", "start", "--background", "--port", str(bob_port))
        deadline = time.monotonic() + 40  # alice's agent retries its outbox every 10 s
        while time.monotonic() < deadline:
            if "while you were away" in pair.b("notifications", "read", "--unread"):
                break
            time.sleep(1)
        else:
            raise AssertionError("the queued notification never arrived")
        assert "waiting" not in pair.a("notifications", "read")
    finally:
        run_pk("agent", "stop", env=pair.bob)


def test_notifications_from_an_unknown_node_are_refused(pair: Pair) -> None:
    carol = pk_env(pair.tmp / "carol.pk", PK_PASSWORD="carol pw")
    assert run_pk("bootstrap", env=carol).returncode == 0
    assert (
        run_pk("nodes", "add", pair.alice_id, f"127.0.0.1:{pair.port}", env=carol).returncode == 0
    )
    result = run_pk("notifications", "send", pair.alice_id, "hi", env=carol)
    assert result.returncode == 51  # alice has never heard of carol
    assert b"does not know the sender" in result.stderr
    assert pair.a("notifications", "read") == ""


def test_a_clone_cut_off_midway_leaves_no_partial_vault_and_a_retry_completes(
    pair: Pair,
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    with Node.open(pair.tmp / "alice.pk", b"alice pw", allow_weak=True) as node:
        vault = node.vaults.open("work")
        vault.write_many([(f"bulk/{i:04d}", os.urandom(4096)) for i in range(6000)], "Bulk.")
    clone = subprocess.Popen(
        [sys.executable, "-m", "polykey", "vaults", "clone", pair.alice_id, "work"],
        env=pair.bob,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.8)
    status = (next((pair.tmp / "run").glob("*/status.json"))).read_text()
    import json

    os.kill(json.loads(status)["pid"], signal.SIGKILL)  # the serving agent dies mid-clone
    _, err = clone.communicate(timeout=60)
    if clone.returncode == 0:
        pytest.skip("the clone finished before the agent was killed")
    assert clone.returncode == 50, err
    assert b"work" not in run_pk("vaults", "list", env=pair.bob).stdout
    assert b"whole" in run_pk("node", "check", env=pair.bob).stdout
    pair.start_alice()
    pair.b("vaults", "clone", pair.alice_id, "work")
    assert len(pair.b("secrets", "ls", "work:bulk").split()) == 6000


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x00\x00\x05hello", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x02[]"],
    ids=["not json", "oversized", "not an object"],
)
def test_a_malformed_peer_frame_closes_that_channel_and_the_agent_keeps_serving(
    pair: Pair, garbage: bytes
) -> None:
    import asyncio

    from polykey.crypto.signing import SigningKey
    from polykey.ids import decode_node_id
    from polykey.network.ssh import PeerClient, ssh_key

    key = ssh_key(SigningKey(bytes(range(32))).openssh_private_pem())

    async def attack() -> bytes:
        client = await PeerClient.connect(
            key, decode_node_id(pair.alice_id), "127.0.0.1", pair.port
        )
        try:
            client.writer.write(garbage)
            return bytes(await asyncio.wait_for(client.reader.read(100), 10))
        finally:
            client.close()

    assert asyncio.run(attack()) == b""  # closed without an answer (even after the hello)
    assert "answered" in pair.b("nodes", "ping", pair.alice_id)


def test_a_channel_that_skips_the_version_hello_gets_no_answer(pair: Pair) -> None:
    import asyncio
    import json

    from polykey.crypto.signing import SigningKey
    from polykey.ids import decode_node_id
    from polykey.network.ssh import SUBSYSTEM, PeerClient, ssh_key

    key = ssh_key(SigningKey(bytes(range(32))).openssh_private_pem())

    async def skip_hello() -> bytes:
        client = await PeerClient.connect(
            key, decode_node_id(pair.alice_id), "127.0.0.1", pair.port
        )
        try:
            writer, reader, _ = await client.conn.open_session(subsystem=SUBSYSTEM, encoding=None)
            body = json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "vaults.scan", "params": {}}
            ).encode()
            writer.write(len(body).to_bytes(4, "big") + body)
            return bytes(await asyncio.wait_for(reader.read(100), 10))
        finally:
            client.close()

    assert asyncio.run(skip_hello()) == b""


def test_an_agent_asked_for_a_busy_port_says_so_and_leaves_no_socket(tmp_path: Path) -> None:
    env = pk_env(tmp_path / "n.pk", PK_PASSWORD="pw", PK_RUNTIME_DIR=str(tmp_path / "run"))
    assert run_pk("bootstrap", env=env).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = run_pk("agent", "start", "--background", "--port", port, env=env)
    assert result.returncode == 45, result.stderr
    assert b"address already in use" in result.stderr
    assert not list((tmp_path / "run").glob("*/agent.sock"))
    assert run_pk("agent", "status", env=env).returncode == 43


def test_the_agent_reuses_one_connection_per_peer(pair: Pair) -> None:
    pair.b("agent", "start", "--background")
    try:
        pair.b("vaults", "clone", pair.alice_id, "work")
        for value in (b"2", b"3"):
            pair.a("secrets", "write", "work:db/password", stdin=value)
            assert "updated" in pair.b("vaults", "pull", "work")
        assert pair.b("secrets", "cat", "work:db/password") == "3"
        open_now = pair.b("nodes", "connections").strip().splitlines()
        assert len(open_now) == 1 and open_now[0].startswith(pair.alice_id)
        logs = [p.read_text() for p in (pair.tmp / "run").glob("*/agent.log")]
        alice_log = next(text for text in logs if "serving peers on" in text)
        assert alice_log.count("peer.hello") >= 3  # one channel per operation, one connection
    finally:
        run_pk("agent", "stop", env=pair.bob)


def test_the_agent_pulls_cloned_vaults_in_the_background(pair: Pair) -> None:
    import time

    pair.b("vaults", "clone", pair.alice_id, "work")
    pair.b("agent", "start", "--background", "--sync-interval", "5")
    try:
        pair.a("secrets", "write", "work:db/password", stdin=b"synced")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pair.b("secrets", "cat", "work:db/password") == "synced":
                break
            time.sleep(1)
        else:
            raise AssertionError("the background sync never pulled the update")
    finally:
        run_pk("agent", "stop", env=pair.bob)


def test_granting_push_grants_pull_with_it(pair: Pair) -> None:
    """A writer must read the vault to build on it; push alone would also let a node probe
    which objects the vault holds."""
    pair.a("vaults", "unshare", "work", pair.bob_id)
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    listed = pair.a("vaults", "permissions", "work")
    assert "pull, push" in listed and "clone" not in listed


# --- a node holding push sends objects of the wrong type, or a bad reserved file ------------


def _bob_key(pair: Pair) -> Any:
    with Node.open(pair.tmp / "bob.pk", b"bob pw", allow_weak=True) as node:
        return node.key.signing


def _raw(obj: ShaFile) -> bytes:
    return bytes([obj.type_num]) + obj.as_raw_string()


def _signed(key: Any, tree: bytes, parents: list[bytes]) -> Commit:
    from polykey.crypto import sshsig

    c = Commit()
    c.tree = ObjectID(tree)
    c.parents = [ObjectID(p) for p in parents]
    c.author = c.committer = b"bob <bob>"
    c.author_time = c.commit_time = 1_700_000_000
    c.author_timezone = c.commit_timezone = 0
    c.message = b"Hostile push.\n"
    c.gpgsig = sshsig.sign(key, c.raw_without_sig(), "git").encode()
    return c


Make = Callable[[Any, bytes, list[bytes]], tuple[bytes, list[bytes]]]


def hostile_push(pair: Pair, make: Make) -> Any:
    """As bob (who holds push), fetch `work`, then send what ``make(key, head, objects)``
    builds straight to `vaults.receive`: what a modified `pk` could send."""
    import asyncio

    from polykey.ids import decode_node_id
    from polykey.network.ssh import PeerClient, PeerError, ssh_key

    key = _bob_key(pair)

    async def run() -> Any:
        client = await PeerClient.connect(
            ssh_key(key.openssh_private_pem()),
            decode_node_id(pair.alice_id),
            "127.0.0.1",
            pair.port,
        )
        try:
            current = await client.call("vaults.fetch", {"vault": "work", "haves": []})
            head, objects = make(key, current["head"].encode(), current["objects"])
            params = {"vault": "work", "head": head.decode(), "objects": objects}
            try:
                return await client.call("vaults.receive", params)
            except PeerError as exc:
                return exc
        finally:
            client.close()

    return asyncio.run(asyncio.wait_for(run(), 60))


def _parsed(objects: list[bytes]) -> list[ShaFile]:
    return [ShaFile.from_raw_string(o[0], o[1:]) for o in objects]


def _tree_names_a_held_blob(
    key: Any, head: bytes, objects: list[bytes]
) -> tuple[bytes, list[bytes]]:
    blob = next(o for o in _parsed(objects) if o.type_num == 3)  # alice holds it
    c = _signed(key, blob.id, [head])
    return c.id, [_raw(c)]


def _parent_is_a_held_tree(
    key: Any, head: bytes, objects: list[bytes]
) -> tuple[bytes, list[bytes]]:
    tree = next(o for o in _parsed(objects) if isinstance(o, Tree))
    c = _signed(key, tree.id, [head, tree.id])
    return c.id, [_raw(c)]


def _file_is_a_held_tree(key: Any, head: bytes, objects: list[bytes]) -> tuple[bytes, list[bytes]]:
    held = next(o for o in _parsed(objects) if isinstance(o, Tree))
    root = Tree()
    root.add(b"file", 0o100644, held.id)
    c = _signed(key, root.id, [head])
    return c.id, [_raw(root), _raw(c)]


@pytest.mark.parametrize(
    "make",
    [_tree_names_a_held_blob, _parent_is_a_held_tree, _file_is_a_held_tree],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_push_naming_a_held_object_as_another_type_is_refused_and_clones_still_work(
    pair: Pair, make: Make
) -> None:
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    before = pair.a("vaults", "log", "work")
    outcome = hostile_push(pair, make)
    assert isinstance(outcome, PolykeyError), outcome
    assert "but that object is a" in outcome.message
    assert pair.a("vaults", "log", "work") == before
    assert "whole" in pair.a("node", "check")
    pair.b("vaults", "clone", pair.alice_id, "work", "fresh")  # every clone still works
    assert pair.b("secrets", "cat", "fresh:db/password") == "first"


def _with_tags(content: bytes | None) -> Make:
    """A commit on top whose root holds `.polykey-tags`: this content, or (None) a folder."""

    def make(key: Any, head: bytes, objects: list[bytes]) -> tuple[bytes, list[bytes]]:
        parsed = _parsed(objects)
        commit = next(o for o in parsed if o.id == head)
        assert isinstance(commit, Commit)
        root = next(o for o in parsed if o.id == commit.tree)
        assert isinstance(root, Tree)
        if content is None:
            inner = Tree()
            inner.add(b"x", 0o100644, next(o for o in parsed if o.type_num == 3).id)
            sent: list[ShaFile] = [inner]
            root.add(b".polykey-tags", 0o040000, inner.id)
        else:
            blob = Blob.from_string(content)
            sent = [blob]
            root.add(b".polykey-tags", 0o100644, blob.id)
        c = _signed(key, root.id, [head])
        return c.id, [_raw(o) for o in (*sent, root, c)]

    return make


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not json", "is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "is not an object"),
        (None, "is a folder"),
        (b'{"a": ["t"]' + b" " * (9 << 20) + b"}", "is larger than 8 MiB"),
        (b'{"db/password": "not a list"}', "is not an object"),
    ],
    ids=["not-json", "nested-100000", "a-folder", "too-large", "wrong-shape"],
)
def test_a_pushed_bad_tag_file_is_refused_with_a_clear_reason(
    pair: Pair, content: bytes | None, reason: str
) -> None:
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    before = pair.a("vaults", "log", "work")
    outcome = hostile_push(pair, _with_tags(content))
    assert isinstance(outcome, PolykeyError), outcome
    assert ".polykey-tags" in outcome.message and reason in outcome.message
    assert pair.a("vaults", "log", "work") == before
    pair.a("secrets", "write", "work:after", stdin=b"local writes still work")
    assert "db/password" not in pair.a("tags", "list")
    good = hostile_push(pair, _with_tags(b'{"db/password": ["prod"]}'))
    assert not isinstance(good, PolykeyError), good
    assert "prod" in pair.a("tags", "list")


def test_share_says_whether_the_node_was_told(pair: Pair) -> None:
    pair.a("vaults", "create", "third")
    unknown = pair.a("vaults", "share", "third", pair.bob_id)
    assert "The node was not told: add its address with `pk nodes add" in unknown
    pair.a("nodes", "add", pair.bob_id, f"127.0.0.1:{free_port()}")  # nobody listens there
    queued = pair.a("vaults", "share", "third", pair.bob_id, "--perm", "push")
    assert "could not be reached: it will be told when the agent reaches it" in queued


def _wait_for(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_background_sync_merges_local_changes_and_a_refused_one_is_told(pair: Pair) -> None:
    """With --sync-interval, a clone with local commits keeps syncing (it merges); when the
    origin refuses, `pk agent status` and the next command on that vault say so."""
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    pair.b("vaults", "clone", pair.alice_id, "work")
    pair.b("agent", "start", "--background", "--sync-interval", "5")
    try:
        pair.b("secrets", "write", "work:bob-only", stdin=b"b")
        pair.a("secrets", "write", "work:alice-only", stdin=b"a")
        merged = _wait_for(lambda: "alice-only" in pair.b("secrets", "ls", "work"))
        assert merged, pair.b("vaults", "log", "work")
        assert pair.b("secrets", "cat", "work:bob-only") == "b"

        pair.a("vaults", "unshare", "work", pair.bob_id)
        told = _wait_for(lambda: "failing since" in pair.b("agent", "status"))
        assert told, pair.b("agent", "status")
        status = json.loads(pair.b("agent", "status", "--format", "json"))
        assert [p["vault"] for p in status["sync_problems"]] == ["work"]
        read = run_pk("secrets", "cat", "work:bob-only", env=pair.bob)
        assert read.returncode == 0 and read.stdout == b"b"
        assert b"pk: warning: background sync of work fails since" in read.stderr
        other = run_pk("vaults", "list", env=pair.bob)  # touches no vault in particular
        assert b"warning" not in other.stderr
    finally:
        run_pk("agent", "stop", env=pair.bob)
