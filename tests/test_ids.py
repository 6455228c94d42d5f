"""NodeId text form: multibase base32hex ('v' prefix), lowercase, unpadded, strictly canonical."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.errors import InvalidInput, InvalidNodeId
from polykey.ids import NODE_ID_BYTES, NodeId, decode_node_id, encode_node_id, node_id_from_bytes

ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # RFC 4648 base32hex, lowercase
SAMPLE = NodeId(bytes(range(32)))
node_ids = st.binary(min_size=NODE_ID_BYTES, max_size=NODE_ID_BYTES).map(NodeId)


def refused(text: str) -> InvalidNodeId:
    with pytest.raises(InvalidNodeId) as caught:
        decode_node_id(text)
    return caught.value


# --- encoding -----------------------------------------------------------------------------------


@given(node_ids)
def test_encode_then_decode_round_trips(node_id: NodeId) -> None:
    text = encode_node_id(node_id)
    assert decode_node_id(text) == node_id


@given(node_ids)
def test_the_text_form_is_v_then_52_lowercase_base32hex_characters(node_id: NodeId) -> None:
    text = encode_node_id(node_id)
    assert len(text) == 53
    assert text[0] == "v"
    assert set(text[1:]) <= set(ALPHABET)
    assert "=" not in text


@given(node_ids)
def test_the_text_form_is_rfc_4648_base32hex(node_id: NodeId) -> None:
    expected = base64.b32hexencode(node_id).decode().rstrip("=").lower()
    assert encode_node_id(node_id) == "v" + expected


@given(node_ids, node_ids)
def test_distinct_node_ids_have_distinct_texts(a: NodeId, b: NodeId) -> None:
    assert (encode_node_id(a) == encode_node_id(b)) is (a == b)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (bytes(32), "v" + "0" * 52),
        (b"\xff" * 32, "v" + "v" * 51 + "g"),
        (bytes(31) + b"\x01", "v" + "0" * 51 + "g"),
        (b"\x80" + bytes(31), "vg" + "0" * 51),
        (b"\x08" + bytes(31), "v1" + "0" * 51),
    ],
    ids=["zeros", "ones", "last-bit", "first-bit", "fifth-bit"],
)
def test_known_encodings(raw: bytes, text: str) -> None:
    assert encode_node_id(NodeId(raw)) == text
    assert decode_node_id(text) == raw


def test_rfc_4648_base32hex_vector_foobar() -> None:
    # RFC 4648 section 10: BASE32-HEX("foobar") = "CPNMUOJ1E8======", embedded at the front.
    raw = NodeId(b"foobar" + bytes(26))
    assert encode_node_id(raw).startswith("vcpnmuoj1e8")


def test_node_id_from_bytes_accepts_32_bytes_only() -> None:
    assert node_id_from_bytes(bytes(range(32))) == SAMPLE
    for length in (0, 31, 33, 64):
        with pytest.raises(InvalidNodeId, match=f"got {length}"):
            node_id_from_bytes(bytes(length))


# --- non-canonical spellings --------------------------------------------------------------------


def test_uppercase_is_refused() -> None:
    text = encode_node_id(SAMPLE)
    assert text[1:] != text[1:].upper()
    refused(text.upper())
    refused("v" + text[1:].upper())


def test_a_single_uppercase_letter_is_refused() -> None:
    text = encode_node_id(SAMPLE)
    i = next(i for i, c in enumerate(text) if i > 0 and c.isalpha())
    refused(text[:i] + text[i].upper() + text[i + 1 :])


def test_padding_is_refused() -> None:
    text = encode_node_id(SAMPLE)
    refused(text + "====")
    refused(text + "=")
    refused(text[:-1] + "=")


@pytest.mark.parametrize("prefix", ["", "V", "z", "b", "u", "f", "m", "vv"])
def test_a_wrong_prefix_is_refused(prefix: str) -> None:
    text = encode_node_id(SAMPLE)
    refused(prefix + text[1:])


@pytest.mark.parametrize("cut", [1, 2, 8, 52])
def test_a_short_text_is_refused(cut: int) -> None:
    refused(encode_node_id(SAMPLE)[:-cut])


@pytest.mark.parametrize("extra", ["0", "00", "g", "\n", " ", "0" * 8])
def test_a_long_text_is_refused(extra: str) -> None:
    refused(encode_node_id(SAMPLE) + extra)


def test_surrounding_whitespace_is_refused() -> None:
    text = encode_node_id(SAMPLE)
    refused(" " + text)
    refused(text + " ")
    refused(" " + text[:-1])  # right length, but not canonical


def test_non_zero_trailing_bits_are_refused() -> None:
    # 32 bytes are 256 bits; 52 characters carry 260, so the last character has 4 unused bits.
    text = encode_node_id(SAMPLE)
    last = ALPHABET.index(text[-1])
    assert last & 0b1111 == 0
    for unused in range(1, 16):
        forged = text[:-1] + ALPHABET[last | unused]
        # A lenient decoder yields the very same bytes from the forged text.
        assert base64.b32hexdecode(forged[1:].upper() + "====") == SAMPLE
        refused(forged)


@given(node_ids, st.integers(min_value=1, max_value=15))
def test_non_zero_trailing_bits_are_refused_for_any_node_id(node_id: NodeId, unused: int) -> None:
    text = encode_node_id(node_id)
    forged = text[:-1] + ALPHABET[ALPHABET.index(text[-1]) | unused]
    refused(forged)


@pytest.mark.parametrize(
    "bad", ["w", "x", "y", "z", "W", "!", "-", "_", "+", "/", " ", "é", "\x00"]
)
def test_characters_outside_the_alphabet_are_refused(bad: str) -> None:
    text = encode_node_id(SAMPLE)
    refused(text[:10] + bad + text[11:])


@pytest.mark.parametrize(
    "lookalike",
    ["\u0131", "\u017f", "\u212a", "\uff10", "\u0660", "\u00b2"],
    ids=["dotless-i", "long-s", "kelvin", "fullwidth-0", "arabic-0", "superscript-2"],
)
def test_unicode_lookalikes_are_refused(lookalike: str) -> None:
    # Some of these upper- or lower-case to ASCII letters of the alphabet; none may pass.
    text = encode_node_id(NodeId(b"\x90" * 32))
    for i in (1, 20, 52):
        refused(text[:i] + lookalike + text[i + 1 :])


def test_the_empty_string_is_refused() -> None:
    error = refused("")
    assert error.detail == "''"


def test_a_bare_prefix_is_refused() -> None:
    refused("v")


def test_a_very_long_string_is_refused_with_a_short_message() -> None:
    error = refused("v" + "0" * 1_000_000)
    assert len(error.detail) <= 100
    assert len(str(error)) < 200
    assert "..." in error.detail


def test_the_refusal_names_the_text_and_gives_a_hint() -> None:
    error = refused("vnope")
    assert "'vnope'" in str(error)
    assert "52 base32hex" in error.user_hint
    assert isinstance(error, InvalidInput)
    assert error.exit_code == 3


@settings(max_examples=500)
@given(st.text(max_size=80))
def test_decode_accepts_only_texts_that_re_encode_to_themselves(text: str) -> None:
    try:
        node_id = decode_node_id(text)
    except InvalidNodeId:
        return
    assert encode_node_id(node_id) == text


@settings(max_examples=500)
@given(st.text(alphabet=ALPHABET + ALPHABET.upper() + "=wxyz", min_size=52, max_size=52))
def test_decode_of_near_miss_texts_is_canonical_or_refused(body: str) -> None:
    text = "v" + body
    try:
        node_id = decode_node_id(text)
    except InvalidNodeId:
        assert (
            body != body.lower()
            or "=" in body
            or set(body) - set(ALPHABET)
            or (ALPHABET.index(body[-1]) & 0b1111)
        )
        return
    assert encode_node_id(node_id) == text
    assert len(node_id) == NODE_ID_BYTES


def test_hex_digits_beyond_the_alphabet_are_checked_by_position() -> None:
    # 'v' is the last base32hex digit (31) and is valid in the body; 'w' is not.
    text = encode_node_id(NodeId(b"\xff" * 32))
    assert set(text[1:-1]) == {"v"}
    refused(text[:5] + "w" + text[6:])
