"""The recovery code: 24 English BIP39 words that carry 256 bits of entropy.

The BIP39 seed of the code (PBKDF2-HMAC-SHA512, 2048 rounds, empty passphrase) gives the root key
(its first 32 bytes are the Ed25519 seed, as in the original Polykey, so one code yields the same
NodeId in both) and, through HKDF, the key that wraps the node file's data key.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from polykey.errors import InvalidRecoveryCode

if TYPE_CHECKING:
    from mnemonic import Mnemonic

WORDS = 24
ENTROPY_BITS = 256


@cache
def _bip39() -> Mnemonic:
    from mnemonic import Mnemonic

    return Mnemonic("english")


@dataclass(frozen=True)
class RecoveryCode:
    """A validated recovery code. Its repr never shows the words."""

    words: str = field(repr=False)

    def __repr__(self) -> str:
        return "RecoveryCode(<24 words hidden>)"

    def __str__(self) -> str:
        return self.words

    def seed(self) -> bytes:
        """The 64-byte BIP39 seed (empty passphrase)."""
        return bytes(_bip39().to_seed(self.words, passphrase=""))


def generate() -> RecoveryCode:
    return RecoveryCode(_bip39().generate(strength=ENTROPY_BITS))


def parse(text: str) -> RecoveryCode:
    """Normalise spacing and case, then check the words and the BIP39 checksum."""
    words = unicodedata.normalize("NFKD", text).lower().split()
    if len(words) != WORDS:
        raise InvalidRecoveryCode(f"expected {WORDS} words, got {len(words)}")
    wordlist = set(_bip39().wordlist)
    unknown = [i for i, w in enumerate(words, 1) if w not in wordlist]
    if unknown:  # by position: the words are the secret, and are never repeated back
        places = ", ".join(str(i) for i in unknown)
        noun = "word" if len(unknown) == 1 else "words"
        raise InvalidRecoveryCode(
            f"{noun} {places} of {WORDS} {'is' if len(unknown) == 1 else 'are'} not in the "
            "BIP39 English list (a misspelling?)",
            hint="Each word is in the BIP39 English list; its first four letters identify it.",
        )
    joined = " ".join(words)
    if not _bip39().check(joined):
        raise InvalidRecoveryCode("the checksum does not match; a word is wrong or misplaced")
    return RecoveryCode(joined)
