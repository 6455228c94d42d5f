"""What one agent holds open for peers is bounded (T-NET-14): connections in all and still in
the handshake, connections per NodeId, channels per connection, and the time a stock git client
may stay silent. Past a limit the newcomer is turned away; everyone else keeps being served, and
the newcomer gets in again once the others are gone. A real agent process, real SSH, real git.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from polykey.crypto.signing import SigningKey
from polykey.ids import decode_node_id, node_id_from_bytes
from polykey.network.ssh import (
    MAX_CHANNELS_PER_CONNECTION,
    MAX_CONNECTIONS_PER_PEER,
    MAX_HANDSHAKES_PER_ADDRESS,
    MAX_STRANGER_CONNECTIONS,
    MAX_UNAUTHENTICATED,
    PeerClient,
    PeerUnreachable,
    ssh_key,
)
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.trust.acl import Acl
from tests.support import pk_env
from tests.sync.test_share import free_port
from tests.sync.test_tgit_corpus import Owner, node_id, still_serving
from tests.sync.test_three_agents import stop_agent

READER = SigningKey(bytes(range(3, 35)))  # the key test_tgit_corpus.still_serving uses
OTHER = SigningKey(bytes(range(9, 41)))
IDLE_S = 2
PER_ADDRESS = MAX_HANDSHAKES_PER_ADDRESS


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owner]:
    """An agent serving `work` to READER and OTHER, cutting git clients off after IDLE_S."""
    folder = tmp_path_factory.mktemp("limits")
    path = folder / "owner.pk"
    node, _ = Node.bootstrap(path, b"owner pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        work = node.vaults.create("work")
        work.write("db/password", b"owner's")
        for key in (READER, OTHER):
            Acl(node.store).grant(work.id, decode_node_id(node_id(key)), ["scan", "clone", "pull"])
        from polykey.ids import encode_node_id

        me = Owner(
            pk_env(path, PK_PASSWORD="owner pw", PK_RUNTIME_DIR=str(folder / "r")),
            encode_node_id(node.node_id),
            free_port(),
            path,
        )
    me.pk("agent", "start", "--background", "--port", str(me.port), "--peer-idle", str(IDLE_S))
    try:
        yield me
    finally:
        stop_agent(me.env)


async def _connect(owner: Owner, key: SigningKey) -> PeerClient:
    return await PeerClient.connect(
        ssh_key(key.openssh_private_pem()), decode_node_id(owner.node_id), "127.0.0.1", owner.port
    )


async def _eventually(attempt: Callable[[], Awaitable[PeerClient]], why: str) -> PeerClient:
    """``attempt()`` once the agent has seen what was closed (it counts on its own time)."""
    for _ in range(50):
        try:
            return await attempt()
        except PeerUnreachable:
            await asyncio.sleep(0.1)
    pytest.fail(why)


async def _bare_channel(client: PeerClient) -> asyncssh.SSHClientChannel[bytes]:
    """A session channel opened without asking for a command or subsystem (a hostile client)."""
    loop = asyncio.get_running_loop()
    chan: asyncssh.SSHClientChannel[bytes] = asyncssh.SSHClientChannel(
        client.conn, loop, "strict", None, "strict", 512 * 1024, 32768
    )
    await chan._open(b"session")
    return chan


async def _fetch(client: PeerClient) -> str:
    reply = await client.call("vaults.fetch", {"vault": "work", "haves": []})
    return str(reply["head"])


def test_a_connection_holds_at_most_its_channels_and_a_freed_one_can_be_reused(
    owner: Owner,
) -> None:
    async def run() -> None:
        client = await _connect(owner, READER)
        peer = decode_node_id(owner.node_id)
        try:
            extra = [await PeerClient.over(client.conn, peer) for _ in range(31)]
            assert len(extra) + 1 == MAX_CHANNELS_PER_CONNECTION
            with pytest.raises(PeerUnreachable):  # the server closes it before the hello
                await PeerClient.over(client.conn, peer)
            assert await _fetch(extra[-1])  # the channels already open keep working
            other = await _connect(owner, OTHER)  # and so does everyone else
            assert await _fetch(other)
            other.close()
            extra.pop().close_channel()
            again = await _eventually(
                lambda: PeerClient.over(client.conn, peer),
                "a freed channel could not be opened again",
            )
            assert await _fetch(again)
        finally:
            client.close()

    asyncio.run(asyncio.wait_for(run(), 60))
    still_serving(owner)


def test_one_node_holds_at_most_its_connections_and_others_are_not_affected(
    owner: Owner,
) -> None:
    async def run() -> None:
        held = [await _connect(owner, READER) for _ in range(MAX_CONNECTIONS_PER_PEER)]
        try:
            with pytest.raises(PeerUnreachable):  # authentication refused
                await _connect(owner, READER)
            other = await _connect(owner, OTHER)
            assert await _fetch(other)
            other.close()
            assert await _fetch(held[0])
        finally:
            for client in held:
                client.close()
        again = await _eventually(
            lambda: _connect(owner, READER),
            "the node could not connect again after closing its connections",
        )
        assert await _fetch(again)
        again.close()

    asyncio.run(asyncio.wait_for(run(), 90))


def stall_from(address: str, port: int) -> socket.socket:
    """A TCP connection from ``address`` (one of loopback's many) that never speaks SSH."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(address, 0))
    return sock


def turned_away(address: str, port: int) -> bool:
    """Whether a new connection from ``address`` is closed at once (after SSH's greeting)."""
    with stall_from(address, port) as sock:
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            return False  # still open: the server waits for our side of the handshake
        return True


def test_connections_stuck_in_the_handshake_are_bounded_and_freed_on_close(
    owner: Owner,
) -> None:
    """At most MAX_HANDSHAKES_PER_ADDRESS from one address, MAX_UNAUTHENTICATED in all; the
    addresses not stalling keep getting in until the total is reached."""
    stalled: list[socket.socket] = []
    addresses = [f"127.0.0.{n}" for n in range(2, 2 + MAX_UNAUTHENTICATED // PER_ADDRESS)]
    try:
        for address in addresses[:1]:
            for _ in range(PER_ADDRESS):
                stalled.append(stall_from(address, owner.port))
                assert stalled[-1].recv(8).startswith(b"SSH-")  # accepted: greeted
        time.sleep(0.3)
        assert turned_away(addresses[0], owner.port)  # that address is full
        still_serving(owner)  # from 127.0.0.1: not affected
        for address in addresses[1:]:  # now fill every handshake slot
            for _ in range(PER_ADDRESS):
                stalled.append(stall_from(address, owner.port))
                assert stalled[-1].recv(8).startswith(b"SSH-")
        time.sleep(0.3)
        assert turned_away("127.0.0.1", owner.port)
        with pytest.raises(PeerUnreachable):
            asyncio.run(_connect(owner, READER))
    finally:
        for sock in stalled:
            sock.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            still_serving(owner)
            break
        except PeerUnreachable:
            assert time.monotonic() < deadline, "the slots were not freed"
            time.sleep(0.1)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed")
def test_a_silent_git_client_is_cut_off_and_does_not_hold_the_git_service(
    owner: Owner, tmp_path: Path
) -> None:
    async def stall(client: PeerClient) -> float:
        """Ask for upload-pack, read the refs, then say nothing: when is the channel closed?"""
        proc = await client.conn.create_process("git-upload-pack 'work'", encoding=None)
        advert = b""
        while not advert.endswith(b"0000"):
            chunk = await proc.stdout.read(65536)
            assert chunk, advert
            advert += chunk
        started = time.monotonic()
        while await proc.stdout.read(65536):
            pass
        return time.monotonic() - started

    async def run() -> list[float]:
        client = await _connect(owner, OTHER)
        try:  # more silent clients than the agent has git threads
            return await asyncio.gather(*(stall(client) for _ in range(6)))
        finally:
            client.close()

    waited = asyncio.run(asyncio.wait_for(run(), 60))
    assert all(IDLE_S - 0.5 < w < IDLE_S + 15 for w in waited), waited

    key = tmp_path / "reader"
    key.write_bytes(READER.openssh_private_pem())
    key.chmod(0o600)
    ssh = (
        f"ssh -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
    )
    clone = subprocess.run(
        ["git", "clone", f"ssh://pk@127.0.0.1:{owner.port}/work", str(tmp_path / "c")],
        env={"GIT_SSH_COMMAND": ssh, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert clone.returncode == 0, clone.stderr
    assert (tmp_path / "c" / "db" / "password").read_bytes() == b"owner's"


def test_a_process_with_more_operations_on_a_peer_than_its_channels_queues_them(
    owner: Owner,
) -> None:
    """The dialer's pool keeps under the server's channel limit: 3x as many operations at once
    as one connection may hold all succeed, on one connection."""
    from concurrent.futures import ThreadPoolExecutor

    from polykey.network.pool import Pool

    pool = Pool()
    key = ssh_key(READER.openssh_private_pem())
    peer = decode_node_id(owner.node_id)

    async def slow_fetch(client: PeerClient) -> str:
        head = await _fetch(client)
        await asyncio.sleep(0.2)  # hold the channel, so that the operations overlap
        return head

    def one(_: int) -> str:
        return str(pool.run(key, peer, "127.0.0.1", owner.port, slow_fetch))

    with ThreadPoolExecutor(3 * MAX_CHANNELS_PER_CONNECTION) as threads:
        heads = list(threads.map(one, range(3 * MAX_CHANNELS_PER_CONNECTION)))
    assert len(set(heads)) == 1 and heads[0]
    assert len(pool.connections()) == 1
    held = connected(owner)  # the operations that started together shared one dial
    assert held["connections"] == 1 and held["nodes"] == 1, held
    for conn in pool._conns.values():
        pool._loop.call_soon_threadsafe(conn[0].close)  # type: ignore[union-attr]


def connected(owner: Owner) -> dict[str, int]:
    """What peers hold open on the agent's peer port, from `pk agent status`."""
    import json

    for _ in range(50):  # the agent counts a closed connection once it has seen it close
        status = json.loads(owner.pk("agent", "status", "--format", "json"))
        held: dict[str, int] = status["peers_connected"]
        if held["authenticating"] == 0:
            return held
        time.sleep(0.1)
    return held


def test_channels_count_from_the_moment_they_open_even_without_a_request(owner: Owner) -> None:
    """A hostile client opening bare session channels (no command, no subsystem) and filling
    their windows holds them against the connection's limit, so it cannot make the agent
    buffer without bound."""

    async def run() -> None:
        client = await _connect(owner, READER)
        bare = []
        try:
            for _ in range(MAX_CHANNELS_PER_CONNECTION - 1):  # the client's own channel is one
                chan = await _bare_channel(client)
                chan.write(b"\0" * 65536)
                bare.append(chan)
            with pytest.raises(asyncssh.ChannelOpenError):
                await _bare_channel(client)
            held = await asyncio.to_thread(connected, owner)
            assert held["channels"] >= MAX_CHANNELS_PER_CONNECTION, held
            assert await _fetch(client)  # what was open keeps working
            other = await _connect(owner, OTHER)  # and so does everyone else
            assert await _fetch(other)
            other.close()
        finally:
            client.close()

    asyncio.run(asyncio.wait_for(run(), 60))
    deadline = time.monotonic() + 10  # closing the connection releases every channel it held
    while connected(owner)["channels"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert connected(owner) == {"connections": 0, "authenticating": 0, "nodes": 0, "channels": 0}


def test_nodes_the_agent_does_not_know_share_a_few_connections(owner: Owner) -> None:
    """Making NodeIds costs nothing, so unknown ones share MAX_STRANGER_CONNECTIONS; the nodes
    the agent shares with still get in."""
    strangers = [SigningKey(bytes([200, i]) + bytes(30)) for i in range(MAX_STRANGER_CONNECTIONS)]

    async def run() -> None:
        held = [await _connect(owner, key) for key in strangers]
        try:
            with pytest.raises(PeerUnreachable):
                await _connect(owner, SigningKey(bytes([201]) + bytes(31)))
            reader = await _connect(owner, READER)
            assert await _fetch(reader)
            reader.close()
        finally:
            for client in held:
                client.close()
        late = await _eventually(
            lambda: _connect(owner, SigningKey(bytes([201]) + bytes(31))),
            "the strangers' slots were not freed",
        )
        late.close()

    asyncio.run(asyncio.wait_for(run(), 90))


def test_a_connection_left_without_channels_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: a server from network/ssh.py with a short idle time."""
    from polykey.network import ssh

    monkeypatch.setattr(ssh, "IDLE_CONNECTION_S", 0.5)
    host = SigningKey(bytes([7]) * 32)

    async def hello(_peer: object, _method: str, _params: dict[str, object]) -> dict[str, object]:
        return {"version": 1}

    async def run() -> None:
        server = await ssh.serve("127.0.0.1", 0, ssh_key(host.openssh_private_pem()), hello)
        port = server.sockets[0].getsockname()[1]
        try:
            client = await ssh.PeerClient.connect(
                ssh_key(READER.openssh_private_pem()),
                node_id_from_bytes(host.public),
                "127.0.0.1",
                port,
            )
            await asyncio.sleep(1.0)  # a channel open: the connection stays
            assert not client.conn.is_closed()
            client.close_channel()
            await asyncio.wait_for(client.conn.wait_closed(), 5)  # closed by the server
            with pytest.raises(PeerUnreachable):
                await ssh.PeerClient.over(client.conn, node_id_from_bytes(host.public))
        finally:
            server.close()
            assert isinstance(server, asyncssh.SSHAcceptor)

    asyncio.run(run())


def test_a_git_client_trickling_bytes_within_the_idle_time_is_cut_off(owner: Owner) -> None:
    """Each byte arrives well within --peer-idle, but at a few bytes a second: once the agent
    has waited on the client for --peer-idle seconds in all, the channel is closed."""

    async def trickle(client: PeerClient) -> tuple[float, int]:
        proc = await client.conn.create_process("git-upload-pack 'work'", encoding=None)
        advert = b""
        while not advert.endswith(b"0000"):
            chunk = await proc.stdout.read(65536)
            assert chunk, advert
            advert += chunk
        head = advert[4:44]
        want = b"want " + head + b"\n"
        request = b"%04x" % (len(want) + 4) + want + b"0000" + b"0009done\n"
        started = time.monotonic()
        sent = 0
        for byte in request:  # one byte every 0.3 s: the whole request would take 20 s
            try:
                proc.stdin.write(bytes([byte]))
            except (OSError, asyncssh.Error):
                break
            sent += 1
            try:
                if await asyncio.wait_for(proc.stdout.read(65536), 0.3) == b"":
                    break  # the agent closed the channel
            except TimeoutError:
                continue
        return time.monotonic() - started, sent

    async def run() -> tuple[float, int]:
        client = await _connect(owner, OTHER)
        try:
            return await trickle(client)
        finally:
            client.close()

    took, sent = asyncio.run(asyncio.wait_for(run(), 60))
    assert took < 3 * IDLE_S + 5 and sent < 60, (took, sent)
    still_serving(owner)
