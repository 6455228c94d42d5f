"""`pk vaults undo REV` (Vault.undo): one commit's changes taken back, a later change kept."""

from __future__ import annotations

import pytest

from polykey.vaults.errors import SecretNotFound, UndoConflict
from tests.conftest import NodeFixture
from tests.support import run_pk


def test_undo_takes_back_one_commit_and_keeps_the_others(fresh_node: NodeFixture) -> None:
    vault = fresh_node.node.vaults.create("v")
    vault.write("a", b"1")
    vault.write("b", b"1")
    changed = vault.write("a", b"2")  # the commit to undo
    vault.write("c", b"new")
    vault.undo(changed.decode())
    assert vault.read("a") == b"1" and vault.read("b") == b"1" and vault.read("c") == b"new"
    added = vault.write("d", b"added")
    vault.remove(["b"])
    vault.undo(added.decode()[:10])
    with pytest.raises(SecretNotFound):
        vault.read("d")
    removed = vault.head()
    assert removed is not None
    vault.undo("HEAD~1")  # the removal of b is HEAD~1 now: b comes back
    assert vault.read("b") == b"1"
    assert vault.log(limit=1)[0].message.startswith("Undo ")


def test_undo_refuses_when_a_later_commit_changed_the_same_secret(fresh_node: NodeFixture) -> None:
    vault = fresh_node.node.vaults.create("v")
    first = vault.write("a", b"1")
    vault.write("a", b"2")
    head = vault.head()
    with pytest.raises(UndoConflict, match="a later commit changed a"):
        vault.undo(first.decode())
    assert vault.head() == head


def test_pk_vaults_undo(fresh_node: NodeFixture) -> None:
    from tests.support import pk_env

    vault = fresh_node.node.vaults.create("v")
    vault.write("a", b"1")
    commit = vault.write("a", b"2").decode()
    fresh_node.node.close()
    env = pk_env(fresh_node.path, PK_PASSWORD=fresh_node.password)
    done = run_pk("vaults", "undo", "v", commit[:8], env=env)
    assert done.returncode == 0, done.stderr
    assert run_pk("secrets", "cat", "v:a", env=env).stdout == b"1"
    again = run_pk("vaults", "undo", "v", "HEAD~5", env=env)
    assert again.returncode == 37 and b"Traceback" not in again.stderr
