"""Editing a secret in $EDITOR without its plaintext touching a disk.

The secret is written to a private (0700) folder on a RAM-backed filesystem (tmpfs or ramfs:
``$XDG_RUNTIME_DIR`` or ``/dev/shm`` on Linux), the editor runs on it, the result is read back,
and every file in the folder is overwritten with zeros and removed, whatever happens:

- an error, or Ctrl-C outside the editor: the folder is wiped on the way out;
- SIGHUP (the terminal closed) or SIGTERM: handled for the length of the edit; the editor is told
  to stop (the same signal, SIGKILL after EDITOR_GRACE_S), then the folder (with anything the
  editor saved on its way out) is wiped and pk exits with 128 + the signal's number;
- SIGINT and SIGQUIT while the editor runs: a terminal sends them to the editor too, which
  decides (as git does); pk goes on when the editor ends;
- SIGKILL or a crash: nothing can run then. The folder is named ``pk-edit-<pid>-<random>`` and
  held locked (flock) while in use, so the next `pk secrets edit` of the user removes the folders
  of processes that no longer run.

Where no RAM-backed folder exists the command refuses, unless the user explicitly allows a
disk-backed one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import signal
import stat
import subprocess
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from polykey.errors import InvalidInput, PolykeyError

RAM_FILESYSTEMS = {"tmpfs", "ramfs"}
PREFIX = "pk-edit-"
FOLDER_NAME = re.compile(r"pk-edit-(\d+)-[a-z0-9_]+")
EDITOR_GRACE_S = 5.0
HANDLED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
LEFT_TO_THE_EDITOR = (signal.SIGINT, signal.SIGQUIT)


class NoRamTemp(PolykeyError):
    """No RAM-backed folder is available for the editor's temporary file."""

    exit_code = 5
    hint = "Add --allow-disk-temp to use a disk-backed one anyway (the plaintext may persist)."


class EditInterrupted(PolykeyError):
    """The edit was interrupted; nothing was saved and the editor's file was removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum  # type: ignore[misc]


class _Signalled(BaseException):
    """Raised by the signal handler to unwind the edit to its wipe (not an Exception: nothing
    on the way may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Guard:
    """Signal handlers for the length of an edit. The first signal unwinds the edit (once);
    while ``holding`` (making the folder, wiping it) signals are only recorded."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.raised = False
        self.holding = False
        self.editor_running = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Guard:
        with contextlib.suppress(ValueError):  # not the main thread: no handlers to install
            for signum in HANDLED:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum in LEFT_TO_THE_EDITOR and self.editor_running:
            return
        if self.received is None:
            self.received = signum
        if not self.holding:
            self.check()

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.holding = False
        self.check()

    def check(self) -> None:
        if self.received is not None and not self.raised:
            self.raised = True
            raise _Signalled(self.received)


def _mounts() -> list[tuple[str, str]]:
    try:
        text = Path("/proc/mounts").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out.append((fields[1].replace("\\040", " "), fields[2]))
    return out


def is_ram_backed(folder: Path) -> bool:
    """Whether ``folder`` lives on tmpfs or ramfs (the longest matching mount point decides)."""
    real = str(folder.resolve())
    best, kind = "", ""
    for mount, fstype in _mounts():
        # >=: of several mounts on one point, the last listed is the one in use
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind in RAM_FILESYSTEMS


def ram_folder() -> Path | None:
    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):  # noqa: S108
        if candidate and Path(candidate).is_dir() and is_ram_backed(Path(candidate)):
            return Path(candidate)
    return None


def edit_in_memory_file(value: bytes, name: str, *, allow_disk: bool = False) -> bytes:
    base = ram_folder()
    if base is None and not allow_disk:
        raise NoRamTemp()
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    parent = base if base is not None else Path(tempfile.gettempdir())
    remove_stale(parent)
    safe_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "secret"
    folder: Path | None = None
    lock: int | None = None
    new = b""
    with _Guard() as guard:
        try:
            guard.hold()  # a signal while the folder is made must still find it to wipe
            folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
            lock = _lock(folder)
            guard.release()
            file = folder / safe_name
            fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            returncode = _run_editor([*shlex.split(editor), str(file)], editor, guard)
            if returncode != 0:
                raise InvalidInput(f"the editor exited with status {returncode}; nothing saved")
            new = file.read_bytes()
        except _Signalled:
            pass  # guard.received says which; the folder is wiped first
        finally:
            guard.hold()
            if folder is not None:
                wipe(folder)
            if lock is not None:
                os.close(lock)
    if guard.received is not None:
        if guard.received == signal.SIGHUP:
            _leave_the_terminal()
        raise EditInterrupted(guard.received)
    return new


def _run_editor(argv: list[str], editor: str, guard: _Guard) -> int:
    """Run the editor; on a signal, tell it to stop and wait for it (it may save files on its
    way out: they must be in the folder before it is wiped)."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        guard.hold()
        try:
            proc = subprocess.Popen(argv)
        except FileNotFoundError:
            raise InvalidInput(
                f"the editor {editor!r} was not found", hint="Set EDITOR to an installed editor."
            ) from None
        finally:
            guard.editor_running = proc is not None
        guard.release()
        return proc.wait()
    except _Signalled as sig:
        if proc is not None:
            guard.hold()
            _stop(proc, sig.signum)
        raise
    finally:
        guard.editor_running = False


def _stop(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(OSError):
        proc.send_signal(signum if signum not in LEFT_TO_THE_EDITOR else signal.SIGTERM)
    try:
        proc.wait(timeout=EDITOR_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()


def _leave_the_terminal() -> None:
    """After SIGHUP the terminal is gone: writing to it would fail, and the error must still be
    reported (exit status) without a second failure."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            with contextlib.suppress(OSError):
                if os.isatty(fd):
                    os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _lock(folder: Path) -> int:
    """A lock on the folder held while this process uses it (not inherited by the editor)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def remove_stale(parent: Path) -> None:
    """Wipe the edit folders in ``parent`` that runs of this user left when they died without a
    chance to clean up (SIGKILL, a crash): named for a process that no longer runs, and not
    locked by any process (a `pk` in another PID namespace holds its lock)."""
    from polykey.agent.runtime import pid_alive

    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        match = FOLDER_NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        pid = int(match[1])
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            same = os.fstat(fd)
            if (same.st_dev, same.st_ino) != (info.st_dev, info.st_ino):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue
        else:
            wipe(Path(entry.path))
        finally:
            os.close(fd)


def wipe(folder: Path) -> None:
    """Overwrite every regular file under ``folder`` with zeros, then remove it all (links are
    removed, never followed)."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                _zero(path)
            with contextlib.suppress(OSError):
                os.unlink(path)
        for name in dirs:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if os.path.islink(path):
                    os.unlink(path)
                else:
                    os.rmdir(path)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _zero(path: str) -> None:
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        zeros = b"\0" * min(size, 1 << 20)
        written = 0
        while written < size:
            written += os.write(fd, zeros[: size - written])
        os.fsync(fd)
    finally:
        os.close(fd)
