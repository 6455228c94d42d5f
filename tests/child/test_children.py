"""A parent, a child and a grandchild, each its own node and agent process, on loopback.

The parent P owns `prod` (a database password) and `other`. It writes child C's node file
(`--to`); C pulls `prod` and runs a program with it, and sees nothing of `other`. C (allowed to
reshare) hands its grandchild G a join token; G joins over C's peer port, clones `prod` from C,
and can hold no more than C. Then revocation: P refuses C at once and notifies C (at the
address C told with its pull), whose agent takes P's chain at once and from then on refuses G,
with no `pk child pull`. Expiry: a child whose delegation has run out is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import crash_pk, pk_env, run_pk
from tests.sync.test_share import free_port
from tests.sync.test_three_agents import Peer


@dataclass
class World:
    p: Peer
    c: Peer
    g: Peer
    tmp: Path


def _peer(name: str, tmp: Path) -> Peer:
    run = str(tmp / "run")
    pw = tmp / f"{name}.pw"
    pw.write_text(f"{name} password\n")
    env = pk_env(tmp / f"{name}.pk", PK_PASSWORD_FILE=str(pw), PK_RUNTIME_DIR=run)
    return Peer(name, env, free_port())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("child")
    p, c, g = (_peer(n, tmp) for n in ("p", "c", "g"))
    try:
        p("bootstrap")
        p("vaults", "create", "prod")
        p("vaults", "create", "other")
        p("secrets", "write", "prod:db/DB_PASSWORD", stdin=b"hunter2\n")
        p("secrets", "write", "other:API_KEY", stdin=b"elsewhere\n")
        p.start()
        yield World(p, c, g, tmp)
    finally:
        for peer in (g, c, p):
            if peer.started:
                peer.stop()


def _json(peer: Peer, *args: str, stdin: bytes | None = None) -> dict[str, Any]:
    doc = json.loads(peer(*args, "--format", "json", stdin=stdin))
    assert isinstance(doc, dict)
    return doc


def test_a_child_written_to_a_file_pulls_its_vault_and_runs_a_program_with_it(
    world: World,
) -> None:
    p, c = world.p, world.c
    made = _json(
        p, "child", "create", "c1", "--vault", "prod", "--reshare",
        "--to", c.env["PK_NODE"], "--child-password-file", c.env["PK_PASSWORD_FILE"],
    )  # fmt: skip
    c.node_id = str(made["node_id"])
    assert c("keys", "public").split()[0] == c.node_id
    pulled = _json(c, "child", "pull")
    assert pulled["delegation"] == "live"
    assert [v["vault"] for v in pulled["vaults"]] == ["prod"]
    out = c("secrets", "env", "prod:db", "--", "sh", "-c", 'printf %s "$DB_PASSWORD"')
    assert out == "hunter2"
    shown = _json(p, "child", "show", "c1")
    assert shown["state"] == "live" and shown["node_id"] == c.node_id


def test_a_child_cannot_scan_clone_or_pull_anything_else(world: World) -> None:
    p, c = world.p, world.c
    p_id = p("keys", "public").split()[0]
    p.node_id = p_id
    scanned = _json(c, "vaults", "scan", p_id)
    assert [v["name"] for v in scanned["vaults"]] == ["prod"]
    refused = c.fails("vaults", "clone", p_id, "other")
    assert b"no such vault" in refused.stderr.lower()
    assert "other" not in c("vaults", "list")
    refused = c.fails("child", "create", "x", "--vault", "prod", "--perm", "push",
                      "--address", "127.0.0.1:1", "--to", str(world.tmp / "x.pk"),
                      stdin=b"x password\n")  # fmt: skip
    assert b"may not hand on" in refused.stderr


def test_a_grandchild_joins_with_a_token_and_holds_no_more_than_its_parent(
    world: World,
) -> None:
    c, g = world.c, world.g
    c.start()
    token = c("child", "create", "g1", "--vault", "prod", "--token").strip()
    assert token.startswith("pkchild1.")
    joined = _json(g, "child", "join", "-", stdin=token.encode())
    g.node_id = str(joined["node_id"])
    assert [v["vault"] for v in joined["vaults"]] == ["prod"]
    out = g("secrets", "env", "prod:db", "--", "sh", "-c", 'printf %s "$DB_PASSWORD"')
    assert out == "hunter2"
    again = g.fails("child", "join", "-", stdin=token.encode())  # the token was used
    assert b"Traceback" not in again.stderr
    # no resharing was allowed to G: it can make no child of its own
    refused = g.fails("child", "create", "gg", "--vault", "prod", "--token",
                      "--address", "127.0.0.1:1")  # fmt: skip
    assert b"may not hand on" in refused.stderr
    # the parent never delegated to G: asked directly, it shows G nothing
    g("nodes", "add", world.p.node_id, f"127.0.0.1:{world.p.port}")
    assert _json(g, "vaults", "scan", world.p.node_id)["vaults"] == []
    # C may not hand on what it was not given
    refused = c.fails("child", "create", "g2", "--vault", "other", "--token")
    assert b"Traceback" not in refused.stderr


def test_revocation_reaches_the_child_at_once_and_the_grandchild(world: World) -> None:
    p, c, g = world.p, world.c, world.g
    g("secrets", "env", "prod:db", "--", "true")
    p("secrets", "write", "prod:db/DB_PASSWORD", stdin=b"rotated\n")
    assert _json(g, "child", "pull")["delegation"] == "live"  # before: C serves G
    assert _json(c, "child", "pull")["delegation"] == "live"  # and tells P where it serves
    revoked = _json(p, "child", "revoke", "c1")
    assert revoked["revoked"] is True and revoked["told"] is True
    exposed = revoked["exposure"]["vaults"]  # kept before the access ended
    assert [v["name"] for v in exposed] == ["prod"] and exposed[0]["received"] is not None
    assert _json(p, "child", "show", "c1")["state"] == "revoked"
    refused = c.fails("vaults", "pull", "prod")  # P refuses C at once, as a missing vault
    assert b"no such vault" in refused.stderr.lower()
    # C's agent (no background sync) took P's chain when notified: it refuses G at once
    assert refused_soon(g, "prod", 30)
    assert "was revoked" in c("notifications", "read")
    assert _json(c, "child", "pull")["delegation"] == "revoked"


def refused_soon(peer: Peer, vault: str, within: float) -> bool:
    """Whether ``peer``'s pull of ``vault`` is refused, as a missing vault, within a while
    (another node's agent acts on its own time)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        r = run_pk("vaults", "pull", vault, env=peer.env)
        if r.returncode != 0:
            assert b"no such vault" in r.stderr.lower(), r.stderr.decode()
            return True
        time.sleep(0.3)
    return False


def test_an_expired_delegation_is_refused(world: World) -> None:
    p = world.p
    d = _peer("d", world.tmp)
    p("child", "create", "d1", "--vault", "prod", "--expires", "1s",
      "--to", d.env["PK_NODE"], "--child-password-file", d.env["PK_PASSWORD_FILE"])  # fmt: skip
    time.sleep(1.1)
    assert _json(p, "child", "show", "d1")["state"] == "expired"
    assert _json(d, "child", "pull")["delegation"] == "expired"
    refused = d.fails("vaults", "clone", p.node_id, "prod")
    assert b"no such vault" in refused.stderr.lower()
    p("child", "renew", "d1", "--expires", "1h")
    renewed = _json(d, "child", "pull")  # countersigns the renewal, then clones
    assert renewed["delegation"] == "live"
    assert [v["vault"] for v in renewed["vaults"]] == ["prod"]


def test_a_join_that_dies_after_any_write_can_still_be_finished(world: World) -> None:
    """A join killed at each of its writes in turn: the child then either joins again with
    the same token (nothing was spent) or finishes with `pk child pull`, and holds the vault.
    Never a live delegation whose child does not know its parent."""
    p = world.p
    value = p("secrets", "cat", "prod:db/DB_PASSWORD")
    crashes = 0
    for at in range(1, 6):
        name = f"k{at}"
        n = _peer(name, world.tmp)
        n("bootstrap")
        token = p("child", "create", name, "--vault", "prod", "--token").strip()
        join = ("child", "join", "-")
        status = crash_pk(at, "before", *join, env=n.env, input=token.encode()).returncode
        if status == 0:  # fewer writes than ``at``: the join completed
            break
        assert status == 137, status
        crashes += 1
        again = run_pk("child", "pull", "--format", "json", env={**n.env, "PK_NO_AGENT": "1"})
        if again.returncode != 0:  # not a child yet: the token was not spent
            assert b"Traceback" not in again.stderr
            n("child", "join", "-", stdin=token.encode())
            again = run_pk("child", "pull", "--format", "json", env=n.env)
        assert again.returncode == 0, (at, again.stderr.decode())
        assert json.loads(again.stdout)["delegation"] == "live", at
        assert n("secrets", "cat", "prod:db/DB_PASSWORD") == value, at
        assert _json(p, "child", "show", name)["state"] == "live", at
    assert crashes >= 2
