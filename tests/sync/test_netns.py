"""Two nodes on two separate hosts: network namespaces joined by a veth pair (root only).

The namespaces, their addresses (10.231.0.1/2, a private pair only these namespaces use) and the
link are made by the test and removed after it; no traffic leaves them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import pk_env, run_pk

PORT = "14190"


def _ip(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], capture_output=True, check=False)


@pytest.fixture
def hosts() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    a, b = f"pka{tag}", f"pkb{tag}"
    if _ip("netns", "add", a).returncode != 0:
        pytest.skip("this machine does not allow network namespaces")
    try:
        steps = [
            ("netns", "add", b),
            ("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}"),
            ("link", "set", f"va{tag}", "netns", a),
            ("link", "set", f"vb{tag}", "netns", b),
            ("-n", a, "addr", "add", "10.231.0.1/30", "dev", f"va{tag}"),
            ("-n", b, "addr", "add", "10.231.0.2/30", "dev", f"vb{tag}"),
            ("-n", a, "link", "set", f"va{tag}", "up"),
            ("-n", b, "link", "set", f"vb{tag}", "up"),
            ("-n", a, "link", "set", "lo", "up"),
            ("-n", b, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"could not set up the namespaces: {done.stderr.decode().strip()}")
        yield a, b
    finally:
        _ip("netns", "del", a)
        _ip("netns", "del", b)


def in_ns(ns: str, env: dict[str, str], *args: str, stdin: bytes | None = None) -> bytes:
    import sys

    result = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "polykey", *args],
        env=env,
        input=stdin,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, (args, result.stderr.decode())
    return result.stdout


def test_clone_and_pull_between_two_hosts(hosts: tuple[str, str], tmp_path: Path) -> None:
    host_a, host_b = hosts
    alice = pk_env(tmp_path / "a.pk", PK_PASSWORD="a", PK_RUNTIME_DIR=str(tmp_path / "ra"))
    bob = pk_env(tmp_path / "b.pk", PK_PASSWORD="b", PK_RUNTIME_DIR=str(tmp_path / "rb"))
    for env in (alice, bob):
        assert run_pk("bootstrap", env=env).returncode == 0
    alice_id = run_pk("keys", "public", env=alice).stdout.split()[0].decode()
    bob_id = run_pk("keys", "public", env=bob).stdout.split()[0].decode()
    in_ns(host_a, alice, "vaults", "create", "work")
    in_ns(host_a, alice, "secrets", "write", "work:k", stdin=b"across hosts")
    in_ns(host_a, alice, "vaults", "share", "work", bob_id)
    in_ns(host_a, alice, "agent", "start", "-b", "--host", "10.231.0.1", "--port", PORT)
    try:
        in_ns(host_b, bob, "nodes", "add", alice_id, f"10.231.0.1:{PORT}")
        in_ns(host_b, bob, "vaults", "clone", alice_id, "work")
        assert in_ns(host_b, bob, "secrets", "cat", "work:k") == b"across hosts"
        in_ns(host_a, alice, "secrets", "write", "work:k", stdin=b"updated")
        in_ns(host_b, bob, "vaults", "pull", "work")
        assert in_ns(host_b, bob, "secrets", "cat", "work:k") == b"updated"
        assert b"whole" in in_ns(host_b, bob, "node", "check")
    finally:
        run_pk("agent", "stop", env=alice)  # the Unix socket is shared across namespaces
