"""Two nodes as real processes on loopback: a peer's clone and pull are recorded with the
commit each received; unsharing keeps an exposure report of exactly that; `pk health` flags
what is still current as needing rotation, and `pk secrets generate --rotate` clears it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import pk_env, run_pk


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Pair:
    alice: dict[str, str]
    bob: dict[str, str]
    bob_id: str
    heads: dict[str, str]  # what alice's vault was at each step
    unshared: dict[str, Any] | None = None  # what `vaults unshare` answered

    def a(self, *args: str, stdin: bytes | None = None, code: int = 0) -> str:
        r = run_pk(*args, env=self.alice, input=stdin)
        assert r.returncode == code, r.stderr.decode()
        return r.stdout.decode()

    def b(self, *args: str) -> str:
        r = run_pk(*args, env=self.bob)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()

    def aj(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.a(*args, "--format", "json", code=code))

    def head(self) -> str:
        return str(self.aj("vaults", "log", "work")["commits"][0]["id"])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("exposure")
    run = tmp / "run"
    run.mkdir(mode=0o700)
    alice = pk_env(tmp / "alice.pk", PK_PASSWORD="alice pw", PK_RUNTIME_DIR=str(run))
    bob = pk_env(tmp / "bob.pk", PK_PASSWORD="bob pw", PK_RUNTIME_DIR=str(run))
    for env in (alice, bob):
        assert run_pk("bootstrap", env=env).returncode == 0
    ids = [run_pk("keys", "public", env=e).stdout.decode().split()[0] for e in (alice, bob)]
    p = Pair(alice, bob, ids[1], {})
    port = _free_port()
    p.a("vaults", "create", "work")
    p.a("secrets", "write", "work:db/password", stdin=b"first")
    p.a("secrets", "write", "work:api/token", stdin=b"token one")
    p.a("vaults", "share", "work", p.bob_id)
    p.a("agent", "start", "--background", "--port", str(port))
    try:
        p.b("nodes", "add", ids[0], f"127.0.0.1:{port}")
        p.heads["cloned"] = p.head()
        p.b("vaults", "clone", ids[0], "work")
        p.a("secrets", "write", "work:api/token", stdin=b"token two")
        p.heads["pulled"] = p.head()
        p.b("vaults", "pull", "work")
        p.a("secrets", "write", "work:late/secret", stdin=b"never pulled")
        p.unshared = p.aj("vaults", "unshare", "work", p.bob_id)
        yield p
    finally:
        run_pk("agent", "stop", env=alice)


def test_each_clone_and_pull_is_recorded_with_the_commit_received(pair: Pair) -> None:
    records = pair.aj("audit", "log", "--by", pair.bob_id)["records"]
    fetches = [r for r in records if r["action"] == "peer:vaults.fetch"]
    assert [r["commit"] for r in fetches] == [pair.heads["cloned"], pair.heads["pulled"]]
    assert all(r["outcome"] == "ok" and r["vault"].startswith("v") for r in fetches)


def test_a_refused_pull_is_recorded_as_a_refusal(pair: Pair) -> None:
    r = run_pk("vaults", "pull", "work", env=pair.bob)
    assert r.returncode == 51
    last = pair.aj("audit", "log", "--by", pair.bob_id, "--limit", "1")["records"][-1]
    assert (last["action"], last["outcome"], last["error"]) == (
        "peer:vaults.fetch",
        "refused",
        "VaultNotFound",
    )


def test_unshare_keeps_a_report_of_exactly_what_was_pulled(pair: Pair) -> None:
    assert pair.unshared is not None and pair.unshared["revoked"] is True
    assert pair.unshared["exposed"] == [
        {"node_id": pair.bob_id, "needs_rotation": ["work:api/token", "work:db/password"]}
    ]
    report = pair.aj("exposure", pair.bob_id)
    assert report["live"] is False
    (kept,) = report["reports"]
    (vault,) = kept["vaults"]
    assert vault["received"]["commit"] == pair.heads["pulled"]
    assert vault["received"]["fetches"] == 2
    assert vault["secrets"] == [
        {"path": "api/token", "received": True, "still_current": True},
        {"path": "db/password", "received": True, "still_current": True},
    ]
    assert "blobs" not in vault  # value ids are never shown
    assert kept["needs_rotation"] == 2


def test_health_flags_needs_rotation_and_rotating_clears_it(pair: Pair) -> None:
    exposed = {
        f["path"] for f in pair.aj("health", "work", code=7)["findings"] if f["kind"] == "exposed"
    }
    assert exposed == {"api/token", "db/password"}
    pair.a("secrets", "generate", "work:db/password", "--rotate")
    after = {
        f["path"] for f in pair.aj("health", "work", code=7)["findings"] if f["kind"] == "exposed"
    }
    assert after == {"api/token"}
    shown = pair.a("exposure", pair.bob_id)
    assert "db/password  changed since" in shown
    assert "api/token  still current: needs rotation" in shown


def test_rotate_refuses_a_secret_that_does_not_exist(pair: Pair) -> None:
    r = run_pk("secrets", "generate", "work:no/such", "--rotate", env=pair.alice)
    assert r.returncode == 33 and b"--rotate replaces a secret that exists" in r.stderr


def test_the_log_verifies_after_all_of_it(pair: Pair) -> None:
    out = pair.aj("audit", "verify")
    assert out["problems"] == [] and out["count"] > 10
