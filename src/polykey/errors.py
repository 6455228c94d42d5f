"""The exception root of Polykey.

Every error a user can meet is a subclass of :class:`PolykeyError`. The class docstring's first
line is the message a user reads; ``hint`` says what to do about it; ``exit_code`` is the process
exit status the CLI returns (documented in docs/exit-codes.md). An instance may add a ``detail``
(for example the path or the record that is damaged), but never a secret: no password, key,
recovery code or secret value is ever put into an exception.
"""

from __future__ import annotations

from typing import ClassVar


class PolykeyError(Exception):
    """Polykey failed."""

    exit_code: ClassVar[int] = 1
    hint: ClassVar[str] = ""

    def __init__(self, detail: str = "", *, hint: str | None = None) -> None:
        self.detail = detail
        if hint is not None:
            self.instance_hint = hint
        super().__init__(self.message)

    @property
    def summary(self) -> str:
        doc = type(self).__doc__ or "Polykey failed."
        return doc.strip().splitlines()[0].rstrip(".")

    @property
    def message(self) -> str:
        return f"{self.summary}: {self.detail}" if self.detail else self.summary

    @property
    def user_hint(self) -> str:
        return getattr(self, "instance_hint", "") or type(self).hint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# --- usage and input -------------------------------------------------------------------------


class UsageError(PolykeyError):
    """Invalid usage."""

    exit_code = 2
    hint = "Run the command with --help to see how it is used."


class InvalidInput(PolykeyError):
    """Invalid input."""

    exit_code = 3


class InvalidNodeId(InvalidInput):
    """Not a valid NodeId."""

    hint = "A NodeId is 'v' followed by 52 base32hex characters, as `pk keys public` prints it."


class Interrupted(PolykeyError):
    """Interrupted."""

    exit_code = 130


# --- the node file -----------------------------------------------------------------------------


class NodeError(PolykeyError):
    """The node file could not be used."""

    exit_code = 10


class NodeNotFound(NodeError):
    """No node file here."""

    exit_code = 10
    hint = "Create one with `pk bootstrap`, or point to one with --node PATH or PK_NODE."


class NodeExists(NodeError):
    """A node file already exists here."""

    exit_code = 11
    hint = "Bootstrap refuses to overwrite a node; choose another path with --node PATH."


class WrongPassword(NodeError):
    """Wrong password."""

    exit_code = 12
    hint = "If the password is lost, set a new one with `pk keys recover` and the recovery code."


class WrongRecoveryCode(NodeError):
    """The recovery code does not belong to this node."""

    exit_code = 13
    hint = "Check the 24 words and their order; the code is the one `pk bootstrap` printed."


class InvalidRecoveryCode(WrongRecoveryCode):
    """Not a valid recovery code."""

    hint = "A recovery code is 24 English BIP39 words separated by spaces; check each word."


class NodeDamaged(NodeError):
    """The node file is damaged."""

    exit_code = 14
    hint = "Run `pk node check` to list the damage; restore the node from a backup node."


class NotANode(NodeError):
    """This file is not a Polykey node."""

    exit_code = 15
    hint = "Point --node or PK_NODE to a node file made by `pk bootstrap`."


class UnsupportedVersion(NodeError):
    """The node file has a format version this Polykey does not know."""

    exit_code = 16
    hint = "The node was written by a newer Polykey; upgrade Polykey to open it."


class UnsafeParameters(NodeError):
    """The node file asks for key-derivation parameters outside safe bounds."""

    exit_code = 17
    hint = "The header may be corrupt or hostile; the node was not unlocked."


class NodeBusy(NodeError):
    """The node file stayed locked by another process."""

    exit_code = 18
    hint = "Another Polykey process holds a long write; try again when it has finished."


class StorageError(NodeError):
    """The node file could not be written."""

    exit_code = 19
    hint = "Check that the disk has space and that the node file and its folder are writable."


# --- keys and crypto ----------------------------------------------------------------------------


class KeysError(PolykeyError):
    """A key operation failed."""

    exit_code = 20


class BadSignature(KeysError):
    """The signature does not verify."""

    exit_code = 21
    hint = "The file, the signature or the NodeId differ from what was signed."


class InvalidSignatureFormat(KeysError):
    """Not a valid signature."""

    exit_code = 22
    hint = "A signature is the SSH SIGNATURE block that `pk keys sign` writes."


class DecryptionFailed(KeysError):
    """The message could not be decrypted."""

    exit_code = 23
    hint = "It was not encrypted to this node, or it was changed or cut short after encryption."


class PasswordMismatch(InvalidInput):
    """The two passwords differ."""

    hint = "Type the same new password twice."


class EmptyPassword(InvalidInput):
    """The password is empty."""

    hint = "Choose a password; a passphrase of several words is best."
