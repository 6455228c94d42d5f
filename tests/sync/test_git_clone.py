"""Stock `git clone ssh://` against a node's agent, with a key that holds permission."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import run_pk
from tests.sync.test_share import Pair, pair  # noqa: F401 - the two-node fixture

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("ssh") is None, reason="git and ssh are needed"
)


def git_clone(p: Pair, key: Path, vault: str, target: Path) -> subprocess.CompletedProcess[str]:
    ssh = (
        f"ssh -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
    )
    return subprocess.run(
        ["git", "clone", f"ssh://pk@127.0.0.1:{p.port}/{vault}", str(target)],
        env={"GIT_SSH_COMMAND": ssh, "PATH": "/usr/bin:/bin", "HOME": str(p.tmp)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_stock_git_clones_a_shared_vault_with_the_node_key(pair: Pair) -> None:  # noqa: F811
    pair.a("secrets", "write", "work:db/user", stdin=b"admin")
    key = pair.tmp / "bob.key"
    pair.b("keys", "ssh-key", "-o", str(key), "--yes")
    assert key.stat().st_mode & 0o777 == 0o600
    result = git_clone(pair, key, "work", pair.tmp / "clone")
    assert result.returncode == 0, result.stderr
    assert (pair.tmp / "clone" / "db" / "password").read_bytes() == b"first"
    assert (pair.tmp / "clone" / "db" / "user").read_bytes() == b"admin"
    log = subprocess.run(
        ["git", "-C", str(pair.tmp / "clone"), "log", "--format=%s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        log.splitlines()
        == pair.a("vaults", "log", "work", "--format", "json").count('"message"')
        * [log.splitlines()[0]]
        or log.splitlines()[0] == "Add secret db/user."
    )
    fsck = subprocess.run(
        ["git", "-C", str(pair.tmp / "clone"), "fsck", "--full"], capture_output=True, check=False
    )
    assert fsck.returncode == 0


def test_stock_git_without_permission_sees_no_repository(pair: Pair) -> None:  # noqa: F811
    pair.a("vaults", "create", "private")
    key = pair.tmp / "bob.key"
    pair.b("keys", "ssh-key", "-o", str(key), "--yes")
    hidden = git_clone(pair, key, "private", pair.tmp / "c1")
    missing = git_clone(pair, key, "nosuch", pair.tmp / "c2")
    assert hidden.returncode != 0 and missing.returncode != 0
    assert "repository not found" in hidden.stderr and "repository not found" in missing.stderr
    assert not (pair.tmp / "c1" / "db").exists()


def test_writing_the_private_key_needs_yes(pair: Pair) -> None:  # noqa: F811
    result = run_pk("keys", "ssh-key", "-o", str(pair.tmp / "k"), env=pair.bob)
    assert result.returncode == 2
    assert not (pair.tmp / "k").exists()


def _git(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_stock_git_clones_fetches_and_clones_shallow_a_vault_with_a_large_secret(
    pair: Pair,  # noqa: F811
) -> None:
    """The pack written here: a secret larger than a side-band packet and than a batch's read,
    a later fetch (the asker holds commits: dulwich's finder), a shallow clone."""
    import os

    big = os.urandom(300_000)
    pair.a("secrets", "write", "work:files/big", stdin=big)
    key = pair.tmp / "bob.key"
    pair.b("keys", "ssh-key", "-o", str(key), "--yes")
    ssh = (
        f"ssh -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
    )
    env = {"GIT_SSH_COMMAND": ssh, "PATH": "/usr/bin:/bin", "HOME": str(pair.tmp)}
    url = f"ssh://pk@127.0.0.1:{pair.port}/work"
    clone = pair.tmp / "clone"
    result = _git(env, "clone", url, str(clone))
    assert result.returncode == 0, result.stderr
    assert (clone / "files" / "big").read_bytes() == big
    pair.a("secrets", "write", "work:files/more", stdin=b"more")
    result = _git(env, "-C", str(clone), "pull", "-q", "--ff-only")
    assert result.returncode == 0, result.stderr
    assert (clone / "files" / "more").read_bytes() == b"more"
    assert _git(env, "-C", str(clone), "fsck", "--full").returncode == 0
    shallow = pair.tmp / "shallow"
    result = _git(env, "clone", "--depth", "1", url, str(shallow))
    assert result.returncode == 0, result.stderr
    assert _git(env, "-C", str(shallow), "rev-list", "--count", "HEAD").stdout.strip() == "1"
    assert (shallow / "files" / "big").read_bytes() == big
