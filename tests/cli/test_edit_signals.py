"""`pk secrets edit` removes the plaintext it gave the editor whatever happens: when the terminal
closes (SIGHUP), when it is told to stop (SIGTERM), and, for a process that died without a chance
to clean up (SIGKILL), on the next `pk secrets edit`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.agent.runtime import pid_alive
from tests.cli.helpers import CliNode
from tests.support import run_pk

SECRET = b"edit-signal-test-secret\n"
NOBODY = 65534

# Tells the test where its file is (written elsewhere, then renamed: the test never reads half a
# line), then waits as an editor would, as the same process (exec), until it is told to stop.
WAITING_EDITOR = """#!/bin/sh
printf '%s %s\\n' "$$" "$1" > "$PK_TEST_EDITING.part"
mv "$PK_TEST_EDITING.part" "$PK_TEST_EDITING"
exec sleep 600 </dev/null >/dev/null 2>&1
"""


def ram_base() -> Path:
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "/dev/shm":
            if fields[2] in ("tmpfs", "ramfs"):
                return Path("/dev/shm")
            break
    pytest.skip("/dev/shm is not RAM-backed here")


@pytest.fixture
def node(cli_node: CliNode) -> CliNode:
    env = cli_node.env(PK_NO_AGENT="1")
    assert run_pk("vaults", "create", "v", env=env).returncode == 0
    assert run_pk("secrets", "write", "v:k", env=env, input=SECRET).returncode == 0
    return cli_node


def edit_env(node: CliNode, editor: str, **extra: str) -> dict[str, str]:
    env = node.env(PK_NO_AGENT="1", EDITOR=editor, VISUAL="", **extra)
    env.pop("XDG_RUNTIME_DIR", None)  # the editor's folder is then in /dev/shm
    return env


def cat(node: CliNode) -> bytes:
    return run_pk("secrets", "cat", "v:k", env=node.env(PK_NO_AGENT="1"), input=b"").stdout


def edit_folders(base: Path, pid: int) -> list[Path]:
    return sorted(base.glob(f"pk-edit-{pid}-*"))


@pytest.fixture
def waiting_editor(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    script = tmp_path / "editor.sh"
    script.write_text(WAITING_EDITOR)
    script.chmod(0o700)
    marker = tmp_path / "editing"
    yield str(script), marker
    if marker.exists():  # never leave the editor behind, whatever the outcome
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(marker.read_text().split()[0]), signal.SIGKILL)


def wait_for(marker: Path, proc: subprocess.Popen[bytes]) -> tuple[int, Path]:
    """The editor's pid and file, once it runs (or fail with pk's stderr if pk ended first)."""
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"pk ended before the editor ran: {err.decode()}")
        assert time.monotonic() < deadline, "the editor never started"
        time.sleep(0.02)
    pid, file = marker.read_text().split(maxsplit=1)
    return int(pid), Path(file.strip())


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_signal_during_the_edit_removes_the_plaintext_and_ends_the_editor(
    node: CliNode, waiting_editor: tuple[str, Path], signum: int
) -> None:
    base = ram_base()
    editor, marker = waiting_editor
    env = edit_env(node, editor, PK_TEST_EDITING=str(marker))
    proc = subprocess.Popen(
        [sys.executable, "-m", "polykey", "secrets", "edit", "v:k"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        editor_pid, file = wait_for(marker, proc)
        assert file.read_bytes() == SECRET  # the plaintext the editor got
        assert file.parent.parent == base
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not file.exists()
    assert not file.parent.exists()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err.decode()
    assert SECRET.strip() not in err
    assert edit_folders(base, proc.pid) == []
    assert file.parent.name.startswith(f"pk-edit-{proc.pid}-")  # a later run can tell its pid
    assert not pid_alive(editor_pid), "the editor was told to stop"
    assert cat(node) == SECRET  # nothing saved


def test_the_next_edit_removes_folders_left_by_dead_processes_and_only_those(
    node: CliNode, tmp_path: Path
) -> None:
    base = ram_base()
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not pid_alive(dead.pid)
    stale = base / f"pk-edit-{dead.pid}-stale1x_"
    live = base / f"pk-edit-{os.getpid()}-live2x_"  # this test runs: not stale
    foreign = base / f"pk-edit-{dead.pid}-other3x_"
    made = [stale, live]
    try:
        for folder in made:
            folder.mkdir(mode=0o700)
            (folder / "k").write_bytes(SECRET)
        (stale / ".k.swp").write_bytes(SECRET)  # an editor's own leftovers go too
        if os.geteuid() == 0:
            foreign.mkdir(mode=0o700)
            made.append(foreign)
            (foreign / "k").write_bytes(SECRET)
            os.chown(foreign / "k", NOBODY, NOBODY)
            os.chown(foreign, NOBODY, NOBODY)  # another user's: never touched
        result = run_pk("secrets", "edit", "v:k", env=edit_env(node, "true"), input=b"")
        assert result.returncode == 0, result.stderr
        assert not stale.exists()
        assert (live / "k").read_bytes() == SECRET
        if foreign in made:
            assert (foreign / "k").read_bytes() == SECRET
    finally:
        for folder in made:
            for file in folder.glob("*") if folder.exists() else []:
                file.unlink()
            with contextlib.suppress(FileNotFoundError):
                folder.rmdir()
