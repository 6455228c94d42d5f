"""Ed25519 keys: from a 32-byte seed, signing, verifying and OpenSSH encodings."""

from __future__ import annotations

import base64
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SEED_BYTES = 32
PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64
SSH_KEY_TYPE = b"ssh-ed25519"


def ssh_string(data: bytes) -> bytes:
    """An SSH wire-format string: uint32 length, then the bytes (RFC 4251)."""
    return struct.pack(">I", len(data)) + data


def ssh_public_blob(public: bytes) -> bytes:
    """The SSH wire encoding of an Ed25519 public key (RFC 8709)."""
    return ssh_string(SSH_KEY_TYPE) + ssh_string(public)


def openssh_public_line(public: bytes, comment: str = "") -> str:
    """``ssh-ed25519 AAAA... [comment]``: the authorized_keys / known_hosts form."""
    text = "ssh-ed25519 " + base64.b64encode(ssh_public_blob(public)).decode("ascii")
    return f"{text} {comment}" if comment else text


class SigningKey:
    """An Ed25519 private key held in memory. Its repr never shows the key."""

    __slots__ = ("_key", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public: bytes = self._key.public_key().public_bytes_raw()

    def __repr__(self) -> str:
        return "SigningKey(<private key hidden>)"

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def seed(self) -> bytes:
        """The 32-byte private seed; only for sealing it into the node file."""
        return self._key.private_bytes_raw()

    def openssh_private_pem(self) -> bytes:
        """The unencrypted OpenSSH private key, in memory only (for the age identity)."""
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message`` by ``public``.

    Checked by libsodium (PyNaCl): twice as fast as OpenSSL's here, it lets other threads run
    meanwhile (a sigchain's or a clone's signatures are checked on a few threads), and it is
    the stricter of the two: non-canonical encodings and small-order keys are refused."""
    if len(public) != PUBLIC_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    from nacl.bindings import crypto_sign_open
    from nacl.exceptions import BadSignatureError, CryptoError

    try:
        crypto_sign_open(signature + message, public)
    except (BadSignatureError, CryptoError, ValueError):
        return False
    return True
