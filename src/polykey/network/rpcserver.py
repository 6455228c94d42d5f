"""The serving side of a `polykey` channel: the version hello first, then requests answered in
order, each judged by its size before its body is read (network/limits.py), handed to the
node's handler, and answered in JSON or, when the request asked for one, as a raw page
(docs/spec/peer-protocol.md, "Messages", "Raw pages", "Limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from polykey import codec, frames
from polykey.errors import PolykeyError
from polykey.ids import NodeId, encode_node_id
from polykey.network.limits import (
    FRAME_MIN_RATE,
    HELLO_FRAME,
    HELLO_TIMEOUT_S,
    LARGE_METHODS,
    SMALL_FRAME,
    PeerLimits,
)
from polykey.network.sshlib import asyncssh
from polykey.network.wire import MAX_FRAME, PROTOCOL_VERSION, REPLY_TIMEOUT_S, parse, read_body

log = logging.getLogger("polykey.network")
Handler = Callable[[NodeId, str, dict[str, Any]], Awaitable[dict[str, Any]]]


class _Closed(Exception):
    """The channel is to be closed; the message says why (one log line)."""


class _Hold:
    """A large frame's share of the budget (0: a small frame, not counted), given back once."""

    def __init__(self, limits: PeerLimits, size: int) -> None:
        self.limits, self.size = limits, size

    def release(self) -> None:
        size, self.size = self.size, 0
        if size:
            self.limits.release(size)


async def rpc_channel(
    proc: asyncssh.SSHServerProcess[bytes],
    peer: NodeId,
    handler: Handler,
    limits: PeerLimits,
    idle: float,
    opened: float,
) -> None:
    """One `polykey` channel: the version hello first, then requests answered in order. What
    each frame may be, and how long it may take, is decided before its body is read (see
    HELLO_FRAME); a frame over SMALL_FRAME counts against the shared BUFFER_BUDGET until its
    request is answered."""
    loop = asyncio.get_running_loop()
    hello_by = opened + min(HELLO_TIMEOUT_S, idle)
    greeted = False
    try:
        while True:
            if greeted:
                limit = MAX_FRAME if limits.may_send_large(peer) else SMALL_FRAME
                wait = idle
            else:
                limit, wait = HELLO_FRAME, hello_by - loop.time()
            try:
                header = await asyncio.wait_for(proc.stdin.readexactly(4), max(wait, 0))
            except TimeoutError:
                raise _Closed("silent" if greeted else "no hello in time") from None
            size = int.from_bytes(header, "big")
            if size > limit:
                raise _Closed(f"a frame of {size} bytes (at most {limit} here)")
            hold = _Hold(limits, size if size > SMALL_FRAME else 0)
            if hold.size and not await limits.reserve(hold.size, idle):
                raise _Closed("too many large frames held at once")
            try:
                answered = await _one_request(
                    proc, peer, handler, size, greeted, hello_by, idle, hold.release
                )
            finally:
                hold.release()
            if not answered:
                break
            greeted = True
    except (asyncio.IncompleteReadError, ConnectionError, asyncssh.Error):
        pass
    except _Closed as exc:
        log.warning("closed a channel from %s: %s", encode_node_id(peer), exc)
    except ValueError as exc:  # UnicodeDecodeError and bad base64 are ValueErrors too
        reason = str(exc)[:100].replace("\n", " ")
        log.warning("closed a channel from %s: %s", encode_node_id(peer), reason)
    except Exception as exc:  # a bug must cost this channel only, and say so in one line
        log.error(
            "closed a channel from %s: internal error %s", encode_node_id(peer), type(exc).__name__
        )
    finally:
        with contextlib.suppress(Exception):
            proc.exit(0)


async def _one_request(
    proc: asyncssh.SSHServerProcess[bytes],
    peer: NodeId,
    handler: Handler,
    size: int,
    greeted: bool,
    hello_by: float,
    idle: float,
    done: Callable[[], None],
) -> bool:
    """Read the body of a frame of ``size`` bytes, answer it, wait for the answer to be taken;
    False if the channel is done. Nothing of the request is kept once it is handled, and then
    ``done()`` is called (before the reply is sent)."""
    loop = asyncio.get_running_loop()
    within = idle + size / FRAME_MIN_RATE if greeted else hello_by - loop.time()
    try:
        body = await asyncio.wait_for(read_body(proc.stdin, size, idle), max(within, 0))
    except TimeoutError:
        raise _Closed("a request too slow to arrive") from None
    text = codec.text_of(body)  # UTF-8; then the raw bytes go at once
    del body
    request = parse(text)
    del text
    request_id, method, wired = codec.check_request(request)  # codec.BadMessage: closed
    del request
    params = codec.from_wire(wired)
    del wired
    if size > SMALL_FRAME and method not in LARGE_METHODS:
        raise _Closed(f"a frame of {size} bytes for a method that carries no objects")
    # the protocol version is exchanged first, or nothing happens
    if not greeted and (method != "peer.hello" or params.get("version") != PROTOCOL_VERSION):
        raise _Closed("no hello")
    try:
        if method == OBSERVED:  # only the transport knows where the peer came from
            result = {"address": _observed(proc)}
        else:
            result = await handler(peer, method, params)
        if isinstance(result, codec.Page):  # asked for with "raw": objects as bytes
            out = codec.encode_page(request_id, result)
        else:
            out = codec.encode({"jsonrpc": "2.0", "id": request_id, "result": result})
        del result
    except PolykeyError as exc:
        error = {
            "code": -32000,
            "message": exc.message,
            "data": {"exit_code": exc.exit_code, "hint": exc.user_hint},
        }
        out = codec.encode({"jsonrpc": "2.0", "id": request_id, "error": error})
    del params
    done()
    proc.stdout.write(frames.frame(out))
    del out
    try:  # the next request waits until this reply is taken: no replies pile up
        await asyncio.wait_for(proc.stdout.drain(), REPLY_TIMEOUT_S)
    except (TimeoutError, ConnectionError, asyncssh.Error):
        log.warning("closed a channel from %s: replies not read", encode_node_id(peer))
        return False
    return True


OBSERVED = "peer.observed"  # "I see you as HOST:PORT" (docs/spec/discovery.md section 10)


def _observed(proc: asyncssh.SSHServerProcess[bytes]) -> str:
    peername = proc.get_extra_info("peername")
    if not peername:
        return ""
    host, port = str(peername[0]), int(peername[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
