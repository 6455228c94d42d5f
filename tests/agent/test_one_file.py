"""The node file is one file whenever the user can see it, while a real agent holds it open: a
plain copy of node.pk alone holds a write a few seconds later, `pk agent stop` leaves no -wal,
and `pk node copy` gives a whole node at any moment."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.errors import PolykeyError
from polykey.node import Node
from tests.agent.test_agent_process import AgentHandle, make_node, start_agent
from tests.cli.helpers import Result, assert_error, assert_json_error, assert_ok
from tests.support import PASSWORD, pk_env, run_pk

SETTLE_S = 15.0  # the most a test waits for the agent's checkpoint (it is due after a second)


@pytest.fixture
def base() -> Iterator[Path]:
    """A short runtime folder (Unix socket paths are limited to about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pkr-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(tmp_path: Path, base: Path) -> Iterator[AgentHandle]:
    node = tmp_path / "node" / "node.pk"
    make_node(node)
    handle = start_agent(node, base)
    try:
        yield handle
    finally:
        handle.stop()


def direct(copy: Path, *args: str) -> Result:
    """`pk --node COPY ARGS` on the file itself: no agent, the password given."""
    return run_pk("--node", str(copy), *args, env=pk_env(PK_PASSWORD=PASSWORD, PK_NO_AGENT="1"))


def cat(copy: Path, secret: str) -> bytes:
    result = direct(copy, "secrets", "cat", secret)
    assert_ok(result)
    return result.stdout


def _journals(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))


def _holds(copy: Path, secret: str, value: bytes) -> bool:
    """Whether the node file at ``copy`` opens and holds ``value`` at ``secret``."""
    vault, path = secret.split(":", 1)
    with Node.open(copy, PASSWORD.encode(), allow_weak=True) as node:
        try:
            return node.vaults.open(vault).read(path) == value
        except PolykeyError:  # not there yet: the file alone is older than the write
            return False


def plain_copy_holding(node: Path, into: Path, secret: str, value: bytes) -> Path:
    """Copy node.pk alone (no -wal) with a plain byte copy until the copy holds the write."""
    deadline = time.monotonic() + SETTLE_S
    attempt = 0
    while True:
        attempt += 1
        folder = into / f"try-{attempt}"
        folder.mkdir(parents=True)
        copy = shutil.copyfile(node, folder / "node.pk")
        if _holds(copy, secret, value):
            return copy
        assert time.monotonic() < deadline, "node.pk alone never held the write"
        time.sleep(0.2)


def test_a_plain_copy_of_node_pk_alone_holds_a_write_seconds_later(
    agent: AgentHandle, tmp_path: Path
) -> None:
    for n, value in enumerate((b"first value", b"second value")):
        secret = f"v:db/password-{n}"
        assert_ok(agent.pk("secrets", "write", secret, stdin=value))
        copy = plain_copy_holding(agent.node, tmp_path / f"copies-{n}", secret, value)
        assert _journals(copy) == []
        assert cat(copy, secret) == value  # `pk` on the copy, no agent
    assert agent.pk("secrets", "cat", "v:db/password-0").stdout == b"first value"  # still serves


def test_agent_stop_leaves_no_wal_and_the_file_holds_every_write(agent: AgentHandle) -> None:
    for n in range(3):
        assert_ok(agent.pk("secrets", "write", f"v:s{n}", stdin=f"value {n}".encode()))
    assert (agent.node.parent / "node.pk-wal").exists()  # the agent holds the node open
    assert_ok(agent.pk("agent", "stop"))
    assert _journals(agent.node) == []
    assert sorted(p.name for p in agent.node.parent.iterdir()) == ["node.pk"]
    assert cat(agent.node, "v:s2") == b"value 2"


def test_pk_node_copy_while_the_agent_runs_gives_a_whole_node(
    agent: AgentHandle, tmp_path: Path
) -> None:
    for n in range(3):
        assert_ok(agent.pk("secrets", "write", f"v:s{n}", stdin=f"value {n}".encode()))
    usb = tmp_path / "usb"
    usb.mkdir()
    result = agent.pk("node", "copy", str(usb), "--format", "json")  # no password needed
    assert_ok(result)
    doc = json.loads(result.stdout)
    copy = usb / "node.pk"
    assert doc == {"source": str(agent.node), "path": str(copy), "bytes": copy.stat().st_size}
    assert _journals(copy) == []
    for n in range(3):
        assert cat(copy, f"v:s{n}") == f"value {n}".encode()
    assert_ok(direct(copy, "node", "check"))
    human = agent.pk("node", "copy", str(tmp_path / "second.pk"))
    assert_ok(human)
    assert human.stdout.decode().startswith(f"Copied the node to {tmp_path / 'second.pk'} (")
    assert agent.pk("secrets", "cat", "v:s1").stdout == b"value 1"  # the agent goes on


def test_pk_node_copy_refuses_an_existing_file_and_the_node_itself(tmp_path: Path) -> None:
    node = tmp_path / "node" / "node.pk"
    make_node(node)
    env = pk_env(node, PK_NO_AGENT="1")  # no password: copying needs none
    taken = tmp_path / "taken.pk"
    taken.write_bytes(b"keep me")
    message = assert_error(run_pk("node", "copy", str(taken), env=env), 11)
    assert str(taken) in message
    assert taken.read_bytes() == b"keep me"
    error = assert_json_error(run_pk("node", "copy", str(taken), "--format", "json", env=env), 11)
    assert error["hint"]
    assert "the node file itself" in assert_error(run_pk("node", "copy", str(node), env=env), 3)
    missing = tmp_path / "missing" / "copy.pk"
    assert "not a folder" in assert_error(run_pk("node", "copy", str(missing), env=env), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node", "taken.pk"]
    assert sorted(p.name for p in node.parent.iterdir()) == ["node.pk"]
