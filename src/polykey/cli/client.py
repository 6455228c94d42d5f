"""Talking to the agent from the CLI: find it, check its socket is private, call a method.

Frames and messages are polykey.frames and polykey.codec, as the agent reads and writes them.
Kept free of heavy imports: this module is on the hot path of every command an agent serves.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from polykey import codec, frames
from polykey.agent import protocol
from polykey.cli.fast import _folder
from polykey.errors import PolykeyError

HEADER, MAX_FRAME = protocol.HEADER, protocol.MAX_FRAME  # the agent's own, by construction
SESSION_INVALID = protocol.SESSION_INVALID
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


class AgentDied(PolykeyError):
    """The agent stopped before it answered"""

    exit_code = 46
    hint = (
        "The request had reached it, so the change may or may not have been made: look "
        "(`pk vaults log`, `pk secrets ls`) before you run it again."
    )


class AgentBadReply(AgentDied):
    """The agent's answer was malformed"""


def runtime_folder(node_path: str | os.PathLike[str]) -> str | None:
    """The runtime folder of a node (the rule of polykey.cli.fast, shared by the hot path)."""
    return _folder(os.fspath(node_path))


def not_private(path: str, *, directory: bool) -> str | None:
    """Why ``path`` (not followed if a link) is not this user's private folder or socket."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"{_shown(path)} cannot be examined ({exc.strerror or type(exc).__name__})"
    want = 0o040000 if directory else 0o140000  # S_IFDIR, S_IFSOCK
    if info.st_mode & 0o170000 != want:
        return f"{_shown(path)} is not a {'folder' if directory else 'socket'}"
    if info.st_uid != os.getuid():
        return f"{_shown(path)} belongs to another user"
    if info.st_mode & 0o077:
        return f"{_shown(path)} is accessible to other users (mode {oct(info.st_mode & 0o777)})"
    return None


def _shown(path: str) -> str:
    """A path on one line (a name may hold control characters)."""
    return "".join(c if c.isprintable() else "?" for c in path)


_warned: set[str] = set()


def _warn_unusable(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        sys.stderr.write(
            f"pk: warning: not using the agent: {reason}; working on the node file directly\n"
        )


class AgentClient:
    """One connection to the agent of one node."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = os.fspath(folder)
        self.socket_path = os.path.join(self.folder, "agent.sock")
        self.token_file = os.path.join(self.folder, "session.token")
        self._sock: socket.socket | None = None
        self._next_id = 1

    @classmethod
    def find(cls, node_path: str | os.PathLike[str], *, strict: bool = False) -> AgentClient | None:
        """The agent of ``node_path`` if its socket exists. A runtime folder or socket that is not
        private to this user is never used: ``strict`` (commands about the agent itself) raises
        UnsafeRuntime (exit 41); otherwise a one-line warning, and None: the command works on the
        node file, so another user who planted a socket cannot block it."""
        folder = runtime_folder(node_path)
        if folder is None:
            return None
        sock = os.path.join(folder, "agent.sock")
        try:
            os.lstat(sock)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            pass  # a folder we may not search: not ours, said below
        reason = (
            not_private(os.path.dirname(folder), directory=True)
            or not_private(folder, directory=True)
            or not_private(sock, directory=False)
        )
        if reason is None:
            return cls(folder)
        if strict:
            from polykey.agent.runtime import UnsafeRuntime

            raise UnsafeRuntime(reason)
        _warn_unusable(reason)
        return None

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
            address = self.socket_path
            if len(os.fsencode(address)) > 100:  # a deep home: reach it through its folder
                from polykey.agent.runtime import socket_address

                address = socket_address(address)
            try:
                sock.connect(address)
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
        """Send one request (bytes in ``params`` travel as {"$b64": ...}); return the agent's
        JSON-RPC 2.0 reply, checked (bytes still base64). A request that could not be sent is
        AgentGone (the node file may answer instead); once sent, a reply that does not come is
        AgentDied and a malformed one AgentBadReply: the agent may have acted on it."""
        request_id = self._next_id
        self._next_id += 1
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            data = frames.frame(codec.encode(message), MAX_FRAME)
        except frames.FrameError:  # too large for the agent: the node file takes it
            raise AgentGone() from None
        sock = self._connect()
        try:
            sock.sendall(data)
        except OSError:  # not sent: nothing happened, the node file can answer instead
            self.close()
            raise AgentGone() from None
        del data
        try:  # sent: the agent may have acted on it, so never run it again elsewhere
            body = frames.read(sock.recv, MAX_FRAME)
        except (OSError, frames.FrameError):
            self.close()
            raise AgentDied(method) from None
        try:
            reply = codec.decode(body)
            codec.check_reply(reply, request_id)
        except codec.BadMessage as exc:
            self.close()
            raise AgentBadReply(f"{method} ({exc})") from None
        return reply

    def call(self, method: str, params: dict[str, Any], *, token: bool = True) -> dict[str, Any]:
        """Call a method; bytes in params and results travel as {"$b64": ...}."""
        wire = dict(params)
        if token:
            wire["token"] = self.token()
        reply = self.call_raw(method, wire)
        error = reply.get("error")
        if error is not None:
            data = error.get("data")
            data = data if isinstance(data, dict) else {}
            exit_code = data.get("exit_code")
            raise AgentError(
                error["message"],
                str(data.get("hint") or ""),
                exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else 1,
                "session" if error["code"] == SESSION_INVALID else str(data.get("type") or ""),
            )
        try:
            result = codec.from_wire(reply["result"])
        except codec.BadMessage as exc:
            raise AgentBadReply(f"{method} ({exc})") from None
        if not isinstance(result, dict):
            raise AgentBadReply(f"{method} (a result that is not an object)")
        return result
