"""The vault issue's must-haves, with real processes and stock git."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dulwich.objects import ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from polykey.ids import encode_node_id
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults.objects import objects_ns
from tests.conftest import NodeFixture
from tests.support import PASSWORD, pk_env, run_pk


def export(node: Node, name: str, target: Path) -> Repo:
    vault = node.vaults.open(name)
    repo = Repo.init_bare(str(target), mkdir=True)
    objects = vault.objects()
    for key in node.store.keys(objects_ns(vault.id)):
        if len(key) == 20:
            repo.object_store.add_object(objects.get(key.hex().encode()))
    head = vault.head()
    assert head is not None
    repo.refs[Ref(b"refs/heads/main")] = ObjectID(head)
    repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/main"))
    return repo


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_every_commit_verifies_with_stock_git_and_fsck_passes(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("db/password", b"hunter2")
    vault.write("db/user", b"admin")
    vault.set_tags("db/password", ["prod"], [])
    vault.move_within("db", "database")
    vault.remove(["database/user"])
    export(node, "work", tmp_path / "repo.git")
    signers = tmp_path / "allowed"
    signers.write_text(f"{encode_node_id(node.node_id)} {node.key.openssh_public()}\n")
    git = ["git", "-C", str(tmp_path / "repo.git")]
    fsck = subprocess.run([*git, "fsck", "--full", "--strict"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    commits = subprocess.run([*git, "rev-list", "HEAD"], capture_output=True, text=True)
    ids = commits.stdout.split()
    assert len(ids) == 6
    for commit in ids:
        verify = subprocess.run(
            [
                *git,
                "-c",
                "gpg.format=ssh",
                "-c",
                f"gpg.ssh.allowedSignersFile={signers}",
                "verify-commit",
                commit,
            ],
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0, verify.stderr
        assert "Good" in verify.stderr
    other = tmp_path / "other-signers"
    stranger, _ = Node.bootstrap(
        tmp_path / "stranger.pk", b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True
    )
    other.write_text(f"x {stranger.key.openssh_public()}\n")
    stranger.close()
    refused = subprocess.run(
        [
            *git,
            "-c",
            "gpg.format=ssh",
            "-c",
            f"gpg.ssh.allowedSignersFile={other}",
            "verify-commit",
            ids[0],
        ],
        capture_output=True,
    )
    assert refused.returncode != 0


def test_two_processes_writing_one_vault_at_once_both_land(tmp_path: Path) -> None:
    env = pk_env(tmp_path / "n.pk", PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    assert run_pk("bootstrap", env=env).returncode == 0
    assert run_pk("vaults", "create", "v", env=env).returncode == 0
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "polykey", "secrets", "write", f"v:s{i}"],
            env=env,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(6)
    ]
    for i, proc in enumerate(procs):
        proc.communicate(f"value {i}".encode(), timeout=120)
        assert proc.returncode == 0
    log = run_pk("vaults", "log", "v", "--format", "json", env=env).stdout.decode()
    assert log.count('"Add secret s') == 6
    for i in range(6):
        assert run_pk("secrets", "cat", f"v:s{i}", env=env).stdout == f"value {i}".encode()


def test_kill_9_during_secrets_dir_leaves_none_or_all(tmp_path: Path) -> None:
    env = pk_env(tmp_path / "n.pk", PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    assert run_pk("bootstrap", env=env).returncode == 0
    assert run_pk("vaults", "create", "v", env=env).returncode == 0
    source = tmp_path / "tree"
    for i in range(1000):
        path = source / f"d{i % 10}" / f"s{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(32))
    rng = random.Random(20261128)
    outcomes = set()
    for attempt in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "polykey", "secrets", "dir", str(source), f"v:run{attempt}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        listed = run_pk("secrets", "ls", f"v:run{attempt}", "-R", env=env)
        count = listed.stdout.decode().count("/s")
        assert count in (0, 1000), count
        outcomes.add(count)
    check = run_pk("node", "check", env=env)
    assert check.returncode == 0, check.stderr
    assert outcomes  # each attempt ended whole one way or the other
