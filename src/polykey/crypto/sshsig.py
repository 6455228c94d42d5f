"""OpenSSH signatures (PROTOCOL.sshsig): what ``ssh-keygen -Y sign`` writes and git uses.

A signature binds a namespace ("file" for `pk keys sign`, "git" for commits) so that a signature
made for one purpose cannot be replayed for another. Only Ed25519 keys and SHA-512 are produced;
SHA-256 is accepted on verify, as the format allows.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from polykey.crypto.signing import SSH_KEY_TYPE, SigningKey, ssh_public_blob, ssh_string, verify

MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
_HASHES = {b"sha512": hashlib.sha512, b"sha256": hashlib.sha256}
MAX_ARMORED_BYTES = 16 * 1024


class MalformedSignature(ValueError):
    """The bytes are not an SSH signature this implementation accepts."""


def _signed_data(namespace: bytes, hash_name: bytes, message_hash: bytes) -> bytes:
    return (
        MAGIC
        + ssh_string(namespace)
        + ssh_string(b"")
        + ssh_string(hash_name)
        + ssh_string(message_hash)
    )


def sign(key: SigningKey, message: bytes, namespace: str) -> str:
    """An armored SSH signature of ``message`` in ``namespace``."""
    if not namespace:
        raise ValueError("an SSH signature needs a namespace")
    ns = namespace.encode()
    digest = hashlib.sha512(message).digest()
    raw_sig = key.sign(_signed_data(ns, b"sha512", digest))
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + ssh_string(ssh_public_blob(key.public))
        + ssh_string(ns)
        + ssh_string(b"")
        + ssh_string(b"sha512")
        + ssh_string(ssh_string(SSH_KEY_TYPE) + ssh_string(raw_sig))
    )
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > len(self.data):
            raise MalformedSignature("truncated")
        self.pos = pos + n
        return self.data[pos : pos + n]

    def string(self) -> bytes:
        pos = self.pos + 4
        if pos > len(self.data):
            raise MalformedSignature("truncated")
        end = pos + int.from_bytes(self.data[pos - 4 : pos], "big")
        if end > len(self.data):
            raise MalformedSignature("truncated")
        self.pos = end
        return self.data[pos:end]

    def done(self) -> None:
        if self.pos != len(self.data):
            raise MalformedSignature("trailing bytes")


def parse(armored: str | bytes) -> tuple[bytes, str, bytes, bytes]:
    """(public key, namespace, hash name, raw signature) of an armored SSH signature."""
    if len(armored) > MAX_ARMORED_BYTES:
        raise MalformedSignature("too large")
    if isinstance(armored, bytes):
        try:
            armored = armored.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedSignature("not ASCII") from None
    lines = armored.strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != BEGIN or lines[-1].strip() != END:
        raise MalformedSignature("missing SSH SIGNATURE armor")
    try:
        blob = base64.b64decode("".join(line.strip() for line in lines[1:-1]), validate=True)
    except ValueError:
        raise MalformedSignature("bad base64") from None
    return _quick(blob) or _read_blob(blob)


def _read_blob(blob: bytes) -> tuple[bytes, str, bytes, bytes]:
    """The fields of a signature blob, read one by one (any layout), every rule checked."""
    r = _Reader(blob)
    if r.take(6) != MAGIC or struct.unpack(">I", r.take(4))[0] != VERSION:
        raise MalformedSignature("not an SSHSIG version 1 blob")
    pub = _Reader(r.string())
    namespace = r.string()
    r.string()  # reserved
    hash_name = r.string()
    sig = _Reader(r.string())
    r.done()
    if pub.string() != SSH_KEY_TYPE:
        raise MalformedSignature("only ssh-ed25519 signatures are supported")
    public = pub.string()
    pub.done()
    if sig.string() != SSH_KEY_TYPE:
        raise MalformedSignature("signature type is not ssh-ed25519")
    raw_sig = sig.string()
    sig.done()
    if hash_name not in _HASHES:
        raise MalformedSignature("unsupported hash algorithm")
    try:
        ns = namespace.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedSignature("namespace is not UTF-8") from None
    if not ns:
        raise MalformedSignature("the namespace is empty")
    return public, ns, hash_name, raw_sig


_ED25519_HEAD = (  # a blob's first 33 bytes when the key is an Ed25519 key: then the key
    MAGIC
    + struct.pack(">I", VERSION)
    + struct.pack(">I", 4 + len(SSH_KEY_TYPE) + 4 + 32)
    + ssh_string(SSH_KEY_TYPE)
    + struct.pack(">I", 32)
)
_ED25519_SIG = struct.pack(">I", 4 + len(SSH_KEY_TYPE) + 4 + 64) + ssh_string(SSH_KEY_TYPE)
_HASH_FIELDS = {ssh_string(b"") + ssh_string(name): name for name in _HASHES}  # reserved, hash
_SIG_LEN = struct.pack(">I", 64)


def _quick(blob: bytes) -> tuple[bytes, str, bytes, bytes] | None:
    """``parse``'s answer for a blob laid out as ``sign`` lays it out (an Ed25519 key and
    signature, the reserved field empty, a known hash), read at fixed places; None for any
    other blob, which the reader then takes apart field by field (and refuses, or not, as
    before: this returns only what it would return)."""
    if not blob.startswith(_ED25519_HEAD):
        return None
    at = len(_ED25519_HEAD) + 32
    start = at + 4
    at = start + int.from_bytes(blob[at:start], "big")
    namespace = blob[start:at]
    hash_name = _HASH_FIELDS.get(blob[at : at + 14])  # both names are 6 bytes long
    at += 14
    if (
        hash_name is None
        or len(blob) != at + len(_ED25519_SIG) + 4 + 64
        or not blob.startswith(_ED25519_SIG, at)
        or not blob.startswith(_SIG_LEN, at + len(_ED25519_SIG))
        or not namespace
    ):
        return None
    try:
        ns = namespace.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return blob[len(_ED25519_HEAD) : len(_ED25519_HEAD) + 32], ns, hash_name, blob[-64:]


def check(armored: str | bytes, message: bytes, namespace: str, public: bytes) -> bool:
    """True if ``armored`` is ``public``'s signature of ``message`` in ``namespace``.

    Raises :class:`MalformedSignature` when the signature cannot be parsed at all.
    """
    signer, ns, hash_name, raw_sig = parse(armored)
    if signer != public or ns != namespace:
        return False
    digest = _HASHES[hash_name](message).digest()
    return verify(public, _signed_data(ns.encode(), hash_name, digest), raw_sig)


def signed_by(armored: str | bytes, message: bytes, namespace: str, signers: set[bytes]) -> bool:
    """True if ``armored`` is a valid signature of ``message`` in ``namespace`` by one of
    ``signers`` (raw Ed25519 public keys); the signature is parsed once.

    Raises :class:`MalformedSignature` when the signature cannot be parsed at all.
    """
    signer, ns, hash_name, raw_sig = parse(armored)
    if signer not in signers or ns != namespace:
        return False
    digest = _HASHES[hash_name](message).digest()
    return verify(signer, _signed_data(ns.encode(), hash_name, digest), raw_sig)


def signer_of(armored: str | bytes, message: bytes, namespace: str) -> bytes | None:
    """The raw Ed25519 public key whose valid signature of ``message`` in ``namespace``
    ``armored`` is, or None (``signed_by`` is then whether it is one of the signers). For
    checking a signature before knowing who may sign.

    Raises :class:`MalformedSignature` when the signature cannot be parsed at all.
    """
    signer, ns, hash_name, raw_sig = parse(armored)
    if ns != namespace:
        return None
    digest = _HASHES[hash_name](message).digest()
    return signer if verify(signer, _signed_data(ns.encode(), hash_name, digest), raw_sig) else None
