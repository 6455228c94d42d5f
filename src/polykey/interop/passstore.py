"""pass (the standard unix password manager): read a password-store with the user's own gpg,
and write one that `pass show` reads.

A pass entry is a GnuPG-encrypted file whose first line is the password. The lines after it that
look like ``key: value`` (and one ``otpauth://`` line) are fields; the rest is notes. An entry
becomes a folder of the entry layout when laying it out that way and rendering it back gives the
same bytes; otherwise it keeps its first line as ``password`` and everything after it, verbatim,
as ``notes``. An entry with no newline at all (binary data, say) stays one file holding exactly
its bytes. Either way, exporting it again writes the file it came from, byte for byte (except
a newline-less entry that shares its name with a folder of the store: it gains the final
newline pass itself would have written).

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
    OTP,
    PASSWORD,
    RESERVED,
    TITLE,
    URL,
    USERNAME,
    Entry,
    decode_name,
)

GPG_ID = ".gpg-id"
_FIELD = re.compile(rb"([A-Za-z][A-Za-z0-9 _.-]{0,63}): (.*)")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9 _.-]{0,63}")
_NOT_FIELDS = {PASSWORD, NOTES, OTP, *RESERVED}
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


def parse(name: str, data: bytes, *, raw: bool = False, folder: bool = False) -> Entry:
    """The entry for pass file ``name`` holding ``data`` (see the module docstring).

    ``folder`` says the store also has a folder of that name (so it cannot be a file here).
    """
    parts = tuple(name.split("/"))
    entry = Entry(parts[:-1], parts[-1])
    nl = data.find(b"\n")
    if nl < 0:
        if folder:
            entry.fields[PASSWORD] = data
        else:
            entry.value = data
        return entry
    password, rest = data[:nl], data[nl + 1 :]
    if not raw:
        fields = _structured(rest)
        if fields is not None:
            entry.fields = {PASSWORD: password, **fields}
            if render(entry.fields) == data:
                return entry
    entry.fields = {PASSWORD: password}
    if rest:
        entry.fields[NOTES] = rest
    return entry


def _structured(rest: bytes) -> dict[str, bytes] | None:
    fields: dict[str, bytes] = {}
    pos = 0
    while pos < len(rest):
        end = rest.find(b"\n", pos)
        if end < 0:
            break
        line = rest[pos:end]
        if line.startswith(b"otpauth://") and OTP not in fields:
            fields[OTP] = line
        else:
            m = _FIELD.fullmatch(line)
            if m is None:
                break
            key = m.group(1).decode("ascii")
            if key in _NOT_FIELDS or key in fields:
                return None
            fields[key] = m.group(2)
        pos = end + 1
    if pos < len(rest):
        fields[NOTES] = rest[pos:]
    return fields


def _field_order(keys: Iterable[str]) -> list[str]:
    rank = {USERNAME: 0, URL: 1}
    return sorted(keys, key=lambda k: (rank.get(k, 2), k))


def renderable(key: str, value: bytes) -> bool:
    """Whether a field can be a `key: value` line of a pass entry."""
    return bool(_KEY.fullmatch(key)) and key not in _NOT_FIELDS and b"\n" not in value


def render(fields: dict[str, bytes]) -> bytes:
    """The pass file of an entry's fields (those ``renderable``, plus password, otp, notes)."""
    out = [fields.get(PASSWORD, b""), b"\n"]
    for key in _field_order(k for k in fields if k not in _NOT_FIELDS):
        out += [key.encode("ascii"), b": ", fields[key], b"\n"]
    if OTP in fields:
        out += [fields[OTP], b"\n"]
    out.append(fields.get(NOTES, b""))
    return b"".join(out)


# --- export --------------------------------------------------------------------------------------


def store_files(files: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The pass files (names without `.gpg`) for a vault's files.

    A folder holding ``password`` is an entry: its text fields become one pass file; its other
    files (multi-line or binary fields, attachments) become pass files inside a folder of the
    entry's name. Any other file becomes a pass file of its own, verbatim.
    """
    entries: dict[str, dict[str, bytes]] = {}
    for path in files:
        parent, _, leaf = path.rpartition("/")
        if leaf == PASSWORD and parent:
            entries[parent] = {}
    out: list[tuple[str, bytes]] = []
    for path, value in sorted(files.items()):
        parent, _, leaf = path.rpartition("/")
        if (
            parent in entries
            and leaf != TITLE
            and (leaf in (PASSWORD, NOTES, OTP) or renderable(decode_name(leaf), value))
        ):
            entries[parent][decode_name(leaf)] = value
        elif parent in entries and leaf == TITLE:
            continue
        else:
            out.append((_fs_path(path), value))
    for folder, fields in entries.items():
        title = files.get(f"{folder}/{TITLE}" if folder else TITLE)
        name = _fs_path(folder)
        if title is not None:
            head = _fs_path(folder).rpartition("/")[0]
            leaf = title.decode("utf-8", "replace").replace("/", "%2F")
            name = f"{head}/{leaf}" if head else leaf
        out.append((name, render(fields)))
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
