"""A vault exported to a plain bare repository is a valid git repository that stock git verifies."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from dulwich.objects import Commit, ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from polykey.ids import encode_node_id
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults.objects import OBJECT_KEY_BYTES, objects_ns
from polykey.vaults.paths import InvalidSecretPath
from polykey.vaults.vault import Vault, transfer
from tests.conftest import NodeFixture

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("ssh-keygen") is None,
    reason="needs stock git and ssh-keygen",
)


def export(node: Node, vault: Vault, target: Path) -> Path:
    """Every object of the vault into a new bare repository, with main and HEAD set."""
    repo = Repo.init_bare(str(target), mkdir=True)
    objects = vault.objects()
    for key in node.store.keys(objects_ns(vault.id)):
        if len(key) == OBJECT_KEY_BYTES:  # longer keys are parts of a large blob
            repo.object_store.add_object(objects.get(key.hex().encode()))
    head = vault.head()
    assert head is not None
    repo.refs[Ref(b"refs/heads/main")] = ObjectID(head)
    repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/main"))
    repo.close()
    return target


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["HOME"] = str(repo.parent)  # no user configuration
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=False
    )


def signers_file(node: Node, path: Path) -> Path:
    path.write_text(f"{encode_node_id(node.node_id)} {node.key.openssh_public()}\n")
    return path


def verify_commit(repo: Path, signers: Path, commit: str) -> subprocess.CompletedProcess[str]:
    return git(
        repo,
        "-c",
        "gpg.format=ssh",
        "-c",
        f"gpg.ssh.allowedSignersFile={signers}",
        "verify-commit",
        commit,
    )


def busy_vault(node: Node) -> Vault:
    """A vault whose history holds every kind of change the vault layer makes."""
    vault = node.vaults.create("work")
    other = node.vaults.create("other")
    vault.write("db/password", b"hunter2")
    vault.write("db/user", b"admin")
    vault.write("bin", bytes(range(256)) + b"\x00" * 10)
    vault.write("big", os.urandom(2 * 1024 * 1024 + 3))  # stored in parts
    vault.write("caf\u00e9/\U0001f511 key", b"unicode path")
    vault.write_many([("imp/a", b"1"), ("imp/b/c", b"2")], "Import 2 secrets into imp.")
    vault.set_tags("db/password", ["prod"], [])
    vault.mkdir("empty/dir", parents=True)
    vault.move_within("db", "database")
    vault.move_within("bin", "bin-copy", copy=True)
    vault.remove(["database/user"])
    vault.remove(["imp"], recursive=True)
    vault.write("database/password", b"rotated")
    vault.set_tags("database/password", [], ["prod"])
    other.write("from-other", b"x")
    transfer(other, "from-other", vault, "moved-in")
    vault.revert("HEAD~3")
    return vault


@pytest.fixture
def exported(fresh_node: NodeFixture, tmp_path: Path) -> tuple[Vault, Path]:
    vault = busy_vault(fresh_node.node)
    return vault, export(fresh_node.node, vault, tmp_path / "work.git")


def test_an_exported_vault_passes_git_fsck_full(exported: tuple[Vault, Path]) -> None:
    _, repo = exported
    fsck = git(repo, "fsck", "--full", "--strict", "--no-dangling")
    assert fsck.returncode == 0, fsck.stderr
    assert "warning" not in fsck.stderr and "error" not in fsck.stderr, fsck.stderr


def test_git_sees_the_same_commits_and_messages_as_the_vault_log(
    exported: tuple[Vault, Path],
) -> None:
    vault, repo = exported
    log = vault.log()
    revs = git(repo, "rev-list", "HEAD")
    assert revs.stdout.split() == [c.id for c in log]
    messages = git(repo, "log", "--format=%s", "main")
    assert messages.returncode == 0, messages.stderr
    assert messages.stdout.splitlines() == [c.message for c in log]
    assert all(m.endswith(".") for m in messages.stdout.splitlines())


def test_git_sees_the_node_id_as_author_and_committer(
    fresh_node: NodeFixture, exported: tuple[Vault, Path]
) -> None:
    _, repo = exported
    ident = encode_node_id(fresh_node.node.node_id)
    people = git(repo, "log", "--format=%an <%ae>|%cn <%ce>")
    lines = people.stdout.splitlines()
    assert lines and set(lines) == {f"{ident} <{ident}>|{ident} <{ident}>"}


def test_git_reads_the_same_secret_content_as_the_vault(exported: tuple[Vault, Path]) -> None:
    vault, repo = exported
    listed = git(repo, "-c", "core.quotePath=false", "ls-tree", "-r", "--name-only", "HEAD")
    secrets = [e.path for e in vault.ls("", recursive=True) if e.kind == "secret"]
    shown = [p for p in listed.stdout.splitlines() if not p.rsplit("/", 1)[-1].startswith(".")]
    assert shown == sorted(secrets)
    for path in secrets:
        blob = subprocess.run(
            ["git", "-C", str(repo), "cat-file", "blob", f"HEAD:{path}"],
            capture_output=True,
            check=False,
        )
        assert blob.returncode == 0, blob.stderr
        assert blob.stdout == vault.read(path), path


def test_every_commit_verifies_with_git_verify_commit_and_the_nodes_allowed_signer(
    fresh_node: NodeFixture, exported: tuple[Vault, Path], tmp_path: Path
) -> None:
    vault, repo = exported
    signers = signers_file(fresh_node.node, tmp_path / "allowed_signers")
    commits = git(repo, "rev-list", "--all").stdout.split()
    assert len(commits) == len(vault.log()) >= 15
    ident = encode_node_id(fresh_node.node.node_id)
    for commit in commits:
        result = verify_commit(repo, signers, commit)
        assert result.returncode == 0, (commit, result.stderr)
        assert f'Good "git" signature for {ident}' in result.stderr, result.stderr


def test_a_commit_signed_by_another_node_fails_verify_commit_with_this_nodes_signers(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    stranger, _ = Node.bootstrap(
        tmp_path / "stranger.pk", b"another password", kdf=FAST_INSECURE_KDF, allow_weak=True
    )
    try:
        theirs = stranger.vaults.create("theirs")
        theirs.write("s", b"x")
        repo = export(stranger, theirs, tmp_path / "theirs.git")
        mine = signers_file(fresh_node.node, tmp_path / "mine")
        own = signers_file(stranger, tmp_path / "own")
    finally:
        stranger.close()
    commits = git(repo, "rev-list", "HEAD").stdout.split()
    assert len(commits) == 2
    for commit in commits:
        assert verify_commit(repo, own, commit).returncode == 0  # the setup is right ...
        refused = verify_commit(repo, mine, commit)  # ... and only the signer differs
        assert refused.returncode != 0, refused.stderr
        assert 'Good "git" signature for' not in refused.stderr


def test_a_commit_whose_content_was_changed_after_signing_fails_verify_commit(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    node = fresh_node.node
    vault = node.vaults.create("v")
    vault.write("s", b"x")
    head = vault.head()
    assert head is not None
    commit = vault.objects().get_commit(head).copy()
    assert isinstance(commit, Commit)
    commit.message = b"Something else.\n"  # the signature stays, the signed text changes
    repo_path = export(node, vault, tmp_path / "v.git")
    with Repo(str(repo_path)) as repo:
        repo.object_store.add_object(commit)
    signers = signers_file(node, tmp_path / "signers")
    assert verify_commit(repo_path, signers, head.decode()).returncode == 0
    forged = verify_commit(repo_path, signers, commit.id.decode())
    assert forged.returncode != 0


def test_a_vault_with_a_gitmodules_directory_still_passes_git_fsck(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    vault = fresh_node.node.vaults.create("v")
    try:
        vault.write(".gitmodules/token", b"x")
    except InvalidSecretPath:  # refusing the name is the other correct outcome
        return
    repo = export(fresh_node.node, vault, tmp_path / "v.git")
    fsck = git(repo, "fsck", "--full")
    assert fsck.returncode == 0, fsck.stderr
