"""Secret paths and vault names: every rule of paths.py, and name collisions inside a vault."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polykey.errors import InvalidInput
from polykey.vaults.errors import NameCollision
from polykey.vaults.paths import (
    MAX_COMPONENT_BYTES,
    MAX_DEPTH,
    MAX_PATH_BYTES,
    InvalidSecretPath,
    InvalidVaultName,
    check_vault_name,
    fold,
    join,
    split_path,
)
from tests.conftest import NodeFixture

NFC_E = unicodedata.normalize("NFC", "\u00e9")
NFD_E = unicodedata.normalize("NFD", "\u00e9")

# --- what is refused ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["..", "../x", "a/..", "a/../b", "a/b/../../.."],
    ids=["dotdot", "leading", "trailing", "middle", "many"],
)
def test_a_dotdot_component_is_refused(path: str) -> None:
    with pytest.raises(InvalidSecretPath, match=r"'\.\.' component"):
        split_path(path)


@pytest.mark.parametrize("path", [".", "./a", "a/.", "a/./b"])
def test_a_dot_component_is_refused(path: str) -> None:
    with pytest.raises(InvalidSecretPath, match=r"'\.' component"):
        split_path(path)


@pytest.mark.parametrize("path", ["/", "/a", "//a", "/a/b"])
def test_an_absolute_path_is_refused(path: str) -> None:
    with pytest.raises(InvalidSecretPath, match="absolute"):
        split_path(path)


@pytest.mark.parametrize("component", [".git", ".GIT", ".Git", ".gIT"])
@pytest.mark.parametrize("template", ["{}", "{}/config", "a/{}", "a/{}/b"])
def test_a_dot_git_component_in_any_case_is_refused(component: str, template: str) -> None:
    with pytest.raises(InvalidSecretPath, match=r"'\.git' component"):
        split_path(template.format(component))


@pytest.mark.parametrize("component", [".git.", ".git ", "git~1", ".g\u200cit", ".git\ufeff"])
def test_names_that_git_treats_as_dot_git_are_refused(component: str) -> None:
    with pytest.raises(InvalidSecretPath):
        split_path(f"{component}/config")


@pytest.mark.parametrize(
    "path",
    [".polykey", ".polykey-tags", ".polykey-dir", ".PolyKey-x", "a/.polykeyanything", "a/.POLYKEY"],
)
def test_names_starting_with_dot_polykey_are_reserved(path: str) -> None:
    with pytest.raises(InvalidSecretPath, match="reserved by Polykey"):
        split_path(path)


@pytest.mark.parametrize("path", ["a\x00", "\x00", "a/\x00b", "a\x00/b"])
def test_a_nul_byte_is_refused(path: str) -> None:
    with pytest.raises(InvalidSecretPath, match="NUL"):
        split_path(path)


@pytest.mark.parametrize("char", ["\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"])
def test_a_control_character_is_refused(char: str) -> None:
    with pytest.raises(InvalidSecretPath, match="control character"):
        split_path(f"dir/na{char}me")


def test_an_undecodable_byte_from_argv_is_refused() -> None:
    # what Python makes of the byte 0xff in a command-line argument (surrogateescape)
    with pytest.raises(InvalidSecretPath):
        split_path("a/b\udcff")


def test_a_lone_surrogate_is_refused_as_an_invalid_path() -> None:
    with pytest.raises(InvalidSecretPath):
        split_path("a/\ud800")


@pytest.mark.parametrize("path", ["", "a//b", "x//y/z", "a///b"])
def test_an_empty_path_or_component_is_refused(path: str) -> None:
    with pytest.raises(InvalidSecretPath, match="empty"):
        split_path(path)


def test_the_empty_path_is_the_root_only_where_the_root_is_allowed() -> None:
    assert split_path("", allow_root=True) == ()
    with pytest.raises(InvalidSecretPath):
        split_path("")


def test_a_component_over_255_bytes_is_refused_counting_utf8_bytes() -> None:
    assert split_path("x" * MAX_COMPONENT_BYTES) == ("x" * MAX_COMPONENT_BYTES,)
    with pytest.raises(InvalidSecretPath, match="longer than 255 bytes"):
        split_path("x" * (MAX_COMPONENT_BYTES + 1))
    # 128 characters, but 256 bytes of UTF-8
    with pytest.raises(InvalidSecretPath, match="longer than 255 bytes"):
        split_path(NFC_E * 128)


def test_a_path_over_4096_bytes_is_refused_even_with_short_components() -> None:
    parts = ["p" * 250] * 17  # each component fine, 4266 bytes in all
    with pytest.raises(InvalidSecretPath, match=f"longer than {MAX_PATH_BYTES} bytes"):
        split_path("/".join(parts))
    assert len(split_path("/".join(parts[:16]))) == 16  # 4015 bytes


def test_a_path_deeper_than_64_is_refused() -> None:
    assert len(split_path("/".join(["d"] * MAX_DEPTH))) == MAX_DEPTH
    with pytest.raises(InvalidSecretPath, match="deeper"):
        split_path("/".join(["d"] * (MAX_DEPTH + 1)))


def test_path_errors_are_invalid_input_with_exit_code_3_and_a_hint() -> None:
    with pytest.raises(InvalidInput) as caught:
        split_path("../x")
    assert caught.value.exit_code == 3
    assert caught.value.user_hint


def test_a_refused_path_is_shown_escaped_in_the_message() -> None:
    with pytest.raises(InvalidSecretPath) as caught:
        split_path("evil\x1b[31m")
    assert "\x1b" not in caught.value.message
    assert "\\x1b" in caught.value.message


# --- what is accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("a", ("a",)),
        ("db/password", ("db", "password")),
        ("dir/", ("dir",)),
        ("a..b/...x", ("a..b", "...x")),
        (".gitignore", (".gitignore",)),
        ("git/.hidden", ("git", ".hidden")),
        ("polykey/x.polykey", ("polykey", "x.polykey")),
        (f"caf{NFC_E}/\U0001f511 key", (f"caf{NFC_E}", "\U0001f511 key")),
        ("with space/tab-less", ("with space", "tab-less")),
    ],
)
def test_ordinary_paths_are_accepted_and_split_into_components(
    path: str, parts: tuple[str, ...]
) -> None:
    assert split_path(path) == parts


# --- properties ---------------------------------------------------------------------------------

PATH_ALPHABET = st.sampled_from(["a", "B", ".", "/", "\x00", "\x01", " ", NFC_E, "-", "git"])
COMPONENT = st.text(
    alphabet=st.characters(blacklist_characters="/", blacklist_categories=["Cs"]),
    min_size=0,
    max_size=12,
)


@given(st.lists(PATH_ALPHABET, max_size=30).map("".join))
def test_an_accepted_path_never_has_a_dotdot_a_nul_or_a_leading_slash(path: str) -> None:
    try:
        parts = split_path(path)
    except InvalidSecretPath:
        return
    assert ".." not in parts
    assert "\x00" not in path
    assert not path.startswith("/")
    assert join(parts) == path.rstrip("/")


@given(st.lists(COMPONENT, max_size=6), st.integers(min_value=0, max_value=6))
def test_split_path_never_accepts_a_dotdot_component(parts: list[str], where: int) -> None:
    parts.insert(min(where, len(parts)), "..")
    with pytest.raises(InvalidSecretPath):
        split_path("/".join(parts))


@given(st.text(max_size=40), st.integers(min_value=0, max_value=40))
def test_split_path_never_accepts_a_nul_byte(text: str, where: int) -> None:
    cut = min(where, len(text))
    with pytest.raises(InvalidSecretPath):
        split_path(text[:cut] + "\x00" + text[cut:])


@given(st.text(max_size=40))
def test_split_path_never_accepts_a_leading_slash(text: str) -> None:
    with pytest.raises(InvalidSecretPath):
        split_path("/" + text)


@given(st.text(min_size=1, max_size=20))
def test_fold_is_the_same_for_nfc_and_nfd_and_for_ascii_case(name: str) -> None:
    assert fold(unicodedata.normalize("NFD", name)) == fold(unicodedata.normalize("NFC", name))
    ascii_only = name.encode("ascii", "ignore").decode()
    assert fold(ascii_only.upper()) == fold(ascii_only.lower())


# --- vault names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["work", "Work-2", "a", "0", "a.b_c-d", "x" * 128])
def test_valid_vault_names_are_accepted(name: str) -> None:
    assert check_vault_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", ".hidden", "-x", "_x", "a b", "a/b", "a:b", "x" * 129, f"caf{NFC_E}", "a\n"],
)
def test_invalid_vault_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidVaultName):
        check_vault_name(name)


# --- collisions inside a vault ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Key", "key"),
        ("Key", "KEY"),
        (f"caf{NFC_E}", f"caf{NFD_E}"),
        (f"caf{NFD_E}", f"CAF{NFC_E.upper()}"),
        ("stra\u00dfe", "STRASSE"),
        ("Key", "\u212aey"),  # KELVIN SIGN: NFC maps it to 'K'
    ],
    ids=["lower", "upper", "nfd", "nfd-upper", "sharp-s", "kelvin"],
)
def test_a_name_differing_only_by_case_or_normalisation_collides_in_one_directory(
    fresh_node: NodeFixture, first: str, second: str
) -> None:
    vault = fresh_node.node.vaults.create("v")
    vault.write(f"dir/{first}", b"1")
    head = vault.head()
    with pytest.raises(NameCollision) as caught:
        vault.write(f"dir/{second}", b"2")
    assert caught.value.exit_code == 36
    assert vault.head() == head
    assert [e.path for e in vault.ls("dir")] == [f"dir/{first}"]


@pytest.mark.parametrize(
    ("first", "second"),
    [("Key", "key"), (f"caf{NFC_E}", f"caf{NFD_E}")],
    ids=["case", "nfd"],
)
def test_names_differing_by_case_or_normalisation_are_allowed_in_different_directories(
    fresh_node: NodeFixture, first: str, second: str
) -> None:
    vault = fresh_node.node.vaults.create("v")
    vault.write(f"one/{first}", b"1")
    vault.write(f"two/{second}", b"2")
    assert vault.read(f"one/{first}") == b"1"
    assert vault.read(f"two/{second}") == b"2"


def test_a_name_differing_only_by_case_from_a_directory_collides(fresh_node: NodeFixture) -> None:
    vault = fresh_node.node.vaults.create("v")
    vault.write("Team/key", b"1")
    with pytest.raises(NameCollision):
        vault.write("team", b"2")
    with pytest.raises(NameCollision):
        vault.write("TEAM/other", b"3")
    with pytest.raises(NameCollision):
        vault.mkdir("team")


def test_colliding_names_within_one_import_are_refused_and_nothing_lands(
    fresh_node: NodeFixture,
) -> None:
    vault = fresh_node.node.vaults.create("v")
    head = vault.head()
    with pytest.raises(NameCollision):
        vault.write_many([("d/A", b"1"), ("d/a", b"2")], "Import 2 secrets into d.")
    with pytest.raises(NameCollision):
        vault.write_many([(f"d/{NFC_E}", b"1"), (f"d/{NFD_E}", b"2")], "Import 2 secrets.")
    assert vault.head() == head
    assert vault.ls("", recursive=True) == []


def test_moving_or_copying_into_a_directory_with_a_colliding_name_is_refused(
    fresh_node: NodeFixture,
) -> None:
    vault = fresh_node.node.vaults.create("v")
    vault.write("dir/token", b"1")
    vault.write("TOKEN", b"2")
    head = vault.head()
    with pytest.raises(NameCollision):
        vault.move_within("TOKEN", "dir")
    with pytest.raises(NameCollision):
        vault.move_within("TOKEN", "dir/Token", copy=True)
    assert vault.head() == head


def test_the_exact_same_name_is_an_update_not_a_collision(fresh_node: NodeFixture) -> None:
    vault = fresh_node.node.vaults.create("v")
    vault.write(f"caf{NFC_E}", b"1")
    vault.write(f"caf{NFC_E}", b"2")
    assert vault.read(f"caf{NFC_E}") == b"2"


@pytest.mark.parametrize(
    "path",
    [
        "con",
        "CON",
        "a/nul.txt",
        "Aux",
        "aux .env/x",
        "com1",
        "COM9.json",
        "lpt\u00b2",
        "conin$",
        "prn:stream",
        "trailing.",
        "a/trailing ",
        "C:x",
        "z:",
        "db/d:secret",
    ],
)
def test_windows_device_and_drive_names_are_refused(path: str) -> None:
    with pytest.raises(InvalidSecretPath, match="Windows device or drive"):
        split_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "console",
        "common/x",
        "auxiliary",
        "nullable.txt",
        "com0",
        "com10",
        "lpt",
        "db:password",
        "host:8080",
        "a.con",
        "x/connect",
    ],
)
def test_names_that_only_look_like_windows_devices_are_allowed(path: str) -> None:
    assert split_path(path) == tuple(path.split("/"))
