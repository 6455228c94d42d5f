"""docs/unattended.md works as written: its systemd unit's commands, run in order on a fresh
"host" (a network namespace joined to the parent's by a veth pair, a new HOME, a credential
folder, nothing else in the environment), join the parent, pull, and run the program with the
secret. The parent makes the child's token with the doc's own `pk child create` (a folder of
the vault: the child holds nothing else of it). Root only (network namespaces)."""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import pk_env, run_pk

DOC = Path(__file__).parents[2] / "docs" / "unattended.md"


def _ip(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], capture_output=True, check=False)


@pytest.fixture
def host() -> Iterator[tuple[str, str, str]]:
    """A namespace for the child, joined by a veth pair to this one: (ns, parent ip, child ip)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    ns, net = f"pkc{tag}", f"10.233.{random.randrange(1, 250)}"
    if _ip("netns", "add", ns).returncode != 0:
        pytest.skip("this machine does not allow network namespaces")
    try:
        steps = [
            ("link", "add", f"vp{tag}", "type", "veth", "peer", "name", f"vc{tag}"),
            ("link", "set", f"vc{tag}", "netns", ns),
            ("addr", "add", f"{net}.1/30", "dev", f"vp{tag}"),
            ("-n", ns, "addr", "add", f"{net}.2/30", "dev", f"vc{tag}"),
            ("link", "set", f"vp{tag}", "up"),
            ("-n", ns, "link", "set", f"vc{tag}", "up"),
            ("-n", ns, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"could not set up the namespace: {done.stderr.decode().strip()}")
        yield ns, f"{net}.1", f"{net}.2"
    finally:
        _ip("netns", "del", ns)  # takes the veth pair with it


def unit_commands() -> tuple[dict[str, str], list[str]]:
    """The systemd unit of docs/unattended.md: its Environment= and its Exec lines, in order."""
    block = re.search(r"```ini\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None, "docs/unattended.md has no systemd unit"
    env: dict[str, str] = {}
    commands: list[str] = []
    for line in block.group(1).splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
        elif key in ("ExecStartPre", "ExecStart"):
            commands.append(value)
    return env, commands


def create_command() -> list[str]:
    """The arguments of the doc's `pk child create ... > child.token` (after `pk`)."""
    found = re.search(r"^pk (child create .*?) > child\.token$", DOC.read_text(), re.M)
    assert found is not None, "docs/unattended.md makes no child token"
    return shlex.split(found.group(1))


def test_the_documented_systemd_unit_joins_pulls_and_runs_the_program(
    host: tuple[str, str, str], tmp_path: Path
) -> None:
    ns, parent_ip, _child_ip = host
    port = str(random.randrange(20000, 60000))
    parent = pk_env(tmp_path / "p.pk", PK_PASSWORD="p", PK_RUNTIME_DIR=str(tmp_path / "run"))
    for args in (("bootstrap",), ("vaults", "create", "prod")):
        assert run_pk(*args, env=parent).returncode == 0
    written = run_pk("secrets", "write", "prod:db/DB_PASSWORD", env=parent, input=b"hunter2\n")
    assert written.returncode == 0
    elsewhere = run_pk("secrets", "write", "prod:web/TOKEN", env=parent, input=b"not-for-db\n")
    assert elsewhere.returncode == 0
    started = run_pk("agent", "start", "--background", "--host", parent_ip, "--port", port,
                     env=parent)  # fmt: skip
    assert started.returncode == 0, started.stderr.decode()
    try:
        made = run_pk(*create_command(), env=parent)
        assert made.returncode == 0, made.stderr.decode()
        creds = tmp_path / "creds"
        creds.mkdir(mode=0o700)
        (creds / "polykey-password").write_text("child password\n")
        (creds / "polykey-token").write_bytes(made.stdout)
        state, home = tmp_path / "state", tmp_path / "home"
        (state / "polykey-child").mkdir(parents=True)
        home.mkdir()
        out = tmp_path / "deployed"
        deploy = tmp_path / "deploy.sh"
        deploy.write_text(f'#!/bin/sh\nprintf %s "$DB_PASSWORD" > {out}\n')
        deploy.chmod(0o755)
        unit_env, commands = unit_commands()
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(home),
            "CREDENTIALS_DIRECTORY": str(creds),
            "PK_UNSAFE_FAST_KDF": "1",  # the test's KDF; the unit is otherwise as written
            **{k: v.replace("%S", str(state)) for k, v in unit_env.items()},
        }
        for command in commands:
            command = command.replace("/opt/app/deploy.sh", str(deploy))
            done = subprocess.run(
                ["ip", "netns", "exec", ns, "/bin/sh", "-c", command],
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, (command, done.stderr.decode())
        assert out.read_text() == "hunter2"
        assert (state / "polykey-child" / "node.pk").exists()
        child = {**env, "PK_PASSWORD_FILE": str(creds / "polykey-password")}
        listed = run_pk("secrets", "ls", "prod", "-R", env=child)
        assert listed.stdout.decode().split() == ["db/", "db/DB_PASSWORD"], listed.stderr
    finally:
        run_pk("agent", "stop", env=parent)
