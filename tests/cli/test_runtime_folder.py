"""Where the agent's runtime folder is, and what happens when someone else got there first.

Without ``$XDG_RUNTIME_DIR`` (ssh without logind, cron, containers, su) the folder used to be
``/tmp/polykey-<uid>``: another local user could plant a socket there before the agent ran and
make every command fail with exit 41. Now the fallback lives under the user's home, and a runtime
folder that is not private only costs the agent: commands that do not need it warn once and work
on the node file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from polykey.agent.runtime import pid_alive
from polykey.cli import client, fast
from tests.cli.helpers import CliNode
from tests.support import PASSWORD, run_pk

NOBODY = 65534
SECRET = b"runtime-folder-test-secret"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root")


def digest(node: Path) -> str:
    return hashlib.sha256(os.path.realpath(node).encode()).hexdigest()[:16]


def host_part() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.uname().nodename)[:64]
    return f"run-{name}" if name else "run"


def shared_tmp(path: Path) -> Path:
    """A folder like /tmp: anyone may create entries in it (mode 1777)."""
    path.mkdir()
    path.chmod(0o1777)
    return path


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def without_agent_vars(env: dict[str, str]) -> dict[str, str]:
    for name in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "TMPDIR", "TEMP", "TMP", "PK_RUNTIME_DIR"):
        env.pop(name, None)
    return env


@pytest.fixture
def node(cli_node: CliNode) -> CliNode:
    """A node with vault ``v`` holding ``v:k``, written without any agent."""
    env = cli_node.env(PK_NO_AGENT="1")
    assert run_pk("vaults", "create", "v", env=env).returncode == 0
    assert run_pk("secrets", "write", "v:k", env=env, input=SECRET).returncode == 0
    return cli_node


def plant(folder: Path, *, owner: int, folder_mode: int = 0o755) -> None:
    """What another user leaves at a path they predicted: folders and a socket nobody serves."""
    folder.mkdir(parents=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # tmp_path may be too long to bind
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"/proc/self/fd/{fd}/agent.sock")
    finally:
        sock.close()
        os.close(fd)
    for path in (folder.parent, folder, folder / "agent.sock"):
        os.chown(path, owner, owner)
    folder.parent.chmod(folder_mode)
    folder.chmod(folder_mode)


def stop_agent(env: dict[str, str], folder: Path) -> None:
    status = folder / "status.json"
    pid = json.loads(status.read_text()).get("pid") if status.exists() else None
    run_pk("agent", "stop", env=env, input=b"")
    if isinstance(pid, int) and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


# --- the rule -------------------------------------------------------------------------------------


Setup = Callable[[Path, dict[str, str]], str | None]


def _explicit(tmp: Path, env: dict[str, str]) -> str:
    env["PK_RUNTIME_DIR"] = str(tmp / "explicit")
    return str(tmp / "explicit")


def _xdg_private(tmp: Path, env: dict[str, str]) -> str:
    env["XDG_RUNTIME_DIR"] = str(private_dir(tmp / "xdg"))
    return str(tmp / "xdg" / "polykey")


def _xdg_shared(tmp: Path, env: dict[str, str]) -> str:
    env["XDG_RUNTIME_DIR"] = str(shared_tmp(tmp / "xdg"))  # XDG_RUNTIME_DIR=/tmp happens
    return str(tmp / "home" / ".local" / "state" / "polykey" / host_part())


def _xdg_missing(tmp: Path, env: dict[str, str]) -> str:
    env["XDG_RUNTIME_DIR"] = str(tmp / "no-such-folder")
    return str(tmp / "home" / ".local" / "state" / "polykey" / host_part())


def _xdg_of_another_user(tmp: Path, env: dict[str, str]) -> str:
    need_root()
    xdg = private_dir(tmp / "xdg")
    os.chown(xdg, NOBODY, NOBODY)  # `su` keeps the first user's XDG_RUNTIME_DIR
    env["XDG_RUNTIME_DIR"] = str(xdg)
    return str(tmp / "home" / ".local" / "state" / "polykey" / host_part())


def _tmpdir_private(tmp: Path, env: dict[str, str]) -> str:
    env["TMPDIR"] = str(private_dir(tmp / "mytmp"))  # macOS: a per-user temporary folder
    return str(tmp / "mytmp" / f"polykey-{os.getuid()}")


def _tmpdir_shared(tmp: Path, env: dict[str, str]) -> str:
    env["TMPDIR"] = str(shared_tmp(tmp / "tmp"))
    return str(tmp / "home" / ".local" / "state" / "polykey" / host_part())


def _state_home(tmp: Path, env: dict[str, str]) -> str:
    env["XDG_STATE_HOME"] = str(tmp / "state")
    return str(tmp / "state" / "polykey" / host_part())


def _state_home_relative(tmp: Path, env: dict[str, str]) -> str:
    env["XDG_STATE_HOME"] = "relative/state"  # not absolute: ignored, as the spec says
    return str(tmp / "home" / ".local" / "state" / "polykey" / host_part())


def _no_home_variable(tmp: Path, env: dict[str, str]) -> str:
    del env["HOME"]
    home = pwd.getpwuid(os.getuid()).pw_dir
    return os.path.join(home, ".local", "state", "polykey", host_part())


SETUPS: dict[str, Setup] = {
    "pk-runtime-dir": _explicit,
    "xdg-private": _xdg_private,
    "xdg-shared": _xdg_shared,
    "xdg-missing": _xdg_missing,
    "xdg-of-another-user": _xdg_of_another_user,
    "tmpdir-private": _tmpdir_private,
    "tmpdir-shared": _tmpdir_shared,
    "xdg-state-home": _state_home,
    "xdg-state-home-relative": _state_home_relative,
    "no-home-variable": _no_home_variable,
}


@pytest.mark.parametrize("name", SETUPS)
def test_the_hot_path_and_the_cli_compute_the_same_folder(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = without_agent_vars(dict(os.environ))
    env["HOME"] = str(tmp_path / "home")
    expected_base = SETUPS[name](tmp_path, env)
    monkeypatch.setattr(os, "environ", os.environ.copy())
    os.environ.clear()
    os.environ.update(env)
    node = tmp_path / "node.pk"
    expected = os.path.join(expected_base, digest(node)) if expected_base else None
    assert client.runtime_folder(node) == expected
    assert fast._folder(str(node)) == expected


def test_without_any_home_there_is_no_runtime_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No home (a uid without a passwd entry, HOME unset): no agent, never a shared folder."""
    for name in ("PK_RUNTIME_DIR", "XDG_RUNTIME_DIR", "XDG_STATE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMPDIR", str(shared_tmp(tmp_path / "tmp")))
    monkeypatch.setattr(os.path, "expanduser", lambda path: path)  # what it does then
    assert fast.runtime_base() is None
    assert client.runtime_folder(tmp_path / "node.pk") is None
    assert fast._folder(str(tmp_path / "node.pk")) is None
    assert client.AgentClient.find(tmp_path / "node.pk") is None


def test_the_hot_path_stays_on_builtins(tmp_path: Path) -> None:
    """Computing the folder (every rule) loads nothing beyond interpreter built-ins."""
    code = f"""
import os, sys
os.environ.pop("PK_RUNTIME_DIR", None)
os.environ["TMPDIR"] = {str(tmp_path)!r}
os.environ["XDG_RUNTIME_DIR"] = {str(tmp_path)!r}
before = set(sys.modules)
from polykey.cli import fast
fast._folder("/some/node.pk")
os.environ.pop("XDG_RUNTIME_DIR"); os.environ.pop("HOME", None)
fast._folder("/some/node.pk")
print(" ".join(sorted(set(sys.modules) - before)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    loaded = set(result.stdout.decode().split())
    heavy = {"json", "click", "pathlib", "hashlib", "tempfile", "platformdirs", "subprocess"}
    assert not loaded & heavy, loaded & heavy
    assert not any(m.startswith(("polykey.agent", "cryptography", "_ssl")) for m in loaded)


# --- another user got there first -----------------------------------------------------------------


def test_a_socket_planted_in_the_shared_temporary_folder_blocks_nothing(
    node: CliNode, tmp_path: Path
) -> None:
    """The old fallback ($TMPDIR/polykey-<uid>) planted by another user: commands and the agent
    do not even look there."""
    need_root()
    tmp = shared_tmp(tmp_path / "tmp")
    home = tmp_path / "home"
    home.mkdir()
    plant(tmp / f"polykey-{os.getuid()}" / digest(node.path), owner=NOBODY)
    env = without_agent_vars(node.env(HOME=str(home)))
    env["TMPDIR"] = str(tmp)

    listed = run_pk("vaults", "list", env=env, input=b"")
    assert (listed.returncode, listed.stderr) == (0, b""), listed.stderr
    assert listed.stdout.startswith(b"v\t")
    cat = run_pk("secrets", "cat", "v:k", env=env, input=b"")
    assert (cat.returncode, cat.stdout, cat.stderr) == (0, SECRET, b"")

    started = run_pk("agent", "start", "--background", env=env, input=b"")
    assert started.returncode == 0, started.stderr
    folder = home / ".local" / "state" / "polykey" / host_part() / digest(node.path)
    try:
        no_password = {k: v for k, v in env.items() if k != "PK_PASSWORD"}
        served = run_pk("secrets", "cat", "v:k", env=no_password, input=b"")  # the hot path
        assert (served.returncode, served.stdout, served.stderr) == (0, SECRET, b"")
        listed = run_pk("vaults", "list", env=no_password, input=b"")  # the full CLI
        assert (listed.returncode, listed.stderr) == (0, b""), listed.stderr
        status = run_pk("agent", "status", "--format", "json", env=no_password, input=b"")
        assert json.loads(status.stdout)["socket"] == str(folder / "agent.sock")
        for path in (folder.parent, folder):
            info = path.lstat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.getuid(), 0o700), path
    finally:
        stop_agent(env, folder)
    assert (tmp / f"polykey-{os.getuid()}" / digest(node.path) / "agent.sock").exists()


def _socket_of_another_user(folder: Path) -> None:
    need_root()
    plant(folder, owner=NOBODY, folder_mode=0o700)
    os.chown(folder.parent, os.getuid(), os.getgid())
    os.chown(folder, os.getuid(), os.getgid())


def _folders_of_another_user(folder: Path) -> None:
    need_root()
    plant(folder, owner=NOBODY)


def _folder_open_to_others(folder: Path) -> None:
    plant(folder, owner=os.getuid(), folder_mode=0o700)
    folder.chmod(0o755)


def _socket_open_to_others(folder: Path) -> None:
    plant(folder, owner=os.getuid(), folder_mode=0o700)
    (folder / "agent.sock").chmod(0o666)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(_socket_of_another_user, id="socket-of-another-user"),
        pytest.param(_folders_of_another_user, id="folders-of-another-user"),
        pytest.param(_folder_open_to_others, id="folder-0755"),
        pytest.param(_socket_open_to_others, id="socket-0666"),
    ],
)
@pytest.mark.parametrize("where", ["home", "pk-runtime-dir"])
def test_an_unusable_runtime_folder_costs_the_agent_not_the_command(
    node: CliNode, tmp_path: Path, spoil: Callable[[Path], None], where: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = without_agent_vars(node.env(HOME=str(home)))
    env["TMPDIR"] = str(shared_tmp(tmp_path / "tmp"))
    if where == "home":
        base = home / ".local" / "state" / "polykey" / host_part()
        base.parent.mkdir(parents=True)
    else:
        base = tmp_path / "run"
        env["PK_RUNTIME_DIR"] = str(base)
    spoil(base / digest(node.path))

    for args in (("vaults", "list"), ("secrets", "cat", "v:k"), ("secrets", "ls", "v")):
        result = run_pk(*args, env=env, input=b"")
        err = result.stderr.decode()
        assert result.returncode == 0, (args, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("pk: warning: "), (args, err)
        assert "working on the node file" in lines[0], err
        assert "Traceback" not in err and PASSWORD not in err
    assert run_pk("secrets", "cat", "v:k", env=env, input=b"").stdout == SECRET

    for args in (("agent", "status"), ("agent", "start", "--background")):
        refused = run_pk(*args, env=env, input=b"")
        err = refused.stderr.decode()
        assert refused.returncode == 41, (args, err)
        assert err.startswith("pk: error: The agent's runtime folder or socket is not private")
    assert (base / digest(node.path) / "agent.sock").exists()  # what others left is not ours


# --- a home too deep for a socket path ------------------------------------------------------------


@pytest.fixture
def deep_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / ("h" * 60) / ("o" * 60)
    home.mkdir(parents=True)
    yield home


def test_a_home_too_deep_for_a_socket_path_still_reaches_the_agent(
    node: CliNode,
    tmp_path: Path,
    deep_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    env = without_agent_vars(node.env(HOME=str(deep_home)))
    env["TMPDIR"] = str(shared_tmp(tmp_path / "tmp"))
    folder = deep_home / ".local" / "state" / "polykey" / host_part() / digest(node.path)
    assert len(os.fsencode(folder / "agent.sock")) > 108  # longer than sockaddr_un allows
    started = run_pk("agent", "start", "--background", env=env, input=b"")
    assert started.returncode == 0, started.stderr
    try:
        no_password = {k: v for k, v in env.items() if k != "PK_PASSWORD"}
        written = run_pk("secrets", "write", "v:new", env=no_password, input=b"via agent")
        assert (written.returncode, written.stderr) == (0, b""), written.stderr
        served = run_pk("secrets", "cat", "v:new", "v:k", env=no_password, input=b"")
        assert (served.returncode, served.stdout) == (0, b"via agent\n" + SECRET), served.stderr
        listed = run_pk("secrets", "ls", "v", "--format", "json", env=no_password, input=b"")
        assert listed.returncode == 0, listed.stderr
        with monkeypatch.context() as m:  # the hot path itself answers (it does not step aside)
            for name in list(os.environ):
                m.delenv(name)
            for name, value in no_password.items():
                m.setenv(name, value)
            assert fast.try_fast(["secrets", "cat", "v:new"]) == 0
        assert capfdbinary.readouterr().out == b"via agent"
        status = run_pk("agent", "status", "--format", "json", env=no_password, input=b"")
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert doc["socket"] == str(folder / "agent.sock")
        assert json.loads((folder / "status.json").read_text())["socket"] == doc["socket"]
        assert stat.S_ISSOCK((folder / "agent.sock").lstat().st_mode)
        log = (folder / "agent.log").read_text()
        assert "secrets.write ok" in log and "secrets.ls ok" in log
    finally:
        stop_agent(env, folder)
    assert not (folder / "agent.sock").exists()
