"""Where an agent's socket, status file, log and session token live, and how they are checked.

The runtime folder of a node is ``<base>/<16 hex of SHA-256 of the node file's real path>``,
where ``<base>`` is the ``base`` argument (the CLI passes PK_RUNTIME_DIR, else
``$XDG_RUNTIME_DIR/polykey``, else ``<tmp>/polykey-<uid>``). Every folder is 0700 and owned by the
user, the socket and files 0600; anything else is refused, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polykey.errors import PolykeyError


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
    def socket(self) -> Path:
        return self.folder / "agent.sock"

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
        write_private(self.status_file, json.dumps(doc, sort_keys=True).encode())

    def clear(self) -> None:
        for path in (self.socket, self.status_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


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
