"""The age file format (age-encryption.org/v1) with ssh-ed25519 recipients, through pyrage.

A NodeId is an Ed25519 public key, which is exactly age's ``ssh-ed25519`` recipient type, so a
file encrypted to a NodeId can also be opened by the stock ``age``/``rage`` tools with the node's
OpenSSH private key, and a file encrypted with ``age -R`` to the node's public key opens here.
"""

from __future__ import annotations

import base64
import binascii

import pyrage

from polykey.crypto.signing import SigningKey, openssh_public_line

MAX_HEADER_BYTES = 16 * 1024
"""Headers are bounded before pyrage sees them: rage parses long stanza bodies in quadratic time
(str4d/rage#368). 16 KiB holds about a hundred ssh-ed25519 recipients."""
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"


class AgeFailed(ValueError):
    """The age file could not be decrypted by this identity."""


def encrypt(plaintext: bytes, recipients: list[bytes], *, armor: bool = False) -> bytes:
    """Encrypt to one or more Ed25519 public keys."""
    if not recipients:
        raise ValueError("at least one recipient is needed")
    parsed = [pyrage.ssh.Recipient.from_str(openssh_public_line(pub)) for pub in recipients]
    result: bytes = pyrage.encrypt(plaintext, parsed, armored=armor)
    return result


def check_header(ciphertext: bytes) -> None:
    """Refuse a file whose header does not end within MAX_HEADER_BYTES."""
    head = ciphertext[: MAX_HEADER_BYTES + 64]
    if ciphertext.lstrip().startswith(ARMOR_BEGIN):
        lines = ciphertext.lstrip().splitlines()[1:]
        chunks: list[bytes] = []
        size = 0
        for line in lines:
            if line.startswith(b"-----END") or size > MAX_HEADER_BYTES + 64:
                break
            chunks.append(line.strip())
            size += len(line) * 3 // 4
        try:
            head = base64.b64decode(b"".join(chunks)[: (MAX_HEADER_BYTES + 64) // 3 * 4])
        except (binascii.Error, ValueError):
            raise AgeFailed("the armor is not valid base64") from None
    if not head.startswith(b"age-encryption.org/v1\n"):
        raise AgeFailed("not an age file (version 1)")
    end = head.find(b"\n---", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise AgeFailed(f"the age header is longer than {MAX_HEADER_BYTES} bytes")


def decrypt(ciphertext: bytes, key: SigningKey) -> bytes:
    """Decrypt an age file (binary or armored) with the node's key."""
    check_header(ciphertext)
    identity = pyrage.ssh.Identity.from_buffer(key.openssh_private_pem())
    try:
        result: bytes = pyrage.decrypt(ciphertext, [identity])
    except pyrage.DecryptError as exc:
        raise AgeFailed(str(exc).splitlines()[0] if str(exc) else "decryption failed") from None
    return result
