"""z-base-32 (Zooko's human-oriented base-32): how Pkarr writes an Ed25519 key as a DNS name.

32 bytes are 256 bits, written as 52 characters (the last carries 4 bits of zero padding, which
decoding insists on, so that one key has one name). docs/spec/discovery.md has the vectors.
"""

from __future__ import annotations

ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
KEY_BYTES = 32
KEY_CHARS = 52


class NotZBase32(ValueError):
    """Not z-base-32 of 32 bytes."""


def encode(data: bytes) -> str:
    """The z-base-32 of ``data`` (bits padded with zeros to a multiple of five)."""
    bits = len(data) * 8
    number = int.from_bytes(data, "big")
    chars = -(-bits // 5)
    number <<= chars * 5 - bits
    return "".join(ALPHABET[(number >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def decode_key(text: str) -> bytes:
    """The 32 bytes a 52-character name stands for; NotZBase32 for anything else (upper case,
    another length, a character outside the alphabet, padding bits that are not zero)."""
    if len(text) != KEY_CHARS:
        raise NotZBase32(f"a key is {KEY_CHARS} characters, not {len(text)}")
    number = 0
    for char in text:
        value = _VALUE.get(char)
        if value is None:
            raise NotZBase32(f"{char!r} is not a z-base-32 character")
        number = number << 5 | value
    spare = KEY_CHARS * 5 - KEY_BYTES * 8
    if number & ((1 << spare) - 1):
        raise NotZBase32("the padding bits are not zero")
    return (number >> spare).to_bytes(KEY_BYTES, "big")
