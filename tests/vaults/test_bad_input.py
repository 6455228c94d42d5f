"""Bad input to vaults and secrets: one clear error each, a distinct exit code, nothing changed."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polykey.vaults.errors import NameCollision
from polykey.vaults.paths import InvalidSecretPath, split_path
from tests.conftest import NodeFixture
from tests.support import PASSWORD, pk_env, run_pk


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "a/../b",
        "./a",
        "a/./b",
        "/abs",
        ".git/config",
        "a/.GIT/b",
        "a//b",
        "",
        "a\x00b",
        "a\nb",
        "a\x1bb",
        ".polykey-tags",
        "x/" + "y" * 256,
        "/".join(["d"] * 65),
    ],
)
def test_invalid_secret_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidSecretPath):
        split_path(path)


@given(st.text(min_size=1, max_size=40))
def test_an_accepted_path_never_escapes_or_hides(path: str) -> None:
    try:
        parts = split_path(path)
    except InvalidSecretPath:
        return
    assert ".." not in parts and "." not in parts and "\x00" not in path
    assert not path.startswith("/")
    assert all(p.lower() != ".git" for p in parts)


def test_names_differing_by_case_or_normalisation_collide_in_one_directory(
    fresh_node: NodeFixture,
) -> None:
    vault = fresh_node.node.vaults.create("v")
    nfc = unicodedata.normalize("NFC", "caf\u00e9")
    nfd = unicodedata.normalize("NFD", nfc)
    vault.write(f"d/{nfc}", b"1")
    vault.write("d/Key", b"2")
    head = vault.head()
    for clash in (f"d/{nfd}", "d/KEY", "d/key"):
        with pytest.raises(NameCollision):
            vault.write(clash, b"x")
    assert vault.head() == head
    vault.write(f"other/{nfd}", b"fine elsewhere")
    vault.write("other/key", b"fine elsewhere")


def test_binary_secrets_round_trip_byte_for_byte(fresh_node: NodeFixture) -> None:
    vault = fresh_node.node.vaults.create("v")
    data = bytes(range(256)) * 3 + b"\x00\x00"
    vault.write("bin", data)
    assert vault.read("bin") == data


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = pk_env(tmp_path / "n.pk", PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    assert run_pk("bootstrap", env=e).returncode == 0
    assert run_pk("vaults", "create", "v", env=e).returncode == 0
    assert run_pk("secrets", "write", "v:dir/s", env=e, input=b"one").returncode == 0
    assert run_pk("secrets", "write", "v:other", env=e, input=b"two").returncode == 0
    return e


@pytest.mark.parametrize(
    ("args", "stdin", "code", "words"),
    [
        (("secrets", "cat", "nope:s"), None, 31, b"No such vault: nope"),
        (("secrets", "cat", "v:missing/secret"), None, 33, b"v:missing/secret"),
        (("secrets", "write", "v:dir"), b"x", 35, b"directory"),
        (("secrets", "write", "v:other/below"), b"x", 35, b"not a directory"),
        (("secrets", "write", "v:../escape"), b"x", 3, b"'..'"),
        (("secrets", "write", "v:.git/x"), b"x", 3, b".git"),
        (("secrets", "mv", "v:other", "v:dir/s"), None, 34, b"already exists"),
        (("secrets", "cp", "v:other", "v:dir/s"), None, 34, b"already exists"),
        (("vaults", "revert", "v", "deadbeef"), None, 37, b"deadbeef"),
        (("vaults", "revert", "v", "HEAD~99"), None, 37, b"HEAD~99"),
        (("vaults", "create", "v"), None, 32, b"already exists"),
        (("vaults", "create", "bad name"), None, 3, b"vault name"),
        (("secrets", "rm", "v:dir"), None, 35, b"directory"),
        (("secrets", "cat", "v"), None, 2, b"VAULT:PATH"),
    ],
)
def test_each_bad_input_is_one_line_with_its_exit_code_and_changes_nothing(
    env: dict[str, str], args: tuple[str, ...], stdin: bytes | None, code: int, words: bytes
) -> None:
    before = run_pk("vaults", "log", "v", env=env).stdout
    result = run_pk(*args, env=env, input=stdin)
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(b"pk: error: ") and words in lines[0], lines
    assert all(line.startswith((b"pk: error: ", b"pk: hint: ")) for line in lines)
    assert b"Traceback" not in result.stderr
    assert run_pk("vaults", "log", "v", env=env).stdout == before


def test_mv_with_force_replaces_and_is_one_commit(env: dict[str, str]) -> None:
    before = run_pk("vaults", "log", "v", env=env).stdout.count(b"\n")
    assert run_pk("secrets", "mv", "v:other", "v:dir/s", "--force", env=env).returncode == 0
    assert run_pk("secrets", "cat", "v:dir/s", env=env).stdout == b"two"
    assert run_pk("vaults", "log", "v", env=env).stdout.count(b"\n") == before + 1
