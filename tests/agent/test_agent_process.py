"""The agent as a real process: start, status, stop; private files; sessions; crashes."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.agent.runtime import pid_alive
from polykey.ids import encode_node_id
from polykey.node import FAST_INSECURE_KDF, Node
from tests.support import PASSWORD, pk_env, run_pk

Result = subprocess.CompletedProcess[bytes]


@dataclass
class AgentHandle:
    """One agent started with `pk agent start --background` for one node."""

    node: Path
    base: Path  # PK_RUNTIME_DIR
    env: dict[str, str]  # no PK_PASSWORD: commands must go through the agent

    @property
    def folder(self) -> Path:
        folders = [p for p in self.base.iterdir() if p.is_dir() and not p.is_symlink()]
        assert len(folders) == 1, folders
        return folders[0]

    def pk(self, *args: str, stdin: bytes | None = None, **extra: str) -> Result:
        return run_pk(*args, env={**self.env, **extra}, input=stdin)

    def with_password(self, *args: str, stdin: bytes | None = None, **extra: str) -> Result:
        return self.pk(*args, stdin=stdin, PK_PASSWORD=PASSWORD, **extra)

    def status_doc(self) -> dict[str, object]:
        return dict(json.loads((self.folder / "status.json").read_text()))

    def pid(self) -> int:
        pid = self.status_doc()["pid"]
        assert isinstance(pid, int)
        return pid

    def stop(self) -> None:
        pid: int | None = None
        with contextlib.suppress(OSError, ValueError, AssertionError):
            pid = self.pid()
        run_pk("agent", "stop", env=self.env, timeout=30)
        if pid is not None and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def make_node(path: Path) -> str:
    """A node with a vault ``v``; returns its NodeId."""
    path.parent.mkdir(parents=True, exist_ok=True)
    node, _ = Node.bootstrap(path, PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True)
    try:
        node.vaults.create("v")
        return encode_node_id(node.node_id)
    finally:
        node.close()


def start_agent(node: Path, base: Path, *args: str) -> AgentHandle:
    env = pk_env(node, PK_RUNTIME_DIR=str(base))
    started = run_pk("agent", "start", "--background", *args, env={**env, "PK_PASSWORD": PASSWORD})
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith(b"Agent running: pid "), started.stdout
    return AgentHandle(node, base, env)


@pytest.fixture
def base() -> Iterator[Path]:
    """A short runtime folder (Unix socket paths are limited to about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pkr-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentHandle, str]]:
    """One agent for the tests that leave its sessions alone; with the node's NodeId."""
    node = tmp_path_factory.mktemp("shared") / "node.pk"
    node_id = make_node(node)
    base = Path(tempfile.mkdtemp(prefix="pkr-", dir="/tmp"))
    handle = start_agent(node, base)
    try:
        yield handle, node_id
    finally:
        handle.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def agent(tmp_path: Path, base: Path) -> Iterator[AgentHandle]:
    """An agent of its own, for a test that locks, kills or stops it."""
    node = tmp_path / "node.pk"
    make_node(node)
    handle = start_agent(node, base)
    try:
        yield handle
    finally:
        handle.stop()


def error_line(result: Result) -> str:
    """The one `pk: error:` line of a failed command (its hint may follow), no traceback."""
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines and lines[0].startswith("pk: error: "), err
    assert len(lines) <= 2 and all(line.startswith("pk: hint: ") for line in lines[1:]), err
    return lines[0]


# --- start, status, stop --------------------------------------------------------------------------


def test_status_needs_no_password_and_shows_pid_node_id_socket_and_since(
    shared: tuple[AgentHandle, str],
) -> None:
    agent, node_id = shared
    assert "PK_PASSWORD" not in agent.env
    result = run_pk(
        "agent", "status", "--format", "json", env=agent.env, input=b""
    )  # stdin is no terminal: nothing could be asked
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["running"] is True
    assert doc["node_id"] == node_id
    assert doc["pid"] == agent.pid() and pid_alive(doc["pid"])
    assert doc["socket"] == str(agent.folder / "agent.sock")
    assert stat.S_ISSOCK(os.stat(doc["socket"]).st_mode)
    since = datetime.datetime.fromisoformat(doc["since"])
    assert since.tzinfo is not None
    assert abs((datetime.datetime.now(datetime.UTC) - since).total_seconds()) < 3600
    human = agent.pk("agent", "status")
    assert human.returncode == 0
    lines = human.stdout.decode().splitlines()
    assert lines[0] == "Agent running"
    assert f"pid       {doc['pid']}" in lines
    assert f"node_id   {node_id}" in lines
    assert f"socket    {doc['socket']}" in lines
    assert f"since     {doc['since']}" in lines


def test_the_runtime_folder_is_0700_and_its_files_0600(shared: tuple[AgentHandle, str]) -> None:
    agent, _ = shared
    for folder in (agent.base, agent.folder):
        info = folder.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700, folder
        assert info.st_uid == os.getuid()
    sock = (agent.folder / "agent.sock").lstat()
    assert stat.S_ISSOCK(sock.st_mode)
    assert stat.S_IMODE(sock.st_mode) == 0o600
    for name in ("status.json", "agent.log", "session.token"):
        info = (agent.folder / name).lstat()
        assert stat.S_ISREG(info.st_mode), name
        assert stat.S_IMODE(info.st_mode) == 0o600, name


def test_the_agent_runs_with_core_dumps_off(shared: tuple[AgentHandle, str]) -> None:
    agent, _ = shared
    if not Path("/proc/self/limits").exists():
        pytest.skip("needs Linux /proc")
    limits = Path(f"/proc/{agent.pid()}/limits").read_text().splitlines()
    (core,) = [line for line in limits if line.startswith("Max core file size")]
    assert core.split()[4:6] == ["0", "0"], core


def test_commands_go_through_the_agent_without_a_password(
    shared: tuple[AgentHandle, str],
) -> None:
    agent, _ = shared
    written = agent.pk("secrets", "write", "v:through/agent", stdin=b"value 1")
    assert written.returncode == 0, written.stderr
    assert agent.pk("secrets", "cat", "v:through/agent").stdout == b"value 1"
    listed = agent.pk("secrets", "ls", "v:through")
    assert (listed.returncode, listed.stdout) == (0, b"through/agent\n")
    log = (agent.folder / "agent.log").read_text()
    assert "secrets.write ok" in log and "secrets.ls ok" in log


def test_the_agent_log_never_holds_a_secret_value(
    shared: tuple[AgentHandle, str], tmp_path: Path
) -> None:
    agent, _ = shared
    canary = "CANARY-" + os.urandom(12).hex()
    wrong_password = "WRONGPW-" + os.urandom(12).hex()
    assert agent.pk("secrets", "write", "v:canary/VALUE", stdin=canary.encode()).returncode == 0
    json_write = agent.pk("secrets", "write", "v:canary/SECOND", "--format", "json", stdin=b"x")
    assert json_write.returncode == 0
    assert agent.pk("secrets", "cat", "v:canary/VALUE").stdout == canary.encode()
    assert (
        canary in agent.pk("secrets", "cat", "v:canary/VALUE", "--format", "json").stdout.decode()
    )
    assert canary in agent.pk("secrets", "env", "v:canary").stdout.decode()
    assert agent.pk("read", "pk://v/canary/VALUE").stdout == canary.encode()
    assert agent.pk("secrets", "grep", "CANARY").returncode == 0
    template = tmp_path / "t.txt"
    template.write_text("x={{ pk://v/canary/VALUE }}")
    assert agent.pk("inject", "-i", str(template)).stdout == f"x={canary}".encode()
    refused = agent.pk("agent", "unlock", PK_PASSWORD=wrong_password)
    assert refused.returncode == 12
    log = (agent.folder / "agent.log").read_bytes()
    assert b"secrets.write ok" in log and b"secrets.cat ok" in log  # the log does record calls
    assert b"agent.unlock failed" in log
    for needle in (canary, wrong_password):
        forms = (needle.encode(), needle[8:].encode(), base64.b64encode(needle.encode()))
        for form in (*forms, needle.encode().hex().encode()):
            assert form not in log, needle


def test_a_second_start_while_one_runs_is_refused_with_exit_40(
    shared: tuple[AgentHandle, str],
) -> None:
    agent, _ = shared
    pid = agent.pid()
    for args in (["--background"], []):
        result = agent.with_password("agent", "start", *args)
        assert result.returncode == 40, result.stderr
        assert str(pid) in error_line(result)
    without_password = agent.pk("agent", "start", "--background", stdin=b"")
    assert without_password.returncode == 40
    assert agent.pid() == pid and pid_alive(pid)
    assert agent.pk("agent", "status").returncode == 0


def test_stop_ends_the_process_and_removes_socket_and_status(agent: AgentHandle) -> None:
    pid, folder = agent.pid(), agent.folder
    stopped = agent.pk("agent", "stop")
    assert (stopped.returncode, stopped.stdout) == (0, b"Agent stopped.\n")
    assert not pid_alive(pid)
    assert not (folder / "agent.sock").exists()
    assert not (folder / "status.json").exists()
    status = agent.pk("agent", "status")
    assert status.returncode == 43
    assert "No agent is running" in error_line(status)
    assert agent.pk("agent", "stop").returncode == 43


def test_a_wrong_password_starts_no_agent(tmp_path: Path, base: Path) -> None:
    node = tmp_path / "node.pk"
    make_node(node)
    env = pk_env(node, PK_RUNTIME_DIR=str(base), PK_PASSWORD="not the password")
    result = run_pk("agent", "start", "--background", env=env)
    assert result.returncode == 12
    assert "Wrong password" in error_line(result)
    assert not list(base.glob("*/agent.sock"))
    assert run_pk("agent", "status", env=env).returncode == 43


def test_a_foreground_agent_serves_until_stopped(tmp_path: Path, base: Path) -> None:
    node = tmp_path / "node.pk"
    make_node(node)
    env = pk_env(node, PK_RUNTIME_DIR=str(base))
    proc = subprocess.Popen(
        [sys.executable, "-m", "polykey", "agent", "start"],
        env={**env, "PK_PASSWORD": PASSWORD},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(b"Agent running in the foreground: pid "), line
        assert run_pk("vaults", "list", env=env).stdout.startswith(b"v\t")
        assert run_pk("agent", "stop", env=env).returncode == 0
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert run_pk("agent", "status", env=env).returncode == 43


# --- sessions -------------------------------------------------------------------------------------


def test_after_lock_a_command_without_a_password_fails_cleanly_with_exit_42(
    agent: AgentHandle,
) -> None:
    assert agent.pk("secrets", "write", "v:k", stdin=b"before").returncode == 0
    locked = agent.pk("agent", "lock")
    assert (locked.returncode, locked.stdout) == (0, b"Session locked.\n")
    assert not (agent.folder / "session.token").exists()
    for args in (("vaults", "list"), ("secrets", "cat", "v:k")):
        result = agent.pk(*args, stdin=b"")  # stdin is not a terminal
        assert result.returncode == 42, result.stderr
        assert result.stdout == b""
        assert error_line(result).startswith("pk: error: The agent session is not valid")
        assert b"before" not in result.stderr
    written = agent.pk("secrets", "write", "v:k", stdin=b"refused")
    assert written.returncode == 42


def test_after_lock_a_password_unlocks_a_new_session(agent: AgentHandle) -> None:
    assert agent.pk("agent", "lock").returncode == 0
    # the fast path reads stdin before it steps aside: the value must still be written whole
    written = agent.with_password("secrets", "write", "v:k", stdin=b"after unlock")
    assert written.returncode == 0, written.stderr
    assert b"unlocking a new session" in written.stderr
    token = (agent.folder / "session.token").read_text().strip()
    assert token.startswith("pk1.")
    assert stat.S_IMODE((agent.folder / "session.token").stat().st_mode) == 0o600
    again = agent.pk("secrets", "cat", "v:k")  # no password: the new session serves
    assert (again.returncode, again.stdout, again.stderr) == (0, b"after unlock", b"")


def test_unlock_opens_a_session_for_this_shell(agent: AgentHandle) -> None:
    assert agent.pk("agent", "lock").returncode == 0
    unlocked = agent.with_password("agent", "unlock")
    assert (unlocked.returncode, unlocked.stdout) == (0, b"Session unlocked.\n")
    assert agent.pk("vaults", "list").returncode == 0


def test_lockall_revokes_every_token(agent: AgentHandle) -> None:
    file_token = (agent.folder / "session.token").read_text().strip()
    others = []
    for _ in range(2):  # with PK_TOKEN set, unlock keeps the new token out of the file
        printed = agent.with_password("agent", "unlock", "--print-token", PK_TOKEN="pk1.unused")
        assert printed.returncode == 0, printed.stderr
        others.append(printed.stdout.decode().strip())
    assert (agent.folder / "session.token").read_text().strip() == file_token
    tokens = [file_token, *others]
    assert len(set(tokens)) == 3
    for token in tokens:
        assert agent.pk("vaults", "list", PK_TOKEN=token).returncode == 0
    assert agent.pk("vaults", "list").returncode == 0  # the token file
    revoked = agent.pk("agent", "lockall")
    assert (revoked.returncode, revoked.stdout) == (0, b"Revoked 3 session(s).\n")
    for token in tokens:
        for args in (("vaults", "list"), ("secrets", "cat", "v:x")):
            refused = agent.pk(*args, PK_TOKEN=token)
            assert refused.returncode == 42, (token, args, refused.stderr)
            assert "unknown or was revoked" in error_line(refused)
    assert agent.pk("vaults", "list").returncode == 42  # nor the token file
    assert agent.with_password("vaults", "list").returncode == 0


@pytest.mark.parametrize("how", ["lockall", "forged"])
def test_with_a_revoked_or_forged_token_a_password_opens_a_new_session(
    agent: AgentHandle, how: str
) -> None:
    """The token the command has (the file's, or PK_TOKEN's) is refused; given the password
    too, the command opens a new session instead of failing."""
    extra: dict[str, str] = {}
    if how == "forged":
        extra["PK_TOKEN"] = "pk1." + "A" * 43
    else:
        assert agent.pk("agent", "lockall").returncode == 0
    refused = run_pk("secrets", "ls", "v", env={**agent.env, **extra}, input=b"")
    assert refused.returncode == 42
    assert error_line(refused).startswith("pk: error: The agent session is not valid")
    unlocked = run_pk("secrets", "ls", "v", env={**agent.env, **extra, "PK_PASSWORD": PASSWORD})
    assert unlocked.returncode == 0, unlocked.stderr
    assert b"unlocking a new session" in unlocked.stderr


def test_a_forged_token_is_refused(shared: tuple[AgentHandle, str]) -> None:
    agent, _ = shared
    assert agent.pk("secrets", "write", "v:forged/k", stdin=b"kept").returncode == 0
    real = (agent.folder / "session.token").read_text().strip()
    random_token = "pk1." + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    cases = {
        random_token: "unknown or was revoked",
        "pk2." + real.removeprefix("pk1."): "not a Polykey session token",
        real + "A" * 100: "not a Polykey session token",
        "garbage": "not a Polykey session token",
    }
    for token, reason in cases.items():
        for args in (("vaults", "list"), ("secrets", "cat", "v:forged/k")):
            result = agent.pk(*args, PK_TOKEN=token, stdin=b"")
            assert result.returncode == 42, (token, args, result.stderr)
            assert result.stdout == b""
            assert reason in error_line(result), result.stderr
    assert agent.pk("secrets", "cat", "v:forged/k").stdout == b"kept"  # the real session works


@dataclass
class Expired:
    agent: AgentHandle
    printed_token: str  # a second session, given as PK_TOKEN; the first is in the token file


@pytest.fixture(scope="module")
def expired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Expired]:
    """An agent with --session-idle 10 and two sessions left unused for 11 s (one wait)."""
    node = tmp_path_factory.mktemp("expiry") / "node.pk"
    make_node(node)
    base = Path(tempfile.mkdtemp(prefix="pkr-", dir="/tmp"))
    agent = start_agent(node, base, "--session-idle", "10")
    try:
        assert agent.pk("secrets", "write", "v:k", stdin=b"value").returncode == 0
        printed = agent.with_password("agent", "unlock", "--print-token", PK_TOKEN="pk1.unused")
        token = printed.stdout.decode().strip()
        assert agent.pk("vaults", "list", PK_TOKEN=token).returncode == 0
        time.sleep(11)
        yield Expired(agent, token)
    finally:
        agent.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_an_expired_session_is_refused_then_a_password_unlocks_a_new_one(
    expired: Expired,
) -> None:
    agent = expired.agent
    old_token = (agent.folder / "session.token").read_text()
    refused = agent.pk("vaults", "list", stdin=b"")
    assert refused.returncode == 42
    assert refused.stdout == b""
    assert "the session expired" in error_line(refused)
    renewed = agent.with_password("vaults", "list")
    assert (renewed.returncode, renewed.stdout.startswith(b"v\t")) == (0, True)
    assert b"unlocking a new session" in renewed.stderr
    assert (agent.folder / "session.token").read_text() != old_token
    again = agent.pk("secrets", "cat", "v:k")  # the new session, without a password
    assert (again.returncode, again.stdout) == (0, b"value")


def test_an_expired_session_is_reported_as_expired_by_secrets_cat(expired: Expired) -> None:
    refused = expired.agent.pk("secrets", "cat", "v:k", PK_TOKEN=expired.printed_token, stdin=b"")
    assert refused.returncode == 42
    assert "the session expired" in error_line(refused)


# --- crashes --------------------------------------------------------------------------------------


def wait_dead(pid: int) -> None:
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(pid)


def test_after_kill_9_commands_work_status_cleans_up_and_a_new_agent_starts(
    agent: AgentHandle,
) -> None:
    for i in range(3):
        assert agent.pk("secrets", "write", f"v:k{i}", stdin=f"value {i}".encode()).returncode == 0
    pid, folder = agent.pid(), agent.folder
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    assert (folder / "agent.sock").exists()  # left behind by the dead agent
    fallback = agent.with_password("secrets", "cat", "v:k0", "v:k2")
    assert (fallback.returncode, fallback.stdout) == (0, b"value 0\nvalue 2")
    written = agent.with_password("secrets", "write", "v:k3", stdin=b"value 3")
    assert written.returncode == 0, written.stderr
    status = agent.pk("agent", "status")
    assert status.returncode == 43
    assert "No agent is running" in error_line(status)
    assert not (folder / "agent.sock").exists()
    assert not (folder / "status.json").exists()
    restarted = agent.with_password("agent", "start", "--background")
    assert restarted.returncode == 0, restarted.stderr
    assert agent.pid() != pid
    cat = agent.pk("secrets", "cat", "v:k0", "v:k1", "v:k2", "v:k3")
    assert (cat.returncode, cat.stdout) == (0, b"value 0\nvalue 1\nvalue 2\nvalue 3")
    log = agent.pk("vaults", "log", "v").stdout.decode()
    for i in range(4):
        assert log.count(f"Add secret k{i}.") == 1


def test_the_first_command_after_kill_9_removes_the_stale_socket_and_status(
    agent: AgentHandle,
) -> None:
    pid, folder = agent.pid(), agent.folder
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    assert (folder / "agent.sock").exists() and (folder / "status.json").exists()
    listed = agent.with_password("vaults", "list")  # not `agent status`: any command
    assert (listed.returncode, listed.stdout.startswith(b"v\t")) == (0, True), listed.stderr
    assert not (folder / "agent.sock").exists()
    assert not (folder / "status.json").exists()


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        pytest.param(("vaults", "create", "late"), b"", id="full-cli"),
        pytest.param(("secrets", "write", "late:x"), b"a value", id="fast-path-write"),
    ],
)
def test_a_request_the_agent_got_is_never_run_again_on_the_node_file(
    agent: AgentHandle, args: tuple[str, ...], stdin: bytes
) -> None:
    """The agent dies after the request reached it: whether it acted is unknown, so the CLI
    says so (exit 46) instead of running the command a second time on the file (a rename
    that had landed would then fail, a write would commit twice)."""
    if args[0] == "secrets":
        assert agent.pk("vaults", "create", "late").returncode == 0
    pid = agent.pid()
    os.kill(pid, signal.SIGSTOP)  # the socket still accepts and buffers; nothing is answered
    try:
        cli = subprocess.Popen(
            [sys.executable, "-m", "polykey", *args],
            env={**agent.env, "PK_PASSWORD": PASSWORD},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert cli.stdin is not None
        cli.stdin.write(stdin)
        cli.stdin.close()
        cli.stdin = None  # written whole: communicate() below only reads
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _waits_on_a_socket(cli.pid):
            time.sleep(0.05)
        time.sleep(0.3)  # past connect: the request is written before the reply is awaited
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    _out, err = cli.communicate(timeout=60)
    assert cli.returncode == 46, err.decode()
    method = "vaults.create" if args[0] == "vaults" else "secrets.write"
    assert err.decode().startswith(f"pk: error: The agent stopped before it answered: {method}")
    assert "Traceback" not in err.decode()
    env = {**agent.env, "PK_PASSWORD": PASSWORD}
    if args[0] == "vaults":  # the stopped agent never made it, nor did the CLI
        assert b"late" not in run_pk("vaults", "list", env=env).stdout
    else:
        assert run_pk("secrets", "cat", "late:x", env=env).returncode == 33


def _waits_on_a_socket(pid: int) -> bool:
    """The process holds a socket open (it has connected to the agent)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                return True
    return False
