"""Secret paths and vault names: what is allowed, and the errors for what is not.

A secret path is relative, '/'-separated, each component 1..255 bytes of UTF-8 with no control
characters, never '.', '..' or '.git' (in any case, or as any filesystem could read it), never a
Windows device or drive name ('con', 'nul.txt', 'C:x'), and never a name reserved by Polykey
('.polykey*'). Two names that differ only by case or Unicode normalisation may not live in one
directory (they would collide on case-insensitive or normalising filesystems when exported).
"""

from __future__ import annotations

import re
import unicodedata

from polykey.errors import InvalidInput
from polykey.store.records import Namespace

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_DEPTH = 64
RESERVED_PREFIX = ".polykey"
_VAULT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class InvalidSecretPath(InvalidInput):
    """Not a valid secret path."""

    hint = (
        "Use a relative path like db/password: no '..', '.', '.git', leading '/', controls, "
        "or Windows device names (con, nul.txt)."
    )


class InvalidVaultName(InvalidInput):
    """Not a valid vault name."""

    hint = (
        "Vault names are 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit."
    )


def _show(text: str) -> str:
    shown = text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 80 else shown[:77] + "..."


def check_vault_name(name: str) -> str:
    if not _VAULT_NAME.fullmatch(name):
        raise InvalidVaultName(repr(_show(name)))
    return name


def split_path(path: str, *, allow_root: bool = False) -> tuple[str, ...]:
    """The components of a secret path, after checking every rule."""
    if "\x00" in path:
        raise InvalidSecretPath(f"{_show(path)!r} contains a NUL byte")
    if path.startswith("/"):
        raise InvalidSecretPath(f"{_show(path)!r} is absolute")
    stripped = path.rstrip("/")
    if not stripped:
        if allow_root:
            return ()
        raise InvalidSecretPath("the path is empty")
    try:
        size = len(stripped.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidSecretPath(f"{_show(path)!r} is not valid Unicode text") from None
    if size > MAX_PATH_BYTES:
        raise InvalidSecretPath(f"longer than {MAX_PATH_BYTES} bytes")
    parts = tuple(stripped.split("/"))
    if len(parts) > MAX_DEPTH:
        raise InvalidSecretPath(f"deeper than {MAX_DEPTH} folders")
    for part in parts:
        check_component(part, path)
    return parts


def check_component(part: str, path: str = "") -> None:
    where = f" in {_show(path)!r}" if path else ""
    if part == "":
        raise InvalidSecretPath(f"empty component{where}")
    if part in (".", ".."):
        raise InvalidSecretPath(f"{part!r} component{where}")
    if part.lower() == ".git":
        raise InvalidSecretPath(f"'.git' component{where}")
    if git_special(part):
        raise InvalidSecretPath(f"{_show(part)!r} names a git file{where}")
    if windows_reserved(part):
        raise InvalidSecretPath(f"{_show(part)!r} names a Windows device or drive{where}")
    if part.lower().startswith(RESERVED_PREFIX):
        raise InvalidSecretPath(f"{_show(part)!r} is reserved by Polykey{where}")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in part):
        raise InvalidSecretPath(f"control character{where}: {_show(part)!r}")
    try:
        encoded = part.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSecretPath(f"not valid UTF-8{where}") from None
    if len(encoded) > MAX_COMPONENT_BYTES:
        raise InvalidSecretPath(f"a component is longer than {MAX_COMPONENT_BYTES} bytes{where}")


# Characters some filesystems ignore in names (HFS+), as git itself lists them.
_IGNORABLE = dict.fromkeys(
    map(
        ord,
        "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
        "\u206a\u206b\u206c\u206d\u206e\u206f\ufeff",
    )
)
_GIT_NAMES = {".git", "git~1", ".gitmodules", "gitmod~1"}


def git_special(name: str) -> bool:
    """Whether a filesystem or git could read ``name`` as `.git` or a git control file
    (case, HFS+ ignorable characters, NTFS trailing dots and spaces, NTFS alternate streams
    such as `.git::$INDEX_ALLOCATION`, 8.3 short names), or, where a backslash separates
    folders (Windows), as a path holding `.git`, `.` or `..` (`..\\x`, `a\\.git`)."""
    for piece in name.split("\\"):
        plain = piece.split(":", 1)[0].translate(_IGNORABLE).rstrip(". ").lower()
        if plain in _GIT_NAMES:
            return True
        if "\\" in name and piece in ("", ".", ".."):
            return True
    return False


# Device names Windows opens whatever the folder and extension (git's is_valid_win32_path).
_DEVICE = re.compile(
    r"(con|prn|aux|nul|conin\$|conout\$|(com|lpt)[1-9\u00b9\u00b2\u00b3]) *(\.|:|$)"
)


def windows_reserved(name: str) -> bool:
    """Whether Windows would open ``name`` as a device (`con`, `nul.txt`, `COM1.env`, `aux .x`),
    read it as a path on a drive (`C:x`), or drop its trailing dots or spaces (`a.`, `a `): a
    vault holding one could not be checked out, exported or imported again there."""
    if len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        return True
    if name.endswith((".", " ")):  # Windows drops them: `a.` and `a ` would both be `a`
        return True
    return _DEVICE.match(name.lower()) is not None


def fold(name: str) -> str:
    """The form under which two names collide: NFC, then case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def join(parts: tuple[str, ...]) -> str:
    return "/".join(parts)


def objects_ns(vault_id: str) -> Namespace:
    """The write-once namespace of a vault's git objects."""
    return Namespace(f"vault/{vault_id}/objects", immutable=True)


def refs_ns(vault_id: str) -> Namespace:
    """The namespace of a vault's refs."""
    return Namespace(f"vault/{vault_id}/refs")
