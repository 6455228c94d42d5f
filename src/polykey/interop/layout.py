"""The entry layout every importer writes and every exporter reads (docs/spec/entries.md).

An entry (a login, a card, a note) is a folder. Its fields are files named after them:
``password``, ``username``, ``url``, ``notes`` and ``otp`` (an otpauth:// URI) when present, and
any other field under its own name. Attachments live in ``attachments/``. A ``title`` file keeps
the entry's name when the folder could not be named exactly after it (two entries of one name,
or a name that is not a valid path component). A ``.pass`` file keeps the pass file an entry was
imported from when its fields do not render back to the same bytes. Groups and folders of the
source are folders.

Names become path components by percent-encoding '%', '/' and control characters (as UTF-8
bytes), and the first character of a name a path may not hold ('.', '..', '.git', ...).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from polykey.errors import InvalidInput
from polykey.interop.errors import ImportFailed
from polykey.vaults.paths import MAX_COMPONENT_BYTES, check_component, fold

PASSWORD, USERNAME, URL, NOTES, OTP = "password", "username", "url", "notes", "otp"
STANDARD = (PASSWORD, USERNAME, URL, NOTES, OTP)
TITLE, ATTACHMENTS, ORIGINAL = "title", "attachments", ".pass"
RESERVED = {TITLE, ATTACHMENTS, ORIGINAL}
ENTRY_MARKERS = (PASSWORD, OTP, ORIGINAL)
"""A folder directly holding one of these files is an entry (`pk secrets cat`, `export pass`)."""
UNTITLED = "(untitled)"


@dataclass
class Entry:
    """One entry of a source, with its values in memory only (the repr shows names only)."""

    folder: tuple[str, ...]
    name: str
    fields: dict[str, bytes] = field(default_factory=dict, repr=False)
    attachments: dict[str, bytes] = field(default_factory=dict, repr=False)
    tags: list[str] = field(default_factory=list)
    value: bytes | None = field(default=None, repr=False)  # a one-file entry: just this value
    original: bytes | None = field(default=None, repr=False)  # kept as ``.pass`` (pass entries)

    def __repr__(self) -> str:
        shown = "/".join((*self.folder, self.name))
        count = len(self.attachments)
        return f"Entry({shown!r}, fields={sorted(self.fields)}, attachments={count})"

    @property
    def label(self) -> str:
        """How errors and listings name the entry."""
        return "/".join((*self.folder, self.name or UNTITLED))


def _percent(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


_ESCAPE = re.compile(r"[%/\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # '\\': a separator to Windows git
_ESCAPED = re.compile(r"(?:%[0-9A-F]{2})+")


@functools.lru_cache(maxsize=65536)
def encode_name(name: str) -> str:
    """A path component for ``name``; :func:`decode_name` gives the name back."""
    if not name:
        name = UNTITLED
    out = _trailing(_ESCAPE.sub(lambda m: _percent(m.group()), name))
    try:
        check_component(out)
    except InvalidInput:
        out = _percent(out[0]) + out[1:]
    out = _cut(out, MAX_COMPONENT_BYTES)
    check_component(out)
    return out


def _cut(out: str, limit: int) -> str:
    """``out`` shortened to at most ``limit`` bytes, never inside a %XX escape, and with a final
    '.' or ' ' encoded (which may take two more bytes: then cut again)."""
    while True:
        while len(out.encode("utf-8")) > limit:
            out = out[:-1]
        out = re.sub(r"%[0-9A-F]?$", "", out)
        final = _trailing(out)
        if len(final.encode("utf-8")) <= limit:
            return final
        out = out[:-1]


def _trailing(out: str) -> str:
    """A final '.' or ' ' percent-encoded: Windows would drop it."""
    return out[:-1] + _percent(out[-1]) if out.endswith((".", " ")) else out


def decode_name(component: str) -> str:
    def unescape(m: re.Match[str]) -> str:
        raw = bytes.fromhex(m.group().replace("%", ""))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return m.group()

    return _ESCAPED.sub(unescape, component)


@dataclass
class Files:
    """Entries as vault files: per entry (label, folder, [(path, value)]), tags by path, and the
    entries whose folder is not named exactly after them."""

    groups: list[tuple[str, str, list[tuple[str, bytes]]]] = field(default_factory=list, repr=False)
    tags: dict[str, list[str]] = field(default_factory=dict)
    renamed: list[str] = field(default_factory=list)

    @property
    def items(self) -> list[tuple[str, bytes]]:
        return [item for _, _, items in self.groups for item in items]

    @property
    def entries(self) -> int:
        return len(self.groups)


def is_entry(names: Iterable[str]) -> bool:
    """Whether a folder whose files (directly in it) are ``names`` is an entry."""
    return any(name in ENTRY_MARKERS for name in names)


def entry_files(entry: Entry, where: str) -> list[tuple[str, bytes]]:
    """The files of one entry placed at folder ``where``; refuses fields that collide."""
    out: list[tuple[str, bytes]] = []
    seen: dict[str, str] = {}
    names = [(encode_name(k), v, k) for k, v in entry.fields.items()]
    for component, value, original in names:
        if component in RESERVED:
            raise ImportFailed(f"{entry.label}: a field may not be named {original!r}")
        key = fold(component)
        if key in seen:
            raise ImportFailed(
                f"{entry.label}: fields {seen[key]!r} and {original!r} differ only by case"
            )
        seen[key] = original
        out.append((f"{where}/{component}", value))
    if entry.original is not None:
        out.append((f"{where}/{ORIGINAL}", entry.original))
    taken: set[str] = set()
    for name, value in entry.attachments.items():
        component = encode_name(name)
        key = fold(component)
        if key in taken:
            raise ImportFailed(f"{entry.label}: two attachments named {name!r}")
        taken.add(key)
        out.append((f"{where}/{ATTACHMENTS}/{component}", value))
    if entry.attachments and fold(ATTACHMENTS) in seen:
        raise ImportFailed(f"{entry.label}: a field is named like the attachments folder")
    return out


MAX_RENAMES = 100_000


class Placer:
    """Gives each entry its folder under ``prefix``, renaming entries that share a name."""

    def __init__(self, prefix: str, existing: Iterable[str] = ()) -> None:
        self.prefix = prefix.strip("/")
        self.taken: set[str] = {fold(p) for p in existing}

    def place(self, entry: Entry) -> tuple[str, bool]:
        parts = [encode_name(g) for g in entry.folder]
        parent = "/".join(p for p in (self.prefix, *parts) if p)
        candidate, n = encode_name(entry.name), 1

        def at(name: str) -> str:
            return f"{parent}/{name}" if parent else name

        while fold(at(candidate)) in self.taken:
            n += 1
            if n > MAX_RENAMES:
                raise ImportFailed(f"{entry.name[:80]!r}: too many entries of that name")
            suffix = f" ({n})"
            candidate = encode_name(f"{entry.name or UNTITLED}{suffix}")
            if not candidate.endswith(suffix):  # a long name: cut it to make room
                base = _cut(encode_name(entry.name), MAX_COMPONENT_BYTES - len(suffix))
                candidate = base + suffix
                check_component(candidate)
        where = at(candidate)
        self.taken.add(fold(where))
        return where, n > 1 or decode_name(candidate) != entry.name


def to_files(
    entries: Iterable[Entry], prefix: str = "", *, skip_bad: bool = False
) -> tuple[Files, list[tuple[str, str]]]:
    """Lay entries out as files; bad entries abort, or are skipped and listed with ``skip_bad``."""
    files = Files()
    skipped: list[tuple[str, str]] = []
    placer = Placer(prefix)
    dirs: set[str] = set()
    paths: dict[str, str] = {}
    for source in entries:
        where, renamed = placer.place(source)
        entry = source
        if renamed and source.value is not None:  # a one-file entry keeps its name in a folder
            entry = replace(source, value=None, original=source.value)
        try:
            items = entry_files(entry, where) if entry.value is None else [(where, entry.value)]
            if renamed and entry.value is None:
                items.append((f"{where}/{TITLE}", entry.name.encode("utf-8", "surrogatepass")))
            for path, _ in items:
                if fold(path) in dirs:
                    raise ImportFailed(f"{entry.label}: {path} is also a folder of another entry")
                if fold(path) in paths:
                    raise ImportFailed(
                        f"{entry.label}: {path} is also a file of {paths[fold(path)]}"
                    )
                for parent in _parents(path):
                    other = paths.get(fold(parent))
                    if other is not None:
                        raise ImportFailed(f"{entry.label}: {parent} is a field of {other}")
        except ImportFailed as exc:
            if not skip_bad:
                raise
            skipped.append((entry.label, exc.detail))
            continue
        for path, _ in items:
            paths[fold(path)] = entry.label
            dirs.update(fold(p) for p in _parents(path))
        files.groups.append((entry.label, where, items))
        if entry.tags:
            files.tags[where] = sorted(set(entry.tags))
        if renamed:
            files.renamed.append(f"{entry.label} -> {where}")
    return files, skipped


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def from_files(files: dict[str, bytes], tags: dict[str, list[str]], root_name: str) -> list[Entry]:
    """Read entries back: every folder holding files is an entry; its sub-folders are groups.

    Files directly at the top become one entry named ``root_name``.
    """
    by_dir: dict[str, dict[str, bytes]] = {}
    attachments: dict[str, dict[str, bytes]] = {}
    for path, value in files.items():
        parent, _, name = path.rpartition("/")
        grand, _, leaf = parent.rpartition("/")
        if leaf == ATTACHMENTS and parent:
            attachments.setdefault(grand, {})[decode_name(name)] = value
            continue
        by_dir.setdefault(parent, {})[name] = value
    for owner in attachments:
        by_dir.setdefault(owner, {})
    entries: list[Entry] = []
    for folder in sorted(by_dir):
        raw = by_dir[folder]
        parts = tuple(decode_name(p) for p in folder.split("/")) if folder else ()
        title = raw.pop(TITLE, None)
        raw.pop(ORIGINAL, None)  # pass's own copy of the entry, not a field
        name = parts[-1] if parts else root_name
        if title is not None:
            name = title.decode("utf-8", "replace")
        entry = Entry(parts[:-1], name)
        for component in _ordered(raw):
            entry.fields[decode_name(component)] = raw[component]
        entry.attachments = attachments.get(folder, {})
        wanted: set[str] = set(tags.get(folder, []))
        for component in raw:
            wanted.update(tags.get(f"{folder}/{component}" if folder else component, []))
        entry.tags = sorted(wanted)
        entries.append(entry)
    return entries


def _ordered(names: Iterable[str]) -> list[str]:
    rank = {n: i for i, n in enumerate(STANDARD)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def text_of(value: bytes) -> str:
    """A field as text for formats that only hold text (invalid UTF-8 is an error)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def normal_tag(tag: str) -> str | None:
    """A source's tag as a vault tag: spaces become '-', other characters are dropped."""
    from polykey.vaults.errors import InvalidTag
    from polykey.vaults.tags import check_tag

    cleaned = "".join(
        "-" if ch.isspace() else ch
        for ch in unicodedata.normalize("NFKC", tag.strip())
        if ch.isspace() or ch.isalnum() or ch in "._:-"
    )
    cleaned = cleaned.encode("ascii", "ignore").decode().lstrip("._:-")[:64]
    try:
        return check_tag(cleaned)
    except InvalidTag:
        return None
