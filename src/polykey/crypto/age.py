"""The age file format (age-encryption.org/v1) with ssh-ed25519 recipients, through pyrage.

A NodeId is an Ed25519 public key, which is exactly age's ``ssh-ed25519`` recipient type, so a
file encrypted to a NodeId can also be opened by the stock ``age``/``rage`` tools with the node's
OpenSSH private key, and a file encrypted with ``age -R`` to the node's public key opens here.
"""

from __future__ import annotations

import pyrage

from polykey.crypto.signing import SigningKey, openssh_public_line


class AgeFailed(ValueError):
    """The age file could not be decrypted by this identity."""


def encrypt(plaintext: bytes, recipients: list[bytes], *, armor: bool = False) -> bytes:
    """Encrypt to one or more Ed25519 public keys."""
    if not recipients:
        raise ValueError("at least one recipient is needed")
    parsed = [pyrage.ssh.Recipient.from_str(openssh_public_line(pub)) for pub in recipients]
    result: bytes = pyrage.encrypt(plaintext, parsed, armored=armor)
    return result


def decrypt(ciphertext: bytes, key: SigningKey) -> bytes:
    """Decrypt an age file (binary or armored) with the node's key."""
    identity = pyrage.ssh.Identity.from_buffer(key.openssh_private_pem())
    try:
        result: bytes = pyrage.decrypt(ciphertext, [identity])
    except pyrage.DecryptError as exc:
        raise AgeFailed(str(exc).splitlines()[0] if str(exc) else "decryption failed") from None
    return result
