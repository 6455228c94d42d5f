"""agent.log is bounded: the agent rotates it (at start and when it reaches its size), keeps a few
older files, all 0600, and what the agent process writes to its standard error (Python warnings,
a crash) lands in the current file, never in one already rotated out."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.agent.runtime import Runtime, agent_log_handler
from polykey.cli.client import AgentClient
from tests.agent.test_agent_process import AgentHandle, make_node
from tests.support import PASSWORD, pk_env, run_pk

BOUND = 4096


@pytest.fixture
def base() -> Iterator[Path]:
    """A short runtime folder (Unix socket paths are limited to about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pkr-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start(node: Path, base: Path) -> AgentHandle:
    env = pk_env(node, PK_RUNTIME_DIR=str(base), PK_AGENT_LOG_MAX_BYTES=str(BOUND))
    started = run_pk("agent", "start", "--background", env={**env, "PK_PASSWORD": PASSWORD})
    assert started.returncode == 0, started.stderr
    return AgentHandle(node, base, env)


@pytest.fixture
def running(tmp_path: Path, base: Path) -> Iterator[AgentHandle]:
    node = tmp_path / "node.pk"
    make_node(node)
    handle = start(node, base)
    try:
        yield handle
    finally:
        handle.stop()


def logs(folder: Path) -> dict[str, int]:
    """agent.log and its rotated files: name -> size."""
    return {p.name: p.stat().st_size for p in sorted(folder.glob("agent.log*"))}


def test_the_log_of_a_busy_agent_stays_bounded(running: AgentHandle) -> None:
    folder = running.folder
    client = AgentClient(folder)
    try:
        for _ in range(600):  # one log line each: about 35 KiB in all
            client.call("agent.status", {}, token=False)
    finally:
        client.close()
    sizes = logs(folder)
    assert set(sizes) == {"agent.log", "agent.log.1", "agent.log.2", "agent.log.3"}, sizes
    assert all(size <= BOUND for size in sizes.values()), sizes
    for name in sizes:
        info = (folder / name).lstat()
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, name
    assert "agent.status ok" in (folder / "agent.log").read_text()
    listed = running.pk("secrets", "ls", "v", stdin=b"")  # the agent still logs, in the new file
    assert listed.returncode == 0, listed.stderr
    assert "secrets.ls ok" in (folder / "agent.log").read_text()


def test_a_log_left_too_large_is_rotated_when_the_agent_starts(tmp_path: Path, base: Path) -> None:
    node = tmp_path / "node.pk"
    make_node(node)
    runtime = Runtime.for_node(base, node)
    runtime.folder.mkdir(mode=0o700)
    old = b"an old line from an earlier agent\n" * 1000
    fd = os.open(runtime.log_file, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, old)
    os.close(fd)
    handle = start(node, base)
    try:
        assert (runtime.folder / "agent.log.1").read_bytes() == old
        current = runtime.log_file.read_text()
        assert "agent started" in current and "an old line" not in current
        assert runtime.log_file.stat().st_size <= BOUND
    finally:
        handle.stop()


def test_standard_error_follows_the_log_when_it_rotates(tmp_path: Path) -> None:
    """The agent's stderr is agent.log; after a rotation it must write to the new agent.log."""
    path = tmp_path / "agent.log"
    stderr = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    unrelated = os.open(tmp_path / "other", os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    logger = logging.getLogger("polykey.test.agentlog")
    handler = agent_log_handler(path, max_bytes=300, backups=2, stderr_fd=stderr)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for i in range(40):
            logger.info("line %d of the agent's log", i)
            os.write(stderr, b"a warning on stderr\n")
        assert {p.name for p in tmp_path.glob("agent.log*")} == {
            "agent.log",
            "agent.log.1",
            "agent.log.2",
        }
        os.write(stderr, b"the last words\n")
        assert path.read_bytes().endswith(b"the last words\n")
        # stderr is not checked as it is written: a file may pass the bound by what stderr
        # wrote since the last log line
        slack = len(b"a warning on stderr\n")
        assert all(p.stat().st_size <= 300 + slack for p in tmp_path.glob("agent.log*"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        logger.removeHandler(handler)
        handler.close()
        os.close(stderr)
    unrelated_handler = agent_log_handler(tmp_path / "b.log", max_bytes=100, stderr_fd=unrelated)
    try:
        for i in range(10):
            unrelated_handler.emit(logging.makeLogRecord({"msg": f"line {i}"}))
        os.write(unrelated, b"not a log\n")
        assert (tmp_path / "other").read_bytes() == b"not a log\n"  # not the log: left alone
    finally:
        unrelated_handler.close()
        os.close(unrelated)
