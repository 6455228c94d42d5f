"""`pk export git` lists the vault's writers as allowed signers, not whoever signed its commits
(defect 7 of the hardening): stock git calls a commit's signature good only when a node that may
write the vault made it.

The writers of a vault are this node, the nodes it granted `push` on the vault, and, for a
clone, the node it was cloned from. A commit signed by any other key (planted here through the
vault layer with that key, as a commit by a former writer or a bug could land) must not verify.
Real `pk` processes export; real git and ssh-keygen check.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from polykey.ids import encode_node_id
from polykey.keys.root import RootKey
from polykey.node import Node
from polykey.vaults.registry import Vaults
from tests.cli.helpers import CliNode, bootstrap, text
from tests.support import run_pk

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("ssh-keygen") is None,
    reason="needs stock git and ssh-keygen (openssh-client)",
)

STRANGER = RootKey.from_seed(bytes(range(40, 72)))
PUSHER = RootKey.from_seed(bytes(range(80, 112)))
ORIGIN = RootKey.from_seed(bytes(range(120, 152)))


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )


def export(node: CliNode, vault: str, dest: Path) -> dict[str, object]:
    env = node.env(PK_RUNTIME_DIR=str(dest.parent / "run"), PK_NO_AGENT="1")
    result = run_pk("export", "git", vault, str(dest), "--yes", "--format", "json", env=env)
    assert result.returncode == 0, text(result.stderr)
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def signed_by(repo: Path) -> dict[str, tuple[str, str]]:
    """Each commit's subject -> (git's %G? verdict, what `git verify-commit` said)."""
    out: dict[str, tuple[str, str]] = {}
    for line in git(repo, "log", "--format=%H %G? %s").stdout.splitlines():
        sha, verdict, subject = line.split(" ", 2)
        verified = git(repo, "verify-commit", sha)
        out[subject] = (verdict, f"exit {verified.returncode}: {verified.stderr}")
    return out


def assert_not_good(verdict: str, shown: str) -> None:
    """Git checked the signature and found no allowed signer for its key."""
    assert verdict != "G", shown
    assert "signature for" not in shown and "No principal matched" in shown, shown


@pytest.fixture
def node(tmp_path: Path) -> CliNode:
    return bootstrap(tmp_path / "node" / "node.pk")


def test_only_the_owner_and_the_nodes_granted_push_are_allowed_signers(
    node: CliNode, tmp_path: Path
) -> None:
    with Node.open(node.path, node.password.encode(), allow_weak=True) as n:
        vault = n.vaults.create("work")
        vault.write("mine", b"1", "Owner's commit.")
        Vaults(n.store, STRANGER).open("work").write("planted", b"2", "Stranger's commit.")
        n.acl.grant(vault.id, PUSHER.node_id, ["push"])
        Vaults(n.store, PUSHER).open("work").write("pushed", b"3", "Pusher's commit.")
        vault.write("mine", b"4", "Owner's second commit.")
    dest = tmp_path / "repo"
    doc = export(node, "work", dest)

    verdicts = signed_by(dest)
    for subject in ("Owner's commit.", "Pusher's commit.", "Owner's second commit."):
        verdict, shown = verdicts[subject]
        assert verdict == "G", (subject, shown)
        assert shown.startswith("exit 0: ") and 'Good "git" signature for' in shown, shown
    assert_not_good(*verdicts["Stranger's commit."])
    stranger = encode_node_id(STRANGER.node_id)
    assert stranger not in (dest / ".git" / "polykey-allowed-signers").read_text()
    assert doc["signers"] == sorted([node.node_id, encode_node_id(PUSHER.node_id)])


def test_a_clone_allows_the_node_it_came_from_and_this_node(node: CliNode, tmp_path: Path) -> None:
    origin = {
        "node_id": encode_node_id(ORIGIN.node_id),
        "vault_id": "v" + "1" * 26,
        "name": "shared",
        "high_water": "",
    }
    with Node.open(node.path, node.password.encode(), allow_weak=True) as n:
        theirs = Vaults(n.store, ORIGIN).create("shared")  # as a clone brings it in
        with n.store.write() as tx:
            n.vaults.set_origin("shared", origin, tx)
        theirs.write("theirs", b"1", "Origin's commit.")
        Vaults(n.store, STRANGER).open("shared").write("planted", b"2", "Stranger's commit.")
        n.vaults.open("shared").write("local", b"3", "Local commit.")
    dest = tmp_path / "repo"
    doc = export(node, "shared", dest)

    verdicts = signed_by(dest)
    assert verdicts["Origin's commit."][0] == "G", verdicts
    assert verdicts["Local commit."][0] == "G", verdicts
    assert_not_good(*verdicts["Stranger's commit."])
    assert doc["signers"] == sorted([node.node_id, origin["node_id"]])


def test_a_clone_allows_the_writers_its_origin_named(node: CliNode, tmp_path: Path) -> None:
    """A node the origin granted push writes commits the clone pulls: they verify in an export
    of the clone, since the clone keeps the writers its origin named."""
    pusher = encode_node_id(PUSHER.node_id)
    origin = {
        "node_id": encode_node_id(ORIGIN.node_id),
        "vault_id": "v" + "1" * 26,
        "name": "shared",
        "high_water": "",
        "writers": f"{encode_node_id(ORIGIN.node_id)} {pusher}",
    }
    with Node.open(node.path, node.password.encode(), allow_weak=True) as n:
        theirs = Vaults(n.store, ORIGIN).create("shared")
        with n.store.write() as tx:
            n.vaults.set_origin("shared", origin, tx)
        theirs.write("theirs", b"1", "Origin's commit.")
        Vaults(n.store, PUSHER).open("shared").write("pushed", b"2", "Pusher's commit.")
        planted = Vaults(n.store, STRANGER).open("shared")
        planted.read_only = None  # as a hostile origin would plant it, past the local rule
        planted.write("planted", b"3", "Stranger's commit.")
    dest = tmp_path / "repo"
    doc = export(node, "shared", dest)
    verdicts = signed_by(dest)
    assert verdicts["Pusher's commit."][0] == "G", verdicts
    assert_not_good(*verdicts["Stranger's commit."])
    assert doc["signers"] == sorted([node.node_id, origin["node_id"], pusher])
