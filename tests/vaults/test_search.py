"""Questions asked across a node's vaults (vaults/search.py), on a real node file: find, grep,
secrets under a folder, an export's folder, tags, completion and pass-style entries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.errors import InvalidInput
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults import search
from polykey.vaults.errors import IsADirectory, SecretNotFound
from polykey.vaults.search import Found, TagCount
from tests.support import PASSWORD
from tests.vaults.test_reserved import plant_tags

SECRETS = {
    "work": {
        "db/password": b"pw-1\nuser: alice\n",
        "db/URL": b"postgres://db.example\n",
        "api/token": b"tok-9",
        "mail/password": b"mail-pw\n",
        "mail/otp": b"otpauth://totp/x?secret=ABC",
        "docs/readme": b"Read me.\nUSER: bob\n",
    },
    "home": {"wifi": b"Secret-WiFi\n"},
}


def make_node(path: Path) -> Node:
    node, _ = Node.bootstrap(path, PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True)
    node.vaults.create("work", ["team"])
    node.vaults.create("home", ["team", "house"])
    for name, items in SECRETS.items():
        node.vaults.open(name).write_many(list(items.items()), f"Fill {name}.")
    node.vaults.open("work").set_tags("db/password", ["prod"], [])
    node.vaults.open("work").set_tags("api/token", ["prod", "api"], [])
    node.vaults.open("home").set_tags("wifi", ["house"], [])
    return node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with make_node(tmp_path_factory.mktemp("search") / "n.pk") as made:
        yield made


# --- find and grep -------------------------------------------------------------------------------


def test_find_matches_a_part_of_the_path_ignoring_case(node: Node) -> None:
    assert search.find(node.vaults, "PASS") == [
        Found("work", "db/password"),
        Found("work", "mail/password"),
    ]
    assert search.find(node.vaults, "url") == [Found("work", "db/URL")]


def test_find_with_a_glob_matches_the_whole_path_or_its_last_name(node: Node) -> None:
    assert search.find(node.vaults, "db/*") == [
        Found("work", "db/URL"),
        Found("work", "db/password"),
    ]
    assert search.find(node.vaults, "w?fi") == [Found("home", "wifi")]
    assert search.find(node.vaults, "pass*") == [
        Found("work", "db/password"),
        Found("work", "mail/password"),
    ]
    assert search.find(node.vaults, "ass*") == []  # a glob is not a part


def test_find_in_named_vaults_only(node: Node) -> None:
    assert search.find(node.vaults, "i", only=["home"]) == [Found("home", "wifi")]
    assert search.find(node.vaults, "i", only=["nope"]) == []


def test_grep_gives_each_matching_line_of_each_secret(node: Node) -> None:
    lines = search.grep(node.vaults, "^user: ")
    assert [(x.vault, x.path, x.text) for x in lines] == [("work", "db/password", "user: alice")]
    lines = search.grep(node.vaults, "^user: ", ignore_case=True)
    assert [x.text for x in lines] == ["user: alice", "USER: bob"]
    assert search.grep(node.vaults, "user", only=["home"]) == []


def test_a_grep_line_is_a_secret_and_stays_out_of_its_repr(node: Node) -> None:
    (line,) = search.grep(node.vaults, "alice")
    assert "alice" not in repr(line)


def test_a_bad_regular_expression_is_invalid_input(node: Node) -> None:
    with pytest.raises(InvalidInput, match="bad regular expression"):
        search.grep(node.vaults, "(unclosed")


# --- secrets under a folder ----------------------------------------------------------------------


def test_secrets_under_a_folder_are_named_relative_to_it(node: Node) -> None:
    found = search.secrets_under(node.vaults.open("work"), "db/")
    assert [(s.path, s.name, s.value) for s in found] == [
        ("db/URL", "URL", SECRETS["work"]["db/URL"]),
        ("db/password", "password", SECRETS["work"]["db/password"]),
    ]
    assert "pw-1" not in repr(found)


def test_secrets_under_a_secret_is_that_secret_by_its_last_name(node: Node) -> None:
    (one,) = search.secrets_under(node.vaults.open("work"), "api/token")
    assert (one.vault, one.path, one.name, one.value) == ("work", "api/token", "token", b"tok-9")


def test_secrets_under_the_root_is_the_whole_vault(node: Node) -> None:
    names = [s.name for s in search.secrets_under(node.vaults.open("work"))]
    assert sorted(names) == sorted(SECRETS["work"])


def test_secrets_under_a_missing_folder_is_secret_not_found(node: Node) -> None:
    with pytest.raises(SecretNotFound):
        search.secrets_under(node.vaults.open("work"), "nope")


def test_read_folder_gives_values_and_tags_relative_to_the_folder_at_a_revision(
    node: Node,
) -> None:
    vault = node.vaults.open("work")
    folder = search.read_folder(vault, "db")
    assert folder.vault == "work" and folder.head == vault.resolve(None).decode()
    assert dict(folder.files) == {
        "URL": SECRETS["work"]["db/URL"],
        "password": b"pw-1\nuser: alice\n",
    }
    assert folder.tags == {"password": ["prod"]}
    assert "pw-1" not in repr(folder)
    before_tags = search.read_folder(vault, "", "HEAD~2")  # the fill, before the two tags
    assert before_tags.tags == {} and len(before_tags.files) == len(SECRETS["work"])


# --- tags ----------------------------------------------------------------------------------------


def test_tag_counts_count_secrets_and_vaults_per_tag(node: Node) -> None:
    counted = search.tag_counts(node.vaults)
    assert counted.counts == {
        "api": TagCount(secrets=1, vaults=0),
        "house": TagCount(secrets=1, vaults=1),
        "prod": TagCount(secrets=2, vaults=0),
        "team": TagCount(secrets=0, vaults=2),
    }
    assert list(counted.counts) == sorted(counted.counts)
    assert counted.unreadable == []


def test_tagged_finds_the_secrets_of_a_tag_across_vaults_or_in_one(node: Node) -> None:
    assert search.tagged(node.vaults, "prod").found == [
        Found("work", "api/token"),
        Found("work", "db/password"),
    ]
    assert search.tagged(node.vaults, "house", "work").found == []
    assert search.tagged(node.vaults, "house", "home").found == [Found("home", "wifi")]


def test_a_vault_with_an_unreadable_tag_file_is_named_and_hides_no_other_tags(
    tmp_path: Path,
) -> None:
    with make_node(tmp_path / "n.pk") as node:
        plant_tags(node, node.vaults.open("work"), b"{not json")
        counted = search.tag_counts(node.vaults)
        assert counted.unreadable == ["work"]
        assert counted.counts == {
            "house": TagCount(secrets=1, vaults=1),
            "team": TagCount(secrets=0, vaults=2),
        }
        tagged = search.tagged(node.vaults, "house")
        assert tagged.found == [Found("home", "wifi")] and tagged.unreadable == ["work"]
        unreadable: list[str] = []
        assert search.secret_tags(node.vaults, "work", unreadable) == {}
        assert unreadable == ["work"]


# --- completion ----------------------------------------------------------------------------------


def test_completion_without_a_vault_gives_vault_names(node: Node) -> None:
    assert search.completions(node.vaults, "") == ["home", "work"]
    assert search.completions(node.vaults, "w") == ["work"]


def test_completion_in_a_vault_gives_the_names_of_the_folder_the_prefix_ends_in(
    node: Node,
) -> None:
    assert search.completions(node.vaults, "", "work") == ["api/", "db/", "docs/", "mail/"]
    assert search.completions(node.vaults, "db/p", "work") == ["db/password"]
    assert search.completions(node.vaults, "db/", "work") == ["db/URL", "db/password"]


def test_completion_leaves_out_the_vaults_own_files(node: Node) -> None:
    assert search.completions(node.vaults, ".", "work") == []  # .polykey-tags is there


def test_completion_of_nothing_there_is_empty(node: Node) -> None:
    assert search.completions(node.vaults, "", "nope") == []
    assert search.completions(node.vaults, "nope/", "work") == []
    assert search.completions(node.vaults, "api/token/", "work") == []
    assert search.completions(node.vaults, "../", "work") == []


# --- entries -------------------------------------------------------------------------------------


def test_an_entry_folder_gives_its_files_and_markers(node: Node) -> None:
    vault = node.vaults.open("work")
    assert search.entry_files(vault, "mail") == {
        "password": b"mail-pw\n",
        "otp": SECRETS["work"]["mail/otp"],
    }
    assert search.entry_markers(vault, "mail") == ["password", "otp"]


def test_a_plain_folder_is_no_entry(node: Node) -> None:
    vault = node.vaults.open("work")
    assert search.entry_markers(vault, "docs") == []
    with pytest.raises(IsADirectory, match="a folder, not an entry") as caught:
        search.entry_files(vault, "docs/")
    assert "pk secrets ls work:docs" in caught.value.user_hint
