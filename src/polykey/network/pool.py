"""One SSH connection per peer, kept open and reused by every operation of this process.

A background thread runs one asyncio loop for all peer connections; callers on any thread hand it
coroutines. Each operation gets its own channel on the shared connection (SSH multiplexes them).
A connection that breaks is dropped and the next operation dials again; idle ones close after
IDLE_S.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from polykey.ids import NodeId, encode_node_id
from polykey.network.ssh import MAX_CHANNELS_PER_CONNECTION, PeerClient, PeerUnreachable
from polykey.network.wait import wait

IDLE_S = 300.0
# Operations of this process on one peer at once; the rest wait their turn. Kept under the
# server's channel limit, so that a busy moment never looks like a broken connection.
CHANNELS_PER_PEER = MAX_CHANNELS_PER_CONNECTION // 2


class Pool:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._conns: dict[tuple[bytes, str, int], tuple[asyncssh.SSHClientConnection, float]] = {}
        # used in the loop only: operations at once per peer, and one dial at a time per peer
        self._gates: dict[tuple[bytes, str, int], asyncio.Semaphore] = {}
        self._dialing: dict[tuple[bytes, str, int], asyncio.Lock] = {}

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="pk-peers", daemon=True).start()
                self._loop = loop
            return self._loop

    def run(
        self,
        key: asyncssh.SSHKey,
        peer: NodeId,
        host: str,
        port: int,
        call: Callable[[PeerClient], Awaitable[Any]],
    ) -> Any:
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._run(key, peer, host, port, call), loop)
        return wait(future)  # the agent's node thread serves other jobs meanwhile

    async def _run(
        self,
        key: asyncssh.SSHKey,
        peer: NodeId,
        host: str,
        port: int,
        call: Callable[[PeerClient], Awaitable[Any]],
    ) -> Any:
        self._close_idle()
        slot = (bytes(peer), host, port)
        async with self._gates.setdefault(slot, asyncio.Semaphore(CHANNELS_PER_PEER)):
            return await self._attempt(key, peer, slot, call)

    async def _attempt(
        self,
        key: asyncssh.SSHKey,
        peer: NodeId,
        slot: tuple[bytes, str, int],
        call: Callable[[PeerClient], Awaitable[Any]],
    ) -> Any:
        _, host, port = slot
        dialing = self._dialing.setdefault(slot, asyncio.Lock())
        for attempt in (1, 2):
            client: PeerClient | None = None
            async with dialing:  # operations starting together share one dial
                cached = self._conns.get(slot)
                if cached is None:
                    client = await PeerClient.connect(key, peer, host, port)
                    self._conns[slot] = (client.conn, time.monotonic())
            if client is None:
                assert cached is not None
                try:
                    client = await PeerClient.over(cached[0], peer)
                except PeerUnreachable:
                    self._drop(slot, cached[0])
                    continue
                self._conns[slot] = (client.conn, time.monotonic())
            try:
                return await call(client)
            except PeerUnreachable:
                self._drop(slot, client.conn)
                if attempt == 2 or cached is None:
                    raise
            finally:
                client.close_channel()
        raise PeerUnreachable(encode_node_id(peer))

    def _drop(self, slot: tuple[bytes, str, int], conn: asyncssh.SSHClientConnection) -> None:
        """Close a broken connection, and forget it unless another has replaced it."""
        conn.close()
        held = self._conns.get(slot)
        if held is not None and held[0] is conn:
            del self._conns[slot]

    def _close_idle(self) -> None:
        now = time.monotonic()
        for slot, (conn, used) in list(self._conns.items()):
            if now - used > IDLE_S:
                conn.close()
                del self._conns[slot]

    def connections(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "node_id": encode_node_id(NodeId(raw)),
                "address": f"{host}:{port}",
                "idle_s": round(now - used, 1),
            }
            for (raw, host, port), (_, used) in self._conns.items()
        ]


POOL = Pool()
