"""Copying a secret to the clipboard, and clearing it later only if it is still there.

The clearing runs in a detached child that is given only a SHA-256 of the value, never the value.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time

from polykey.errors import PolykeyError


class ClipboardUnavailable(PolykeyError):
    """No clipboard tool is available."""

    exit_code = 6
    hint = "Install wl-clipboard (Wayland), xclip or xsel (X11); or print with `pk secrets cat`."


def tools() -> tuple[list[str], list[str]]:
    """(copy command, paste command) for this session's clipboard."""
    if sys.platform == "darwin" and shutil.which("pbcopy"):
        return ["pbcopy"], ["pbpaste"]
    if os.environ.get("WAYLAND_DISPLAY") and shutil.which("wl-copy"):
        return ["wl-copy"], ["wl-paste", "--no-newline"]
    if os.environ.get("DISPLAY"):
        if shutil.which("xclip"):
            return ["xclip", "-selection", "clipboard", "-in"], [
                "xclip",
                "-selection",
                "clipboard",
                "-out",
            ]
        if shutil.which("xsel"):
            return ["xsel", "--clipboard", "--input"], ["xsel", "--clipboard", "--output"]
    raise _why_unavailable()


def _why_unavailable() -> ClipboardUnavailable:
    """The reason that fits: a tool installed but no display to reach is not a missing tool."""
    installed = [t for t in ("wl-copy", "xclip", "xsel", "pbcopy") if shutil.which(t)]
    if installed and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return ClipboardUnavailable(
            f"{installed[0]} is installed, but this session has no display "
            "(neither DISPLAY nor WAYLAND_DISPLAY is set)",
            hint="Over SSH there is no clipboard: print with `pk secrets cat`, or forward X "
            "with `ssh -X`.",
        )
    return ClipboardUnavailable()


def copy(data: bytes, clear_after: int) -> None:
    """Copy a secret as a value: without a final newline (polykey.values)."""
    from polykey.values import as_value

    value = as_value(data)
    copy_cmd, _ = tools()
    # the tool may fork a process that owns the selection: it must not hold our pipes open
    subprocess.run(
        copy_cmd, input=value, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    if clear_after > 0:
        digest = hashlib.sha256(value).hexdigest()
        child = subprocess.Popen(
            [sys.executable, "-m", "polykey.cli.clip", str(clear_after)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert child.stdin is not None
        child.stdin.write(digest.encode() + b"\n")
        child.stdin.close()


def _clear_later(seconds: int, digest: str) -> None:
    time.sleep(seconds)
    copy_cmd, paste_cmd = tools()
    current = subprocess.run(paste_cmd, capture_output=True, check=False).stdout
    if hashlib.sha256(current).hexdigest() == digest:
        subprocess.run(
            copy_cmd, input=b"", check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


if __name__ == "__main__":
    _clear_later(int(sys.argv[1]), sys.stdin.readline().strip())
