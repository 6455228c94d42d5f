"""Plain-file formats: Bitwarden's unencrypted JSON export, browser CSV exports, .env files, and
Polykey's own JSON export.

Readers return entries (or, for .env, variables) and the items they had to skip; with
``skip_bad`` false the first bad item raises instead, so that nothing is written.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

from polykey.interop import dotenv
from polykey.interop.errors import ImportFailed, MalformedSource
from polykey.interop.layout import NOTES, OTP, PASSWORD, URL, USERNAME, Entry

Skipped = list[tuple[str, str]]


def fail_or_skip(skip_bad: bool, skipped: Skipped, label: str, why: str) -> None:
    if not skip_bad:
        raise ImportFailed(f"{label}: {why}")
    skipped.append((label, why))


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"a value is a {type(value).__name__}, not text")


def otp_uri(value: str, name: str) -> str:
    """An otpauth:// URI for a TOTP field that may be a bare base32 key."""
    value = value.strip()
    if "://" in value:
        return value
    secret = re.sub(r"[\s-]", "", value).upper()
    return f"otpauth://totp/{quote(name or 'imported')}?secret={secret}"


# --- Bitwarden -----------------------------------------------------------------------------------

_CARD = {
    "cardholderName": "cardholder",
    "brand": "brand",
    "number": "number",
    "expMonth": "exp-month",
    "expYear": "exp-year",
    "code": "code",
}
_SSH = {"privateKey": "private-key", "publicKey": "public-key", "keyFingerprint": "fingerprint"}


def read_bitwarden(data: bytes, *, skip_bad: bool = False) -> tuple[list[Entry], Skipped]:
    try:
        doc = json.loads(data)
    except RecursionError:
        raise MalformedSource("not JSON (nested too deep)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedSource(f"not JSON ({exc})") from None
    if isinstance(doc, dict) and doc.get("encrypted") is True:
        raise MalformedSource(
            "this Bitwarden export is encrypted",
            hint="Export again choosing the unencrypted .json format; delete that file after.",
        )
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise MalformedSource("not a Bitwarden JSON export (it has no list of items)")
    folders: dict[str, str] = {}
    for group in doc.get("folders") or doc.get("collections") or []:
        if isinstance(group, dict) and isinstance(group.get("id"), str):
            folders[group["id"]] = str(group.get("name") or "")
    entries: list[Entry] = []
    skipped: Skipped = []
    for i, item in enumerate(doc["items"], 1):
        label = f"item {i}"
        try:
            if not isinstance(item, dict):
                raise ValueError("not an object")
            label = f"item {i} ({str(item.get('name'))[:60]})"
            entries.append(_bitwarden_item(item, folders))
        except (ValueError, TypeError, AttributeError) as exc:
            fail_or_skip(skip_bad, skipped, label, str(exc))
    return entries, skipped


def _bitwarden_item(item: dict[str, Any], folders: dict[str, str]) -> Entry:
    name = as_text(item.get("name")) or ""
    folder_id = item.get("folderId")
    if folder_id is None and isinstance(item.get("collectionIds"), list) and item["collectionIds"]:
        folder_id = item["collectionIds"][0]
    folder = folders.get(folder_id, "") if isinstance(folder_id, str) else ""
    entry = Entry(tuple(p for p in folder.split("/") if p), name)
    fields = entry.fields

    def put(key: str, value: Any) -> None:
        text = as_text(value)
        if text:
            if key in fields:
                raise ValueError(f"two fields named {key!r}")
            fields[key] = text.encode("utf-8")

    login = item.get("login")
    if isinstance(login, dict):
        put(USERNAME, login.get("username"))
        put(PASSWORD, login.get("password"))
        totp = as_text(login.get("totp"))
        if totp:
            put(OTP, otp_uri(totp, name))
        uris = [u.get("uri") for u in login.get("uris") or [] if isinstance(u, dict)]
        for n, uri in enumerate(u for u in uris if u):
            put(URL if n == 0 else f"url-{n + 1}", uri)
    for source, mapping in ((item.get("card"), _CARD), (item.get("sshKey"), _SSH)):
        if isinstance(source, dict):
            for key, target in mapping.items():
                put(target, source.get(key))
    identity = item.get("identity")
    if isinstance(identity, dict):
        for key, value in identity.items():
            name = re.sub(r"(?<!^)(?=[A-Z])", "-", key).lower()
            put("salutation" if name == "title" else name, value)  # `title` names the entry
    put(NOTES, item.get("notes"))
    for f in item.get("fields") or []:
        if not isinstance(f, dict) or f.get("type") == 3:  # 3: a link to another field
            continue
        key = as_text(f.get("name")) or "field"
        text = as_text(f.get("value")) or ""
        if key in fields:
            raise ValueError(f"two fields named {key!r}")
        fields[key] = text.encode("utf-8")
    return entry


# --- CSV -----------------------------------------------------------------------------------------

_ALIASES = {
    "name": "name",
    "title": "name",
    "account": "name",
    "url": URL,
    "website": URL,
    "uri": URL,
    "login_uri": URL,
    "origin": URL,
    "username": USERNAME,
    "user": USERNAME,
    "login": USERNAME,
    "login_username": USERNAME,
    "password": PASSWORD,
    "login_password": PASSWORD,
    "note": NOTES,
    "notes": NOTES,
    "extra": NOTES,
    "comments": NOTES,
    "totp": OTP,
    "otp": OTP,
    "login_totp": OTP,
    "folder": "folder",
    "group": "folder",
    "grouping": "folder",
}
# Firefox's bookkeeping columns: not secrets, not kept.
_IGNORED = {"httprealm", "formactionorigin", "guid", "timecreated", "timelastused"}
_IGNORED |= {"timepasswordchanged", "skip", ""}


def read_csv(
    data: bytes, columns: list[str] | None = None, *, skip_bad: bool = False
) -> tuple[list[Entry], Skipped]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedSource("the CSV file is not UTF-8 text") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise MalformedSource(f"not valid CSV ({exc})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise MalformedSource("the CSV file has no rows")
    first = [c.strip().lower() for c in rows[0]]
    if columns:
        header = [c.strip().lower() for c in columns]
        if first == header:
            rows = rows[1:]
        start = 1
    else:
        header, rows, start = first, rows[1:], 2
    keys = [_ALIASES.get(h, h) for h in header]
    if PASSWORD not in keys:
        raise MalformedSource(
            f"no password column among {', '.join(header)[:200]}",
            hint="Name the columns in order with --columns name,url,username,password,notes.",
        )
    entries: list[Entry] = []
    skipped: Skipped = []
    for n, row in enumerate(rows, start):
        if len(row) != len(keys):
            fail_or_skip(skip_bad, skipped, f"row {n}", f"{len(row)} columns, expected {len(keys)}")
            continue
        values = {k: v for k, v in zip(keys, row, strict=True) if k not in _IGNORED}
        name = values.pop("name", "") or _host(values.get(URL, ""))
        folder = tuple(p for p in values.pop("folder", "").split("/") if p)
        entry = Entry(folder, name)
        for key, value in values.items():
            if value:
                entry.fields[key] = (otp_uri(value, name) if key == OTP else value).encode()
        entries.append(entry)
    return entries, skipped


# --- .env ----------------------------------------------------------------------------------------


def read_dotenv(data: bytes, *, skip_bad: bool = False) -> tuple[list[tuple[str, bytes]], Skipped]:
    """The variables of a .env file, read as `pk run --env-file` reads it (interop/dotenv.py)."""
    try:
        variables, bad = dotenv.parse(data)
    except dotenv.NotText as exc:
        raise MalformedSource(f"the .env file {exc}") from None
    skipped: Skipped = []
    for line in bad:
        fail_or_skip(skip_bad, skipped, f"line {line.line}", line.why)
    return [(name, value.encode("utf-8")) for name, value in variables.items()], skipped


# --- Polykey's JSON ------------------------------------------------------------------------------

JSON_FORMAT = "polykey-export"


def write_json(vault: str, head: str, files: list[tuple[str, bytes]], tags: dict[str, Any]) -> str:
    secrets = []
    for path, value in files:
        try:
            secrets.append({"path": path, "text": value.decode("utf-8")})
        except UnicodeDecodeError:
            secrets.append({"path": path, "base64": base64.b64encode(value).decode()})
    doc = {"format": JSON_FORMAT, "version": 1, "vault": vault, "commit": head}
    doc |= {"secrets": secrets, "tags": tags}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _host(url: str) -> str:
    """The host of a URL, or "" when it has none or does not parse (`http://[`)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def read_json(data: bytes) -> tuple[list[tuple[str, bytes]], dict[str, list[str]]]:
    try:
        doc = json.loads(data)
    except RecursionError:
        raise MalformedSource("not JSON (nested too deep)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedSource(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        raise MalformedSource("not a `pk export json` file")
    if doc.get("version") != 1:
        raise MalformedSource(f"export version {doc.get('version')!r} is not supported")
    files: list[tuple[str, bytes]] = []
    for n, s in enumerate(doc.get("secrets") or [], 1):
        if not isinstance(s, dict) or not isinstance(s.get("path"), str):
            raise MalformedSource(f"secret {n} has no path")
        try:
            s["path"].encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedSource(f"secret {n}: the path is not valid Unicode") from None
        if isinstance(s.get("text"), str):
            try:
                files.append((s["path"], s["text"].encode("utf-8")))
            except UnicodeEncodeError:
                raise MalformedSource(f"secret {n}: the text is not valid Unicode") from None
        elif isinstance(s.get("base64"), str):
            try:
                files.append((s["path"], base64.b64decode(s["base64"], validate=True)))
            except ValueError:
                raise MalformedSource(f"secret {s['path']!r}: invalid base64") from None
        else:
            raise MalformedSource(f"secret {s['path']!r} has no value")
    raw_tags = doc.get("tags") or {}
    if not isinstance(raw_tags, dict):
        raise MalformedSource("tags must be an object")
    tags = {str(k): [str(t) for t in v] for k, v in raw_tags.items() if isinstance(v, list)}
    return files, tags
