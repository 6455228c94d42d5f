"""The agent process: holds the unlocked node and serves the CLI on a private Unix socket.

One asyncio loop accepts connections; every request is checked (frame size, JSON-RPC shape,
session token) before a node method runs, and node methods run one at a time on a worker thread
(the node file and its caches are shared). A bad frame closes only its own connection.

The node file stays one file a user can copy: once writes pause, the node thread checkpoints the
write-ahead log into the main file, and stopping empties it before the node is closed.

Here: the client socket, one dispatch path, and the loop that starts and stops the rest; the
agent's state and background jobs are agent/jobs.py, its face to other nodes agent/peering.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import resource
import signal
import socket
import struct
import time
from typing import Any

from polykey.agent import methods, protocol
from polykey.agent.jobs import (
    AUDIT_CHECKPOINT_S,
    KNOWN_PEERS_INTERVAL_S,
    OUTBOX_INTERVAL_S,
    REDISCOVER_CHECK_S,
)
from polykey.agent.methods import audit as recorded
from polykey.agent.methods import control
from polykey.agent.peering import AgentPeering
from polykey.agent.runtime import check_private
from polykey.agent.sessions import SessionInvalid
from polykey.errors import PolykeyError

log = logging.getLogger("polykey.agent")
PR_SET_DUMPABLE = 4


class AgentRunning(PolykeyError):
    """An agent is already running for this node."""

    exit_code = 40
    hint = "See it with `pk agent status`; stop it with `pk agent stop`."


class PortUnavailable(PolykeyError):
    """The agent cannot listen for other nodes on that address."""

    exit_code = 45
    hint = "Choose another --port (or --host), or stop what listens there."


def harden_process() -> None:
    """No core dumps, and (Linux) no ptrace attach or /proc/PID/mem reads by other processes."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def settle_heap() -> None:
    """What start-up made (modules, the node, the method table) lives as long as the agent: out
    of the collector's sight, a clone's many short-lived objects no longer make it walk them all
    again."""
    gc.collect()
    gc.freeze()


def peer_uid(sock: socket.socket | None) -> int | None:
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)


# methods after which that list is made again at once (grants and the node graph)
CHANGES_PEERS = frozenset(
    {
        "vaults.share",
        "vaults.unshare",
        "vaults.rm",
        "vaults.clone",
        "nodes.add",
        "nodes.rm",
        "nodes.link",
        "nodes.unlink",
    }
)


class Agent(AgentPeering):
    """The running agent: its client socket and dispatch, and the loop that serves."""

    async def serve(self, ready: Any = None) -> None:
        """Serve until agent.stop, SIGTERM or SIGINT; ``ready(status)`` is called once bound."""
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        path = self.runtime.socket
        server = await asyncio.start_unix_server(self._connection, path=str(path))
        if self.peer_port is not None:
            try:
                await self._serve_peers(self.peer_host, self.peer_port)
            except OSError as exc:
                server.close()
                self.runtime.clear()
                raise PortUnavailable(
                    f"{self.peer_host}:{self.peer_port}: {exc.strerror or exc}"
                ) from None
        await self._start_discovery()
        await self._start_reach()
        self._start_portmap()
        os.chmod(path, 0o600)
        check_private(path, directory=False)
        self.runtime.write_status(self.status())
        log.info("agent started: pid %d, socket %s", os.getpid(), path)
        if ready is not None:
            ready(self.status())
        settle_heap()
        background = self._background()
        try:
            async with server:
                await self.stopping.wait()
        finally:
            log.info("agent stopping")
            for task in background:
                task.cancel()
            server.close()
            if self.peer_server is not None:
                self.peer_server.close()
            await self._stop_discovery()
            await self._stop_reach()
            self.runtime.clear()
            self.kdf_worker.shutdown(wait=True)  # a password change writes the node file
            with contextlib.suppress(RuntimeError):  # after the queued jobs, before closing
                self.worker.submit(self._final_checkpoint)
            self.worker.shutdown(wait=True)
            self.git_worker.shutdown(wait=False)

    def _background(self) -> list[asyncio.Task[Any]]:
        """The agent's own jobs, on the loop: the outbox, checkpoints, background sync and
        rediscovery, the known-peers list, discovery's publishing."""
        jobs = [
            self._every(OUTBOX_INTERVAL_S, self._outbox),
            self._checkpoints(),
            self._every(AUDIT_CHECKPOINT_S, self._audit_checkpoint),
        ]
        if self.sync_interval:
            jobs.append(self._every(self.sync_interval, self._sync))
            jobs.append(self._every(REDISCOVER_CHECK_S, self._rediscover))
        if self.peer_limits is not None:
            jobs.append(self._every(KNOWN_PEERS_INTERVAL_S, self._known_peers))
        if self.discovery is not None:
            jobs.append(self.discovery.run())
        return [asyncio.create_task(job) for job in jobs]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid is not None and uid != os.getuid():
                log.warning("refused a connection from uid %d", uid)
                return
            while True:
                try:
                    header = await reader.readexactly(protocol.HEADER.size)
                except asyncio.IncompleteReadError:
                    return
                (size,) = protocol.HEADER.unpack(header)
                if size > protocol.MAX_FRAME:
                    log.warning("closed a connection: frame of %d bytes", size)
                    return
                body = await reader.readexactly(size)
                try:
                    request_id, name, params = protocol.check_request(protocol.decode_body(body))
                    params = protocol.from_wire(params)
                except protocol.FrameError as exc:
                    log.warning("closed a connection: %s", exc)
                    return
                raw = params.pop("raw", False) is True and name == "secrets.cat"
                response = await self._answer(request_id, name, params)
                if raw and "result" in response and "warnings" not in response["result"]:
                    # the hot path's reply: no JSON to parse
                    values = [protocol.from_wire(i["data"]) for i in response["result"]["secrets"]]
                    body = protocol.RAW + b"".join(values)
                    writer.write(protocol.HEADER.pack(len(body)) + body)
                else:
                    writer.write(protocol.encode(response))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception as exc:  # a bug costs this connection only, in one line, no traceback
            log.error("closed a connection: internal error %s", type(exc).__name__)
            return
        finally:
            self.connections -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, request_id: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = await self._dispatch(name, params)
        except SessionInvalid as exc:
            log.info("%s refused: %s", name, exc.detail)
            return _error(request_id, protocol.SESSION_INVALID, exc)
        except PolykeyError as exc:
            log.info("%s failed: %s", name, type(exc).__name__)
            return _error(request_id, protocol.POLYKEY_ERROR, exc)
        except Exception as exc:
            log.error("%s: internal error %s", name, type(exc).__name__)
            return {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": protocol.INTERNAL_ERROR, "message": type(exc).__name__},
            }
        log.info("%s ok in %.1f ms", name, (time.perf_counter() - started) * 1000)
        warnings = self.warnings(params)
        if warnings:
            result = {**result, "warnings": warnings}
        return {"jsonrpc": "2.0", "id": request_id, "result": protocol.to_wire(result)}

    async def _dispatch(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """One path for every method: the session first (unless the method needs none), then
        the agent's own methods on this loop, or the node's on the node thread."""
        token = params.pop("token", None)
        if name not in control.OPEN:
            self.sessions.check(token)
        if name in control.CONTROL:
            caller = control.Caller(self, token if isinstance(token, str) else None)
            return await control.CONTROL.call(caller, name, params)
        loop = asyncio.get_running_loop()
        if name not in methods.METHODS:
            raise methods.UnknownMethod(name[:80])
        call = recorded.call_recorded  # the audit log's record first (docs/spec/audit.md)
        result = await loop.run_in_executor(self.worker, call, self.node, name, params)
        if name == "keys.renew":  # the Node was made again with the new key
            await self._renewed()
        if name in CHANGES_PEERS and self.peer_limits is not None:  # at once, not in 5 s
            try:
                await loop.run_in_executor(self.worker, self._known_peers)
            except Exception as exc:  # the method did its work; the list is made again in 5 s
                log.warning("peer list not refreshed: %s", type(exc).__name__)
        return result


def _error(request_id: Any, code: int, exc: PolykeyError) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {
            "code": code,
            "message": exc.message,
            "data": {"exit_code": exc.exit_code, "hint": exc.user_hint, "type": type(exc).__name__},
        },
    }
