"""What one agent holds open for peers, and what it reads from them: the limits of the peer
port (docs/spec/peer-protocol.md, "Limits") and the counts behind them, shared by the
connections of one server (network/sshserver.py) and its `polykey` channels
(network/rpcserver.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

from polykey.ids import NodeId

# What one agent holds open for peers, so that no peer (or stranger) can exhaust it. A node's
# own dialer keeps one connection per peer and opens a few channels on it; stock git opens one
# connection per command. Past a limit, the newcomer is turned away and the rest keep working.
MAX_CONNECTIONS = 256  # open SSH connections in all
MAX_UNAUTHENTICATED = 64  # of them, still in the handshake or authentication
MAX_HANDSHAKES_PER_ADDRESS = 16  # of those, from one network address
MAX_CONNECTIONS_PER_PEER = 16  # authenticated connections of one NodeId
MAX_CHANNELS_PER_CONNECTION = 32  # open channels (polykey or git) on one connection
LOGIN_TIMEOUT_S = 20  # from TCP accept to authenticated
# Bytes a peer may send on a channel before the server reads them (SSH's window): with the
# channel limit, what one connection can make the server buffer is bounded.
CHANNEL_WINDOW = 512 * 1024
MAX_CHANNELS = 1024  # open channels on all connections
# NodeIds cost nothing to make: those the node does not know share a few connections, so that
# strangers cannot take the slots of the nodes it shares with (a stranger can do nothing but
# ask; notifications from unknown nodes are refused anyway).
MAX_STRANGER_CONNECTIONS = 32
# ... and few channels: all strangers together hold at most 128 of the 1,024 channels.
MAX_STRANGER_CHANNELS_PER_CONNECTION = 4
MAX_STRANGER_CHANNELS = 128
# A node that may not send large frames (a stranger, or a node not granted push) gets a small
# window: what its channels make the server buffer unread is at most 64 KiB each.
SMALL_WINDOW = 64 * 1024
# An authenticated connection with no channel open this long is closed (the dialer's pool
# closes its own after 5 idle minutes).
IDLE_CONNECTION_S = 600.0

# What a channel may make the server read, and how long it may keep it waiting. A channel must
# ask for its command (the `polykey` subsystem or stock git) and, on a `polykey` channel, send
# its hello, a frame of at most HELLO_FRAME bytes, within HELLO_TIMEOUT_S of opening (or the
# request timeout, if shorter). After the hello, every request must start within the request
# timeout (`pk agent start --peer-idle`, IDLE_S by default) of the previous reply, and its body
# must keep coming: no silence as long as the request timeout, and all of it within the request
# timeout plus its size at FRAME_MIN_RATE. A request is at most SMALL_FRAME bytes, but for the
# methods that carry objects (LARGE_METHODS) from a node that may push to some vault: those
# may be up to MAX_FRAME, and all such frames held at once, on every channel together, are at
# most BUFFER_BUDGET bytes (a frame past it waits its turn, up to the request timeout). The
# size in a frame's header is checked before any of its body is read.
HELLO_FRAME = 4 * 1024
HELLO_TIMEOUT_S = 10.0
IDLE_S = 60.0
SMALL_FRAME = 64 * 1024
LARGE_METHODS = frozenset({"vaults.receive", "vaults.adopt"})  # they carry objects (sync/)
BUFFER_BUDGET = 256 * 1024 * 1024
FRAME_MIN_RATE = 32 * 1024  # bytes per second


def count_down(counts: dict[Any, int], key: Any) -> None:
    """One fewer for ``key``; a count reaching 0 is removed."""
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class PeerLimits:
    """The counts behind the limits, shared by the connections of one server (read by the
    agent's status)."""

    def __init__(self) -> None:
        self.connections = 0
        self.unauthenticated = 0
        self.channels = 0
        self.strangers = 0  # authenticated connections of NodeIds not in ``known``
        self.stranger_channels = 0  # channels opened by NodeIds not in ``known``
        self.handshakes: dict[str, int] = {}  # connections still authenticating, by address
        self.per_peer: dict[NodeId, int] = {}
        # The NodeIds this node deals with (granted a vault, or in its node graph), kept fresh by
        # the agent; None: every NodeId counts as known.
        self.known: frozenset[bytes] | None = None
        # The NodeIds granted `push` on some vault, kept fresh by the agent: only they may send
        # the large frames of LARGE_METHODS. None: every known NodeId may.
        self.pushers: frozenset[bytes] | None = None
        self.buffered = 0  # bytes of large frames held now (at most BUFFER_BUDGET)
        self._waiting: list[asyncio.Future[None]] = []

    def is_stranger(self, node_id: NodeId) -> bool:
        return self.known is not None and bytes(node_id) not in self.known

    def may_send_large(self, node_id: NodeId) -> bool:
        """Whether a request from ``node_id`` may be larger than SMALL_FRAME."""
        if self.is_stranger(node_id):
            return False
        return self.pushers is None or bytes(node_id) in self.pushers

    async def reserve(self, size: int, timeout: float) -> bool:
        """Count ``size`` bytes against BUFFER_BUDGET, waiting up to ``timeout`` seconds for
        room; False if there was none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.buffered + size > BUFFER_BUDGET:
            left = deadline - loop.time()
            if left <= 0 or size > BUFFER_BUDGET:
                return False
            room: asyncio.Future[None] = loop.create_future()
            self._waiting.append(room)
            try:
                await asyncio.wait_for(room, left)
            except TimeoutError:
                return False
            finally:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(room)
        self.buffered += size
        return True

    def release(self, size: int) -> None:
        """Give back what ``reserve`` counted (the frame and what was decoded from it are gone
        by then); whoever waits for room looks again."""
        self.buffered -= size
        waiting, self._waiting = self._waiting, []
        for room in waiting:
            if not room.done():
                room.set_result(None)
        if self.buffered == 0:
            _give_memory_back()


@functools.cache
def _malloc_trim() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    return None


def _give_memory_back() -> None:
    """Hand the heap's free pages back to the system (glibc: malloc_trim), so that the memory
    of large frames is not kept once they are gone; elsewhere, nothing."""
    trim = _malloc_trim()
    if trim is not None:
        with contextlib.suppress(Exception):
            trim(0)
