"""Talking to the agent from the CLI: find it, check its socket is private, call a method.

Kept free of heavy imports: this module is on the hot path of every command an agent serves.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

from polykey.errors import PolykeyError

HEADER = struct.Struct(">I")
MAX_FRAME = 192 * 1024 * 1024
SESSION_INVALID = -32001
CONNECT_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 600.0


class AgentError(PolykeyError):
    """The agent reported an error."""

    def __init__(self, message: str, hint: str, exit_code: int, kind: str) -> None:
        self.remote_message = message
        self.kind = kind
        super().__init__(message, hint=hint)
        self.exit_code = exit_code  # type: ignore[misc]

    @property
    def message(self) -> str:
        return self.remote_message


class AgentGone(Exception):
    """The agent could not be reached (not running, or its socket is stale)."""


def runtime_base() -> str:
    """PK_RUNTIME_DIR, else $XDG_RUNTIME_DIR/polykey, else $TMPDIR (or /tmp)/polykey-<uid>."""
    explicit = os.environ.get("PK_RUNTIME_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "polykey")
    tmp = os.environ.get("TMPDIR") or os.environ.get("TEMP") or os.environ.get("TMP") or "/tmp"  # noqa: S108
    return os.path.join(tmp, f"polykey-{os.getuid()}")


def runtime_folder(node_path: str | os.PathLike[str]) -> str:
    import hashlib

    digest = hashlib.sha256(os.path.realpath(node_path).encode()).hexdigest()[:16]
    return os.path.join(runtime_base(), digest)


def _private(path: str, directory: bool) -> bool:
    import stat

    info = os.lstat(path)

    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISSOCK(info.st_mode)
    return kind and info.st_uid == os.getuid() and not info.st_mode & 0o077


class AgentClient:
    """One connection to the agent of one node."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = os.fspath(folder)
        self.socket_path = os.path.join(self.folder, "agent.sock")
        self.token_file = os.path.join(self.folder, "session.token")
        self._sock: socket.socket | None = None
        self._next_id = 1

    @classmethod
    def find(cls, node_path: str | os.PathLike[str]) -> AgentClient | None:
        """The agent of ``node_path`` if its socket exists; refuses a socket that is not private."""
        folder = runtime_folder(node_path)
        sock = os.path.join(folder, "agent.sock")
        if not os.path.exists(sock):
            return None
        if not _private(folder, True) or not _private(sock, False):
            from polykey.agent.runtime import UnsafeRuntime

            raise UnsafeRuntime(f"{sock} or its folder is not private to this user")
        return cls(folder)

    def token(self) -> str | None:
        env = os.environ.get("PK_TOKEN")
        if env:
            return env
        try:
            with open(self.token_file) as f:
                return f.read().strip() or None
        except OSError:
            return None

    def save_token(self, token: str) -> None:
        tmp = os.path.join(self.folder, f".session.token.{os.getpid()}")
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, self.token_file)

    def forget_token(self) -> None:
        try:  # noqa: SIM105 - contextlib costs an import on the hot path
            os.unlink(self.token_file)
        except FileNotFoundError:
            pass

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT_S)
            try:
                sock.connect(self.socket_path)
            except ConnectionRefusedError:
                sock.close()
                self._clear_stale()
                raise AgentGone() from None
            except OSError:
                sock.close()
                raise AgentGone() from None
            sock.settimeout(CALL_TIMEOUT_S)
            self._sock = sock
        return self._sock

    def _clear_stale(self) -> None:
        """Nobody listens on the socket (the agent died, kill -9): remove it and its status."""
        for name in ("agent.sock", "status.json"):
            try:  # noqa: SIM105 - contextlib costs an import on the hot path
                os.unlink(os.path.join(self.folder, name))
            except FileNotFoundError:
                pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call_raw(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request; return the raw JSON-RPC response (bytes still base64 on the wire)."""
        sock = self._connect()
        body = json.dumps(
            {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params},
            separators=(",", ":"),
        ).encode()
        self._next_id += 1
        try:
            sock.sendall(HEADER.pack(len(body)) + body)
            (size,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
            if size > MAX_FRAME:
                raise AgentGone()
            response = json.loads(_recv_exactly(sock, size))
        except (OSError, ValueError):
            self.close()
            raise AgentGone() from None
        if not isinstance(response, dict):
            raise AgentGone()
        return response

    def call(self, method: str, params: dict[str, Any], *, token: bool = True) -> dict[str, Any]:
        """Call a method; bytes in params and results travel as {"$b64": ...}."""
        from polykey.agent.protocol import from_wire, to_wire

        wire = to_wire(params)
        if token:
            wire["token"] = self.token()
        response = self.call_raw(method, wire)
        error = response.get("error")
        if isinstance(error, dict):
            data = error.get("data") or {}
            raise AgentError(
                str(error.get("message", "agent error")),
                str(data.get("hint", "")),
                int(data.get("exit_code", 1)),
                "session" if error.get("code") == SESSION_INVALID else str(data.get("type", "")),
            )
        result = from_wire(response.get("result"))
        if not isinstance(result, dict):
            raise AgentGone()
        return result


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the agent closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
