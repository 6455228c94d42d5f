"""Relays (docs/spec/discovery.md section 9): real SSH on loopback, in one process, then a
node behind a NAT router made of network namespaces, reached through a relay by real agents.

In process: a relay, a node registered with it and a client, each its own SSH endpoint on
127.0.0.1. The client reaches the node through the relay and the node sees the client's own
NodeId (SSH end to end); the relay refuses what it must: an unregistered NodeId, a host and
port (no open proxy), a registration under another node's name, connections past its bounds;
a relay that hands the connection to the wrong node cannot make it pass for the right one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from polykey.crypto.signing import SigningKey
from polykey.ids import NodeId, encode_node_id
from polykey.network import relay as relay_mod
from polykey.network.graph import Address
from polykey.network.relay import (
    FORWARD_PORT,
    Registrar,
    Relay,
    RelaySpec,
    Tunnels,
    dial_relay,
    parse_relay,
)
from polykey.network.ssh import PeerClient, PeerUnreachable, serve, ssh_key
from tests.network.netns import Host, registered
from tests.network.netns import ip as run_ip


class Endpoint:
    """A node's key, NodeId and (when serving) the peers that called it."""

    def __init__(self, seed: int) -> None:
        signing = SigningKey(bytes([seed]) * 32)
        self.id = NodeId(signing.public)
        self.key = ssh_key(signing.openssh_private_pem())
        self.callers: list[NodeId] = []
        self.port = 0
        self.server: Any = None

    async def handle(self, peer: NodeId, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.callers.append(peer)
        if method == "peer.hello":
            return {"version": 1, "node_id": encode_node_id(self.id)}
        return {"echo": params.get("text", ""), "me": encode_node_id(self.id)}

    async def serve(self, relay: Relay | None = None) -> None:
        self.server = await serve("127.0.0.1", 0, self.key, self.handle, relay=relay)
        self.port = self.server.get_port()


class World:
    def __init__(self) -> None:
        self.relay_node, self.target, self.client, self.other = (Endpoint(n) for n in (1, 2, 3, 4))
        self.relay = Relay(per_client=3)
        self.tasks: list[asyncio.Task[None]] = []
        self.registrars: list[Registrar] = []

    @property
    def spec(self) -> RelaySpec:
        return RelaySpec(self.relay_node.id, Address("127.0.0.1", self.relay_node.port))

    async def register(self, node: Endpoint) -> None:
        await node.serve()
        registrar = Registrar(node.key, node.id, self.spec, Address("127.0.0.1", node.port))
        self.registrars.append(registrar)
        self.tasks.append(asyncio.create_task(registrar.run()))
        for _ in range(200):
            if self.relay.is_registered(node.id):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not registered: {registrar.status()}")


@contextlib.asynccontextmanager
async def world() -> AsyncIterator[World]:
    w = World()
    await w.relay_node.serve(w.relay)
    try:
        yield w
    finally:
        for task in w.tasks:
            task.cancel()
        for r in w.registrars:
            r.close()
        for node in (w.relay_node, w.target, w.other):
            if node.server is not None:
                node.server.close()


async def echo(client: PeerClient) -> dict[str, Any]:
    return await client.call("echo", {"text": "through the relay"})


def test_a_registered_node_is_reached_through_the_relay_end_to_end() -> None:
    async def scenario() -> None:
        async with world() as w:
            await w.register(w.target)
            tunnels = Tunnels()
            try:
                reply = await tunnels.run(w.client.key, w.target.id, w.spec, echo)
                again = await tunnels.run(w.client.key, w.target.id, w.spec, echo)  # kept
            finally:
                await tunnels.close()
            assert (
                reply == again == {"echo": "through the relay", "me": encode_node_id(w.target.id)}
            )
            # the node authenticated the client itself: the relay is not the caller
            assert set(w.target.callers) == {w.client.id}
            assert w.relay.status()["registered"] == 1
            assert w.registrars[0].status()["registered"] is True

    asyncio.run(scenario())


def test_the_relay_connects_only_to_registered_nodes_and_is_no_open_proxy() -> None:
    async def scenario() -> None:
        async with world() as w:
            await w.register(w.target)
            tunnels = Tunnels()
            try:
                with pytest.raises(PeerUnreachable, match="not registered with this relay"):
                    await tunnels.run(w.client.key, w.other.id, w.spec, echo)
            finally:
                await tunnels.close()
            conn = await dial_relay(w.client.key, w.spec)
            try:
                for host, port in (
                    ("127.0.0.1", w.target.port),  # a host and port: never
                    (encode_node_id(w.target.id), 22),  # a registered node at another port
                    ("example.org", FORWARD_PORT),
                ):
                    with pytest.raises(asyncssh.ChannelOpenError):
                        await conn.open_connection(host, port)
                # a registration under another node's name is refused
                with pytest.raises(asyncssh.ChannelListenError):
                    await conn.forward_remote_port(
                        encode_node_id(w.target.id), FORWARD_PORT, "127.0.0.1", 9
                    )
            finally:
                conn.close()
            assert w.relay.is_registered(w.target.id)
            assert not w.relay.is_registered(w.client.id)
            assert w.target.callers == []

    asyncio.run(scenario())


def test_the_relay_bounds_the_connections_of_one_client() -> None:
    async def scenario() -> None:
        async with world() as w:
            await w.register(w.target)
            conn = await dial_relay(w.client.key, w.spec)
            name = encode_node_id(w.target.id)
            try:
                held = [await conn.open_connection(name, FORWARD_PORT) for _ in range(3)]
                with pytest.raises(asyncssh.ChannelOpenError, match="as many connections"):
                    await conn.open_connection(name, FORWARD_PORT)
                assert w.relay.status()["relayed"] == 3
                held[0][1].close()  # one closes: room for another
                for _ in range(100):
                    if w.relay.relayed < 3:
                        break
                    await asyncio.sleep(0.02)
                held.append(await conn.open_connection(name, FORWARD_PORT))
                assert w.relay.status()["relayed"] == 3
            finally:
                conn.close()
            for _ in range(100):
                if w.relay.relayed == 0:
                    break
                await asyncio.sleep(0.02)
            assert w.relay.relayed == 0  # every count given back when the client went

    asyncio.run(scenario())


def test_a_relay_delivering_to_the_wrong_node_cannot_pass_it_off() -> None:
    async def scenario() -> None:
        async with world() as w:
            await w.register(w.target)
            await w.register(w.other)
            # a dishonest relay: the target's name leads to the other node
            w.relay.registered[bytes(w.target.id)] = w.relay.registered[bytes(w.other.id)]
            tunnels = Tunnels()
            try:
                with pytest.raises(PeerUnreachable):
                    await tunnels.run(w.client.key, w.target.id, w.spec, echo)
            finally:
                await tunnels.close()
            assert w.other.callers == [] and w.target.callers == []

    asyncio.run(scenario())


def test_the_meter_holds_a_peer_to_its_rate() -> None:
    meter = relay_mod._Meter(1000)
    assert meter.take(int(1000 * relay_mod.BURST_S)) == 0.0  # a burst passes at once
    assert meter.take(1000) == pytest.approx(1.0, abs=0.05)  # a second's worth: a second's pause


def test_a_relay_is_named_by_its_node_id_and_address() -> None:
    spec = parse_relay(f"{encode_node_id(NodeId(bytes(32)))}@192.0.2.1:1314")
    assert str(spec) == f"{encode_node_id(NodeId(bytes(32)))}@192.0.2.1:1314"
    for bad in ("192.0.2.1:1314", "vnot-a-node@192.0.2.1:1314", "x@y"):
        with pytest.raises(relay_mod.RelayUnusable):
            parse_relay(bad)


# --- a node behind a NAT router, reached through a relay (namespaces; root only) -------------

PUBLIC = {"relay": "10.233.0.1", "client": "10.233.0.2"}  # one switch, in the router
PRIVATE = {"node": "10.233.1.1"}  # behind the router's masquerade (symmetric: no punching)
RELAY_PORT, NODE_PORT = "14310", "14311"
NAT_RULES = """
table ip pknat {
  chain masq {
    type nat hook postrouting priority 100;
    ip saddr 10.233.1.0/24 oifname "brp" masquerade fully-random;
  }
  chain guard {
    type filter hook forward priority 0; ct state established,related accept;
    iifname "brp" ip daddr 10.233.1.0/24 drop;
  }
}
"""


@pytest.fixture(scope="module")
def nat() -> Iterator[dict[str, str]]:
    """Namespaces relay and client on the public side, node behind a masquerading router
    (nftables) that lets nothing in: name -> namespace."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("needs root, iproute2 and nftables")
    tag = uuid.uuid4().hex[:6]
    spaces = {n: f"pk{n[:2]}{tag}" for n in ("relay", "client", "node", "router")}
    made: list[str] = []
    try:
        for ns in spaces.values():
            if run_ip("netns", "add", ns).returncode != 0:
                pytest.skip("this machine does not allow network namespaces")
            made.append(ns)
        r = spaces["router"]
        steps: list[tuple[str, ...]] = [
            ("-n", r, "link", "set", "lo", "up"),
            ("-n", r, "link", "add", "brp", "type", "bridge"),
            ("-n", r, "addr", "add", "10.233.0.254/24", "dev", "brp"),
            ("-n", r, "link", "set", "brp", "up"),
        ]
        for name, ip in {**PUBLIC, **PRIVATE}.items():
            ns, here, there = spaces[name], f"h{name[0]}{tag}", f"r{name[0]}{tag}"
            steps += [
                ("link", "add", here, "type", "veth", "peer", "name", there),
                ("link", "set", here, "netns", ns),
                ("link", "set", there, "netns", r),
                ("-n", ns, "link", "set", "lo", "up"),
                ("-n", ns, "link", "set", here, "up"),
                ("-n", r, "link", "set", there, "up"),
            ]
            if name in PUBLIC:  # on the switch; no route beyond it
                steps += [
                    ("-n", r, "link", "set", there, "master", "brp"),
                    ("-n", ns, "addr", "add", f"{ip}/24", "dev", here),
                ]
            else:  # its own link to the router, whose side is 10.233.1.254
                steps += [
                    ("-n", r, "addr", "add", "10.233.1.254/24", "dev", there),
                    ("-n", ns, "addr", "add", f"{ip}/24", "dev", here),
                    ("-n", ns, "route", "add", "default", "via", "10.233.1.254"),
                ]
        for step in steps:
            done = run_ip(*step)
            if done.returncode != 0:
                pytest.skip(f"could not set up the namespaces: {done.stderr.decode().strip()}")
        netns = ["ip", "netns", "exec", r]
        subprocess.run([*netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        subprocess.run([*netns, "nft", "-f", "-"], input=NAT_RULES.encode(), check=True)
        yield spaces
    finally:
        for ns in made:
            run_ip("netns", "del", ns)


def test_a_node_behind_nat_is_cloned_from_through_a_relay_and_a_killed_relay_fails_cleanly(
    nat: dict[str, str], tmp_path: Path
) -> None:
    relay, node, client = (Host(nat[n], tmp_path, n) for n in ("relay", "node", "client"))
    node.ok("vaults", "create", "work")
    payload = os.urandom(3 * 1024 * 1024)
    node.ok("secrets", "write", "work:big", stdin=payload)
    node.ok("secrets", "write", "work:k", stdin=b"from behind the NAT")
    node.ok("vaults", "share", "work", client.id)
    at = f"{relay.id}@{PUBLIC['relay']}:{RELAY_PORT}"
    serve_relay = ("agent", "start", "-b", "--host", PUBLIC["relay"], "--port", RELAY_PORT)
    quiet = ("--relay", "--no-lan", "--no-publish")
    try:
        relay.ok(*serve_relay, *quiet, "--relay-rate", "64")  # slow: killed mid-transfer
        node.ok("agent", "start", "-b", "--port", NODE_PORT, "--via-relay", at, "--no-lan")
        status = node.wait(registered)
        assert status["reach"]["mode"] == "via relay"
        # the node cannot be reached directly: the client has no route to it at all
        assert run_ip("-n", nat["client"], "route", "get", PRIVATE["node"]).returncode != 0
        client.ok("nodes", "seeds", "add", at)
        cloning = subprocess.Popen(
            client.argv("vaults", "clone", node.id, "work"),
            env=client.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        relay.wait(lambda s: s["reach"]["relay"]["relayed"] >= 1 or cloning.poll() is not None)
        assert cloning.poll() is None, cloning.communicate()
        time.sleep(1.0)  # the transfer is under way (3 MiB at 64 KiB/s takes most of a minute)
        os.kill(relay.status()["pid"], signal.SIGKILL)
        _, err = cloning.communicate(timeout=60)
        assert cloning.returncode == 50, err.decode()
        assert b"pk: error:" in err and b"Traceback" not in err
        assert b"work" not in client.ok("vaults", "list")  # nothing half-written
        assert b"whole" in client.ok("node", "check")

        relay.ok(*serve_relay, *quiet)  # back, at full speed: the node registers again
        node.wait(registered)
        client.ok("vaults", "clone", node.id, "work")
        assert client.ok("secrets", "cat", "work:k") == b"from behind the NAT"
        assert client.ok("secrets", "cat", "work:big") == payload
        shown = node.ok("agent", "status").decode()
        assert f"via relay {at}: registered since" in shown
    finally:
        for host in (node, relay):
            host.run("agent", "stop")
