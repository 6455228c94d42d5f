"""The recovery code: 24 BIP39 words, strict parsing, hidden repr, and the BIP39 seed."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic

from polykey.errors import InvalidRecoveryCode, WrongRecoveryCode
from polykey.ids import encode_node_id
from polykey.keys import recovery
from polykey.keys.recovery import ENTROPY_BITS, WORDS, RecoveryCode
from polykey.keys.root import RootKey

# The BIP39 reference vector for 256 bits of zero entropy (trezor/python-mnemonic vectors.json).
ZERO_CODE = " ".join(["abandon"] * 23 + ["art"])
# Its seed with the passphrase "TREZOR", as listed in the reference vectors.
ZERO_SEED_TREZOR = (
    "bda85446c68413707090a52022edd26a1c9462295029f2e60cd7c4f2bbd3097"
    "170af7a4d73245cafa9c3cca8d561a7c3de6f5d4a10be8ed2a5e608d68f92fcc8"
)
# Its seed with the empty passphrase (what Polykey uses): PBKDF2-HMAC-SHA512("mnemonic", 2048).
ZERO_SEED_EMPTY = (
    "408b285c123836004f4b8842c89324c1f01382450c0d439af345ba7fc49acf70"
    "5489c6fc77dbd4e3dc1dd8cc6bc9f043db8ada1e243c4a0eafb290d399480840"
)
# Regression vector: the NodeId of the zero code (Ed25519 seed = first 32 bytes of the seed).
ZERO_NODE_ID = "v3nhl5p2cqcpme9cju8pkksoe305aua8dt2da2ra81nip9oqe55gg"
# A second reference vector (trezor vectors.json, entropy 0x7f * 32).
LEGAL_CODE = (
    "legal winner thank year wave sausage worth useful legal winner thank year wave sausage "
    "worth useful legal winner thank year wave sausage worth title"
)
WORDLIST = Mnemonic("english").wordlist


# --- generate -----------------------------------------------------------------------------------


def test_generate_gives_24_words_from_the_bip39_list() -> None:
    code = recovery.generate()
    words = str(code).split(" ")
    assert len(words) == WORDS == 24
    assert all(word in WORDLIST for word in words)


def test_generated_codes_pass_the_checksum_and_parse_back_to_themselves() -> None:
    for _ in range(20):
        code = recovery.generate()
        assert Mnemonic("english").check(str(code))
        assert recovery.parse(str(code)) == code


def test_generated_codes_carry_256_bits_of_entropy() -> None:
    code = recovery.generate()
    assert ENTROPY_BITS == 256
    assert len(Mnemonic("english").to_entropy(str(code))) == ENTROPY_BITS // 8


def test_generated_codes_differ() -> None:
    codes = {str(recovery.generate()) for _ in range(50)}
    assert len(codes) == 50


# --- parse --------------------------------------------------------------------------------------


def test_parse_accepts_the_reference_vectors() -> None:
    assert str(recovery.parse(ZERO_CODE)) == ZERO_CODE
    assert str(recovery.parse(LEGAL_CODE)) == LEGAL_CODE


def test_parse_normalises_case_and_whitespace() -> None:
    words = ZERO_CODE.split()
    messy = "  \t" + "\n".join(w.upper() if i % 2 else w.title() for i, w in enumerate(words))
    messy = messy.replace("\n", "  \r\n ", 5) + " \n"
    code = recovery.parse(messy)
    assert str(code) == ZERO_CODE
    assert code == recovery.parse(ZERO_CODE)


def test_parse_accepts_non_breaking_spaces_and_tabs_between_words() -> None:
    text = "\u00a0".join(LEGAL_CODE.split(" ")[:12]) + "\t" + " ".join(LEGAL_CODE.split(" ")[12:])
    assert str(recovery.parse(text)) == LEGAL_CODE


@pytest.mark.parametrize("count", [0, 1, 12, 23, 25, 48])
def test_the_wrong_number_of_words_is_refused(count: int) -> None:
    text = " ".join((["abandon"] * 48)[:count])
    with pytest.raises(InvalidRecoveryCode) as caught:
        recovery.parse(text)
    assert caught.value.detail == f"expected 24 words, got {count}"


def test_a_valid_twelve_word_bip39_code_is_refused() -> None:
    twelve = " ".join(["abandon"] * 11 + ["about"])
    assert Mnemonic("english").check(twelve)
    with pytest.raises(InvalidRecoveryCode, match="expected 24 words, got 12"):
        recovery.parse(twelve)


def test_an_unknown_word_is_refused_without_echoing_it() -> None:
    words = LEGAL_CODE.split()
    words[5] = "sausagex"
    with pytest.raises(InvalidRecoveryCode) as caught:
        recovery.parse(" ".join(words))
    assert caught.value.detail == "word 6 of 24 is not in the BIP39 English list (a misspelling?)"
    assert "sausagex" not in str(caught.value)
    assert "legal" not in str(caught.value)
    words[9] = "wrongy"
    with pytest.raises(InvalidRecoveryCode, match="words 6, 10 of 24 are not in"):
        recovery.parse(" ".join(words))


def test_the_unknown_words_are_named_by_position() -> None:
    words = LEGAL_CODE.split()
    words[0], words[7], words[23] = "bitcoin", "ethereum", "polykey"
    with pytest.raises(InvalidRecoveryCode, match="words 1, 8, 24 of 24"):
        recovery.parse(" ".join(words))


def test_a_bad_checksum_is_refused() -> None:
    with pytest.raises(InvalidRecoveryCode) as caught:
        recovery.parse(" ".join(["abandon"] * 24))
    assert "checksum" in caught.value.detail
    assert "abandon" not in str(caught.value)


def test_two_swapped_words_fail_the_checksum() -> None:
    words = LEGAL_CODE.split()
    words[2], words[3] = words[3], words[2]
    with pytest.raises(InvalidRecoveryCode, match="checksum"):
        recovery.parse(" ".join(words))


def test_the_three_refusals_have_distinct_details() -> None:
    details = set()
    for text in (
        " ".join(["abandon"] * 23),
        " ".join(["abandon"] * 23 + ["zzzz"]),
        " ".join(["abandon"] * 24),
    ):
        with pytest.raises(InvalidRecoveryCode) as caught:
            recovery.parse(text)
        details.add(caught.value.detail)
    assert len(details) == 3


def test_invalid_recovery_code_is_a_wrong_recovery_code_with_its_own_hint() -> None:
    with pytest.raises(WrongRecoveryCode) as caught:
        recovery.parse("")
    error = caught.value
    assert isinstance(error, InvalidRecoveryCode)
    assert error.exit_code == 13
    assert "BIP39" in error.user_hint
    assert error.message.startswith("Not a valid recovery code")


@settings(max_examples=100)
@given(st.lists(st.sampled_from(WORDLIST), min_size=24, max_size=24))
def test_parse_accepts_exactly_the_codes_whose_checksum_holds(words: list[str]) -> None:
    text = " ".join(words)
    if Mnemonic("english").check(text):
        assert str(recovery.parse(text)) == text
    else:
        with pytest.raises(InvalidRecoveryCode, match="checksum"):
            recovery.parse(text)


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_parse_raises_only_invalid_recovery_code_on_arbitrary_text(text: str) -> None:
    try:
        code = recovery.parse(text)
    except InvalidRecoveryCode:
        return
    assert len(str(code).split(" ")) == 24


# --- repr and str -------------------------------------------------------------------------------


def test_repr_never_shows_the_words() -> None:
    code = recovery.parse(LEGAL_CODE)
    for shown in (repr(code), f"{code!r}", repr([code]), repr({"code": code})):
        for word in set(LEGAL_CODE.split()):
            assert word not in shown
        assert "hidden" in shown


def test_repr_of_a_generated_code_never_shows_its_words() -> None:
    # Single words may collide with the repr's own text ("word", "hidden" are BIP39 words), so
    # look for any two consecutive words of the code instead.
    for _ in range(20):
        code = recovery.generate()
        shown = repr(code)
        words = str(code).split()
        assert not any(f"{a} {b}" in shown for a, b in itertools.pairwise(words))
        assert shown == repr(recovery.generate())


def test_str_gives_the_words_for_showing_once() -> None:
    assert str(recovery.parse(LEGAL_CODE)) == LEGAL_CODE
    assert f"{recovery.parse(ZERO_CODE)}" == ZERO_CODE


def test_codes_compare_by_their_words() -> None:
    assert recovery.parse(LEGAL_CODE) == recovery.parse(LEGAL_CODE.upper())
    assert recovery.parse(LEGAL_CODE) != recovery.parse(ZERO_CODE)


def test_a_code_is_immutable() -> None:
    code = recovery.parse(ZERO_CODE)
    with pytest.raises(AttributeError):
        code.words = LEGAL_CODE  # type: ignore[misc]


# --- the seed -----------------------------------------------------------------------------------


def test_seed_is_64_bytes_and_deterministic() -> None:
    code = recovery.parse(LEGAL_CODE)
    assert len(code.seed()) == 64
    assert code.seed() == code.seed() == recovery.parse(LEGAL_CODE).seed()


def test_different_codes_have_different_seeds() -> None:
    assert recovery.parse(LEGAL_CODE).seed() != recovery.parse(ZERO_CODE).seed()
    assert recovery.generate().seed() != recovery.generate().seed()


def test_seed_of_the_zero_vector_is_the_bip39_seed_with_empty_passphrase() -> None:
    assert recovery.parse(ZERO_CODE).seed().hex() == ZERO_SEED_EMPTY


def test_seed_is_pbkdf2_hmac_sha512_of_the_words_as_bip39_defines() -> None:
    for text in (ZERO_CODE, LEGAL_CODE, str(recovery.generate())):
        expected = hashlib.pbkdf2_hmac("sha512", text.encode(), b"mnemonic", 2048)
        assert recovery.parse(text).seed() == expected


def test_the_reference_vector_with_its_passphrase_checks_the_derivation_used() -> None:
    # Cross-check of the BIP39 derivation itself against the published vector ("TREZOR").
    derived = hashlib.pbkdf2_hmac("sha512", ZERO_CODE.encode(), b"mnemonicTREZOR", 2048)
    assert derived.hex() == ZERO_SEED_TREZOR


def test_a_messy_spelling_has_the_same_seed_as_the_canonical_one() -> None:
    messy = "  " + LEGAL_CODE.upper().replace(" ", "\n  ") + "\t"
    assert recovery.parse(messy).seed() == recovery.parse(LEGAL_CODE).seed()


def test_the_zero_vector_gives_a_known_node_id() -> None:
    code = recovery.parse(ZERO_CODE)
    assert encode_node_id(RootKey.from_recovery_code(code).node_id) == ZERO_NODE_ID


def test_a_recovery_code_built_directly_has_the_same_seed_as_a_parsed_one() -> None:
    assert RecoveryCode(ZERO_CODE).seed() == recovery.parse(ZERO_CODE).seed()
