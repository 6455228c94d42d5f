"""Editing a secret in $EDITOR without its plaintext touching a disk.

The secret is written to a private (0700) folder on a RAM-backed filesystem (tmpfs or ramfs:
``$XDG_RUNTIME_DIR`` or ``/dev/shm`` on Linux), the editor runs on it, the result is read back,
and the file is overwritten with zeros and removed, whatever happens. Where no RAM-backed folder
exists the command refuses, unless the user explicitly allows a disk-backed one.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from polykey.errors import InvalidInput, PolykeyError

RAM_FILESYSTEMS = {"tmpfs", "ramfs"}


class NoRamTemp(PolykeyError):
    """No RAM-backed folder is available for the editor's temporary file."""

    exit_code = 5
    hint = "Add --allow-disk-temp to use a disk-backed one anyway (the plaintext may persist)."


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
    folder = Path(tempfile.mkdtemp(prefix="pk-edit-", dir=base))
    safe_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "secret"
    file = folder / safe_name
    try:
        fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(value)
        try:
            result = subprocess.run([*shlex.split(editor), str(file)], check=False)
        except FileNotFoundError:
            raise InvalidInput(
                f"the editor {editor!r} was not found", hint="Set EDITOR to an installed editor."
            ) from None
        if result.returncode != 0:
            raise InvalidInput(f"the editor exited with status {result.returncode}; nothing saved")
        return file.read_bytes()
    finally:
        for leftover in folder.iterdir() if folder.exists() else []:
            with contextlib.suppress(OSError):
                size = leftover.stat().st_size
                with leftover.open("r+b") as f:
                    f.write(b"\0" * size)
                    f.flush()
                    os.fsync(f.fileno())
                leftover.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
