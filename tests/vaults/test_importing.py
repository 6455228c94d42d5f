"""An import lands whole or not at all (vaults/importing.py), on a real node file: collisions
with the vault and within the import are refused before anything is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults.errors import InvalidTag, SecretExists, VaultNotFound
from polykey.vaults.importing import ImportCommit, check_collisions, import_commits
from polykey.vaults.paths import InvalidSecretPath
from tests.support import PASSWORD


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    made, _ = Node.bootstrap(
        tmp_path / "n.pk", PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True
    )
    with made:
        made.vaults.create("work")
        made.vaults.open("work").write_many(
            [("mail/password", b"old"), ("mail/notes", b"n"), ("solo", b"s")], "Fill."
        )
        yield made


def one(*items: tuple[str, bytes], tags: dict[str, list[str]] | None = None) -> ImportCommit:
    return ("Import.", list(items), tags or {})


EXISTING = {"mail": "dir", "mail/password": "secret", "solo": "secret"}


@pytest.mark.parametrize(
    ("commits", "overwrite", "match"),
    [
        ([one(("mail/password", b"x"))], False, "work:mail/password"),
        ([one(("mail", b"x"))], True, "work:mail"),  # a folder stays a folder
        ([one(("solo/inner", b"x"))], True, "work:solo is a secret, not a folder"),
        ([one(("a", b"x")), one(("a/b", b"y"))], False, "work:a is a secret, not a folder"),
        ([one(("a/b", b"y")), one(("a", b"x"))], False, "work:a"),
        ([one(("MAIL/Password", b"x"))], False, "work:MAIL/Password"),  # folded
    ],
)
def test_a_colliding_path_is_refused(
    commits: list[ImportCommit], overwrite: bool, match: str
) -> None:
    with pytest.raises(SecretExists, match=match):
        check_collisions(EXISTING, commits, "work", overwrite)


def test_overwrite_takes_an_existing_secret_and_a_new_path_always_lands() -> None:
    check_collisions(EXISTING, [one(("mail/password", b"x"))], "work", overwrite=True)
    check_collisions(EXISTING, [one(("mail/otp", b"x"), ("new/a", b"y"))], "work", False)


def test_an_invalid_tag_is_refused() -> None:
    with pytest.raises(InvalidTag):
        check_collisions({}, [one(("a", b"x"), tags={"a": ["not a tag"]})], "work", False)


def test_an_import_is_one_commit_per_import_commit_with_its_tags(node: Node) -> None:
    done = import_commits(
        node.vaults,
        "work",
        [one(("web/password", b"p"), tags={"web/password": ["site"]}), one(("web/otp", b"o"))],
    )
    vault = node.vaults.open("work")
    assert done.commits == [c.id for c in vault.log(2)][::-1]
    assert (done.created, done.secrets, done.removed) == (False, 2, [])
    assert vault.read("web/otp") == b"o" and vault.tags()["web/password"] == ["site"]


def test_a_dry_run_checks_everything_and_writes_nothing(node: Node) -> None:
    head = node.vaults.open("work").head()
    done = import_commits(
        node.vaults, "new", [one(("b", b"1"), ("a", b"2"))], create=True, dry_run=True
    )
    assert (done.created, done.paths, done.commits, done.dry_run) == (True, ["a", "b"], [], True)
    with pytest.raises(VaultNotFound):
        node.vaults.open("new")
    assert node.vaults.open("work").head() == head


def test_a_missing_vault_is_made_only_when_asked(node: Node) -> None:
    with pytest.raises(VaultNotFound):
        import_commits(node.vaults, "new", [one(("a", b"1"))])
    done = import_commits(node.vaults, "new", [one(("a", b"1"))], create=True)
    assert done.created and node.vaults.open("new").read("a") == b"1"


def test_replace_removes_what_an_overwritten_entry_no_longer_holds(node: Node) -> None:
    done = import_commits(
        node.vaults, "work", [one(("mail/password", b"new"))], overwrite=True, replace=["mail"]
    )
    vault = node.vaults.open("work")
    assert done.removed == ["mail/notes"]
    assert [e.path for e in vault.ls("mail")] == ["mail/password"]
    assert vault.read("mail/password") == b"new" and vault.read("solo") == b"s"


def test_a_failed_import_into_a_vault_it_made_leaves_no_vault(node: Node) -> None:
    commits = [one(("a", b"1")), one(("c", b"2"), tags={"../c": ["ok"]})]
    with pytest.raises(InvalidSecretPath):  # a tag's path is read only as its commit is made
        import_commits(node.vaults, "new", commits, create=True)
    with pytest.raises(VaultNotFound):
        node.vaults.open("new")
