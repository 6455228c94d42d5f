"""What one agent holds open for peers is bounded (T-NET-14): connections in all and still in
the handshake, connections per NodeId, channels per connection (and strangers' share of them),
the time a stock git client or a `polykey` channel may stay silent, the size of a frame before
and after the hello, and the bytes of large frames held at once. Past a limit the newcomer is
turned away; everyone else keeps being served, and the newcomer gets in again once the others
are gone. A real agent process, real SSH, real git (and, for what needs tiny limits, a server
from network/ssh.py in this process).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from polykey.network.limits import (
    HELLO_FRAME,
    MAX_CHANNELS_PER_CONNECTION,
    MAX_CONNECTIONS_PER_PEER,
    MAX_HANDSHAKES_PER_ADDRESS,
    MAX_STRANGER_CHANNELS,
    MAX_STRANGER_CHANNELS_PER_CONNECTION,
    MAX_STRANGER_CONNECTIONS,
    MAX_UNAUTHENTICATED,
    SMALL_FRAME,
)
from polykey.network.ssh import (
    SUBSYSTEM,
    PeerClient,
    PeerError,
    PeerUnreachable,
    ssh_key,
)
from polykey.node import FAST_INSECURE_KDF, Node
from tests.support import pk_env
from tests.sync.test_share import free_port
from tests.sync.test_tgit_corpus import Owner, node_id, still_serving
from tests.sync.test_three_agents import stop_agent

READER = SigningKey(bytes(range(3, 35)))  # the key test_tgit_corpus.still_serving uses
OTHER = SigningKey(bytes(range(9, 41)))
PUSHER = SigningKey(bytes(range(12, 44)))
IDLE_S = 4  # --peer-idle: silent git clients, silent channels, and the hello's time (min 10 s)
PER_ADDRESS = MAX_HANDSHAKES_PER_ADDRESS


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owner]:
    """An agent serving `work` to READER and OTHER (PUSHER may push too), cutting silent git
    clients and channels off after IDLE_S."""
    folder = tmp_path_factory.mktemp("limits")
    path = folder / "owner.pk"
    node, _ = Node.bootstrap(path, b"owner pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        work = node.vaults.create("work")
        work.write("db/password", b"owner's")
        for key in (READER, OTHER):
            node.acl.grant(work.id, decode_node_id(node_id(key)), ["scan", "clone", "pull"])
        node.acl.grant(work.id, decode_node_id(node_id(PUSHER)), ["push"])
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
    git_clone(owner, READER, tmp_path)


def git_clone(owner: Owner, key: SigningKey, tmp_path: Path) -> None:
    """Stock `git clone` of `work` over ssh with ``key``: it must succeed."""
    path = tmp_path / "git-key"
    path.write_bytes(key.openssh_private_pem())
    path.chmod(0o600)
    ssh = (
        f"ssh -i {path} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
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
    assert connected(owner) == {
        "connections": 0,
        "authenticating": 0,
        "nodes": 0,
        "channels": 0,
        "buffered": 0,
    }


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
    """In-process: a server from network/sshserver.py with a short idle time."""
    from polykey.network import ssh, sshserver

    monkeypatch.setattr(sshserver, "IDLE_CONNECTION_S", 0.5)
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


# --- what a channel may make the agent read, and for how long ------------------------------------

MiB = 1024 * 1024


def agent_log(owner: Owner) -> str:
    logs = list(Path(owner.env["PK_RUNTIME_DIR"]).glob("*/agent.log"))
    assert len(logs) == 1, logs
    return logs[0].read_text(errors="replace")


async def _raw_connect(owner: Owner, key: SigningKey) -> asyncssh.SSHClientConnection:
    """An SSH connection with ``key`` and nothing opened on it: no channel, no hello."""
    for _ in range(50):  # the agent counts what earlier tests closed on its own time
        try:
            return await asyncssh.connect(
                "127.0.0.1",
                owner.port,
                username="pk",
                client_keys=[ssh_key(key.openssh_private_pem())],
                known_hosts=None,
                agent_path=None,
                config=None,
            )
        except (OSError, asyncssh.Error):
            await asyncio.sleep(0.1)
    pytest.fail("could not connect")


Channel = tuple[asyncssh.SSHWriter[bytes], asyncssh.SSHReader[bytes]]


async def _subsystem(conn: asyncssh.SSHClientConnection) -> Channel | None:
    """A `polykey` channel on which nothing has been said yet; None if the open is refused."""
    try:
        writer, reader, _ = await conn.open_session(subsystem=SUBSYSTEM, encoding=None)
    except asyncssh.ChannelOpenError:
        return None
    return writer, reader


async def _closed_by_agent(reader: asyncssh.SSHReader[bytes]) -> bytes:
    """What arrives until the agent closes the channel (a test timeout if it never does)."""
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            received += chunk
    except (ConnectionError, asyncssh.Error):
        pass
    return received


def test_strangers_holding_silent_channels_leave_room_for_the_nodes_it_shares_with(
    owner: Owner, tmp_path: Path
) -> None:
    """As many stranger connections as may exist, each asking for as many silent channels as a
    connection may hold: strangers get a small share of the channels, and a granted node (with
    our client and with stock git) is still served while they hold it."""
    strangers = [SigningKey(bytes([210, i]) + bytes(30)) for i in range(MAX_STRANGER_CONNECTIONS)]
    peer = decode_node_id(owner.node_id)

    async def run() -> list[int]:
        conns = [await _raw_connect(owner, key) for key in strangers]
        try:
            asked = [[_subsystem(c) for _ in range(MAX_CHANNELS_PER_CONNECTION)] for c in conns]
            opened = [await asyncio.gather(*chans) for chans in asked]
            reader = await _connect(owner, READER)
            try:
                more = [await PeerClient.over(reader.conn, peer) for _ in range(8)]
                for client in [reader, *more]:
                    assert await _fetch(client)
            finally:
                reader.close()
            if shutil.which("git") is not None:
                await asyncio.to_thread(git_clone, owner, OTHER, tmp_path)
            return [sum(1 for o in chans if o is not None) for chans in opened]
        finally:
            for conn in conns:
                conn.close()

    held = asyncio.run(asyncio.wait_for(run(), 180))
    assert max(held) <= MAX_STRANGER_CHANNELS_PER_CONNECTION, held
    assert sum(held) <= MAX_STRANGER_CHANNELS, held
    assert "refused a channel of a node it does not know" in agent_log(owner)
    still_serving(owner)


@pytest.mark.parametrize(
    ("key", "hello", "limit"),
    [
        pytest.param(SigningKey(bytes([211]) + bytes(31)), False, HELLO_FRAME, id="before-hello"),
        pytest.param(READER, True, SMALL_FRAME, id="granted-node-without-push"),
    ],
)
def test_a_frame_announced_larger_than_allowed_closes_the_channel_unread(
    owner: Owner, key: SigningKey, hello: bool, limit: int
) -> None:
    """Only the 4-byte length is read: a stranger before the hello, or a node that may not
    push after it, announcing 60 MiB has its channel closed at once, nothing of it held."""
    size = 60 * MiB

    async def run() -> bytes:
        if hello:
            client = await _connect(owner, key)
            conn, writer, reader = client.conn, client.writer, client.reader
        else:
            conn = await _raw_connect(owner, key)
            channel = await _subsystem(conn)
            assert channel is not None
            writer, reader = channel
        try:
            writer.write(size.to_bytes(4, "big") + b"[" * 16384)
            return await _closed_by_agent(reader)
        finally:
            conn.close()

    assert asyncio.run(asyncio.wait_for(run(), 60)) == b""
    assert f"a frame of {size} bytes (at most {limit} here)" in agent_log(owner)
    assert connected(owner)["buffered"] == 0
    still_serving(owner)


def test_a_large_frame_is_read_only_for_a_push_from_a_node_that_may_push(owner: Owner) -> None:
    """PUSHER (granted push) may send a `vaults.receive` over 64 KiB: it is read and answered
    (here refused by the push checks, not by its size); the same size for another method is
    closed once its method is known."""
    objects = [b"\x03" + b"x" * (2 * SMALL_FRAME)]

    async def run() -> None:
        client = await _connect(owner, PUSHER)
        try:
            with pytest.raises(PeerError):  # answered: not a valid push
                await client.call(
                    "vaults.receive", {"vault": "work", "head": "0" * 40, "objects": objects}
                )
            assert await _fetch(client)  # the same channel goes on
            with pytest.raises(
                PeerUnreachable
            ):  # a large frame of a method that carries no objects
                await client.call("vaults.fetch", {"vault": "work", "haves": [], "pad": objects})
        finally:
            client.close()

    asyncio.run(asyncio.wait_for(run(), 60))
    assert "for a method that carries no objects" in agent_log(owner)
    assert connected(owner)["buffered"] == 0
    still_serving(owner)


def test_silent_channels_are_closed_before_and_after_the_hello(owner: Owner) -> None:
    """A channel that never asks for a command, one that never says hello, and one that says
    hello and then nothing: each is closed (the hello within min(10 s, --peer-idle), the next
    request within --peer-idle)."""

    async def run() -> None:
        client = await _connect(owner, READER)  # its channel: the hello, then silence
        try:
            bare = await _bare_channel(client)
            quiet = await _subsystem(client.conn)
            assert quiet is not None
            assert await _closed_by_agent(quiet[1]) == b""
            assert await _closed_by_agent(client.reader) == b""
            await asyncio.wait_for(bare.wait_closed(), 30)
        finally:
            client.close()

    asyncio.run(asyncio.wait_for(run(), 90))
    log = agent_log(owner)
    assert ": no command asked within" in log
    assert "no hello in time" in log
    assert ": silent" in log
    still_serving(owner)


def _nested(depth: int, kind: str) -> bytes:
    """A request whose params (or id) nest ``depth`` levels, or a bare list that deep."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    inner = (
        (b'{"a":' * depth + b"1" + b"}" * depth) if kind == "dict" else b"[" * depth + b"]" * depth
    )
    field = (
        b'"id":' + inner + b',"params":{}'
        if kind == "id"
        else b'"id":2,"params":{"x":' + inner + b"}"
    )
    return b'{"jsonrpc":"2.0","method":"vaults.scan",' + field + b"}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(_nested(30_000, "list"), "nested too deep", id="list-30000-deep"),
        pytest.param(_nested(100_000, "list"), "a frame of 200000 bytes", id="list-100000-deep"),
        pytest.param(_nested(500, "params"), "nested too deep", id="params-500-deep"),
        pytest.param(_nested(500, "dict"), "nested too deep", id="params-dict-500-deep"),
        pytest.param(_nested(500, "id"), "nested too deep", id="id-500-deep"),
    ],
)
def test_a_document_nested_too_deep_closes_the_channel_without_a_traceback(
    owner: Owner, body: bytes, reason: str
) -> None:
    before = agent_log(owner).count(reason)

    async def run() -> bytes:
        client = await _connect(owner, READER)
        try:
            client.writer.write(len(body).to_bytes(4, "big") + body)
            return await _closed_by_agent(client.reader)
        finally:
            client.close()

    assert asyncio.run(asyncio.wait_for(run(), 60)) == b""
    log = agent_log(owner)
    assert "Traceback" not in log and "RecursionError" not in log
    assert log.count(reason) > before, reason
    still_serving(owner)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_frames_announced_large_do_not_fill_the_agents_memory(owner: Owner) -> None:
    """Strangers before the hello, and a node that may not push after it, each announce 64 MiB
    frames on many channels and stream 24 MiB into each: the agent reads none of it, so its
    memory stays near where it was (before the limits it grew by every byte sent)."""
    from tests.sync.test_three_agents import agent_pid

    pid = agent_pid(owner.env)
    assert pid is not None
    strangers = [SigningKey(bytes([212, i]) + bytes(30)) for i in range(2)]
    sent_per_channel = 24 * MiB

    async def flood(writer: asyncssh.SSHWriter[bytes]) -> int:
        writer.write((64 * MiB).to_bytes(4, "big"))
        sent, chunk = 0, b"[" * MiB
        while sent < sent_per_channel:
            try:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 15)
            except (OSError, asyncssh.Error, TimeoutError):
                break
            sent += len(chunk)
        return sent

    async def run() -> int:
        conns = [await _raw_connect(owner, key) for key in strangers]
        reader = await _connect(owner, READER)
        peer = decode_node_id(owner.node_id)
        try:
            channels: list[asyncssh.SSHWriter[bytes]] = []
            for conn in conns:
                for _ in range(MAX_STRANGER_CHANNELS_PER_CONNECTION):
                    opened = await _subsystem(conn)
                    assert opened is not None
                    channels.append(opened[0])
            greeted = [reader, *[await PeerClient.over(reader.conn, peer) for _ in range(7)]]
            channels += [c.writer for c in greeted]
            await asyncio.gather(*(flood(w) for w in channels))
            return rss_kib(pid)
        finally:
            reader.close()
            for conn in conns:
                conn.close()

    before = rss_kib(pid)
    during = asyncio.run(asyncio.wait_for(run(), 180))
    grown = (during - before) // 1024
    # 16 channels x 24 MiB = 384 MiB would have been held; allow for everything else
    assert grown < 128, f"the agent grew by {grown} MiB"
    assert connected(owner)["buffered"] == 0
    still_serving(owner)


def test_a_node_the_agent_does_not_know_still_runs_many_operations_through_its_pool(
    owner: Owner,
) -> None:
    """A stranger may hold only a few channels per connection: a process running more
    operations on that node at once than that waits for its own channels to close, on one
    connection, instead of breaking the operations under way."""
    from concurrent.futures import ThreadPoolExecutor

    from polykey.network.pool import Pool

    pool = Pool()
    key = ssh_key(SigningKey(bytes([213]) + bytes(31)).openssh_private_pem())
    peer = decode_node_id(owner.node_id)

    async def slow_scan(client: PeerClient) -> int:
        reply = await client.call("vaults.scan", {})
        await asyncio.sleep(0.2)  # hold the channel, so that the operations overlap
        return len(reply["vaults"])

    def one(_: int) -> int:
        return int(pool.run(key, peer, "127.0.0.1", owner.port, slow_scan))

    count = 4 * MAX_STRANGER_CHANNELS_PER_CONNECTION
    with ThreadPoolExecutor(count) as threads:
        assert list(threads.map(one, range(count))) == [0] * count  # nothing shared with it
    assert len(pool.connections()) == 1
    for conn in pool._conns.values():
        pool._loop.call_soon_threadsafe(conn[0].close)  # type: ignore[union-attr]


# --- in this process, with tiny limits --------------------------------------------------------


def _in_process(
    limits: object, handler: object, run: Callable[[int, object], Awaitable[None]]
) -> None:
    """Serve with network/ssh.py in this process and run ``run(port, host_node_id)``."""
    from polykey.network import ssh

    host = SigningKey(bytes([7]) * 32)

    async def main() -> None:
        server = await ssh.serve(
            "127.0.0.1",
            0,
            ssh_key(host.openssh_private_pem()),
            handler,  # type: ignore[arg-type]
            limits=limits,  # type: ignore[arg-type]
            idle=5,
        )
        try:
            await run(server.sockets[0].getsockname()[1], node_id_from_bytes(host.public))
        finally:
            server.close()

    asyncio.run(asyncio.wait_for(main(), 60))


async def _client(key: SigningKey, port: int, host: object) -> PeerClient:
    return await PeerClient.connect(
        ssh_key(key.openssh_private_pem()),
        host,  # type: ignore[arg-type]
        "127.0.0.1",
        port,
    )


def test_large_frames_held_at_once_stay_within_the_budget_and_wait_their_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three pushes of ~130 KiB at once, with a budget of 150 KiB: one is held at a time, the
    others wait for it (none is refused), and the budget is whole again at the end."""
    from polykey.network import limits as peer_limits
    from polykey.network import ssh

    monkeypatch.setattr(peer_limits, "BUFFER_BUDGET", 150 * 1024)
    limits = ssh.PeerLimits()
    inside, peak, held = 0, 0, []
    together = asyncio.Event()

    async def handle(_peer: object, method: str, params: dict[str, object]) -> dict[str, object]:
        nonlocal inside, peak
        if method == "peer.hello":
            return {"version": 1}
        inside += 1
        peak = max(peak, inside)
        held.append(limits.buffered)
        if inside > 1:
            together.set()
        with contextlib.suppress(TimeoutError):  # give a second one the time to come in
            await asyncio.wait_for(together.wait(), 1)
        inside -= 1
        return {"objects": len(params["objects"])}  # type: ignore[arg-type]

    async def run(port: int, host: object) -> None:
        client = await _client(READER, port, host)
        try:
            more = [await PeerClient.over(client.conn, host) for _ in range(2)]  # type: ignore[arg-type]
            push = {"vault": "v", "head": "0" * 40, "objects": [b"x" * 100_000]}
            replies = await asyncio.gather(
                *(c.call("vaults.receive", push) for c in [client, *more])
            )
            assert replies == [{"objects": 1}] * 3
        finally:
            client.close()

    _in_process(limits, handle, run)
    assert peak == 1, "two large frames were held at once past the budget"
    assert held and max(held) <= 150 * 1024, held
    assert limits.buffered == 0


def test_who_may_send_a_large_frame_is_decided_from_the_grants_before_reading_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With ``pushers`` = {READER}: READER's large push is read; OTHER's (it may not push) and
    a stranger's are closed on their length."""
    import logging

    from polykey.network import ssh

    caplog.set_level(logging.WARNING, logger="polykey.network")
    stranger = SigningKey(bytes([214]) + bytes(31))
    limits = ssh.PeerLimits()
    limits.known = frozenset({READER.public, OTHER.public})
    limits.pushers = frozenset({READER.public})
    seen: list[int] = []

    async def handle(_peer: object, method: str, params: dict[str, object]) -> dict[str, object]:
        if method == "peer.hello":
            return {"version": 1}
        seen.append(len(params["objects"][0]))  # type: ignore[index]
        return {}

    push = {"vault": "v", "head": "0" * 40, "objects": [b"x" * (2 * SMALL_FRAME)]}

    async def run(port: int, host: object) -> None:
        reader = await _client(READER, port, host)
        try:
            assert await reader.call("vaults.receive", push) == {}
        finally:
            reader.close()
        for key in (OTHER, stranger):
            client = await _client(key, port, host)
            try:
                with pytest.raises(PeerUnreachable):  # the channel closed: no answer
                    await client.call("vaults.receive", push)
            finally:
                client.close()

    _in_process(limits, handle, run)
    assert seen == [2 * SMALL_FRAME]
    too_large = [r.getMessage() for r in caplog.records if "bytes (at most" in r.getMessage()]
    assert len(too_large) == 2, too_large
    assert all(f"(at most {SMALL_FRAME} here)" in m for m in too_large)
