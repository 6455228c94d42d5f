"""1Password's unencrypted export (.1pux): a zip archive holding ``export.data`` (JSON: accounts,
their vaults, their items), ``export.attributes`` and the items' documents under ``files/``.

Every item becomes an entry of the common layout (docs/spec/entries.md): the login's username and
password, the website(s), notes, one-time password, and every section field under its own name;
documents and file fields become attachments; the item's tags become tags ('/' in a nested tag
becomes ':'). Items in the trash are left out. With more than one vault (or account) in the
export, each gets its own folder.

The archive is read in memory with bounds, so that a zip bomb is refused before it is expanded.
"""

from __future__ import annotations

import datetime
import io
import json
import zipfile
from typing import Any

from polykey.interop.errors import MalformedSource
from polykey.interop.formats import Skipped, as_text, fail_or_skip, otp_uri
from polykey.interop.layout import NOTES, OTP, PASSWORD, RESERVED, URL, USERNAME, Entry
from polykey.vaults.paths import fold

MAX_MEMBERS = 200_000
MAX_UNPACKED = 2 * 1024**3  # bytes, all members together
MAX_RATIO = 200  # a member may not expand more than this
_HINT = "Export again from 1Password as a .1pux file (File > Export > 1PUX)."


def read_1pux(data: bytes, *, skip_bad: bool = False) -> tuple[list[Entry], Skipped]:
    archive = _Archive(data)
    try:
        doc = json.loads(archive.read("export.data"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedSource(f"export.data is not JSON ({str(exc)[:100]})", hint=_HINT) from None
    accounts = doc.get("accounts") if isinstance(doc, dict) else None
    if not isinstance(accounts, list):
        raise MalformedSource("not a 1Password export (export.data has no accounts)", hint=_HINT)
    vaults = [
        (_name(account, "accountName", "name"), vault)
        for account in accounts
        if isinstance(account, dict)
        for vault in _list(account.get("vaults"), "an account's vaults")
        if isinstance(vault, dict)
    ]
    several_accounts = len({a for a, _ in vaults}) > 1
    entries: list[Entry] = []
    skipped: Skipped = []
    for account_name, vault in vaults:
        vault_name = _name(vault, "name")
        folder: tuple[str, ...] = ()
        if len(vaults) > 1:
            folder = (account_name, vault_name) if several_accounts else (vault_name,)
        for n, wrapped in enumerate(_list(vault.get("items"), "a vault's items"), 1):
            item = wrapped.get("item", wrapped) if isinstance(wrapped, dict) else wrapped
            label = f"{vault_name} item {n}"
            try:
                if not isinstance(item, dict):
                    raise ValueError("not an object")
                overview = item.get("overview") or {}
                label = f"{vault_name}/{str(overview.get('title') or '')[:60]}"
                if item.get("trashed") is True or item.get("state") == "deleted":
                    continue
                entries.append(_item(item, folder, archive))
            except MalformedSource as exc:
                fail_or_skip(skip_bad, skipped, label, exc.detail or exc.message)
            except Exception as exc:  # any shape of hostile or odd JSON: this item is bad
                fail_or_skip(skip_bad, skipped, label, f"{str(exc)[:200] or type(exc).__name__}")
    return entries, skipped


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedSource(f"not a 1Password export: {what} are not a list", hint=_HINT)
    return value


class _Archive:
    """The zip archive, read in memory with bounds; each member is unpacked at most once, so
    naming one member from many items costs nothing more."""

    def __init__(self, data: bytes) -> None:
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zip.infolist()
        except Exception as exc:  # zipfile raises several kinds for a damaged archive
            raise MalformedSource(
                f"not a .1pux file: not a zip archive ({str(exc)[:100]})", hint=_HINT
            ) from None
        if len(infos) > MAX_MEMBERS:
            raise MalformedSource(f"the archive holds more than {MAX_MEMBERS:,} files")
        if sum(i.file_size for i in infos) > MAX_UNPACKED:
            raise MalformedSource(f"the archive would unpack to more than {MAX_UNPACKED >> 30} GiB")
        for info in infos:
            if info.file_size > 1024 * 1024 and info.file_size > MAX_RATIO * info.compress_size:
                raise MalformedSource(f"{info.filename[:80]!r} expands {MAX_RATIO}x or more")
        self.infos = {i.filename: i for i in infos}
        if "export.data" not in self.infos:
            raise MalformedSource(
                "not a 1Password export: the archive has no export.data", hint=_HINT
            )
        # documents by file name and by document id (1Password names them ID__NAME)
        self.files: dict[str, str] = {}
        for name in self.infos:
            if name.startswith("files/") and not name.endswith("/"):
                base = name.rsplit("/", 1)[-1]
                self.files.setdefault(base, name)
                self.files.setdefault(base.split("__", 1)[0], name)
        self._read: dict[str, bytes] = {}

    def read(self, name: str) -> bytes:
        data = self._read.get(name)
        if data is not None:
            return data
        info = self.infos[name]
        try:
            with self.zip.open(info) as f:
                data = f.read(info.file_size + 1)
        except Exception as exc:  # zlib.error, LZMAError, EOFError, BadZipFile, ...
            raise MalformedSource(
                f"cannot read {name[:80]!r} in the archive ({str(exc)[:100]})"
            ) from None
        if len(data) != info.file_size:
            raise MalformedSource(f"{name[:80]!r} is not the size the archive says")
        self._read[name] = data
        return data

    def document(self, document_id: str, file_name: str) -> bytes | None:
        member = self.files.get(f"{document_id}__{file_name}") or self.files.get(document_id)
        return self.read(member) if member is not None else None


def _name(holder: dict[str, Any], *keys: str) -> str:
    attrs = holder.get("attrs") or {}
    for key in keys:
        value = attrs.get(key) if isinstance(attrs, dict) else None
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "1Password"


def _item(item: dict[str, Any], folder: tuple[str, ...], archive: _Archive) -> Entry:
    overview = item.get("overview") or {}
    details = item.get("details") or {}
    entry = Entry(folder, as_text(overview.get("title")) or "")
    entry.tags = [str(t).replace("/", ":") for t in overview.get("tags") or []]
    build = _Builder(entry, archive)
    for field in details.get("loginFields") or []:
        if not isinstance(field, dict):
            continue
        value = as_text(field.get("value"))
        designation = field.get("designation")
        if designation in (USERNAME, PASSWORD):
            build.put(designation, value, unique=True)
        elif field.get("fieldType") != "C":  # checkboxes: the state of a web form, not secrets
            build.put(as_text(field.get("name")) or as_text(field.get("id")) or "field", value)
    build.put(PASSWORD, as_text(details.get("password")), unique=True)
    urls = [as_text(overview.get("url"))]
    urls += [as_text(u.get("url")) for u in overview.get("urls") or [] if isinstance(u, dict)]
    for n, url in enumerate(dict.fromkeys(u for u in urls if u)):
        build.put(URL if n == 0 else f"url-{n + 1}", url)
    build.put(NOTES, as_text(details.get("notesPlain")))
    for section in details.get("sections") or []:
        if isinstance(section, dict):
            for field in section.get("fields") or []:
                if isinstance(field, dict):
                    build.section_field(field)
    document = details.get("documentAttributes")
    if isinstance(document, dict):
        build.attach(document)
    return entry


class _Builder:
    """Fills one entry: fields under unique names, attachments from the archive."""

    def __init__(self, entry: Entry, archive: _Archive) -> None:
        self.entry, self.archive = entry, archive
        self.taken = set(RESERVED)  # folded field names in use: names may not differ by case
        self.next: dict[str, int] = {}  # the next number to try for a name in use

    def put(self, key: str, value: str | None, *, unique: bool = False) -> None:
        """Set a field; a second value of one name (in any case, or a name the layout reserves,
        `title`) is kept as "name (2)", or dropped if ``unique``: the first password wins."""
        fields = self.entry.fields
        if not value or (unique and key in fields):
            return
        name, n = key, self.next.get(fold(key), 1)
        while fold(name) in self.taken:
            n += 1
            name = f"{key} ({n})"
        self.next[fold(key)] = n
        self.taken.add(fold(name))
        fields[name] = value.encode("utf-8")

    def section_field(self, field: dict[str, Any]) -> None:
        value = field.get("value")
        if not isinstance(value, dict) or not value:
            return
        kind, raw = next(iter(value.items()))
        if raw is None or raw == "":
            return
        name = as_text(field.get("title")) or as_text(field.get("id")) or "field"
        fields = self.entry.fields
        if kind == "totp":
            self.put(OTP if OTP not in fields else name, otp_uri(str(raw), self.entry.name))
        elif kind == "file" and isinstance(raw, dict):
            self.attach(raw)
        elif name.lower() in (USERNAME, PASSWORD) and name.lower() not in fields:
            self.put(name.lower(), _render(kind, raw))
        else:
            self.put(name, _render(kind, raw))

    def attach(self, document: dict[str, Any]) -> None:
        document_id = as_text(document.get("documentId")) or ""
        file_name = as_text(document.get("fileName")) or document_id or "document"
        data = self.archive.document(document_id, file_name)
        if data is None:
            raise ValueError(f"its file {file_name!r} is not in the archive")
        attachments = self.entry.attachments
        name, n = file_name, 1
        while name in attachments:
            n += 1
            name = f"{file_name} ({n})"
        attachments[name] = data


def _render(kind: str, raw: Any) -> str | None:
    """A section field's value as text."""
    if kind == "date" and isinstance(raw, int | float):
        return datetime.datetime.fromtimestamp(raw, datetime.UTC).date().isoformat()
    if kind == "monthYear" and isinstance(raw, int):
        return f"{raw // 100:04d}-{raw % 100:02d}"
    if kind == "email" and isinstance(raw, dict):
        return as_text(raw.get("email_address"))
    if kind == "address" and isinstance(raw, dict):
        part = {k: as_text(raw.get(k)) for k in ("street", "city", "state", "zip", "country")}
        city = " ".join(p for p in (part["city"], part["state"]) if p)
        lines = [part["street"], city, part["zip"], part["country"]]
        return "\n".join(p for p in lines if p) or None
    if kind == "sshKey" and isinstance(raw, dict):
        return as_text(raw.get("privateKey"))
    if isinstance(raw, dict | list):
        return json.dumps(raw, sort_keys=True, ensure_ascii=False)
    return as_text(raw)
