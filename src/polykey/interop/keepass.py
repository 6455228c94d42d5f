"""KeePass (.kdbx, versions 3 and 4) through pykeepass: entries, fields, attachments, groups, tags.

Title, UserName, Password, URL, Notes and otp map to the layout's standard files; every other
string field keeps its name; attachments go to ``attachments/``; groups become folders; tags
become vault tags. Entries in the recycle bin are left out. On export, a field that KeePass
cannot hold as text (binary, control characters, or a name KeePass reserves) is written as an
attachment of that name instead, and reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polykey.interop.errors import ExportFailed, ImportFailed, MalformedSource, WrongSourcePassword
from polykey.interop.layout import NOTES, OTP, PASSWORD, RESERVED, STANDARD, URL, USERNAME, Entry

_STANDARD_KEYS = {"Password": PASSWORD, "UserName": USERNAME, "URL": URL, "Notes": NOTES}
_BY_FIELD = {v: k for k, v in _STANDARD_KEYS.items()}
_KEEPASS_RESERVED = {"Title", "UserName", "Password", "URL", "Tags", "IconID", "Times"}
_KEEPASS_RESERVED |= {"History", "Notes", "otp"}
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

Progress = Callable[[int], None]


def open_kdbx(path: Path, password: str | None, keyfile: Path | None) -> Any:
    from pykeepass import PyKeePass
    from pykeepass.exceptions import CredentialsError, HeaderChecksumError, PayloadChecksumError

    if not path.is_file():
        raise MalformedSource(f"{path}: no such file")
    _check_version(path)
    try:
        return PyKeePass(str(path), password=password, keyfile=str(keyfile) if keyfile else None)
    except CredentialsError:
        raise WrongSourcePassword(str(path)) from None
    except HeaderChecksumError:
        raise MalformedSource(f"{path} is not a KeePass database (or it is damaged)") from None
    except PayloadChecksumError:
        raise MalformedSource(f"{path}: the database's contents fail their checksum") from None
    except Exception as exc:  # construct raises many parse errors for other formats
        raise MalformedSource(
            f"{path} is not a KeePass 2 database of version 3 or 4 ({type(exc).__name__})",
            hint="KeePass 1 (.kdb) files: convert them with KeePassXC first.",
        ) from None


_SIGNATURE = bytes.fromhex("03d9a29a")
_KDB = bytes.fromhex("65fb4bb5")
_KDBX = bytes.fromhex("67fb4bb5")


def _check_version(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != _SIGNATURE or head[4:8] not in (_KDB, _KDBX):
        raise MalformedSource(f"{path} is not a KeePass database")
    if head[4:8] == _KDB:
        raise MalformedSource(
            f"{path} is a KeePass 1 database; only KDBX version 3 or 4 can be read",
            hint="Open it in KeePassXC or KeePass 2 and save it as .kdbx.",
        )
    major = int.from_bytes(head[10:12], "little")
    if major not in (3, 4):
        minor = int.from_bytes(head[8:10], "little")
        raise MalformedSource(
            f"{path} is KDBX version {major}.{minor}; only version 3 or 4 can be read"
        )


def read_entries(kp: Any) -> tuple[list[Entry], int]:
    """The entries of an open database, and how many were left in the recycle bin.

    Walks the XML tree once (pykeepass's accessors run one XPath query per field).
    """
    from polykey.interop.layout import normal_tag

    recycle = kp.recyclebin_group
    bin_uuid = recycle._element.findtext("UUID") if recycle is not None else None
    binaries = kp.binaries
    entries: list[Entry] = []
    binned = 0

    def walk(group: Any, folder: tuple[str, ...], in_bin: bool) -> None:
        nonlocal binned
        for child in group.iterchildren("Entry", "Group"):
            if child.tag == "Group":
                name = child.findtext("Name") or "(untitled)"
                inside = in_bin or (bin_uuid is not None and child.findtext("UUID") == bin_uuid)
                walk(child, (*folder, name), inside)
            elif in_bin:
                binned += 1
            else:
                entries.append(_entry(child, folder, binaries, normal_tag))

    walk(kp.root_group._element, (), False)
    return entries, binned


def _entry(element: Any, folder: tuple[str, ...], binaries: list[bytes], tag: Any) -> Entry:
    strings = {s.findtext("Key"): s.findtext("Value") or "" for s in element.iterchildren("String")}
    entry = Entry(folder, strings.pop("Title", ""))
    for key, name in (*_STANDARD_KEYS.items(), ("otp", OTP)):
        value = strings.pop(key, "")
        if value:
            entry.fields[name] = value.encode("utf-8")
    for key, value in strings.items():
        if key in STANDARD or key in RESERVED:
            raise ImportFailed(f"{entry.label}: a custom field may not be named {key!r}")
        entry.fields[key] = value.encode("utf-8")
    for binary in element.iterchildren("Binary"):
        name = binary.findtext("Key") or "attachment"
        ref = binary.find("Value")
        try:
            data = binaries[int(ref.get("Ref"))]
        except (AttributeError, TypeError, ValueError, IndexError):
            raise ImportFailed(f"{entry.label}: attachment {name!r} has no data") from None
        if name in entry.attachments:
            raise ImportFailed(f"{entry.label}: two attachments named {name!r}")
        entry.attachments[name] = data if isinstance(data, bytes) else str(data).encode()
    raw_tags = (element.findtext("Tags") or "").replace(",", ";").split(";")
    entry.tags = [t for t in (tag(t) for t in raw_tags if t) if t]
    return entry


def _as_text(value: bytes) -> str | None:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _XML_UNSAFE.search(text) else text


def write_kdbx(
    path: Path,
    entries: list[Entry],
    password: str,
    keyfile: Path | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """A new KeePass 4 database at ``path``; returns notes on fields written as attachments."""
    from pykeepass import PyKeePass
    from pykeepass.entry import Entry as KpEntry
    from pykeepass.pykeepass import BLANK_DATABASE_LOCATION, BLANK_DATABASE_PASSWORD

    if path.exists():
        raise ExportFailed(f"{path} exists", hint="Name a new file; an export never overwrites.")
    tmp = path.with_name(f".{path.name}.partial")
    kp = PyKeePass(BLANK_DATABASE_LOCATION, BLANK_DATABASE_PASSWORD)  # what create_database does
    kp.filename, kp.password = str(tmp), password
    kp.keyfile = str(keyfile) if keyfile else None
    groups: dict[tuple[str, ...], Any] = {(): kp.root_group}
    notes: list[str] = []

    def group_of(folder: tuple[str, ...]) -> Any:
        if folder not in groups:
            groups[folder] = kp.add_group(group_of(folder[:-1]), folder[-1])
        return groups[folder]

    try:
        for entry in entries:
            standard: dict[str, str] = {}
            custom: dict[str, str] = {}
            files = dict(entry.attachments)
            for name, value in entry.fields.items():
                text = _as_text(value)
                if name in _BY_FIELD or name == OTP:
                    target = standard
                elif name in _KEEPASS_RESERVED:
                    text = None
                    target = custom
                else:
                    target = custom
                if text is None:
                    files[name] = value
                    notes.append(f"{entry.label}: field {name!r} written as an attachment")
                else:
                    target[name] = text
            item = KpEntry(
                title=entry.name,
                username=standard.get(USERNAME),
                password=standard.get(PASSWORD),
                url=standard.get(URL),
                notes=standard.get(NOTES),
                otp=standard.get(OTP),
                tags=entry.tags or None,
                kp=kp,
            )
            group_of(entry.folder).append(item)
            for key, text in custom.items():
                item.set_custom_property(key, text, protect=True)
            for name, data in files.items():
                item.add_attachment(kp.add_binary(data), name)
            if progress:
                progress(1)
        try:
            kp.save()
            tmp.replace(path)
        except OSError as exc:
            raise ExportFailed(f"cannot write {path}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return notes
