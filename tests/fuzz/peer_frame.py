"""The peer channel's frames (network/ssh.py), through the real channel code on both sides.

The first input byte picks the side; the rest is the byte stream the other node sends
(``u32 length ‖ JSON`` frames; ``\\xfe\\xfe n c`` in a body is ``c`` repeated, its frame's
length made right: ``_bytes.reframe``):

- even: the serving side. ``_rpc_channel`` reads requests from a fake SSH process whose stdin
  is an :class:`asyncio.StreamReader` fed with the input, with a handler that echoes the params
  (replies carry text the peer chose, as error messages do). ``_rpc_channel`` is the whole
  server loop: it must end by itself and close the channel, whatever arrives. Any exception
  escaping it is a finding, and so is one it catches only as a bug: the exception active when
  it logs at ERROR level ("internal error") is raised again here, with its traceback.
- odd: the dialing side. ``PeerClient.call`` reads the reply; its documented refusals are
  :class:`PolykeyError` (``PeerError``, ``PeerUnreachable``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from typing import Any

from polykey.errors import InvalidInput, PolykeyError
from polykey.ids import NodeId
from polykey.network import ssh
from tests.fuzz._bytes import reframe

PEER = NodeId(bytes(range(32)))
_LOOP = asyncio.new_event_loop()


class _Bugs(logging.Handler):
    """Keeps the exception being handled when the channel code logs an error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.caught: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        if exc is not None:
            self.caught.append(exc)


_BUGS = _Bugs()


class _Stdout:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    async def drain(self) -> None:
        return None


class _Process:
    """What ``_rpc_channel`` uses of an asyncssh server process."""

    def __init__(self, stdin: asyncio.StreamReader) -> None:
        self.stdin = stdin
        self.stdout = _Stdout()
        self.exited: int | None = None

    def exit(self, status: int) -> None:
        self.exited = status


class _Writer:
    def write(self, data: bytes) -> None:
        return None

    def close(self) -> None:
        return None


async def _echo(peer: NodeId, method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "fail":
        raise InvalidInput(f"unknown method {method[:40]!r}")
    return {"method": method, "params": params}


async def _serve(stream: bytes) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(stream)
    reader.feed_eof()
    proc = _Process(reader)
    optional = {
        "limits": ssh.PeerLimits(),
        "idle": 60.0,
        "opened": asyncio.get_running_loop().time(),
    }
    wanted = inspect.signature(ssh._rpc_channel).parameters
    extra = {k: v for k, v in optional.items() if k in wanted}
    _BUGS.caught.clear()
    ssh.log.addHandler(_BUGS)
    try:
        await ssh._rpc_channel(proc, PEER, _echo, **extra)  # type: ignore[arg-type]
    finally:
        ssh.log.removeHandler(_BUGS)
    if _BUGS.caught:
        raise _BUGS.caught[0]
    assert proc.exited == 0, "the channel was not closed"


async def _dial(stream: bytes) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(stream)
    reader.feed_eof()
    client = ssh.PeerClient(None, _Writer(), reader)  # type: ignore[arg-type]
    for _ in range(4):
        try:
            result = await client.call("vaults.scan", {})
        except PolykeyError:
            return
        assert isinstance(result, dict)


def one_input(data: bytes) -> None:
    if not data:
        return
    run = _serve if data[0] % 2 == 0 else _dial
    _LOOP.run_until_complete(run(reframe(data[1:])))
