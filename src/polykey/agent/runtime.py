"""Where an agent's socket, status file, log and session token live, and how they are checked.

The runtime folder of a node is ``<base>/<16 hex of SHA-256 of the node file's real path>``,
where ``<base>`` is the ``base`` argument (the CLI's rule is polykey.cli.fast.runtime_base:
PK_RUNTIME_DIR, else ``$XDG_RUNTIME_DIR/polykey`` or ``$TMPDIR/polykey-<uid>`` when that folder is
private to the user, else a folder under the user's home). Every folder is 0700 and owned by the
user, the socket and files 0600; anything else is refused, never used.

A socket path longer than a socket address holds (about 100 bytes: a deep home) is reached
through ``/proc/self/fd/N/agent.sock``, N a descriptor of its folder (Linux).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polykey.errors import PolykeyError

if TYPE_CHECKING:
    import logging

MAX_SOCKET_PATH = 100
"""Longest socket path bound or connected as it is (sockaddr_un holds 104 to 108 bytes)."""
LOG_MAX_BYTES = 4 * 1024 * 1024
LOG_BACKUPS = 3


class UnsafeRuntime(PolykeyError):
    """The agent's runtime folder or socket is not private to this user."""

    exit_code = 41
    hint = "Remove the folder (or fix its owner and mode 0700) and start the agent again."


@dataclass(frozen=True)
class Runtime:
    folder: Path

    @classmethod
    def for_node(cls, base: Path, node_path: Path) -> Runtime:
        digest = hashlib.sha256(str(node_path.resolve()).encode()).hexdigest()[:16]
        return cls(base / digest)

    @property
    def socket_path(self) -> Path:
        """The socket's path, as shown to the user."""
        return self.folder / "agent.sock"

    @property
    def socket(self) -> Path:
        """The address to bind or connect: the socket's path, or when that is too long for a
        socket address, the same socket through a descriptor of the folder (socket_address)."""
        return Path(socket_address(str(self.socket_path)))

    @property
    def status_file(self) -> Path:
        return self.folder / "status.json"

    @property
    def log_file(self) -> Path:
        return self.folder / "agent.log"

    @property
    def token_file(self) -> Path:
        return self.folder / "session.token"

    def ensure(self) -> None:
        """Create the folder (and its parent) 0700, refusing one that is not private."""
        for folder in (self.folder.parent, self.folder):
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700, parents=True)
            check_private(folder, directory=True)

    def read_status(self) -> dict[str, Any] | None:
        try:
            check_private(self.status_file, directory=False)
            doc = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def write_status(self, doc: dict[str, Any]) -> None:
        write_private(self.status_file, json.dumps(self.shown(doc), sort_keys=True).encode())

    def shown(self, status: dict[str, Any]) -> dict[str, Any]:
        """A status with the socket's real path (the agent may have bound it through an alias)."""
        return {**status, "socket": str(self.socket_path)} if "socket" in status else status

    def clear(self) -> None:
        for path in (self.socket_path, self.status_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def socket_address(path: str) -> str:
    """``path`` when it fits in a socket address; else, on Linux, the same socket reached through
    ``/proc/self/fd/N``, N a descriptor of its folder that this process keeps open. A path that
    cannot be shortened (no /proc, no folder) is returned as it is."""
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH or not os.path.isdir("/proc/self/fd"):
        return path
    folder, name = os.path.split(path)
    fd = _folder_fds.get(folder)
    try:
        if fd is not None and not _same_file(fd, folder):
            os.close(fd)
            del _folder_fds[folder]
            fd = None
        if fd is None:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            _folder_fds[folder] = fd
    except OSError:
        return path
    return f"/proc/self/fd/{fd}/{name}"


_folder_fds: dict[str, int] = {}


def _same_file(fd: int, path: str | Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_private(path: Path, *, directory: bool) -> None:
    """Refuse a path that another user owns or could read or write."""
    info = path.lstat()
    kind_ok = stat.S_ISDIR(info.st_mode) if directory else not stat.S_ISLNK(info.st_mode)
    if not kind_ok:
        raise UnsafeRuntime(f"{path} is not a {'folder' if directory else 'file'}")
    if info.st_uid != os.getuid():
        raise UnsafeRuntime(f"{path} belongs to another user")
    if info.st_mode & 0o077:
        raise UnsafeRuntime(
            f"{path} is accessible to other users (mode {oct(info.st_mode & 0o777)})"
        )


def write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically (temporary name, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie left unreaped by its parent does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _open_private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def agent_log_handler(
    path: Path,
    *,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
    stderr_fd: int | None = 2,
) -> logging.Handler:
    """A handler writing ``path`` (0600), rotated when it would pass ``max_bytes`` into
    ``path.1`` ... ``path.<backups>``, and at once if it is already that large.

    When ``stderr_fd`` is this log (a background agent's stderr is), each rotation points it at
    the new file, so what else the process writes there (Python warnings, a crash) stays bounded
    too and is never appended to a rotated file.
    """
    import logging.handlers

    follow = stderr_fd is not None and _same_file(stderr_fd, path)

    class Handler(logging.handlers.RotatingFileHandler):
        def _open(self) -> Any:
            return open(
                self.baseFilename,
                self.mode,
                encoding=self.encoding,
                errors=self.errors,
                opener=_open_private,
            )

        def doRollover(self) -> None:
            super().doRollover()
            if follow and stderr_fd is not None and self.stream is not None:
                self.stream.flush()
                os.dup2(self.stream.fileno(), stderr_fd)

    handler = Handler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    with contextlib.suppress(OSError):
        if path.stat().st_size >= max_bytes:
            handler.doRollover()
    return handler
