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


@pytest.fixture
def three_hosts() -> Iterator[tuple[str, str, str]]:
    """Three namespaces on one switch (a bridge in a fourth): 10.231.1.1, .2 and .3."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    hosts = [f"pk{n}{tag}" for n in "abc"]
    switch = f"pks{tag}"
    made: list[str] = []
    try:
        for ns in (switch, *hosts):
            if _ip("netns", "add", ns).returncode != 0:
                pytest.skip("this machine does not allow network namespaces")
            made.append(ns)
        steps: list[tuple[str, ...]] = [
            ("-n", switch, "link", "add", "br0", "type", "bridge"),
            ("-n", switch, "link", "set", "br0", "up"),
        ]
        for n, ns in enumerate(hosts, 1):
            here, there = f"h{n}{tag}", f"s{n}{tag}"
            steps += [
                ("link", "add", here, "type", "veth", "peer", "name", there),
                ("link", "set", here, "netns", ns),
                ("link", "set", there, "netns", switch),
                ("-n", switch, "link", "set", there, "master", "br0"),
                ("-n", switch, "link", "set", there, "up"),
                ("-n", ns, "addr", "add", f"10.231.1.{n}/24", "dev", here),
                ("-n", ns, "link", "set", here, "up"),
                ("-n", ns, "link", "set", "lo", "up"),
            ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"could not set up the namespaces: {done.stderr.decode().strip()}")
        yield hosts[0], hosts[1], hosts[2]
    finally:
        for ns in made:
            _ip("netns", "del", ns)


def test_three_hosts_share_clone_pull_push_unshare_and_queue_notifications(
    three_hosts: tuple[str, str, str], tmp_path: Path
) -> None:
    """The three-node scenario with each node on its own host: A owns, B reads, C also writes."""
    import time

    names = ("a", "b", "c")
    envs = {
        n: pk_env(tmp_path / f"{n}.pk", PK_PASSWORD=n, PK_RUNTIME_DIR=str(tmp_path / f"r{n}"))
        for n in names
    }
    host = dict(zip(names, three_hosts, strict=True))
    ip = {n: f"10.231.1.{i}" for i, n in enumerate(names, 1)}
    ids = {}
    for n in names:
        assert run_pk("bootstrap", env=envs[n]).returncode == 0
        ids[n] = run_pk("keys", "public", env=envs[n]).stdout.split()[0].decode()

    def pk(n: str, *args: str, stdin: bytes | None = None) -> bytes:
        return in_ns(host[n], envs[n], *args, stdin=stdin)

    def pk_fails(n: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        import sys

        return subprocess.run(
            ["ip", "netns", "exec", host[n], sys.executable, "-m", "polykey", *args],
            env=envs[n],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=120,
        )

    pk("a", "vaults", "create", "work")
    pk("a", "secrets", "write", "work:k", stdin=b"v1")
    try:
        for n in names:
            pk(n, "agent", "start", "-b", "--host", ip[n], "--port", PORT)
        for n in names:
            for other in names:
                if other != n:
                    pk(n, "nodes", "add", ids[other], f"{ip[other]}:{PORT}")
        pk("a", "vaults", "share", "work", ids["b"])
        pk("a", "vaults", "share", "work", ids["c"], "--perm", "clone,pull,push")
        for n in ("b", "c"):
            pk(n, "vaults", "clone", ids["a"], "work")
            assert pk(n, "secrets", "cat", "work:k") == b"v1"
        pk("a", "secrets", "write", "work:k", stdin=b"v2")
        for n in ("b", "c"):
            pk(n, "vaults", "pull", "work")
            assert pk(n, "secrets", "cat", "work:k") == b"v2"
        pk("c", "secrets", "write", "work:from-c", stdin=b"c wrote this")
        pk("c", "vaults", "push", "work", ids["a"])
        pk("b", "vaults", "pull", "work")
        assert pk("b", "secrets", "cat", "work:from-c") == b"c wrote this"
        assert (
            pk_fails("b", "secrets", "write", "work:from-b", stdin=b"x").returncode == 38
        )  # no grant
        assert pk_fails("b", "vaults", "push", "work", ids["a"]).returncode == 0  # nothing to push
        assert b"from-b" not in pk("a", "secrets", "ls", "work")
        pk("a", "vaults", "unshare", "work", ids["b"])
        pk("a", "secrets", "write", "work:k", stdin=b"v3")
        assert pk_fails("b", "vaults", "pull", "work").returncode == 51
        assert pk("b", "secrets", "cat", "work:k") == b"v2"
        pk("c", "vaults", "pull", "work")
        assert pk("c", "secrets", "cat", "work:k") == b"v3"
        # B's host goes quiet: A's message waits in A's outbox until B is back
        pk("b", "agent", "stop")
        assert b"Queued" in pk("a", "notifications", "send", ids["b"], "see you later")
        pk("b", "agent", "start", "-b", "--host", ip["b"], "--port", PORT)
        deadline = time.monotonic() + 60
        while b"see you later" not in pk("b", "notifications", "read"):
            assert time.monotonic() < deadline, "A's outbox never reached B"
            time.sleep(1)
        for n in names:
            assert b"whole" in pk(n, "node", "check")
    finally:
        for n in names:
            run_pk("agent", "stop", env=envs[n])
