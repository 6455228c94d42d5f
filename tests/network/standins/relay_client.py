"""A client of a relay as its own process (tests/network/test_relay_clients.py): it dials the
relay from a source address of its own (127.0.0.N), then takes commands on stdin, one a line,
and answers each with one line of JSON:

- ``hold NODEID COUNT KEYS``: COUNT relayed channels to NODEID, from KEYS NodeIds of its own
  (one SSH connection to the relay each), on which it never speaks: handshakes left hanging.
  ``{"opened": N, "refused": M}``.
- ``open``: how many of those channels are still open, ``{"open": N}``.
- ``hello NODEID``: an SSH connection to NODEID through the relay only, its key pinned, and the
  protocol's hello on it: ``{"ok": true}``, or ``{"ok": false, "error": ...}``.
- ``punch NODEID``: a connection punched to NODEID with the relay's help (kept):
  ``{"local": PORT, "peer": PORT}``, or ``{"error": ...}``.
- ``closed``: whether the punched connection is closed by its other end (waiting for it up
  to 30 s): ``{"closed": bool}``.

Usage: python -m tests.network.standins.relay_client SOURCE RELAY_NODEID RELAY_HOST RELAY_PORT
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import asyncssh

from polykey.crypto.signing import SigningKey, openssh_public_line
from polykey.errors import PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network import punch
from polykey.network.graph import Address
from polykey.network.relay import FORWARD_PORT, RelaySpec
from polykey.network.ssh import PeerClient, ssh_key


class _Silent(asyncssh.SSHTCPSession[bytes]):
    """A relayed channel that never speaks, and notes when the other end closes it."""

    def __init__(self) -> None:
        self.closed = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


class Client:
    def __init__(self, source: str, relay: RelaySpec) -> None:
        self.source, self.relay = source, relay
        self.key = ssh_key(SigningKey(os.urandom(32)).openssh_private_pem())
        self.held: list[_Silent] = []
        self.conns: list[asyncssh.SSHClientConnection] = []
        self.punched: asyncssh.SSHClientConnection | None = None

    async def dial(self, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
        pinned = asyncssh.import_public_key(openssh_public_line(bytes(self.relay.node_id)))
        conn = await asyncssh.connect(
            self.relay.address.host,
            self.relay.address.port,
            local_addr=(self.source, 0),
            username="polykey",
            client_keys=[key],
            known_hosts=([pinned], [], []),
            agent_path=None,
            config=None,
            encoding=None,
        )
        self.conns.append(conn)
        return conn

    async def hold(self, target: str, count: int, keys: int) -> dict[str, Any]:
        conns = [
            await self.dial(ssh_key(SigningKey(os.urandom(32)).openssh_private_pem()))
            for _ in range(keys)
        ]
        opened = refused = 0
        for i in range(count):
            try:
                _, session = await conns[i % keys].create_connection(_Silent, target, FORWARD_PORT)
            except asyncssh.ChannelOpenError:
                refused += 1
                continue
            assert isinstance(session, _Silent)
            self.held.append(session)
            opened += 1
        return {"opened": opened, "refused": refused}

    async def hello(self, target: NodeId) -> dict[str, Any]:
        via = await self.dial(self.key)
        try:
            client = await PeerClient.connect(
                self.key, target, encode_node_id(target), FORWARD_PORT, tunnel=via
            )
        except PolykeyError as exc:
            return {"ok": False, "error": str(exc)[:300]}
        finally:
            via.close()
        client.close()
        return {"ok": True}

    async def punch(self, target: NodeId) -> dict[str, Any]:
        via = await self.dial(self.key)
        try:
            conn = await punch.punch(self.key, target, self.relay, via, host=self.source)
        except PolykeyError as exc:
            return {"error": str(exc)[:300]}
        self.punched = conn
        return {
            "local": conn.get_extra_info("sockname")[1],
            "peer": conn.get_extra_info("peername")[1],
        }

    async def closed(self) -> dict[str, Any]:
        if self.punched is None:
            return {"closed": True}
        try:
            await asyncio.wait_for(self.punched.wait_closed(), 30)
        except TimeoutError:
            return {"closed": False}
        return {"closed": True}

    async def command(self, line: str) -> dict[str, Any]:
        words = line.split()
        if words[0] == "hold":
            return await self.hold(words[1], int(words[2]), int(words[3]))
        if words[0] == "open":
            return {"open": sum(1 for s in self.held if not s.closed)}
        if words[0] == "hello":
            return await self.hello(decode_node_id(words[1]))
        if words[0] == "punch":
            return await self.punch(decode_node_id(words[1]))
        if words[0] == "closed":
            return await self.closed()
        return {"error": f"unknown command {words[0]!r}"}


async def main(source: str, relay_id: str, host: str, port: int) -> None:
    client = Client(source, RelaySpec(decode_node_id(relay_id), Address(host, port)))
    loop = asyncio.get_running_loop()
    try:
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            print(json.dumps(await client.command(line)), flush=True)
    finally:
        for conn in client.conns:
            conn.close()
        if client.punched is not None:
            client.punched.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
