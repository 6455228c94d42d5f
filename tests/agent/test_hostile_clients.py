"""Clients the agent must survive, and runtimes the CLI must not trust.

A socket or runtime folder that is not private is refused by the CLI (exit 41); a connection from
another user is closed by the agent; a malformed or oversized frame closes that connection only;
100 concurrent clients are all answered and no write is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from polykey.agent.protocol import MAX_FRAME
from polykey.cli.client import AgentClient
from tests.agent.test_agent_process import AgentHandle, make_node, start_agent

SECRET = b"hostile-test-secret-value"
NOBODY = 65534


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHandle]:
    node = tmp_path_factory.mktemp("hostile") / "node.pk"
    make_node(node)
    base = Path(tempfile.mkdtemp(prefix="pkr-", dir="/tmp"))
    handle = start_agent(node, base)
    try:
        assert handle.pk("secrets", "write", "v:secret", stdin=SECRET).returncode == 0
        yield handle
    finally:
        handle.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def client(agent: AgentHandle, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentClient]:
    """An in-process client using the session token file (not PK_TOKEN)."""
    monkeypatch.delenv("PK_TOKEN", raising=False)
    c = AgentClient(agent.folder)
    try:
        yield c
    finally:
        c.close()


def agent_still_serves(agent: AgentHandle) -> None:
    c = AgentClient(agent.folder)
    try:
        got = c.call("secrets.cat", {"items": [["v", "secret"]]})
        assert got["secrets"][0]["data"] == SECRET
        assert c.call("agent.status", {}, token=False)["pid"] == agent.pid()
    finally:
        c.close()


# --- runtimes that are not private ----------------------------------------------------------------


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")


def _chmod(mode: int, which: str) -> Callable[[Path], Callable[[], None]]:
    def change(folder: Path) -> Callable[[], None]:
        path = folder / "agent.sock" if which == "socket" else folder
        old = path.stat().st_mode & 0o777
        os.chmod(path, mode)
        return lambda: os.chmod(path, old)

    return change


def _chown(which: str) -> Callable[[Path], Callable[[], None]]:
    def change(folder: Path) -> Callable[[], None]:
        _need_root()
        path = folder / "agent.sock" if which == "socket" else folder
        os.chown(path, NOBODY, NOBODY)
        return lambda: os.chown(path, os.getuid(), os.getgid())

    return change


def _folder_symlink(folder: Path) -> Callable[[], None]:
    real = folder.with_name(folder.name + ".real")
    folder.rename(real)
    folder.symlink_to(real)

    def undo() -> None:
        folder.unlink()
        real.rename(folder)

    return undo


def _socket_symlink(folder: Path) -> Callable[[], None]:
    sock, moved = folder / "agent.sock", folder / "moved.sock"
    sock.rename(moved)
    sock.symlink_to(moved.name)

    def undo() -> None:
        sock.unlink()
        moved.rename(sock)

    return undo


OPEN = "is accessible to other users"
OWNED = "belongs to another user"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(_chmod(0o666, "socket"), OPEN, id="socket-0666"),
        pytest.param(_chmod(0o660, "socket"), OPEN, id="socket-0660"),
        pytest.param(_chmod(0o755, "folder"), OPEN, id="folder-0755"),
        pytest.param(_chmod(0o710, "folder"), OPEN, id="folder-0710"),
        pytest.param(_chown("socket"), OWNED, id="socket-of-another-user"),
        pytest.param(_chown("folder"), OWNED, id="folder-of-another-user"),
        pytest.param(_folder_symlink, "is not a folder", id="folder-is-a-symlink"),
        pytest.param(_socket_symlink, "is not a socket", id="socket-is-a-symlink"),
    ],
)
def test_a_runtime_that_is_not_private_is_not_used(
    agent: AgentHandle, change: Callable[[Path], Callable[[], None]], reason: str
) -> None:
    """Local commands warn, saying why, and work on the node file; only the agent's own
    commands refuse."""
    undo = change(agent.folder)
    try:
        for args in (("vaults", "list"), ("secrets", "cat", "v:secret")):
            result = agent.with_password(*args, stdin=b"")
            lines = result.stderr.decode().splitlines()
            assert result.returncode == 0 and len(lines) == 1, (args, lines)
            assert lines[0].startswith("pk: warning: not using the agent: ")
            assert reason in lines[0], (args, lines)
        assert agent.with_password("secrets", "cat", "v:secret").stdout == SECRET
        assert agent.pk("vaults", "list", stdin=b"").returncode == 4  # no agent, no password
        status = agent.pk("agent", "status", stdin=b"")
        err = status.stderr.decode()
        assert status.returncode == 41, err
        assert err.startswith("pk: error: The agent's runtime folder or socket is not private")
        assert "Traceback" not in err and status.stdout == b""
    finally:
        undo()
    assert agent.pk("secrets", "cat", "v:secret").stdout == SECRET


CLIENT = """
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "agent.status", "params": {}}).encode()
data = b""
try:
    s.sendall(struct.pack(">I", len(body)) + body)
except (BrokenPipeError, ConnectionResetError):  # closed before the request was sent
    sys.stdout.write("0")
    sys.exit(0)
while True:
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    data += chunk
    if len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
        break
sys.stdout.write(str(len(data)))
"""


def test_the_agent_closes_a_connection_from_another_user(agent: AgentHandle) -> None:
    _need_root()
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 that another user may run")
    paths = [agent.base, agent.folder, agent.folder / "agent.sock"]
    modes = [p.stat().st_mode & 0o777 for p in paths]
    try:  # let the other user reach the socket: only the agent's own check remains
        os.chmod(agent.base, 0o711)
        os.chmod(agent.folder, 0o711)
        os.chmod(agent.folder / "agent.sock", 0o666)
        sock = str(agent.folder / "agent.sock")
        mine = subprocess.run(
            [python, "-c", CLIENT, sock], capture_output=True, check=False, timeout=30
        )
        theirs = subprocess.run(
            [python, "-c", CLIENT, sock],
            capture_output=True,
            check=False,
            timeout=30,
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            cwd="/",
        )
    finally:
        for path, mode in zip(paths, modes, strict=True):
            os.chmod(path, mode)
    assert mine.returncode == 0 and theirs.returncode == 0, (mine.stderr, theirs.stderr)
    assert int(mine.stdout) > 4  # answered
    assert theirs.stdout == b"0", theirs.stderr  # closed, not one byte of an answer
    assert f"refused a connection from uid {NOBODY}" in (agent.folder / "agent.log").read_text()
    agent_still_serves(agent)


# --- malformed frames -----------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def request(method: str, params: Any) -> bytes:
    return frame(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    )


def exchange(path: Path, payload: bytes, *, end: bool = False) -> bytes:
    """Send ``payload`` (and end our side if asked); what comes back until the agent closes.

    A timeout (the agent kept the connection open) fails the test.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(str(path))
        try:
            s.sendall(payload)
            if end:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):  # closed before all was sent
            return b""
        received = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


@pytest.mark.parametrize(
    ("payload", "end"),
    [
        pytest.param(frame(b"this is not JSON"), False, id="not-json"),
        pytest.param(frame(b"[1, 2, 3]"), False, id="json-array"),
        pytest.param(frame(b'"a string"'), False, id="json-string"),
        pytest.param(frame(b'{"jsonrpc": "2.0", "method": "\xff"}'), False, id="not-utf8"),
        pytest.param(frame(b"[" * 100_000 + b"]" * 100_000), False, id="deeply-nested"),
        pytest.param(
            frame(b'{"jsonrpc": "1.0", "id": 1, "method": "agent.status"}'), False, id="not-2.0"
        ),
        pytest.param(frame(b'{"jsonrpc": "2.0", "id": 1}'), False, id="no-method"),
        pytest.param(request("agent.status", [1, 2]), False, id="params-array"),
        pytest.param(request("vaults.list", {"x": {"$b64": "!!!"}}), False, id="bad-base64"),
        pytest.param(struct.pack(">I", MAX_FRAME + 1), False, id="length-over-192-MiB"),
        pytest.param(struct.pack(">I", 0xFFFFFFFF) + b"{}" * 1000, False, id="length-4-GiB"),
        pytest.param(struct.pack(">I", 100) + b'{"jsonrpc": "2.0"', True, id="truncated-body"),
        pytest.param(b"\x00\x00", True, id="truncated-header"),
    ],
)
def test_a_malformed_frame_closes_that_connection_and_the_agent_serves_on(
    agent: AgentHandle, payload: bytes, end: bool
) -> None:
    assert exchange(agent.folder / "agent.sock", payload, end=end) == b""
    agent_still_serves(agent)


def _deep(depth: int, kind: str) -> bytes:
    """A request (or a part of it) nested ``depth`` levels: shallow enough for json.loads."""
    inner = (
        b'{"a":' * depth + b"1" + b"}" * depth if kind == "dict" else b"[" * depth + b"]" * depth
    )
    if kind == "id":
        return b'{"jsonrpc":"2.0","id":' + inner + b',"method":"agent.status","params":{}}'
    if kind == "other":
        return b'{"jsonrpc":"2.0","id":1,"method":"agent.status","params":{},"x":' + inner + b"}"
    return b'{"jsonrpc":"2.0","id":1,"method":"agent.status","params":{"x":' + inner + b"}}"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_deep(500, "list"), id="params-list-500-deep"),
        pytest.param(_deep(500, "dict"), id="params-dict-500-deep"),
        pytest.param(_deep(900, "list"), id="params-list-900-deep"),
        pytest.param(_deep(500, "other"), id="other-field-500-deep"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="list-100000-deep"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="dict-100000-deep"),
    ],
)
def test_a_document_nested_too_deep_is_refused_in_one_line_without_a_traceback(
    agent: AgentHandle, body: bytes
) -> None:
    """Deep enough to pass json.loads (or not): the connection closes with one warning line,
    the connection task does not die with a RecursionError, and the agent serves on."""
    log = agent.folder / "agent.log"
    before = log.read_text().count("closed a connection: nested too deep")
    assert exchange(agent.folder / "agent.sock", frame(body)) == b""
    text = log.read_text()
    assert "Traceback" not in text and "RecursionError" not in text
    assert text.count("closed a connection: nested too deep") == before + 1
    agent_still_serves(agent)


def test_a_partial_frame_left_open_does_not_hold_up_other_clients(agent: AgentHandle) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.connect(str(agent.folder / "agent.sock"))
        stalled.sendall(struct.pack(">I", 1000) + b'{"jsonrpc": "2.0", ')
        agent_still_serves(agent)
        assert agent.pk("secrets", "cat", "v:secret").stdout == SECRET


def test_an_unknown_method_is_answered_and_the_connection_stays_open(
    agent: AgentHandle, client: AgentClient
) -> None:
    token = client.token()
    response = client.call_raw("no.such.method", {"token": token})
    assert response["id"] == 1
    assert response["error"]["code"] == -32000
    assert response["error"]["data"]["type"] == "UnknownMethod"
    status = client.call_raw("agent.status", {})  # the same connection
    assert status["id"] == 2 and status["result"]["pid"] == agent.pid()


def test_a_request_without_a_token_is_refused_but_answered(client: AgentClient) -> None:
    response = client.call_raw("secrets.cat", {"items": [["v", "secret"]]})
    assert response["error"]["code"] == -32001
    assert SECRET not in json.dumps(response).encode()


# --- many clients at once -------------------------------------------------------------------------


def test_100_concurrent_clients_are_all_answered_and_no_write_is_lost(
    agent: AgentHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PK_TOKEN", raising=False)
    count = 100
    barrier = threading.Barrier(count)
    answers: dict[int, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        c = AgentClient(agent.folder)
        try:
            c.call("agent.status", {}, token=False)  # connected before the rush
            barrier.wait(timeout=60)
            value = f"value {i}".encode()
            if i % 2:
                shared = c.call("secrets.cat", {"items": [["v", "secret"]]})
                written = c.call("secrets.write", {"vault": "v", "path": f"c/{i}", "data": value})
            else:
                written = c.call("secrets.write", {"vault": "v", "path": f"c/{i}", "data": value})
                shared = c.call("secrets.cat", {"items": [["v", "secret"]]})
            own = c.call("secrets.cat", {"items": [["v", f"c/{i}"]]})
            answers[i] = {"shared": shared, "written": written, "own": own}
        except BaseException as exc:
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert sorted(answers) == list(range(count))
    for i, got in answers.items():
        assert got["shared"]["secrets"][0]["data"] == SECRET
        assert got["own"]["secrets"][0]["data"] == f"value {i}".encode()
    commits = {got["written"]["commit"] for got in answers.values()}
    assert len(commits) == count  # one commit each
    listed = agent.pk("secrets", "ls", "v:c")
    assert sorted(listed.stdout.decode().split()) == sorted(f"c/{i}" for i in range(count))
    log = agent.pk("vaults", "log", "v").stdout.decode()
    for i in range(count):
        assert log.count(f"  Add secret c/{i}.\n") == 1, i
    agent_still_serves(agent)


def status(c: AgentClient) -> dict[str, Any]:
    return c.call("agent.status", {}, token=False)


def test_status_counts_the_other_clients_still_connected(agent: AgentHandle) -> None:
    """`clients` in agent.status: connections other than the asker's, so a caller can wait for
    the request of a killed CLI to be finished (the soak does)."""
    asker, other = AgentClient(agent.folder), AgentClient(agent.folder)
    try:
        assert asker.call("agent.status", {}, token=False)["clients"] == 0
        other.call("agent.status", {}, token=False)  # connected, and stays so
        assert asker.call("agent.status", {}, token=False)["clients"] == 1
        other.close()
        deadline = time.monotonic() + 10
        while (
            asker.call("agent.status", {}, token=False)["clients"] and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        assert asker.call("agent.status", {}, token=False)["clients"] == 0
    finally:
        asker.close()
        other.close()
