"""One SSH connection per peer, kept open and reused by every operation of one node.

A background thread runs one asyncio loop for all of a node's peer connections; callers on any
thread hand it coroutines and wait through the node's waiter (the agent's lets its node thread
serve other requests meanwhile). Each operation gets its own channel on the shared connection
(SSH multiplexes them). A connection that breaks is dropped and the next operation dials again;
idle ones close after IDLE_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from polykey.ids import NodeId, encode_node_id
from polykey.network.ssh import MAX_CHANNELS_PER_CONNECTION, PeerClient, PeerUnreachable
from polykey.network.sshlib import asyncssh

Waiter = Callable[[Future[Any]], Any]


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The pool's thread: run the loop until it is stopped, then close it here (a loop left
    for the collector at exit may be closed after its file descriptors are gone)."""
    try:
        loop.run_forever()
    finally:
        loop.close()


def block(future: Future[Any]) -> Any:
    """The default waiter: simply block until the answer comes."""
    return future.result()


IDLE_S = 300.0
# Operations of this process on one peer at once; the rest wait their turn. Kept under the
# server's channel limit, so that a busy moment never looks like a broken connection.
CHANNELS_PER_PEER = MAX_CHANNELS_PER_CONNECTION // 2


class Pool:
    def __init__(self, waiter: Waiter = block) -> None:
        self.waiter = waiter
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conns: dict[tuple[bytes, str, int], tuple[asyncssh.SSHClientConnection, float]] = {}
        # used in the loop only: operations at once per peer, and one dial at a time per peer
        self._gates: dict[tuple[bytes, str, int], asyncio.Semaphore] = {}
        self._dialing: dict[tuple[bytes, str, int], asyncio.Lock] = {}
        # our channels open per peer, and who waits for one of them to close
        self._open: dict[tuple[bytes, str, int], int] = {}
        self._freed: dict[tuple[bytes, str, int], list[asyncio.Future[None]]] = {}
        self._closing: set[asyncio.Task[None]] = set()  # channels closing (held till done)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=_serve, args=(loop,), name="pk-peers", daemon=True
                )
                self._thread.start()
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
        return self.waiter(future)  # the agent's node thread serves other jobs meanwhile

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
                client = await self._channel(slot, cached[0], peer)
                if client is None:
                    self._drop(slot, cached[0])
                    continue
                self._conns[slot] = (client.conn, time.monotonic())
            else:
                self._counted(slot, 1)
            try:
                return await call(client)
            except PeerUnreachable:
                self._drop(slot, client.conn)
                if attempt == 2 or cached is None:
                    raise
            finally:
                self._close_channel(slot, client)
        raise PeerUnreachable(encode_node_id(peer))

    def _close_channel(self, slot: tuple[bytes, str, int], client: PeerClient) -> None:
        """Close an operation's channel; it counts as ours until the other side has closed it
        too, but the operation's answer does not wait for that (a round trip)."""

        async def closed() -> None:
            try:
                await client.channel_closed()
            finally:
                self._counted(slot, -1)
                self._wake(slot)  # a channel of ours is gone: who waits looks again

        task = asyncio.get_running_loop().create_task(closed())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _channel(
        self, slot: tuple[bytes, str, int], conn: asyncssh.SSHClientConnection, peer: NodeId
    ) -> PeerClient | None:
        """A new channel on ``conn`` (counted as ours from the moment it is asked for); None if
        the connection is broken. A node that does not know this one lets it hold only a few
        channels (the server's stranger quota): a channel refused on a live connection while
        others of ours are open or opening on it waits for one of them to close, rather than
        breaking the operations under way."""
        while True:
            self._counted(slot, 1)
            try:
                return await PeerClient.over(conn, peer)
            except PeerUnreachable:
                self._counted(slot, -1)
                if conn.is_closed() or not self._open.get(slot):
                    self._wake(slot)  # nothing of ours left to wait for
                    return None
            freed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._freed.setdefault(slot, []).append(freed)
            await freed

    def _wake(self, slot: tuple[bytes, str, int]) -> None:
        for freed in self._freed.pop(slot, []):
            if not freed.done():
                freed.set_result(None)

    def _counted(self, slot: tuple[bytes, str, int], change: int) -> None:
        """Our channels open or opening on ``slot``'s connection."""
        now = self._open.get(slot, 0) + change
        if now > 0:
            self._open[slot] = now
        else:
            self._open.pop(slot, None)

    def _drop(self, slot: tuple[bytes, str, int], conn: asyncssh.SSHClientConnection) -> None:
        """Close a broken connection, and forget it unless another has replaced it."""
        conn.close()
        self._wake(slot)
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

    def close(self) -> None:
        """Close every connection and stop the loop's thread."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shut() -> None:
            conns = [conn for conn, _ in self._conns.values()]
            self._conns.clear()
            for conn in conns:
                conn.close()
            for conn in conns:  # let each finish closing before the loop stops
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.wait_closed(), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)  # the loop closed by its thread, not by the collector at exit
