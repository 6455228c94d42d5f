"""The hot path: `pk secrets cat` and `pk secrets write` answered by a running agent.

When an agent serves the node and the command is a plain one (one address, no options), these
lines do the whole job with modules built into the interpreter and polykey.frames (which
imports nothing: it frames the request and writes its JSON by hand): no click, no json, no
cryptography, no SQLite (tests/cli/test_fast_path.py checks it on a real process).
`secrets.cat` asks for a raw reply (the value, no JSON), printed by the rule of polykey.values
(a newline after it on a terminal, when it has none). On anything unusual (options, no agent,
a socket that is not private, an invalid session, any error) they step aside and the full CLI
runs the command, which then gives the result or the proper error. The runtime folder rule
lives here (``runtime_base``), for the full CLI too. polykey.cli.completion reaches the agent
through these lines too.
"""

from __future__ import annotations

import os
import sys

from polykey import frames

"""Standard input already read by the fast path, for the full CLI when the fast path steps aside."""

_S_IFMT, _S_IFDIR, _S_IFSOCK = 0o170000, 0o040000, 0o140000


def _sha256_hex(data: bytes) -> str:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # builtin, no OpenSSL
    except ImportError:  # Python 3.12+: _sha2
        from hashlib import sha256
    return str(sha256(data).hexdigest())


def runtime_base() -> str | None:
    """Where the runtime folders are: PK_RUNTIME_DIR; else ``$XDG_RUNTIME_DIR/polykey`` or
    ``$TMPDIR/polykey-<uid>`` when that variable names a folder private to this user (owned, mode
    0700: no one else can have put anything in it); else under the home,
    ``${XDG_STATE_HOME:-~/.local/state}/polykey/run-<host name>``. None without a home.

    A shared folder (/tmp) is never used: another user could create the path first. The host name
    keeps the agents of machines sharing a home (NFS) apart. Written here, with built-ins only,
    so that the hot path and the full CLI (polykey.cli.client) share one rule.
    """
    explicit = os.environ.get("PK_RUNTIME_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and _own_private_folder(xdg):
        return os.path.join(xdg, "polykey")
    tmp = os.environ.get("TMPDIR")
    if tmp and _own_private_folder(tmp):
        return os.path.join(tmp, f"polykey-{os.getuid()}")
    state = os.environ.get("XDG_STATE_HOME")
    if not state or not os.path.isabs(state):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        state = os.path.join(home, ".local", "state")
    host = "".join(
        c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in os.uname().nodename
    )[:64]
    return os.path.join(state, "polykey", f"run-{host}" if host else "run")


def _folder(node: str) -> str | None:
    """The runtime folder of ``node``: ``<runtime_base>/<16 hex of SHA-256 of its real path>``."""
    base = runtime_base()
    if base is None:
        return None
    return os.path.join(base, _sha256_hex(os.path.realpath(node).encode())[:16])


def _own_private_folder(path: str) -> bool:
    if not os.path.isabs(path):
        return False
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (
        info.st_mode & _S_IFMT == _S_IFDIR
        and info.st_uid == os.getuid()
        and not info.st_mode & 0o077
    )


def _private(path: str, kind: int) -> bool:
    info = os.lstat(path)
    return (
        info.st_mode & _S_IFMT == kind and info.st_uid == os.getuid() and not info.st_mode & 0o077
    )


_json_text = frames.json_text  # polykey.cli.completion writes its params with it


class _Unanswered(Exception):
    """The request was sent and the agent never answered (it died): it may have acted."""


def _exchange(sock_path: str, body: bytes, timeout: float = 600.0) -> bytes:
    """Send one request's ``body`` to the agent; the body of its reply. OSError or FrameError
    if it could not be sent (nothing happened); _Unanswered if no whole reply came."""
    import _socket

    data = frames.frame(body, frames.AGENT_MAX)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sock_path)
        sock.sendall(data)
        try:
            return frames.read(sock.recv, frames.AGENT_MAX)
        except (OSError, frames.FrameError):
            raise _Unanswered() from None
    finally:
        sock.close()


def _agent(node: str) -> tuple[str, str] | None:
    """The socket and session token of the agent serving ``node``, when one may be used."""
    if os.environ.get("PK_NO_AGENT") == "1":
        return None
    folder = _folder(node)
    if folder is None:
        return None
    sock_path = os.path.join(folder, "agent.sock")
    try:
        if not (
            _private(os.path.dirname(folder), _S_IFDIR)
            and _private(folder, _S_IFDIR)
            and _private(sock_path, _S_IFSOCK)
        ):
            return None
        if len(os.fsencode(sock_path)) > 100:  # too long for a socket address: via the folder
            if not os.path.isdir("/proc/self/fd"):
                return None
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            sock_path = f"/proc/self/fd/{fd}/agent.sock"  # open until this process ends
        token = os.environ.get("PK_TOKEN")
        if not token:
            with open(os.path.join(folder, "session.token")) as f:
                token = f.read().strip()
    except OSError:
        return None
    return sock_path, token


def try_fast(args: list[str], taken: list[bytes] | None = None) -> int | None:
    """Run `secrets cat|write` through the agent; None means "use the full CLI". Standard
    input read here is appended to ``taken``, for the full CLI when this path gives up."""
    node = os.environ.get("PK_NODE")
    verb, rest = args[1], args[2:]
    if not node or not rest:
        return None
    if any(a.startswith("-") or ":" not in a for a in rest):
        return None
    agent = _agent(node)
    if agent is None:
        return None
    sock_path, token = agent
    items = [a.split(":", 1) for a in rest]
    try:
        if verb == "cat" and len(items) == 1:  # several: the raw reply has no boundaries
            from polykey.values import cat_parts

            params: dict[str, object] = {"items": [items[0]], "raw": True, "token": token}
            reply = _exchange(sock_path, frames.request("secrets.cat", params))
            if reply[:1] != frames.RAW:  # an error (or an entry's folder): the full CLI says
                return None
            for part in cat_parts([[reply[1:]]], os.isatty(1)):  # the rule of `secrets cat`
                sys.stdout.buffer.write(part)
            sys.stdout.buffer.flush()
            return 0
        if verb == "write" and len(items) == 1 and all(items[0]) and not sys.stdin.isatty():
            data = sys.stdin.buffer.read()
            if taken is not None:
                taken.append(data)
            vault, path = items[0]
            params = {"vault": vault, "path": path, "data": data, "token": token}
            body = frames.request("secrets.write", params)
            try:
                reply = _exchange(sock_path, body)
            except _Unanswered:  # never written again on the file: it may have landed
                sys.stderr.write(
                    "pk: error: The agent stopped before it answered: secrets.write\n"
                    "pk: hint: The request had reached it, so the change may or may not have "
                    "been made: look (`pk vaults log`, `pk secrets ls`) before you run it "
                    "again.\n"
                )
                return 46
            if reply.startswith(frames.result_prefix(1)):
                if b'"warnings"' in reply:  # a background sync of this vault fails: say so
                    import json

                    for warning in json.loads(reply).get("result", {}).get("warnings", []):
                        sys.stderr.write(f"pk: warning: {warning!s}\n")
                return 0
    except (OSError, ValueError, _Unanswered):  # a read falls back: it changes nothing
        return None
    return None  # an error (an invalid session, ...): the full CLI runs it and says which


def try_fast_clone(args: list[str]) -> int | None:
    """`pk vaults clone NODEID VAULT [NAME]` (no options) handed to the agent, which does the
    whole clone; None means "use the full CLI" (no agent, an error reply: the full CLI runs the
    clone again and gives the proper error, as a refused clone left nothing behind)."""
    node = os.environ.get("PK_NODE")
    rest = args[2:]
    if not node or len(rest) not in (2, 3) or any(a.startswith("-") for a in rest):
        return None
    agent = _agent(node)
    if agent is None:
        return None
    sock_path, token = agent
    params: dict[str, object] = {
        "node_id": rest[0],
        "vault": rest[1],
        "name": rest[2] if len(rest) == 3 else None,
        "token": token,
    }
    try:
        reply = _exchange(sock_path, frames.request("vaults.clone", params))
    except (OSError, ValueError, _Unanswered):
        return None
    if not reply.startswith(frames.result_prefix(1)):
        return None
    import json

    from polykey.cli.safe_text import shown

    try:
        name = json.loads(reply)["result"]["name"]
    except (ValueError, KeyError, TypeError):
        return None
    line = f"Cloned {shown(rest[1])} from {shown(rest[0])} as {shown(name)}."
    sys.stdout.write(shown(line, multiline=True) + "\n")
    sys.stdout.flush()
    return 0


def _request(method: str, params: str) -> bytes:
    """A request's body around ``params`` already written as JSON (polykey.cli.completion)."""
    return f'{{"jsonrpc":"2.0","id":1,"method":{_json_text(method)},"params":{params}}}'.encode()
