"""The root key pair of a node: Ed25519, its NodeId, signing files and encrypting to nodes."""

from __future__ import annotations

from dataclasses import dataclass, field

from polykey.crypto.signing import SigningKey, openssh_public_line
from polykey.errors import BadSignature, DecryptionFailed, InvalidSignatureFormat
from polykey.ids import NodeId, encode_node_id, node_id_from_bytes
from polykey.keys.recovery import RecoveryCode

FILE_NAMESPACE = "file"
"""The SSH signature namespace of `pk keys sign` (the one `ssh-keygen -Y sign -n file` uses)."""


@dataclass(frozen=True)
class RootKey:
    """The node's Ed25519 key pair. The private half never appears in a repr."""

    signing: SigningKey = field(repr=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> RootKey:
        return cls(SigningKey(seed))

    @classmethod
    def from_recovery_code(cls, code: RecoveryCode) -> RootKey:
        return cls.from_seed(code.seed()[:32])

    @property
    def node_id(self) -> NodeId:
        return node_id_from_bytes(self.signing.public)

    def openssh_public(self) -> str:
        return openssh_public_line(self.signing.public, encode_node_id(self.node_id))

    def sign_file(self, data: bytes) -> str:
        """An armored SSH signature (namespace "file") of ``data``."""
        from polykey.crypto import sshsig

        return sshsig.sign(self.signing, data, FILE_NAMESPACE)

    def decrypt(self, ciphertext: bytes) -> bytes:
        from polykey.crypto import age

        try:
            return age.decrypt(ciphertext, self.signing)
        except age.AgeFailed as exc:
            raise DecryptionFailed(str(exc)) from None


def verify_file(data: bytes, signature: bytes, signer: NodeId) -> None:
    """Raise unless ``signature`` is ``signer``'s SSH signature of ``data``."""
    from polykey.crypto import sshsig

    try:
        ok = sshsig.check(signature, data, FILE_NAMESPACE, signer)
    except sshsig.MalformedSignature as exc:
        raise InvalidSignatureFormat(str(exc)) from None
    if not ok:
        raise BadSignature(f"not signed by {encode_node_id(signer)}")


def encrypt_to(data: bytes, recipients: list[NodeId], *, armor: bool = False) -> bytes:
    """An age file that only the recipients' nodes can open."""
    from polykey.crypto import age

    return age.encrypt(data, [bytes(r) for r in recipients], armor=armor)
