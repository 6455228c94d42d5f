"""Random passwords and passphrases from the operating system's CSPRNG (``secrets``)."""

from __future__ import annotations

import secrets
import string

from polykey.errors import InvalidInput

CHARSETS = {
    "alnum": string.ascii_letters + string.digits,
    "alpha": string.ascii_letters,
    "digits": string.digits,
    "hex": "0123456789abcdef",
    "ascii": string.ascii_letters + string.digits + string.punctuation,
}


def password(length: int, charset: str = "ascii") -> str:
    """``length`` characters drawn uniformly from a named set or ``custom:CHARS``."""
    if charset.startswith("custom:"):
        chars = "".join(dict.fromkeys(charset.removeprefix("custom:")))
        if len(chars) < 2 or any(not c.isprintable() for c in chars):
            raise InvalidInput("a custom charset needs at least two printable characters")
    elif charset in CHARSETS:
        chars = CHARSETS[charset]
    else:
        raise InvalidInput(
            f"unknown charset {charset[:40]!r}",
            hint="Use alnum, alpha, digits, hex, ascii, or custom:CHARACTERS.",
        )
    return "".join(secrets.choice(chars) for _ in range(length))


def passphrase(words: int, separator: str = "-") -> str:
    """``words`` words drawn uniformly from the BIP39 English list (11 bits each)."""
    from mnemonic import Mnemonic

    wordlist = Mnemonic("english").wordlist
    return separator.join(secrets.choice(wordlist) for _ in range(words))
