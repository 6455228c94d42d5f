"""pass (the standard unix password manager): read a password-store with the user's own gpg,
and write one that `pass show` reads.

A pass entry is a GnuPG-encrypted file whose first line is the password. Lines that read
``key: value`` anywhere in it are fields (``user:``, ``login:``, ``URL:``, ``website:`` ... in any
case are the layout's ``username`` and ``url``), an ``otpauth://`` line is ``otp`` (alone, as
`pass otp insert` writes it, it is no password), and the other lines are ``notes``. When those
fields do not render back to the same bytes, the entry keeps the file as imported in ``.pass``,
and exporting writes it back byte for byte while the fields are unchanged. A binary file (not
UTF-8, or holding a NUL) stays whole: one file holding exactly its bytes (docs/spec/entries.md).

Plaintext only ever travels through gpg's pipes: nothing decrypted is written to disk.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from polykey.interop.errors import ExportFailed, ImportFailed, MalformedSource, ToolMissing
from polykey.interop.layout import (
    NOTES,
    ORIGINAL,
    OTP,
    PASSWORD,
    RESERVED,
    TITLE,
    URL,
    USERNAME,
    Entry,
    decode_name,
    is_entry,
)
from polykey.values import as_value
from polykey.vaults.paths import fold

GPG_ID = ".gpg-id"
WORKERS = max(2, min(8, 2 * (os.cpu_count() or 1)))

Progress = Callable[[int], None]


def gpg_binary() -> str:
    for name in ("gpg2", "gpg"):
        found = shutil.which(name)
        if found:
            return found
    raise ToolMissing("gpg", hint="Install GnuPG (apt install gnupg, brew install gnupg).")


def default_store() -> Path:
    env = os.environ.get("PASSWORD_STORE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".password-store"


def find_entries(store: Path) -> list[str]:
    """The store's entry names (relative paths without `.gpg`), in order; symlinks not followed."""
    if not store.is_dir():
        raise MalformedSource(f"{store} is not a folder", hint="Give the password-store's folder.")
    if not (store / GPG_ID).is_file():
        raise MalformedSource(
            f"{store} is not a password-store (it has no {GPG_ID})",
            hint="Give the folder `pass init` made (PASSWORD_STORE_DIR, ~/.password-store).",
        )
    names: list[str] = []
    for root, dirs, files in os.walk(store, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(root).relative_to(store)
        for f in sorted(files):
            if f.endswith(".gpg") and not f.startswith(".") and not (Path(root) / f).is_symlink():
                names.append(str(rel / f[:-4]) if rel.parts else f[:-4])
    return names


def decrypt(gpg: str, path: Path, name: str) -> bytes:
    proc = subprocess.run(
        [gpg, "--decrypt", "--quiet", "--yes", "--batch", "--use-agent", "--", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        if "No secret key" in err or "no secret key" in err.lower():
            raise ImportFailed(
                f"{name}: no secret key in your GnuPG keyring decrypts it",
                hint="Import the key the store is encrypted to (gpg --import), then try again.",
            )
        last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no message"]
        raise ImportFailed(f"{name}: gpg could not decrypt it ({last[0][:200]})")
    return proc.stdout


def read_store(
    store: Path, names: list[str], progress: Progress | None = None
) -> Iterable[tuple[str, bytes | ImportFailed]]:
    """Each entry's plaintext (or its error), in order, decrypted by a few gpg processes at once.

    The first one is decrypted alone so that gpg-agent asks for a passphrase only once.
    """
    gpg = gpg_binary()

    def one(name: str) -> bytes | ImportFailed:
        try:
            return decrypt(gpg, store / f"{name}.gpg", name)
        except ImportFailed as exc:
            return exc

    if not names:
        return
    first = one(names[0])
    if progress:
        progress(1)
    yield names[0], first
    with ThreadPoolExecutor(WORKERS) as pool:
        for name, result in zip(names[1:], pool.map(one, names[1:]), strict=True):
            if progress:
                progress(1)
            yield name, result


# --- parsing and rendering ---------------------------------------------------------------------

_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9 _.-]{0,63}):[ \t]+(.*)", re.DOTALL)
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9 _.-]{0,63}")
_NOT_FIELDS = {PASSWORD, NOTES, OTP, *RESERVED}
# what pass, gopass and browserpass users write, in any case, for the entry layout's fields
_ALIASES = {
    "username": USERNAME,
    "user": USERNAME,
    "login": USERNAME,
    "url": URL,
    "uri": URL,
    "link": URL,
    "website": URL,
    "site": URL,
    "otp": OTP,
    "totp": OTP,
    "password": PASSWORD,
    "pass": PASSWORD,
    "secret": PASSWORD,
    "notes": NOTES,
    "note": NOTES,
}
_OTPAUTH = "otpauth://"


def binary(data: bytes) -> bool:
    """Whether a pass file is not text: not UTF-8, or holding a NUL byte."""
    if b"\x00" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def fields_of(name: str, data: bytes) -> dict[str, bytes]:
    """The fields of the pass file ``data`` of entry ``name`` (docs/spec/entries.md, "pass
    entries"): the first line is the password, `key: value` lines anywhere are fields (aliases
    such as `user:` and `login:` in any case are `username`), an otpauth:// line is `otp`, and
    the other lines are `notes`. A binary file has no fields."""
    if binary(data):
        return {}
    lines = data.decode("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    fields: dict[str, bytes] = {}
    taken: set[str] = set()
    notes: list[str] = []

    def put(field: str, value: str) -> None:
        fields[field] = value.encode("utf-8")
        taken.add(fold(field))

    first = lines[0] if lines else ""
    rest = lines[1:]
    if first.strip().lower().startswith(_OTPAUTH):  # `pass otp insert`: the key URI alone
        put(OTP, first.strip())
    elif _first_is_a_field(first):  # `user: bob` then `password: ...` (browserpass)
        rest = lines
    else:
        put(PASSWORD, first)
        if rest[:1] == ["---"]:  # gopass: the password, then `---`, then the fields
            rest = rest[1:]
    for line in rest:
        if line.strip().lower().startswith(_OTPAUTH) and OTP not in fields:
            put(OTP, line.strip())
            continue
        match = _FIELD.fullmatch(line)
        field = _field_name(match.group(1), taken) if match else None
        if match is None or field is None:
            notes.append(line)
        elif field == OTP:
            put(OTP, _otp_uri(match.group(2), name))
        else:
            put(field, match.group(2))
    while notes and not notes[0].strip():
        notes.pop(0)
    while notes and not notes[-1].strip():
        notes.pop()
    if notes:
        put(NOTES, "\n".join(notes) + "\n")
    return fields


def _first_is_a_field(line: str) -> bool:
    match = _FIELD.fullmatch(line)
    return match is not None and _ALIASES.get(match.group(1).strip().lower()) in (
        USERNAME,
        URL,
        PASSWORD,
    )


def _field_name(key: str, taken: set[str]) -> str | None:
    """The field a `key: value` line sets, or None when the line belongs to the notes."""
    key = key.strip()
    standard = _ALIASES.get(key.lower())
    if standard == NOTES:
        return None
    if standard is not None and fold(standard) not in taken:
        return standard
    if key.lower() in _NOT_FIELDS or fold(key) in taken:
        return None
    return key


def _otp_uri(value: str, name: str) -> str:
    value = value.strip()
    if value.lower().startswith(_OTPAUTH):
        return value
    from urllib.parse import quote

    secret = re.sub(r"[\s-]", "", value).upper()
    return f"otpauth://totp/{quote(name or 'imported')}?secret={secret}"


def parse(name: str, data: bytes, *, raw: bool = False, folder: bool = False) -> Entry:
    """The entry for pass file ``name`` holding ``data``.

    Its fields are :func:`fields_of` the file (with ``raw``: the first line as ``password`` and
    the rest, verbatim, as ``notes``). When they do not render back to ``data`` exactly, the
    entry also keeps ``data`` as ``.pass``, which `pk export pass` writes back while the fields
    are unchanged. A binary file stays one file of exactly its bytes at the entry's path; when
    that path cannot hold a file (``folder``: the store has a folder of that name, or the name is
    one of an entry's files), the entry is a folder holding only ``.pass``.
    """
    parts = tuple(name.split("/"))
    entry = Entry(parts[:-1], parts[-1])
    if binary(data):
        if folder or parts[-1] in (*_NOT_FIELDS, USERNAME, URL):
            entry.original = data
        else:
            entry.value = data
        return entry
    entry.fields = _raw_fields(data) if raw else fields_of(parts[-1], data)
    if render(entry.fields) != data:
        entry.original = data
    return entry


def _raw_fields(data: bytes) -> dict[str, bytes]:
    """A pass file unparsed (``--raw``): its first line as the password, the rest as notes."""
    first, _, rest = data.partition(b"\n")
    fields = {PASSWORD: first.removesuffix(b"\r")}
    if rest:
        fields[NOTES] = rest
    return fields


def _field_order(keys: Iterable[str]) -> list[str]:
    rank = {USERNAME: 0, URL: 1}
    return sorted(keys, key=lambda k: (rank.get(k, 2), k))


def renderable(key: str, value: bytes) -> bool:
    """Whether a field can be a `key: value` line of a pass entry (one line of text)."""
    return (
        bool(_KEY.fullmatch(key))
        and key not in _NOT_FIELDS
        and b"\n" not in as_value(value)
        and not binary(value)
    )


def render(fields: dict[str, bytes]) -> bytes:
    """The pass file of an entry's fields (those ``renderable``, plus password, otp, notes):
    the password line (the otpauth line when there is no password), `username`, `url`, the
    other fields by name, the otpauth line, then the notes. Each value but the notes is used as
    a value (without a final newline)."""
    otp = as_value(fields[OTP]) if OTP in fields else None
    if PASSWORD not in fields and otp is not None:
        out, otp = [otp, b"\n"], None
    else:
        out = [as_value(fields.get(PASSWORD, b"")), b"\n"]
    for key in _field_order(k for k in fields if renderable(k, fields[k])):
        out += [key.encode("utf-8"), b": ", as_value(fields[key]), b"\n"]
    if otp is not None:
        out += [otp, b"\n"]
    out.append(fields.get(NOTES, b""))
    return b"".join(out)


def show(folder: str, files: dict[str, bytes]) -> bytes:
    """The pass file of the entry in vault folder ``folder`` whose files are ``files`` (name in
    the vault -> value): its ``.pass`` while the fields are still what that file holds, else the
    file rendered from the fields."""
    original = files.get(ORIGINAL)
    fields = {  # what goes into the pass file: the other files are pass files of their own
        name: value
        for name, value in ((decode_name(k), v) for k, v in files.items())
        if name in (PASSWORD, NOTES, OTP) or renderable(name, value)
    }
    if original is not None:
        title = files.get(TITLE)
        name = decode_name(folder.rpartition("/")[2]) if title is None else title.decode()
        if _same(fields_of(name, original), fields) or (
            not binary(original) and _same(_raw_fields(original), fields)  # imported --raw
        ):
            return original
    return render(fields)


def _same(parsed: dict[str, bytes], fields: dict[str, bytes]) -> bool:
    """Whether an entry's fields are still those parsed (a final newline added by an editor or
    `echo` changes nothing: values are compared as values)."""
    return parsed.keys() == fields.keys() and all(
        as_value(parsed[k]) == as_value(fields[k]) for k in parsed
    )


# --- export --------------------------------------------------------------------------------------


def store_files(files: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The pass files (names without `.gpg`) for a vault's files.

    A folder directly holding ``password``, ``otp`` or ``.pass`` is an entry: its text fields
    become one pass file (its ``.pass`` while the fields are unchanged); its other files
    (multi-line or binary fields, attachments) become pass files inside a folder of the entry's
    name. Any other file becomes a pass file of its own, verbatim.
    """
    children: dict[str, dict[str, bytes]] = {}
    for path, value in files.items():
        parent, _, leaf = path.rpartition("/")
        children.setdefault(parent, {})[leaf] = value
    entries = {folder: kids for folder, kids in children.items() if folder and is_entry(kids)}
    out: list[tuple[str, bytes]] = []
    for path, value in sorted(files.items()):
        parent, _, leaf = path.rpartition("/")
        if parent in entries and (
            leaf in (PASSWORD, NOTES, OTP, TITLE, ORIGINAL) or renderable(decode_name(leaf), value)
        ):
            continue
        out.append((_fs_path(path), value))
    for folder, kids in entries.items():
        title = kids.get(TITLE)
        name = _fs_path(folder)
        if title is not None:
            head = name.rpartition("/")[0]
            leaf = title.decode("utf-8", "replace").replace("/", "%2F")
            name = f"{head}/{leaf}" if head else leaf
        out.append((name, show(folder, kids)))
    return sorted(out)


def _fs_path(path: str) -> str:
    """A vault path as a store path: names decoded unless they would hold a '/'."""
    parts = []
    for part in path.split("/"):
        name = decode_name(part)
        parts.append(part if "/" in name or name in (".", "..") or "\x00" in name else name)
    return "/".join(parts)


def check_recipients(gpg: str, recipients: list[str]) -> None:
    for rid in recipients:
        proc = subprocess.run(
            [gpg, "--batch", "--list-keys", "--with-colons", "--", rid],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            raise ExportFailed(
                f"no public key for {rid!r} in your GnuPG keyring",
                hint="Import it (gpg --import) or name another with --gpg-recipient.",
            )


def write_store(
    dest: Path, items: list[tuple[str, bytes]], recipients: list[str], progress: Progress | None
) -> None:
    """Encrypt every item to the recipients into a new password-store at ``dest``."""
    gpg = gpg_binary()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportFailed(f"{dest} exists and is not an empty folder", hint="Name a new folder.")
    check_recipients(gpg, recipients)
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    (dest / GPG_ID).write_text("".join(f"{r}\n" for r in recipients))
    argv = [gpg, "--encrypt", "--quiet", "--yes", "--batch", "--compress-algo=none"]
    argv += ["--no-encrypt-to", "--trust-model", "always"]
    for r in recipients:
        argv += ["--recipient", r]

    def one(item: tuple[str, bytes]) -> None:
        name, value = item
        target = dest / f"{name}.gpg"
        if dest.resolve() not in target.resolve().parents:
            raise ExportFailed(f"{name}: the name leaves the store folder")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        proc = subprocess.run(
            [*argv, "--output", str(target)], input=value, capture_output=True, check=False
        )
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise ExportFailed(f"{name}: gpg could not encrypt it ({err[0][:200]})")
        if progress:
            progress(1)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, items))
