"""Questions asked of a node's vaults, none of which commits: secrets found by name or by a line
they hold, what lies under VAULT[:PATH] (for `secrets env` and exports), tags counted across
vaults, names for shell completion, and the files of a pass-style entry's folder
(docs/spec/entries.md).

A vault whose tag file is malformed (a writer's doing) reads as having no secret tags and is
named as unreadable, so one bad vault does not hide the others' tags.
"""

from __future__ import annotations

import fnmatch
import re
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from polykey.errors import InvalidInput, PolykeyError
from polykey.vaults.errors import BadTagFile, IsADirectory
from polykey.vaults.paths import join, split_path

if TYPE_CHECKING:
    from polykey.vaults.registry import Vaults
    from polykey.vaults.vault import Vault

ENTRY_MARKERS = ("password", "otp", ".pass")
"""A folder directly holding one of these is an entry (interop/layout.py, docs/spec/entries.md)."""

RESERVED_PREFIX = b".polykey"  # the vault's own files (.polykey-tags, .polykey-dir)


@dataclass(frozen=True)
class Found:
    """A secret, by vault and path."""

    vault: str
    path: str


@dataclass(frozen=True)
class Line:
    """A line of a secret that matched (decoded, bad UTF-8 replaced)."""

    vault: str
    path: str
    text: str = field(repr=False)


@dataclass(frozen=True)
class Secret:
    """A secret read under a folder: ``name`` is its path relative to that folder."""

    vault: str
    path: str
    name: str
    value: bytes = field(repr=False)


@dataclass(frozen=True)
class Folder:
    """Every secret under a folder of a vault at one commit, by relative name, and their tags."""

    vault: str
    head: str
    files: list[tuple[str, bytes]] = field(repr=False)
    tags: dict[str, list[str]]


@dataclass(frozen=True)
class TagCount:
    secrets: int = 0
    vaults: int = 0


@dataclass(frozen=True)
class Tagged:
    """Secrets carrying a tag, and the vaults whose tags could not be read."""

    found: list[Found]
    unreadable: list[str]


@dataclass(frozen=True)
class TagCounts:
    """How many secrets and vaults carry each tag (sorted by tag), and the unreadable vaults."""

    counts: dict[str, TagCount]
    unreadable: list[str]


def _vaults(vaults: Vaults, only: Collection[str]) -> list[str]:
    return [i.name for i in vaults.all() if not only or i.name in only]


def find(vaults: Vaults, pattern: str, only: Collection[str] = ()) -> list[Found]:
    """Secrets whose path holds ``pattern`` (case folded); a pattern with ``*``, ``?`` or ``[``
    is a glob matched against the whole path or its last name. ``only``: these vaults."""
    glob = any(ch in pattern for ch in "*?[")
    needle = pattern.casefold()
    hits: list[Found] = []
    for name in _vaults(vaults, only):
        for e in vaults.open(name).ls("", recursive=True):
            if e.kind != "secret":
                continue
            path = e.path.casefold()
            if glob:
                last = path.rsplit("/", 1)[-1]
                ok = fnmatch.fnmatchcase(path, needle) or fnmatch.fnmatchcase(last, needle)
            else:
                ok = needle in path
            if ok:
                hits.append(Found(name, e.path))
    return hits


def grep(
    vaults: Vaults, pattern: str, *, ignore_case: bool = False, only: Collection[str] = ()
) -> list[Line]:
    """The lines of secrets that match the regular expression ``pattern`` (on bytes)."""
    try:
        regex = re.compile(pattern.encode(), re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise InvalidInput(f"bad regular expression: {exc}") from None
    hits: list[Line] = []
    for name in _vaults(vaults, only):
        vault = vaults.open(name)
        for e in vault.ls("", recursive=True):
            if e.kind != "secret" or e.blob is None:
                continue
            for line in vault.read_blob(e.blob).splitlines():
                if regex.search(line):
                    hits.append(Line(name, e.path, line.decode("utf-8", "replace")))
    return hits


def secrets_under(vault: Vault, path: str = "") -> list[Secret]:
    """Every secret under the folder ``path``, named relative to it; a ``path`` naming a
    secret gives that secret, named by its last part (`secrets env VAULT:PATH`)."""
    if path and vault.kind(path) == "secret":
        return [Secret(vault.name, path, path.rsplit("/", 1)[-1], vault.read(path))]
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    return [
        Secret(vault.name, e.path, e.path[len(prefix) :], vault.read_blob(e.blob))
        for e in vault.ls(path, recursive=True)
        if e.kind == "secret" and e.blob is not None
    ]


def read_folder(vault: Vault, path: str = "", rev: str | None = None) -> Folder:
    """Every secret under the folder ``path`` at ``rev`` with its value, and the tags of those
    secrets, all named relative to it (an export)."""
    head = vault.resolve(rev)
    prefix = join(split_path(path)) + "/" if path.strip("/") else ""
    files = [
        (e.path[len(prefix) :], vault.read_blob(e.blob))
        for e in vault.ls(path, recursive=True, rev=rev)
        if e.kind == "secret" and e.blob is not None
    ]
    tags = {
        k[len(prefix) :]: v
        for k, v in vault.tags(rev).items()
        if k.startswith(prefix) and k != prefix.rstrip("/")
    }
    return Folder(vault.name, head.decode(), files, tags)


def secret_tags(vaults: Vaults, name: str, unreadable: list[str]) -> dict[str, list[str]]:
    """The secret tags of the vault ``name``; a malformed tag file reads as none, and the
    vault is added to ``unreadable``."""
    try:
        return vaults.open(name).tags()
    except BadTagFile:
        unreadable.append(name)
        return {}


def tagged(vaults: Vaults, tag: str, vault: str | None = None) -> Tagged:
    """The secrets carrying ``tag``, across vaults (or in ``vault``), by vault then path."""
    found: list[Found] = []
    unreadable: list[str] = []
    for name in _vaults(vaults, [vault] if vault is not None else []):
        for path, tags in sorted(secret_tags(vaults, name, unreadable).items()):
            if tag in tags:
                found.append(Found(name, path))
    return Tagged(found, unreadable)


def tag_counts(vaults: Vaults) -> TagCounts:
    """Every tag in use, with the number of secrets and of vaults carrying it."""
    secrets: dict[str, int] = {}
    tagged_vaults: dict[str, int] = {}
    unreadable: list[str] = []
    for info in vaults.all():
        for t in info.tags:
            tagged_vaults[t] = tagged_vaults.get(t, 0) + 1
        for tags in secret_tags(vaults, info.name, unreadable).values():
            for t in tags:
                secrets[t] = secrets.get(t, 0) + 1
    names = sorted(secrets.keys() | tagged_vaults.keys())
    counts = {t: TagCount(secrets.get(t, 0), tagged_vaults.get(t, 0)) for t in names}
    return TagCounts(counts, unreadable)


def completions(vaults: Vaults, prefix: str, vault: str | None = None) -> list[str]:
    """Shell completion: without ``vault``, the vault names starting with ``prefix``; with it,
    the names of that vault's folder that ``prefix`` ends in (up to its last '/') starting with
    the rest of ``prefix``, each with that folder in front and a folder's with a final '/'.
    Nothing for a vault or folder that is not there; the vault's own files are left out."""
    if vault is None:
        return [i.name for i in vaults.all() if i.name.startswith(prefix)]
    folder, slash, start = prefix.rpartition("/")
    try:
        opened = vaults.open(vault)
        objects = opened.objects()
        entry = opened.lookup(split_path(folder, allow_root=True), objects=objects)
    except PolykeyError:
        return []
    if entry is None or not stat.S_ISDIR(entry[0]):
        return []
    base, wanted = folder + slash, start.encode()
    return [  # a folder may be large: names are matched as bytes, no Entry objects made
        base + name.decode("utf-8", "surrogateescape") + ("/" if stat.S_ISDIR(mode) else "")
        for name, mode, _ in objects.get_tree(entry[1]).iteritems()
        if name.startswith(wanted) and not name.startswith(RESERVED_PREFIX)
    ]


def entry_markers(vault: Vault, path: str) -> list[str]:
    """Which of the files that make an entry (ENTRY_MARKERS) the folder ``path`` holds."""
    names = {e.path.rsplit("/", 1)[-1] for e in vault.ls(path) if e.kind == "secret"}
    return [m for m in ENTRY_MARKERS if m in names]


def entry_files(vault: Vault, path: str, rev: str | None = None) -> dict[str, bytes]:
    """The files of the entry whose folder is ``path`` (name -> value), as `pk secrets cat`
    shows an entry; IsADirectory for a folder that holds no ENTRY_MARKERS file."""
    names = {
        e.path.rsplit("/", 1)[-1]: e.blob
        for e in vault.ls(path, rev=rev)
        if e.kind == "secret" and e.blob is not None
    }
    if not any(name in names for name in ENTRY_MARKERS):
        where = f"{vault.name}:{path.strip('/')}"
        raise IsADirectory(
            f"{where} (a folder, not an entry: it holds no password, otp or .pass)",
            hint=f"List what it holds with `pk secrets ls {where}`, then name a secret in it.",
        )
    return {name: vault.read_blob(blob) for name, blob in names.items()}
