"""Real processes for the soak: run `pk` (maybe in a network namespace, maybe under a skewed
clock) and SIGKILL it, or another process, after a chosen delay.

A command is *acknowledged* only when it exited 0 on its own. `Done.killed` is true only when the
process really died of the SIGKILL we sent (its exit status says so), never when it finished first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
_PK = VENV_BIN / "pk"
PK: list[str] = [str(_PK)] if _PK.exists() else [sys.executable, "-m", "polykey"]

FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
)

DEFAULT_TIMEOUT_S = 180.0


def faketime_lib() -> str | None:
    """libfaketime (Debian's package `faketime`), or None when it is not installed."""
    for lib in FAKETIME_LIBS:
        if os.path.exists(lib):
            return lib
    return None


def skew_env(skew: str | None) -> dict[str, str]:
    """Environment that moves the wall clock of a process (and its children) by ``skew``
    (libfaketime's syntax: "+2h", "-3d", "-90s"); the monotonic clock stays true, so timers and
    timeouts inside the process keep working."""
    lib = faketime_lib()
    if not skew or lib is None:
        return {}
    return {"LD_PRELOAD": lib, "FAKETIME": skew, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@dataclass
class Done:
    """How one process ended."""

    argv: list[str]
    code: int | None
    out: bytes
    err: bytes
    seconds: float
    killed: bool = False  # it died of our SIGKILL
    kill_sent: bool = False  # a SIGKILL was sent (to it or to another process) while it ran
    hung: bool = False  # it outlived the timeout and was killed for that

    @property
    def acked(self) -> bool:
        return self.code == 0 and not self.killed and not self.hung

    def text(self) -> str:
        return self.out.decode(errors="replace")

    def why(self) -> str:
        tail = self.err.decode(errors="replace").strip().splitlines()[-2:]
        cmd = " ".join(a if len(a) <= 60 else a[:57] + "..." for a in self.argv[-6:])
        return f"`{cmd}` exit {self.code}: {' | '.join(tail)}"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def sigkill(pid: int, *, group: bool = False) -> bool:
    """SIGKILL ``pid`` (or its process group); True if it was alive. Waits until it is gone, so
    the files and locks it held are released when this returns."""
    if not alive(pid):
        return False
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    return True


def run(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    stdin: bytes | None = None,
    kill_after: float | None = None,
    kill: Callable[[], bool] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    cwd: str | None = None,
) -> Done:
    """Run ``argv``; if it still runs after ``kill_after`` seconds, SIGKILL it (its whole process
    group), or call ``kill`` instead (which kills some other process and says whether it did),
    then wait for the command to end by itself."""
    argv = list(argv)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    kill_sent = hung = False
    try:
        if kill_after is None:
            out, err = proc.communicate(stdin, timeout=timeout)
        else:
            try:
                out, err = proc.communicate(stdin, timeout=kill_after)
            except subprocess.TimeoutExpired:
                if kill is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    kill_sent = True
                else:
                    kill_sent = kill()
                out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    code = proc.returncode
    killed = code == -signal.SIGKILL and kill is None and kill_sent
    return Done(argv, code, out, err, time.monotonic() - started, killed, kill_sent, hung)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
