"""A person's own nodes as real processes: two agents on loopback linked with `pk nodes link`,
`pk vaults sync` between them (edits on both sides merge, and both end with one history), and
`pk backup` / `pk backup restore` through the CLI, while an agent runs, onto another mount."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.node import Node
from tests.support import pk_env, run_pk
from tests.sync.test_links import duo  # noqa: F401 (a fixture)
from tests.sync.test_three_agents import Peer


def link(a: Peer, b: Peer) -> None:
    a("nodes", "link", b.node_id)
    assert "Linked" in b("nodes", "link", a.node_id)


def test_sync_between_linked_nodes_merges_both_sides_and_they_agree(
    duo: tuple[Peer, Peer],  # noqa: F811
) -> None:
    a, b = duo
    link(a, b)
    out = a("vaults", "sync")
    assert "work: sent this node's changes" in out and "private: sent" in out
    assert b("secrets", "cat", "work:db/password") == "v1"
    a_id = json.loads(a("vaults", "list", "--format", "json"))["vaults"]
    b_id = json.loads(b("vaults", "list", "--format", "json"))["vaults"]
    assert {v["name"]: v["id"] for v in a_id} == {v["name"]: v["id"] for v in b_id}

    a("secrets", "write", "work:on-a", stdin=b"a")
    b("secrets", "write", "work:on-b", stdin=b"b")
    a("secrets", "write", "work:db/password", stdin=b"from a")
    b("secrets", "write", "work:db/password", stdin=b"from b")
    out = b("vaults", "sync", "work")
    assert "work: merged both sides' changes" in out and "conflict: work:db/password" in out
    assert a("vaults", "log", "work") == b("vaults", "log", "work")
    listed = a("secrets", "ls", "-R", "work")
    assert "on-a" in listed and "on-b" in listed and ".conflict-" in listed
    conflicts = json.loads(a("vaults", "conflicts", "work", "--format", "json"))["conflicts"]
    (copy,) = conflicts
    a("vaults", "resolve", "work:db/password", "--keep", "theirs")
    assert "No conflict copies" in a("vaults", "conflicts")
    kept = a("secrets", "cat", "work:db/password")
    assert kept in ("from a", "from b")
    assert "work: sent this node's changes" in a("vaults", "sync", "work", "--with", b.node_id)
    assert "work: up to date" in b("vaults", "sync")
    assert b("secrets", "cat", "work:db/password") == kept
    assert copy["copy"] not in b("secrets", "ls", "-R", "work")


def test_sync_without_linked_nodes_says_how_to_link(duo: tuple[Peer, Peer]) -> None:  # noqa: F811
    a, _ = duo
    refused = a.fails("vaults", "sync")
    assert refused.returncode == 3
    assert b"pk nodes link" in refused.stderr


@pytest.fixture
def other_mount() -> Iterator[Path]:
    """A folder on another file system than the tests' temporary one (a USB stick's stand-in)."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=base) as folder:
        yield Path(folder)


def test_backup_while_the_agent_runs_then_restore_a_lost_node(
    tmp_path: Path, other_mount: Path
) -> None:
    run = str(tmp_path / "run")
    env = pk_env(tmp_path / "node.pk", PK_PASSWORD="node pw", PK_RUNTIME_DIR=run)
    code_file = tmp_path / "code"
    assert run_pk("bootstrap", "--recovery-code-out", str(code_file), env=env).returncode == 0
    node = Peer("node", env, 0)
    node("vaults", "create", "team", "--tag", "work")
    node("secrets", "write", "team:db/password", stdin=b"p1")
    node("agent", "start", "--background")
    bpw = tmp_path / "bpw"
    bpw.write_text("backup pw\n")
    target = other_mount / "backup.pk"
    try:
        first = json.loads(
            node("backup", str(target), "--backup-password-file", str(bpw), "--format", "json")
        )
        assert first["created"] is True
        node("secrets", "write", "team:db/password", stdin=b"p2")
        node("vaults", "create", "later")
        again = node("backup", str(target), "--backup-password-file", str(bpw))
        assert "Updated the backup" in again and "team: sent" in again and "later: sent" in again
    finally:
        node("agent", "stop")
    before = node("vaults", "log", "team")
    (tmp_path / "node.pk").unlink()  # the laptop is gone
    assert run_pk("bootstrap", "--recovery-code-file", str(code_file), env=env).returncode == 0
    restored = node("backup", "restore", str(target), "--backup-password-file", str(bpw))
    assert "Restored from" in restored
    assert node("secrets", "cat", "team:db/password") == "p2"
    assert node("vaults", "log", "team") == before
    listed = json.loads(node("vaults", "list", "--format", "json"))["vaults"]
    assert {v["name"]: v["tags"] for v in listed} == {"team": ["work"], "later": []}
    with Node.open(target, b"backup pw", allow_weak=True) as backup_node:
        assert backup_node.links.mine()  # the backup is a node of its own, linked


def test_backup_refuses_this_node_and_a_wrong_password_loses_nothing(tmp_path: Path) -> None:
    env = pk_env(tmp_path / "node.pk", PK_PASSWORD="node pw")
    assert run_pk("bootstrap", env=env).returncode == 0
    node = Peer("node", env, 0)
    node("vaults", "create", "team")
    bpw = tmp_path / "bpw"
    bpw.write_text("backup pw\n")
    itself = node.fails("backup", str(tmp_path / "node.pk"), "--backup-password-file", str(bpw))
    assert b"this node itself" in itself.stderr
    node("backup", str(tmp_path / "b.pk"), "--backup-password-file", str(bpw))
    (tmp_path / "wrong").write_text("not it\n")
    wrong = node.fails(
        "backup", str(tmp_path / "b.pk"), "--backup-password-file", str(tmp_path / "wrong")
    )
    assert wrong.returncode == 12, wrong.stderr
    assert node("vaults", "list").startswith("team")
