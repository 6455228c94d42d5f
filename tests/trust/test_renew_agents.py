"""Key renewal end to end: real agents on loopback, real `pk` processes, stock git.

Alice and Bob share vaults both ways. A thief copies Alice's recovery code and, posing as her
old key, pushes a commit to a vault Bob shares with her. Alice renews her key while her agent
runs (it serves peers with the new host key at once); Bob is told at once and moves her grants,
address and clone origins to the new NodeId. Sharing works both ways with the new key (Bob's
client checks the new host key), the old history still verifies with `git verify-commit` and the
allowed signers `pk vaults signers` and `pk export git` write, and once Alice revokes the old key
as stolen since T, the thief's commit (signed by the old key after T) is refused when she pulls
it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import pk_env
from tests.sync.test_share import free_port
from tests.sync.test_three_agents import Peer


def _peer(tmp: Path, name: str) -> Peer:
    p = Peer(name, pk_env(tmp / f"{name}.pk", PK_PASSWORD=f"{name} pw"), free_port())
    p.env["PK_RUNTIME_DIR"] = str(tmp / f"run-{name}")
    return p


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[list[Peer]]:
    made: list[Peer] = []
    try:
        yield made
    finally:
        stops = [threading.Thread(target=p.stop) for p in made if p.started]
        for t in stops:
            t.start()
        for t in stops:
            t.join()


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=False
    )


def test_renewal_keeps_sharing_both_ways_old_history_verifies_and_theft_is_refused(
    tmp_path: Path, peers: list[Peer]
) -> None:
    alice, bob = _peer(tmp_path, "alice"), _peer(tmp_path, "bob")
    peers += [alice, bob]
    code_file = tmp_path / "alice-code"
    alice("bootstrap", "--recovery-code-out", str(code_file))
    bob("bootstrap")
    for p in (alice, bob):
        p.node_id = p("keys", "public").split()[0]
        p.start()
    alice("nodes", "add", bob.node_id, f"127.0.0.1:{bob.port}")
    bob("nodes", "add", alice.node_id, f"127.0.0.1:{alice.port}")
    old = alice.node_id

    alice("vaults", "create", "mine")
    alice("secrets", "write", "mine:old", stdin=b"signed by the old key")
    alice("vaults", "share", "mine", bob.node_id)
    bob("vaults", "clone", alice.node_id, "mine")
    for vault in ("theirs", "target"):
        bob("vaults", "create", vault)
        bob("secrets", "write", f"{vault}:first", stdin=b"bob's")
        bob("vaults", "share", vault, alice.node_id, "--perm", "clone,pull,push")
        alice("vaults", "clone", bob.node_id, vault)

    stolen_at = int(time.time())
    time.sleep(1.1)  # the thief's commit is a whole second after the theft
    thief = _peer(tmp_path, "thief")  # Alice's old identity, from her stolen recovery code
    thief("bootstrap", "--recovery-code-file", str(code_file))
    thief("nodes", "add", bob.node_id, f"127.0.0.1:{bob.port}")
    thief("vaults", "clone", bob.node_id, "target")
    thief("secrets", "write", "target:planted", stdin=b"by the thief")
    thief("vaults", "push", "target")

    renewed = json.loads(alice("keys", "renew", "--format", "json"))  # through her agent
    alice.node_id = renewed["node_id"]
    status = json.loads(alice("agent", "status", "--format", "json"))
    assert status["node_id"] == alice.node_id  # the agent serves the new key, not the old
    assert renewed["old"] == old != alice.node_id
    assert renewed["told"] == {bob.node_id: "told"}
    assert len(renewed["recovery_code"].split()) == 24
    assert alice("keys", "public").split()[0] == alice.node_id

    followed = json.loads(bob("keys", "renewals", "--format", "json"))["renewals"]
    assert [(r["old"], r["new"], r["own"]) for r in followed] == [(old, alice.node_id, False)]
    perms = json.loads(bob("vaults", "permissions", "theirs", "--format", "json"))
    assert alice.node_id in json.dumps(perms) and old not in json.dumps(perms)

    # both ways, with the new key: Bob pulls from Alice's agent, Alice pulls from Bob's
    alice("secrets", "write", "mine:new", stdin=b"signed by the new key")
    bob("vaults", "pull", "mine")
    assert bob("secrets", "cat", "mine:new") == "signed by the new key"
    bob("secrets", "write", "theirs:second", stdin=b"from bob")
    alice("vaults", "pull", "theirs")
    assert alice("secrets", "cat", "theirs:second") == "from bob"

    # the old history verifies with stock git, given the allowed signers pk writes
    repo = tmp_path / "mine.git"
    alice("export", "git", "mine", str(repo), "--yes")
    signers = tmp_path / "allowed_signers"
    signers.write_text(alice("vaults", "signers", "mine"))
    assert "valid-before=" in signers.read_text()
    exported = (repo / ".git" / "polykey-allowed-signers").read_text()
    assert sorted(exported.splitlines()) == sorted(signers.read_text().splitlines())
    commits = _git(repo, "rev-list", "HEAD").stdout.split()
    assert len(commits) >= 2
    for sha in commits:
        verdict = _git(
            repo, "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={signers}",
            "verify-commit", sha,
        )  # fmt: skip
        assert verdict.returncode == 0, verdict.stderr

    # after the theft is declared, the old key's later commit is refused on pull
    revoked = json.loads(
        alice(
            "keys", "revoke-old", "--compromised", "--after", str(stolen_at), "--format", "json"
        )
    )  # fmt: skip
    assert revoked["rotation"]["until"] == stolen_at and revoked["told"][bob.node_id] == "told"
    refused = alice.fails("vaults", "pull", "target")
    assert b"renewed away from (or revoked)" in refused.stderr
    assert "planted" not in alice("secrets", "ls", "target")
    bob_view = json.loads(bob("keys", "renewals", "--format", "json"))["renewals"]
    assert bob_view[0]["compromised"] == stolen_at
    # and bob kept the exposure report of the stolen key at once: what it could read
    report = bob("exposure", bob_view[0]["old"], "--format", "json")
    assert "key revoked" in report and "target" in report
