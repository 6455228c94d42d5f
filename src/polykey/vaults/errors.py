"""The vault layer's errors (exit codes 30-39)."""

from __future__ import annotations

from polykey.errors import InvalidInput, PolykeyError


class VaultError(PolykeyError):
    """A vault operation failed."""

    exit_code = 30


class VaultNotFound(VaultError):
    """No such vault."""

    exit_code = 31
    hint = "List the vaults with `pk vaults list`."


class VaultExists(VaultError):
    """A vault with this name already exists."""

    exit_code = 32
    hint = "Choose another name, or rename the existing vault with `pk vaults rename`."


class SecretNotFound(VaultError):
    """No such secret."""

    exit_code = 33
    hint = "List the secrets with `pk secrets ls VAULT -R`."


class SecretExists(VaultError):
    """The destination already exists."""

    exit_code = 34
    hint = "Add --force to replace it."


class IsADirectory(VaultError):
    """The path is a directory."""

    exit_code = 35
    hint = "Name a secret inside it, or use -r to act on the whole directory."


class NotADirectory(VaultError):
    """A component of the path is a secret, not a directory."""

    exit_code = 35
    hint = "A secret cannot contain other secrets; choose another path."


class NameCollision(VaultError):
    """A name that differs only by case or Unicode normalisation already exists here."""

    exit_code = 36
    hint = "Use the existing name exactly, or choose a name that differs by more than case."


class RevisionNotFound(VaultError):
    """No such revision in this vault."""

    exit_code = 37
    hint = "List the revisions with `pk vaults log VAULT`."


class InvalidTag(InvalidInput):
    """Not a valid tag."""

    hint = "Tags are 1-64 letters, digits, '.', '_', ':' or '-'."


class BrokenHistory(VaultError):
    """The vault's history names an object of the wrong type."""

    hint = (
        "The node file itself is intact: a peer sent objects that do not fit together, and "
        "`pk node check` lists them. Copy the secrets that still read into a new vault, or "
        "clone the vault again from a node that holds a whole copy."
    )


class BadTagFile(VaultError):
    """The vault's tag file is not valid."""

    hint = (
        "Its secret tags read as none. The next `pk tags add` or `pk tags rm` in this vault "
        "replaces the file; the old one stays in the vault's history. Other changes keep it."
    )


class TagFileFull(VaultError):
    """The vault's secret tags would not fit in its tag file."""

    hint = "A vault's tag file holds at most 8 MiB of tags; remove some tags first."


class ReadOnlyClone(VaultError):
    """This clone is read-only here: its origin takes no changes from this node."""

    exit_code = 38
    hint = (
        "A change made here could never reach the other node, and would part this copy from "
        "it. Ask its owner for push (`pk vaults share VAULT NODEID --perm push`, then "
        "`pk vaults pull VAULT`), or keep your own secrets in a vault of your own."
    )


class UndoConflict(VaultError):
    """The commit cannot be undone alone."""

    exit_code = 37
    hint = "Look at the vault's history with `pk vaults log`."
