"""A renewal killed right after it committed (bench/soak/crashat.py: the process ends at the
first statement after the renewal's COMMIT, before it shows the code or tells anyone).

Nothing is lost: the node keeps the new recovery code (sealed) until a command hands it over,
`pk keys renewals` says so, `pk keys renew` will not renew again before it was shown, and
`pk keys pending-code` shows it once; that code recovers the node. The peers it knew are kept
as not told yet, so the node's next renewal tells them both renewals, the older one under the
newest key, and they follow (before, the first was refused for naming another key than the
teller, and the peer stayed cut off for good); and a running agent tells them by itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import crash_pk, pk_env
from tests.sync.test_share import free_port
from tests.sync.test_three_agents import Peer


def _peer(tmp: Path, name: str) -> Peer:
    p = Peer(name, pk_env(tmp / f"{name}.pk", PK_PASSWORD=f"{name} pw"), free_port())
    p.env["PK_RUNTIME_DIR"] = str(tmp / f"run-{name}")
    return p


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    try:
        yield made
    finally:
        stops = [threading.Thread(target=p.stop) for p in made if p.started]
        for t in stops:
            t.start()
        for t in stops:
            t.join()


def _renew_and_die(p: Peer) -> str:
    """`pk keys renew` ended at the first statement after the write that renewed the key; the
    new NodeId. Each earlier write is tried first (the renewal is the first one that changes
    the key)."""
    before = p("keys", "public").split()[0]
    for at in range(1, 8):
        done = crash_pk(at, "after", "keys", "renew", env=p.env)
        assert done.returncode == 137, done.stderr.decode()
        assert b"recovery code" not in done.stdout.lower()  # it died before showing it
        now = p("keys", "public").split()[0]
        if now != before:
            return now
    raise AssertionError("no write of `pk keys renew` renewed the key")


def test_a_renewal_killed_after_it_committed_loses_no_code_and_no_peer(
    tmp_path: Path, peers: list[Peer]
) -> None:
    alice, bob = _peer(tmp_path, "alice"), _peer(tmp_path, "bob")
    peers += [alice, bob]
    alice("bootstrap")
    bob("bootstrap")
    for p in (alice, bob):
        p.node_id = p("keys", "public").split()[0]
        p.start()
    alice("nodes", "add", bob.node_id, f"127.0.0.1:{bob.port}")
    bob("nodes", "add", alice.node_id, f"127.0.0.1:{alice.port}")
    alice("vaults", "create", "mine")
    alice("secrets", "write", "mine:first", stdin=b"one")
    alice("vaults", "share", "mine", bob.node_id)
    bob("vaults", "clone", alice.node_id, "mine")
    alice.stop()

    mid = _renew_and_die(alice)
    renewals = json.loads(alice("keys", "renewals", "--format", "json"))
    assert renewals["code_waiting"] is True
    assert [r["untold"] for r in renewals["renewals"]] == [[bob.node_id]]
    assert "pending-code" in alice("keys", "renewals")
    refused = alice.fails("keys", "renew")
    assert b"was never shown" in refused.stderr and b"pk keys pending-code" in refused.stderr

    code_file = tmp_path / "code"
    alice("keys", "pending-code", "--recovery-code-out", str(code_file))
    assert len(code_file.read_text().split()) == 24
    assert alice.fails("keys", "pending-code").returncode == 3  # shown once
    assert json.loads(alice("keys", "renewals", "--format", "json"))["code_waiting"] is False
    twin = _peer(tmp_path, "twin")  # the code recovers the renewed key
    twin("bootstrap", "--recovery-code-file", str(code_file))
    assert twin("keys", "public").split()[0] == mid

    # Bob was never told: he still pins the old key. The next renewal tells him both.
    alice.start()
    assert bob.fails("vaults", "pull", "mine").returncode != 0
    alice.stop()
    renewed = json.loads(alice("keys", "renew", "--format", "json"))
    assert renewed["told"] == {bob.node_id: "told"}
    alice.node_id = renewed["node_id"]
    followed = json.loads(bob("keys", "renewals", "--format", "json"))["renewals"]
    assert [(r["new"]) for r in followed] == [mid, alice.node_id]
    alice.start()
    alice("secrets", "write", "mine:second", stdin=b"two")
    bob("vaults", "pull", "mine")
    assert bob("secrets", "cat", "mine:second") == "two"

    # Killed once more, with her agent started after: its outbox tells Bob by itself.
    alice.stop()
    last = _renew_and_die(alice)
    alice("keys", "pending-code")
    alice.start()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        followed = json.loads(bob("keys", "renewals", "--format", "json"))["renewals"]
        if last in [r["new"] for r in followed]:
            break
        time.sleep(1)
    else:
        raise AssertionError("Alice's agent never told Bob of her renewal")
    alice("secrets", "write", "mine:third", stdin=b"three")
    bob("vaults", "pull", "mine")
    assert bob("secrets", "cat", "mine:third") == "three"
    assert json.loads(alice("keys", "renewals", "--format", "json"))["renewals"][-1]["untold"] == []
