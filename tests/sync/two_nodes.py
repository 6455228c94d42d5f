"""Two real nodes driven through `pk`, for the sync tests: alice and bob, each with a node file of
its own and one runtime folder between them; alice serves peers on a free loopback port once her
agent starts. tests/sync/test_share.py and test_scoped_share.py build their scenes on it."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from polykey.node import Node
from tests.support import pk_env, run_pk


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Pair:
    alice: dict[str, str]
    bob: dict[str, str]
    alice_id: str
    bob_id: str
    port: int
    tmp: Path

    def a(self, *args: str, stdin: bytes | None = None) -> str:
        r = run_pk(*args, env=self.alice, input=stdin)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()

    def b(self, *args: str, stdin: bytes | None = None) -> str:
        r = run_pk(*args, env=self.bob, input=stdin)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()

    def start_alice(self) -> None:
        self.a("agent", "start", "--background", "--port", str(self.port))

    def alice_node(self) -> Node:
        return Node.open(self.tmp / "alice.pk", b"alice pw", allow_weak=True)

    def bob_node(self) -> Node:
        return Node.open(self.tmp / "bob.pk", b"bob pw", allow_weak=True)


def bootstrap_pair(tmp: Path) -> Pair:
    """Alice and bob bootstrapped in ``tmp`` (alice.pk, bob.pk, the runtime folder run/), with
    their NodeIds and a free port for alice's agent; no agent runs yet."""
    run = str(tmp / "run")
    alice = pk_env(tmp / "alice.pk", PK_PASSWORD="alice pw", PK_RUNTIME_DIR=run)
    bob = pk_env(tmp / "bob.pk", PK_PASSWORD="bob pw", PK_RUNTIME_DIR=run)
    for env in (alice, bob):
        assert run_pk("bootstrap", env=env).returncode == 0
    ids = [run_pk("keys", "public", env=e).stdout.decode().split()[0] for e in (alice, bob)]
    return Pair(alice, bob, ids[0], ids[1], free_port(), tmp)
