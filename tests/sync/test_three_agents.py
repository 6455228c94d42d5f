"""Three nodes, each its own agent process serving peers on loopback: one owner, two sharers.

A owns vault `work` and shares it with B (clone, pull) and with C (clone, pull, push). The
scenario walks clone, pull, push by C, a refused push by B, unsharing B while C keeps pulling,
and notifications queued in A's outbox while B's agent is down, delivered once it is back.

A's and C's commands go through their agents; B's run on B's node file directly (PK_NO_AGENT),
next to B's running agent, which serves B's port and receives A's notifications. So both modes
meet in one scenario. A second test has two agents call each other at the same moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import pk_env, run_pk
from tests.sync.test_share import free_port


@dataclass
class Peer:
    name: str
    env: dict[str, str]
    port: int
    node_id: str = ""
    started: bool = False
    direct: dict[str, str] | None = None  # the environment of this node's commands, if not env

    @property
    def cli(self) -> dict[str, str]:
        return self.direct or self.env

    def __call__(self, *args: str, stdin: bytes | None = None) -> str:
        r = run_pk(*args, env=self.cli, input=stdin)
        assert r.returncode == 0, (self.name, args, r.stderr.decode())
        return r.stdout.decode()

    def fails(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        r = run_pk(*args, env=self.cli, input=stdin)
        assert r.returncode != 0, (self.name, args, r.stdout.decode())
        assert b"Traceback" not in r.stderr
        return r

    def start(self) -> None:
        r = run_pk("agent", "start", "--background", "--port", str(self.port), env=self.env)
        assert r.returncode == 0, (self.name, r.stderr.decode())
        self.started = True

    def stop(self) -> None:
        """Stop the agent, and make sure its process is gone (SIGKILL after 10 s)."""
        stop_agent(self.env)
        self.started = False


def agent_pid(env: dict[str, str]) -> int | None:
    for status in Path(env["PK_RUNTIME_DIR"]).glob("*/status.json"):
        doc = json.loads(status.read_text())
        if doc.get("node") == env["PK_NODE"]:
            return int(doc["pid"])
    return None


def stop_agent(env: dict[str, str], grace: float = 10) -> None:
    """`pk agent stop`, then SIGKILL if the process is still there after ``grace`` seconds."""
    pid = agent_pid(env)
    run_pk("agent", "stop", env=env)
    deadline = time.monotonic() + grace
    while pid is not None and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def together(*calls: tuple[Peer, tuple[str, ...]]) -> list[str]:
    """Run several `pk` commands at once (separate processes); each must succeed."""
    procs = [
        (
            peer,
            args,
            subprocess.Popen(
                [sys.executable, "-m", "polykey", *args],
                env=peer.cli,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
        )
        for peer, args in calls
    ]
    out = []
    for peer, args, proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, (peer.name, args, stderr.decode())
        out.append(stdout.decode())
    return out


def wait_for(what: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {seconds} s")


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[tuple[Peer, Peer, Peer]]:
    run = str(tmp_path / "run")
    peers = [
        Peer(
            n, pk_env(tmp_path / f"{n}.pk", PK_PASSWORD=f"{n} pw", PK_RUNTIME_DIR=run), free_port()
        )
        for n in ("a", "b", "c")
    ]
    together(*((p, ("bootstrap",)) for p in peers))
    for p, out in zip(peers, together(*((p, ("keys", "public")) for p in peers)), strict=True):
        p.node_id = out.split()[0]
    try:
        yield peers[0], peers[1], peers[2]
    finally:
        stops = [threading.Thread(target=p.stop) for p in peers if p.started]
        for t in stops:
            t.start()
        for t in stops:
            t.join()


def test_one_owner_two_sharers_pull_push_unshare_and_a_queued_notification(
    trio: tuple[Peer, Peer, Peer],
) -> None:
    a, b, c = trio
    a("vaults", "create", "work")
    a("secrets", "write", "work:db/password", stdin=b"v1")
    starts = [threading.Thread(target=p.start) for p in trio]
    for t in starts:
        t.start()
    for t in starts:
        t.join()
    assert all(p.started for p in trio)
    together(
        (a, ("nodes", "add", b.node_id, f"127.0.0.1:{b.port}")),
        (a, ("nodes", "add", c.node_id, f"127.0.0.1:{c.port}")),
        (b, ("nodes", "add", a.node_id, f"127.0.0.1:{a.port}")),
        (c, ("nodes", "add", a.node_id, f"127.0.0.1:{a.port}")),
    )
    shared_b = json.loads(a("vaults", "share", "work", b.node_id, "--format", "json"))
    shared_c = json.loads(
        a("vaults", "share", "work", c.node_id, "--perm", "clone,pull,push", "--format", "json")
    )
    assert shared_b["delivered"] and shared_c["delivered"]  # both agents were up
    assert sorted(shared_c["permissions"]) == ["clone", "pull", "push"]
    assert "Vault work" in b("notifications", "read")

    # B's agent goes down: what A tells B meanwhile waits in A's outbox (checked at the end).
    # B is back within A's first retry (5 s), so no backoff pushes the delivery later.
    a("vaults", "create", "second")
    b.stop()
    assert "Queued" in a("notifications", "send", b.node_id, "while you were away")
    assert json.loads(a("vaults", "share", "second", b.node_id, "--format", "json"))["queued"]
    b.start()

    together(
        (b, ("vaults", "clone", a.node_id, "work")), (c, ("vaults", "clone", a.node_id, "work"))
    )
    assert "Vault work" in c("notifications", "read")

    # A edits: both sharers pull it
    a("secrets", "write", "work:db/password", stdin=b"v2")
    pulled = together((b, ("vaults", "pull", "work")), (c, ("vaults", "pull", "work")))
    assert all("updated" in out for out in pulled)
    assert together(
        (b, ("secrets", "cat", "work:db/password")), (c, ("secrets", "cat", "work:db/password"))
    ) == ["v2", "v2"]

    # C edits and pushes to A; B gets C's change from A
    c("secrets", "write", "work:from-c", stdin=b"written on c")
    assert "Pushed" in c("vaults", "push", "work", a.node_id)
    assert a("secrets", "cat", "work:from-c") == "written on c"
    assert "updated" in b("vaults", "pull", "work")
    assert b("secrets", "cat", "work:from-c") == "written on c"
    a_log = a("vaults", "log", "work")
    assert together((b, ("vaults", "log", "work")), (c, ("vaults", "log", "work"))) == [a_log] * 2

    # B has no push grant: its clone takes no local change, and A is unchanged
    refused_write = b.fails("secrets", "write", "work:from-b", stdin=b"no grant")
    assert refused_write.returncode == 38, refused_write.stderr
    assert b"takes no changes from this node" in refused_write.stderr
    assert a("vaults", "log", "work") == a_log
    assert "from-b" not in a("secrets", "ls", "work")

    # A unshares B: B's pull is refused exactly like a vault that does not exist
    a("vaults", "unshare", "work", b.node_id)
    a("secrets", "write", "work:db/password", stdin=b"v3")
    b_before = (b("vaults", "log", "work"), b("secrets", "cat", "work:db/password"))
    refused = b.fails("vaults", "pull", "work")
    missing = b.fails("vaults", "clone", a.node_id, "no-such-vault")
    vault_id = next(
        line.split("\t")[1] for line in a("vaults", "list").splitlines() if line.startswith("work")
    )
    assert refused.returncode == missing.returncode == 51
    assert refused.stderr.replace(vault_id.encode(), b"<vault>") == missing.stderr.replace(
        b"no-such-vault", b"<vault>"
    )
    assert (b("vaults", "log", "work"), b("secrets", "cat", "work:db/password")) == b_before
    assert "work" not in b("vaults", "scan", a.node_id)

    # C keeps its grant
    assert "updated" in c("vaults", "pull", "work")
    assert c("secrets", "cat", "work:db/password") == "v3"

    # the two queued notifications reached B's agent from A's outbox
    inbox: list[str] = []

    def arrived() -> bool:
        inbox.append(b("notifications", "read"))
        text = "".join(inbox)
        return "while you were away" in text and "Vault second" in text

    wait_for("delivery of A's outbox to B", arrived, 60)  # A retries every 10 s, first after 5 s
    wait_for("A's outbox to empty", lambda: "waiting" not in a("notifications", "read"), 15)
    assert "second" in b("vaults", "scan", a.node_id)
    assert "whole" in b("node", "check") and "whole" in c("node", "check")


def test_two_agents_calling_each_other_at_once_both_answer(
    trio: tuple[Peer, Peer, Peer],
) -> None:
    """Each agent's request waits on the other while the other's request waits on it: the node
    thread serves the incoming request meanwhile, so neither wedges."""
    a, _, c = trio
    a("vaults", "create", "on-a")
    c("vaults", "create", "on-c")
    starts = [threading.Thread(target=p.start) for p in (a, c)]
    for t in starts:
        t.start()
    for t in starts:
        t.join()
    together(
        (a, ("nodes", "add", c.node_id, f"127.0.0.1:{c.port}")),
        (c, ("nodes", "add", a.node_id, f"127.0.0.1:{a.port}")),
    )
    a("vaults", "share", "on-a", c.node_id)
    c("vaults", "share", "on-c", a.node_id)
    for _ in range(3):
        outs = together(
            *[(a, ("vaults", "scan", c.node_id)), (c, ("vaults", "scan", a.node_id))] * 3,
            (a, ("nodes", "ping", c.node_id)),
            (c, ("nodes", "ping", a.node_id)),
        )
        assert all("on-c" in out for out in outs[0:6:2])
        assert all("on-a" in out for out in outs[1:6:2])
    assert "on-a" in a("vaults", "list") and "on-c" in c("vaults", "list")
