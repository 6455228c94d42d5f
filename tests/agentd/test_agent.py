"""The agent as a real process: sessions, socket hygiene, crashes, concurrency, hostile frames."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.cli.client import AgentClient
from tests.support import PASSWORD, pk_env, run_pk


@dataclass
class Running:
    env: dict[str, str]
    folder: Path

    def pk(self, *args: str, stdin: bytes | None = None, **env: str) -> tuple[int, bytes, bytes]:
        r = run_pk(*args, env={**self.env, **env}, input=stdin)
        return r.returncode, r.stdout, r.stderr

    def status(self) -> dict[str, object]:
        return dict(json.loads((self.folder / "status.json").read_text()))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Running]:
    env = pk_env(tmp_path / "n.pk", PK_PASSWORD=PASSWORD, PK_RUNTIME_DIR=str(tmp_path / "run"))
    assert run_pk("bootstrap", env=env).returncode == 0
    assert run_pk("vaults", "create", "v", env=env).returncode == 0
    started = run_pk("agent", "start", "--background", env=env)
    assert started.returncode == 0, started.stderr
    folders = list((tmp_path / "run").iterdir())
    assert len(folders) == 1
    env.pop("PK_PASSWORD")
    running = Running(env, folders[0])
    try:
        yield running
    finally:
        run_pk("agent", "stop", env=env)
        pid = running.status().get("pid") if (folders[0] / "status.json").exists() else None
        if isinstance(pid, int):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_status_needs_no_password_and_files_are_private(agent: Running) -> None:
    code, out, _ = agent.pk("agent", "status", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert {"pid", "node_id", "socket", "since"} <= set(doc)
    assert agent.folder.stat().st_mode & 0o777 == 0o700
    for name in ("agent.sock", "status.json", "agent.log", "session.token"):
        assert (agent.folder / name).stat().st_mode & 0o777 == 0o600, name


def test_commands_work_through_the_agent_without_a_password(agent: Running) -> None:
    assert agent.pk("secrets", "write", "v:k", stdin=b"value")[0] == 0
    assert agent.pk("secrets", "cat", "v:k") == (0, b"value", b"")
    assert agent.pk("vaults", "list")[0] == 0


def test_the_log_never_holds_a_secret_value(agent: Running) -> None:
    canary = b"CANARY-" + os.urandom(8).hex().encode()
    assert agent.pk("secrets", "write", "v:c", stdin=canary)[0] == 0
    assert agent.pk("secrets", "cat", "v:c")[1] == canary
    agent.pk("secrets", "env", "v")
    log = (agent.folder / "agent.log").read_bytes()
    assert b"secrets.write ok" in log
    assert canary not in log and canary.hex().encode() not in log


@pytest.mark.parametrize("how", ["lock", "lockall", "forged"])
def test_an_invalid_token_is_refused_then_a_password_unlocks_a_new_session(
    agent: Running, how: str
) -> None:
    extra: dict[str, str] = {}
    if how == "forged":
        extra["PK_TOKEN"] = "pk1." + "A" * 43
    else:
        assert agent.pk("agent", how)[0] == 0
    code, _, err = agent.pk("secrets", "ls", "v", **extra)  # type: ignore[arg-type]
    assert code == 42
    assert err.startswith(b"pk: error: The agent session is not valid")
    assert b"Traceback" not in err
    code, _, err = agent.pk("secrets", "ls", "v", PK_PASSWORD=PASSWORD, **extra)  # type: ignore[arg-type]
    assert code == 0, err
    assert b"unlocking a new session" in err


def test_an_expired_session_is_refused(tmp_path: Path) -> None:
    env = pk_env(tmp_path / "n.pk", PK_PASSWORD=PASSWORD, PK_RUNTIME_DIR=str(tmp_path / "run"))
    assert run_pk("bootstrap", env=env).returncode == 0
    assert run_pk("agent", "start", "-b", "--session-idle", "10", env=env).returncode == 0
    try:
        no_pw = {k: v for k, v in env.items() if k != "PK_PASSWORD"}
        assert run_pk("vaults", "list", env=no_pw).returncode == 0
        time.sleep(11)
        expired = run_pk("vaults", "list", env=no_pw)
        assert expired.returncode == 42
        assert b"expired" in expired.stderr
    finally:
        run_pk("agent", "stop", env=env)


def test_a_socket_with_loose_permissions_is_not_used(agent: Running) -> None:
    """Not trusted, and not in the way: a command warns and works on the node file; commands
    about the agent itself are refused (exit 41)."""
    for path, mode in ((agent.folder / "agent.sock", 0o666), (agent.folder, 0o755)):
        old = path.stat().st_mode & 0o777
        os.chmod(path, mode)
        try:
            code, out, err = agent.pk("vaults", "list", stdin=b"", PK_PASSWORD=PASSWORD)
            assert code == 0, err
            assert out.startswith(b"v\t")
            assert err.startswith(b"pk: warning: not using the agent: ") and err.count(b"\n") == 1
            assert b"accessible to other users" in err
            code, _, err = agent.pk("agent", "status", stdin=b"")
            assert code == 41
            assert b"not private" in err
        finally:
            os.chmod(path, old)
    assert agent.pk("vaults", "list", stdin=b"")[0] == 0  # through the agent again


def test_after_kill_9_the_next_command_works_and_nothing_is_lost(agent: Running) -> None:
    assert agent.pk("secrets", "write", "v:kept", stdin=b"durable")[0] == 0
    pid = agent.status()["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    code, out, err = agent.pk("secrets", "cat", "v:kept", PK_PASSWORD=PASSWORD)
    assert (code, out) == (0, b"durable"), err
    assert agent.pk("agent", "status")[0] == 43
    assert not (agent.folder / "agent.sock").exists()
    assert agent.pk("agent", "start", "-b", PK_PASSWORD=PASSWORD)[0] == 0
    assert agent.pk("secrets", "cat", "v:kept") == (0, b"durable", b"")


def _raw_exchange(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        try:
            return sock.recv(100)
        except (ConnectionError, TimeoutError):
            return b""


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack(">I", 9) + b"not json!",
        struct.pack(">I", 2) + b"[]",
        struct.pack(">I", 400 * 1024 * 1024),
        struct.pack(">I", 30) + b'{"jsonrpc":"1.0","method":"x"}',
        b"\x00\x00",
    ],
    ids=["not json", "array", "oversized", "not json-rpc 2.0", "truncated"],
)
def test_a_malformed_frame_closes_its_connection_and_the_agent_keeps_serving(
    agent: Running, payload: bytes
) -> None:
    assert _raw_exchange(agent.folder / "agent.sock", payload) == b""
    assert agent.pk("vaults", "list")[0] == 0


def test_a_hundred_concurrent_clients_are_all_answered_with_no_lost_write(
    agent: Running,
) -> None:
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            c = AgentClient(agent.folder)
            c.call("secrets.write", {"vault": "v", "path": f"c/{i:03d}", "data": b"%d" % i})
            got = c.call("secrets.cat", {"items": [["v", f"c/{i:03d}"]]})
            assert got["secrets"][0]["data"] == b"%d" % i
            c.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    listed = agent.pk("secrets", "ls", "v:c")[1].split()
    assert len(listed) == 100
    log = json.loads(agent.pk("vaults", "log", "v", "--format", "json")[1])
    assert sum(1 for c in log["commits"] if c["message"].startswith("Add secret c/")) == 100


def test_the_first_command_after_kill_9_cleans_the_stale_socket(agent: Running) -> None:
    pid = agent.status()["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    assert agent.pk("vaults", "list", PK_PASSWORD=PASSWORD)[0] == 0
    assert not (agent.folder / "agent.sock").exists()
    assert not (agent.folder / "status.json").exists()
