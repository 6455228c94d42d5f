"""A relay and a node registered with it, as real agents in a network namespace of their own
(only its loopback: nothing leaves it), and clients of the relay, each its own process dialling
from its own loopback address (tests/network/standins/relay_client.py).

- Clients behind one relay do not share one handshake count on the node: the relay names each
  forward's origin (the address it sees the client at), the node counts handshakes by it, and
  the relay bounds the connections of one address. One client leaving handshakes hanging on
  every channel it may open does not keep another from getting through
  (docs/spec/discovery.md section 9; docs/spec/peer-protocol.md, "Limits").
- A node that renews its key closes what its old puncher held (a connection punched to it under
  the old key), keeps one connection to its relay (the registration under the new NodeId; the
  old one gone from the relay), and is reached through the relay under the new NodeId, not the
  old (docs/spec/discovery.md sections 9 and 12).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from polykey.crypto.signing import SigningKey, openssh_public_line
from polykey.ids import NodeId, encode_node_id
from polykey.network.graph import Address
from polykey.network.limits import MAX_HANDSHAKES_PER_ADDRESS, PeerLimits
from polykey.network.relay import (
    FORWARD_PORT,
    MAX_RELAYED_PER_ADDRESS_TO_NODE,
    Registrar,
    Relay,
    RelaySpec,
)
from polykey.network.ssh import PeerClient, serve, ssh_key
from polykey.network.sshserver import UNNAMED_ORIGIN, serve_relayed
from tests.network.netns import Host, ip, need_namespaces, registered

ROOT = str(Path(__file__).resolve().parents[2])
RELAY_PORT, NODE_PORT = 14350, 14351
RELAY_HOST = "127.0.0.1"


class Client:
    """A relay_client process dialling from ``source`` (in the namespace)."""

    def __init__(self, ns: str, source: str, relay_id: str) -> None:
        module = "tests.network.standins.relay_client"
        argv = [sys.executable, "-m", module, source, relay_id, RELAY_HOST, str(RELAY_PORT)]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def __call__(self, *words: object) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((" ".join(map(str, words)) + "\n").encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the client died on {words}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Agents:
    def __init__(self, ns: str, relay: Host, node: Host) -> None:
        self.ns, self.relay, self.node = ns, relay, node
        self.clients: list[Client] = []

    def client(self, source: str) -> Client:
        made = Client(self.ns, source, self.relay.id)
        self.clients.append(made)
        return made

    def node_id(self) -> str:
        return str(self.node.status()["node_id"])


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    """A namespace with only its loopback up; in it a relay agent and a node registered with
    it (both on 127.0.0.1, the node's peer port on 127.0.0.1 too)."""
    need_namespaces()
    ns = f"pkrc{uuid.uuid4().hex[:6]}"
    if ip("netns", "add", ns).returncode != 0:
        pytest.skip("this machine does not allow network namespaces")
    tmp = tmp_path_factory.mktemp("relay-clients")
    relay = node = None
    try:
        assert ip("-n", ns, "link", "set", "lo", "up").returncode == 0
        relay, node = Host(ns, tmp, "relay"), Host(ns, tmp, "node")
        quiet = ("--no-lan", "--no-publish")
        relay.ok(
            "agent", "start", "-b", "--host", RELAY_HOST, "--port", str(RELAY_PORT),
            "--relay", *quiet,
        )  # fmt: skip
        at = f"{relay.id}@{RELAY_HOST}:{RELAY_PORT}"
        node.ok(
            "agent", "start", "-b", "--host", "127.0.0.1", "--port", str(NODE_PORT),
            "--via-relay", at, *quiet,
        )  # fmt: skip
        node.wait(registered)
        made = Agents(ns, relay, node)
        try:
            yield made
        finally:
            for client in made.clients:
                client.close()
    finally:
        for host in (node, relay):
            if host is not None:
                host.run("agent", "stop")
        ip("netns", "del", ns)


def _relayed(agents: Agents) -> dict[str, Any]:
    return dict(agents.relay.status()["reach"]["relay"])


def test_a_client_hanging_handshakes_through_a_relay_does_not_lock_out_another(
    agents: Agents,
) -> None:
    node = agents.node_id()
    before = _relayed(agents)["refused"]
    abusive = agents.client("127.0.0.2")
    bound = MAX_RELAYED_PER_ADDRESS_TO_NODE
    # two NodeIds of its own (NodeIds cost nothing): the relay bounds its address all the same
    held = abusive("hold", node, bound + 8, 2)
    assert held == {"opened": bound, "refused": 8}
    assert _relayed(agents)["refused"] - before == 8
    # the node holds every one of them in its handshake, counted against that client's address
    agents.node.wait(lambda s: s["peers_connected"]["authenticating"] >= bound)

    polite = agents.client("127.0.0.3")
    assert polite("hello", node) == {"ok": True}
    # ... while the other's handshakes still hang (the node refused none of them)
    assert abusive("open") == {"open": bound}
    assert agents.node.status()["peers_connected"]["authenticating"] == bound


# --- a renewal -------------------------------------------------------------------------------


def _tcp_sockets(pid: int) -> list[tuple[int, int, str]]:
    """The TCP sockets process ``pid`` holds: (local port, remote port, state) each, read from
    /proc (its file descriptors and its namespace's TCP tables)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    states = {"01": "ESTABLISHED", "0A": "LISTEN"}
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for row in f.read().splitlines()[1:]:
                cols = row.split()
                if cols[9] in inodes:
                    local, remote = (int(c.rsplit(":", 1)[1], 16) for c in cols[1:3])
                    found.append((local, remote, states.get(cols[3], cols[3])))
    return found


def test_a_renewed_node_drops_what_its_old_key_held_and_is_reached_under_the_new_one(
    agents: Agents,
) -> None:
    old = agents.node_id()
    client = agents.client("127.0.0.4")
    punched = client("punch", old)
    assert set(punched) == {"local", "peer"}, punched
    pid = int(agents.node.status()["pid"])
    held = _tcp_sockets(pid)
    assert (punched["peer"], punched["local"], "ESTABLISHED") in held  # the old key's puncher

    renewed = json.loads(agents.node.ok("keys", "renew", "--format", "json"))
    new = renewed["node_id"]
    assert new != old and agents.node_id() == new

    # the old puncher is closed: the connection punched to the old key is gone
    assert client("closed") == {"closed": True}
    sockets = _tcp_sockets(pid)
    assert not [s for s in sockets if punched["peer"] in s[:2]], sockets
    # one connection to the relay (the registration under the new NodeId), one listener
    to_relay = [s for s in sockets if s[1] == RELAY_PORT]
    assert len(to_relay) == 1 and to_relay[0][2] == "ESTABLISHED", sockets
    assert sorted(s for s in sockets if s[2] == "LISTEN") == [(NODE_PORT, 0, "LISTEN")]
    status = agents.node.wait(registered)
    assert status["reach"]["mode"] == "via relay"
    assert _relayed(agents)["registered"] == 1

    # reached through the relay under the new NodeId, punched to as well; the old one is gone
    other = agents.client("127.0.0.5")
    assert other("hello", new) == {"ok": True}
    refused = other("hello", old)
    assert refused["ok"] is False and "not registered" in refused["error"], refused
    again = other("punch", new)
    assert set(again) == {"local", "peer"}, again


# --- in one process: the node's count, by the origin the relay names -------------------------


def key(seed: int) -> Any:
    return ssh_key(SigningKey(bytes([seed]) * 32).openssh_private_pem())


async def hello(peer: NodeId, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1}


class Hanging(asyncssh.SSHTCPSession[bytes]):
    """A relayed channel that never speaks; ``closed`` once its other end closes it."""

    closed = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


def test_the_node_counts_relayed_handshakes_by_the_origin_the_relay_names() -> None:
    """A relay allowing more than the node does from one address: the node itself turns the
    surplus away, by the client's address as the relay names it, and still lets in a client
    from another address through the same relay."""

    async def scenario() -> None:
        relay = Relay(per_client=64, per_address=64, per_address_to_node=64)
        relay_key, node_key = key(1), key(2)
        relay_id, node_id = (NodeId(SigningKey(bytes([n]) * 32).public) for n in (1, 2))
        server = await serve("127.0.0.1", 0, relay_key, hello, relay=relay)
        spec = RelaySpec(relay_id, Address("127.0.0.1", server.get_port()))
        limits = PeerLimits()

        async def relayed(conn: Any, name: str, port: int) -> Any:
            return await serve_relayed(conn, name, port, node_key, hello, None, limits)

        registrar = Registrar(node_key, node_id, spec, Address("127.0.0.1", 9), relayed)
        task = asyncio.create_task(registrar.run())
        conns = []
        try:
            while not relay.is_registered(node_id):
                await asyncio.sleep(0.02)
            pinned = asyncssh.import_public_key(openssh_public_line(bytes(relay_id)))

            async def dial(source: str, seed: int) -> Any:
                conn = await asyncssh.connect(
                    "127.0.0.1", spec.address.port, local_addr=(source, 0),
                    username="polykey", client_keys=[key(seed)],
                    known_hosts=([pinned], [], []), agent_path=None, config=None,
                )  # fmt: skip
                conns.append(conn)
                return conn

            abusive = await dial("127.0.0.2", 3)
            name = encode_node_id(node_id)
            held = [
                (await abusive.create_connection(Hanging, name, FORWARD_PORT))[1]
                for _ in range(MAX_HANDSHAKES_PER_ADDRESS + 4)
            ]
            while sum(s.closed for s in held) < 4:  # the surplus: turned away by the node
                await asyncio.sleep(0.02)
            assert limits.handshakes == {"relayed 127.0.0.2": MAX_HANDSHAKES_PER_ADDRESS}
            polite = await dial("127.0.0.3", 4)
            client = await PeerClient.connect(key(4), node_id, name, FORWARD_PORT, tunnel=polite)
            client.close()
            assert sum(not s.closed for s in held) == MAX_HANDSHAKES_PER_ADDRESS
        finally:
            task.cancel()
            for conn in conns:
                conn.close()
            registrar.close()
            server.close()

    asyncio.run(scenario())


def test_an_origin_the_relay_names_that_is_no_address_is_not_taken() -> None:
    """A hostile relay names garbage (terminal escapes, no address, a port out of range) as
    its clients' origins: none of it is kept or answered as `peer.observed`; all such
    connections share one count, and the node's limit still holds on them."""

    async def scenario() -> None:
        relay = Relay()
        relay_key, node_key = key(1), key(2)
        relay_id, node_id = (NodeId(SigningKey(bytes([n]) * 32).public) for n in (1, 2))
        server = await serve("127.0.0.1", 0, relay_key, hello, relay=relay)
        spec = RelaySpec(relay_id, Address("127.0.0.1", server.get_port()))
        limits = PeerLimits()

        async def relayed(conn: Any, name: str, port: int) -> Any:
            return await serve_relayed(conn, name, port, node_key, hello, None, limits)

        registrar = Registrar(node_key, node_id, spec, Address("127.0.0.1", 9), relayed)
        task = asyncio.create_task(registrar.run())
        try:
            while not relay.is_registered(node_id):
                await asyncio.sleep(0.02)
            # the relay's side of the registration, used as a hostile relay would use it
            conn: Any = relay.registered[bytes(node_id)].conn
            name = encode_node_id(node_id)
            origins = [("\x1b[31mevil\nhost", 1), ("", 0), ("10.0.0.1", 70000), ("300.1.2.3", 5)]
            held = [
                (await conn.create_connection(Hanging, name, FORWARD_PORT, *origins[i % 4]))[1]
                for i in range(MAX_HANDSHAKES_PER_ADDRESS + 4)
            ]
            while sum(s.closed for s in held) < 4:  # one shared count, held to the limit
                await asyncio.sleep(0.02)
            assert limits.handshakes == {UNNAMED_ORIGIN: MAX_HANDSHAKES_PER_ADDRESS}
        finally:
            task.cancel()
            registrar.close()
            server.close()

    asyncio.run(scenario())
