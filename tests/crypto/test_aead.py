"""AES-256-GCM sealing: round trips, every kind of damage refused, random nonces, hidden key."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.crypto.aead import KEY_BYTES, NONCE_BYTES, OVERHEAD, TAG_BYTES, SealBroken, Sealer

KEY = bytes(range(32))
AAD = b"v1|records|name|7"


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(KEY)


def test_seal_then_open_returns_the_plaintext(sealer: Sealer) -> None:
    sealed = sealer.seal(b"hunter2", AAD)
    assert sealer.open(sealed, AAD) == b"hunter2"


def test_a_second_sealer_with_the_same_key_opens_the_value() -> None:
    sealed = Sealer(KEY).seal(b"hunter2", AAD)
    assert Sealer(bytes(KEY)).open(sealed, AAD) == b"hunter2"


def test_empty_plaintext_and_empty_aad_round_trip(sealer: Sealer) -> None:
    sealed = sealer.seal(b"", b"")
    assert len(sealed) == OVERHEAD == NONCE_BYTES + TAG_BYTES
    assert sealer.open(sealed, b"") == b""


@settings(max_examples=50)
@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=256))
def test_round_trip_for_any_plaintext_and_aad(plaintext: bytes, aad: bytes) -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(plaintext, aad)
    assert len(sealed) == len(plaintext) + OVERHEAD
    assert sealer.open(sealed, aad) == plaintext


def test_the_ciphertext_does_not_contain_the_plaintext(sealer: Sealer) -> None:
    plaintext = b"a very recognisable secret value"
    assert plaintext not in sealer.seal(plaintext, AAD)


# --- known answers (NIST GCM spec, test cases 13 and 14: 256-bit zero key, zero IV) -------------


def test_nist_gcm_test_case_13_empty_plaintext() -> None:
    sealed = Sealer(bytes(32)).seal(b"", b"", nonce=bytes(12))
    assert sealed == bytes(12) + bytes.fromhex("530f8afbc74536b9a963b4f1c4cb738b")


def test_nist_gcm_test_case_14_one_zero_block() -> None:
    sealed = Sealer(bytes(32)).seal(bytes(16), b"", nonce=bytes(12))
    expected = "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919"
    assert sealed == bytes(12) + bytes.fromhex(expected)
    assert Sealer(bytes(32)).open(sealed, b"") == bytes(16)


# --- damage is refused --------------------------------------------------------------------------


def test_wrong_aad_is_refused(sealer: Sealer) -> None:
    sealed = sealer.seal(b"hunter2", AAD)
    for other in (b"", AAD + b"\x00", AAD[:-1], b"v1|records|name|8"):
        with pytest.raises(SealBroken):
            sealer.open(sealed, other)


def test_wrong_key_is_refused(sealer: Sealer) -> None:
    sealed = sealer.seal(b"hunter2", AAD)
    other_key = bytearray(KEY)
    other_key[-1] ^= 1
    with pytest.raises(SealBroken):
        Sealer(bytes(other_key)).open(sealed, AAD)


@settings(max_examples=200)
@given(data=st.data())
def test_any_flipped_bit_is_refused(data: st.DataObject) -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(b"some secret bytes", AAD)
    position = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1), label="byte")
    bit = data.draw(st.integers(min_value=0, max_value=7), label="bit")
    damaged = bytearray(sealed)
    damaged[position] ^= 1 << bit
    with pytest.raises(SealBroken):
        sealer.open(bytes(damaged), AAD)


def test_every_truncation_is_refused(sealer: Sealer) -> None:
    sealed = sealer.seal(b"some secret bytes", AAD)
    for length in range(len(sealed)):
        with pytest.raises(SealBroken):
            sealer.open(sealed[:length], AAD)


def test_a_value_shorter_than_nonce_and_tag_is_refused_as_too_short(sealer: Sealer) -> None:
    for length in (0, 1, NONCE_BYTES, OVERHEAD - 1):
        with pytest.raises(SealBroken, match="shorter"):
            sealer.open(b"\x00" * length, AAD)


def test_an_appended_byte_is_refused(sealer: Sealer) -> None:
    sealed = sealer.seal(b"hunter2", AAD)
    with pytest.raises(SealBroken):
        sealer.open(sealed + b"\x00", AAD)


def test_a_nonce_taken_from_another_sealed_value_is_refused(sealer: Sealer) -> None:
    first = sealer.seal(b"hunter2", AAD)
    second = sealer.seal(b"hunter2", AAD)
    spliced = second[:NONCE_BYTES] + first[NONCE_BYTES:]
    with pytest.raises(SealBroken):
        sealer.open(spliced, AAD)


def test_seal_broken_does_not_chain_the_library_exception(sealer: Sealer) -> None:
    sealed = sealer.seal(b"hunter2", AAD)
    with pytest.raises(SealBroken) as caught:
        sealer.open(sealed, b"other")
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# --- nonces -------------------------------------------------------------------------------------


def test_sealing_twice_gives_different_ciphertexts(sealer: Sealer) -> None:
    first = sealer.seal(b"hunter2", AAD)
    second = sealer.seal(b"hunter2", AAD)
    assert first != second
    assert sealer.open(first, AAD) == sealer.open(second, AAD) == b"hunter2"


def test_nonces_are_random_and_never_repeat(sealer: Sealer) -> None:
    nonces = [sealer.seal(b"", b"")[:NONCE_BYTES] for _ in range(2000)]
    assert len(set(nonces)) == len(nonces)
    assert all(len(n) == NONCE_BYTES for n in nonces)
    # Every nonce byte position varies: a counter or a constant prefix would show here.
    for i in range(NONCE_BYTES):
        assert len({n[i] for n in nonces}) > 100


def test_an_explicit_nonce_is_used_verbatim(sealer: Sealer) -> None:
    nonce = os.urandom(NONCE_BYTES)
    sealed = sealer.seal(b"x", AAD, nonce=nonce)
    assert sealed[:NONCE_BYTES] == nonce
    assert sealer.seal(b"x", AAD, nonce=nonce) == sealed


@pytest.mark.parametrize("length", [0, 8, 11, 13, 16])
def test_an_explicit_nonce_of_the_wrong_length_is_refused(sealer: Sealer, length: int) -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        sealer.seal(b"x", AAD, nonce=b"\x00" * length)


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_a_key_that_is_not_32_bytes_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        Sealer(b"k" * length)
    assert KEY_BYTES == 32


# --- the key never shows ------------------------------------------------------------------------


def test_repr_and_str_hide_the_key() -> None:
    key = bytes.fromhex("deadbeef" * 8)
    sealer = Sealer(key)
    for shown in (repr(sealer), str(sealer), f"{sealer!r}"):
        assert "deadbeef" not in shown.lower()
        assert "\\xde" not in shown
        assert repr(key) not in shown
        assert "hidden" in shown


def test_a_sealer_has_no_instance_dict_exposing_the_key() -> None:
    assert not hasattr(Sealer(KEY), "__dict__")
