"""`pk secrets ...`: write, read, list, move and remove secrets; each change is one commit."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from polykey.cli.common import (
    Settings,
    emit,
    node_options,
    pass_settings,
    read_input,
    split_address,
)
from polykey.cli.safe_text import shown
from polykey.errors import InvalidInput, UsageError

MAX_DIR_FILES = 100_000


def read_value_from_stdin(prompt: str) -> bytes:
    """A secret from standard input, or typed twice with echo off at a terminal."""
    ctx = click.get_current_context(silent=True)
    taken = ctx.find_root().obj if ctx is not None else None
    if isinstance(taken, dict) and taken.get("stdin") is not None:  # the fast path read it
        return bytes(taken["stdin"])
    if not sys.stdin.isatty():
        return sys.stdin.buffer.read()
    import getpass
    import hmac

    first = getpass.getpass(f"{prompt}: ")
    second = getpass.getpass(f"{prompt} (again): ")
    if not hmac.compare_digest(first.encode(), second.encode()):
        raise InvalidInput("the two entries differ", hint="Type the same secret twice.")
    return first.encode()


def _env_command() -> click.Command:
    from polykey.cli.inject import env

    return env


class _SecretsGroup(click.Group):
    """`secrets env` lives in cli/inject.py; it is loaded only when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "env"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "env":
            return _env_command()
        return super().get_command(ctx, cmd_name)


@click.group(cls=_SecretsGroup)
def secrets() -> None:
    """Secrets: files inside vaults, addressed as VAULT:PATH."""


@secrets.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@pass_settings
def write(s: Settings, address: str) -> None:
    """Write a secret from standard input (or typed twice at a prompt)."""
    vault_name, path = split_address(address)
    value = read_value_from_stdin(f"Secret for {address}")
    r = s.call("secrets.write", {"vault": vault_name, "path": path, "data": value})
    emit(s, "", r)


@secrets.command()
@node_options
@click.argument("local_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("address", metavar="VAULT:PATH")
@pass_settings
def create(s: Settings, local_file: Path, address: str) -> None:
    """Store the content of LOCAL_FILE as a secret."""
    vault_name, path = split_address(address)
    value = read_input(str(local_file))
    emit(s, "", s.call("secrets.write", {"vault": vault_name, "path": path, "data": value}))


@secrets.command("dir")
@node_options
@click.argument("local_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("address", metavar="VAULT[:PATH]")
@pass_settings
def dir_(s: Settings, local_dir: Path, address: str) -> None:
    """Import every file under LOCAL_DIR into the vault, in one commit."""
    vault_name, base = split_address(address, need_path=False)
    base = base.strip("/")
    items: list[list[object]] = []
    for file in sorted(local_dir.rglob("*")):
        if file.is_symlink():
            raise InvalidInput(f"{file} is a symbolic link", hint="Vaults hold no links.")
        if file.is_file():
            rel = file.relative_to(local_dir).as_posix()
            items.append([f"{base}/{rel}" if base else rel, file.read_bytes()])
            if len(items) > MAX_DIR_FILES:
                raise InvalidInput(f"more than {MAX_DIR_FILES} files under {local_dir}")
    if not items:
        raise InvalidInput(f"{local_dir} holds no files")
    message = f"Import {len(items)} secrets into {base or 'the vault root'}."
    r = s.call("secrets.write_many", {"vault": vault_name, "items": items, "message": message})
    emit(s, f"Imported {r['count']} secrets.", r)


@secrets.command()
@node_options
@click.argument("addresses", metavar="VAULT:PATH...", nargs=-1, required=True)
@click.option("--rev", help="Read the secret as it was at this revision.")
@click.option(
    "-c", "--clip", is_flag=True, help="Copy to the clipboard instead (an entry: its password)."
)
@click.option(
    "--clear-after",
    type=click.IntRange(min=0),
    default=45,
    show_default=True,
    help="With --clip: clear the clipboard after this many seconds if it still holds the secret.",
)
@pass_settings
def cat(
    s: Settings, addresses: tuple[str, ...], rev: str | None, clip: bool, clear_after: int
) -> None:
    """Print secrets, one after the other (or copy one to the clipboard).

    The folder of an entry (one holding password, otp or .pass) prints as `pass show` would:
    the password, then the fields. Values print as stored; a newline separates two values, and
    ends the last on a terminal, where a value does not end with one.
    """
    from polykey.values import cat_parts

    targets = [list(split_address(a)) for a in addresses]
    params = {"items": targets, "rev": rev, "entries": True}
    if clip:
        from polykey.cli import clip as clipboard

        if len(targets) != 1:
            raise UsageError("--clip copies one secret")
        item = s.call("secrets.cat", params)["secrets"][0]
        clipboard.copy(
            item["data"] if "data" in item else _password(addresses[0], item), clear_after
        )
        when = f"clearing in {clear_after} s" if clear_after else "not cleared automatically"
        emit(
            s,
            f"Copied {shown(addresses[0])}; {when}.",
            {"copied": True, "clear_after": clear_after},
        )
        return
    if s.json:
        _cat_json(s, addresses, s.call("secrets.cat", params)["secrets"])
        return
    out = sys.stdout.buffer
    terminal = sys.stdout.isatty()
    if s.agent() is None:  # no agent: stream large secrets straight out
        from polykey.agent import methods
        from polykey.vaults.errors import IsADirectory

        with s.open_node() as n:
            values: list[Iterable[bytes]] = []
            for vault_name, path in targets:
                try:
                    stream = n.vaults.open(vault_name).read_parts(path, rev)
                except IsADirectory:
                    one = {"items": [[vault_name, path]], "rev": rev, "entries": True}
                    values.append([_shown_entry(methods.call(n, "secrets.cat", one)["secrets"][0])])
                    continue
                head = next(stream, b"")  # every secret found before any is printed
                values.append(itertools.chain([head], stream))
            for part in cat_parts(values, terminal):
                out.write(part)
        out.flush()
        return
    items = s.call("secrets.cat", params)["secrets"]
    for part in cat_parts(([_value_or_entry(item)] for item in items), terminal):
        out.write(part)
    out.flush()


def _shown_entry(item: dict[str, Any]) -> bytes:
    """An entry folder as `pass show` prints it (docs/spec/entries.md)."""
    from polykey.interop.passstore import show

    return show(item["path"].strip("/"), item["files"])


def _value_or_entry(item: dict[str, Any]) -> bytes:
    return bytes(item["data"]) if "data" in item else _shown_entry(item)


def _password(address: str, item: dict[str, Any]) -> bytes:
    password = item["files"].get("password")
    if password is None:
        raise InvalidInput(
            f"the entry {address} has no password",
            hint=f"Copy one of its fields: pk secrets cat --clip {address}/FIELD.",
        )
    return bytes(password)


def _cat_json(s: Settings, addresses: tuple[str, ...], items: list[dict[str, Any]]) -> None:
    import base64

    docs = []
    for address, item in zip(addresses, items, strict=True):
        data = _value_or_entry(item)
        doc: dict[str, Any] = {"address": address}
        if "files" in item:
            doc["entry"] = True
        try:
            doc["value"] = data.decode()
        except UnicodeDecodeError:
            doc["base64"] = base64.b64encode(data).decode()
        docs.append(doc)
    emit(s, "", {"secrets": docs})


@secrets.command()
@node_options
@click.argument("address", metavar="[VAULT[:DIR]]", required=False)
@click.option("-R", "--recursive", is_flag=True, help="List directories recursively.")
@click.option("--tag", help="Only secrets with this tag (across all vaults without VAULT).")
@pass_settings
def ls(s: Settings, address: str | None, recursive: bool, tag: str | None) -> None:
    """List the secrets of a vault directory, or every secret with --tag."""
    if address is None and tag is None:
        raise UsageError("name a vault, or --tag to list tagged secrets across vaults")
    vault_name, path = split_address(address, need_path=False) if address else (None, "")
    r = s.call(
        "secrets.ls", {"vault": vault_name, "path": path, "recursive": recursive, "tag": tag}
    )
    rows = r["entries"]
    if tag is not None:
        human = "\n".join(f"{shown(e['vault'])}:{shown(e['path'])}" for e in rows)
    else:
        human = "\n".join(shown(e["path"]) + ("/" if e["kind"] == "dir" else "") for e in rows)
    emit(s, human, r)


@secrets.command()
@node_options
@click.argument("addresses", metavar="VAULT:PATH...", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Remove directories and what they hold.")
@pass_settings
def rm(s: Settings, addresses: tuple[str, ...], recursive: bool) -> None:
    """Remove secrets (one commit per vault, all in one transaction)."""
    items = [list(split_address(a)) for a in addresses]
    r = s.call("secrets.rm", {"items": items, "recursive": recursive})
    emit(s, "", {"removed": list(addresses), **r})


def _move(s: Settings, src: str, dst: str, force: bool, copy: bool) -> None:
    svault, spath = split_address(src)
    dvault, dpath = split_address(dst, need_path=False)
    params = {
        "src_vault": svault,
        "src_path": spath,
        "dst_vault": dvault,
        "dst_path": dpath,
        "force": force,
        "copy": copy,
    }
    emit(s, "", {"from": src, "to": dst, **s.call("secrets.move", params)})


@secrets.command()
@node_options
@click.argument("src", metavar="SRC")
@click.argument("dst", metavar="DST")
@click.option("-f", "--force", is_flag=True, help="Replace DST if it exists.")
@pass_settings
def mv(s: Settings, src: str, dst: str, force: bool) -> None:
    """Move a secret or directory (also to another vault)."""
    _move(s, src, dst, force, copy=False)


@secrets.command()
@node_options
@click.argument("src", metavar="SRC")
@click.argument("dst", metavar="DST")
@click.option("-f", "--force", is_flag=True, help="Replace DST if it exists.")
@pass_settings
def cp(s: Settings, src: str, dst: str, force: bool) -> None:
    """Copy a secret or directory (also to another vault)."""
    _move(s, src, dst, force, copy=True)


@secrets.command()
@node_options
@click.argument("address", metavar="VAULT:DIR")
@click.option("-p", "--parents", is_flag=True, help="Also make missing parent directories.")
@pass_settings
def mkdir(s: Settings, address: str, parents: bool) -> None:
    """Make an empty directory."""
    vault_name, path = split_address(address)
    r = s.call("secrets.mkdir", {"vault": vault_name, "path": path, "parents": parents})
    emit(s, "", r)


@secrets.command("stat")
@node_options
@click.argument("address", metavar="VAULT:PATH")
@pass_settings
def stat_(s: Settings, address: str) -> None:
    """Size, creation and change times, last commit and tags of a secret."""
    from polykey.cli.vaults import when

    vault_name, path = split_address(address)
    st = s.call("secrets.stat", {"vault": vault_name, "path": path})
    human = "\n".join(
        [
            f"Path      {shown(vault_name)}:{shown(st['path'])}",
            f"Size      {st['size']} bytes",
            f"Created   {when(st['created'])}",
            f"Modified  {when(st['modified'])}",
            f"Commit    {shown(st['last_commit'])}",
            f"Tags      {shown(', '.join(st['tags']) or '-')}",
        ]
    )
    emit(s, human, st)


@secrets.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@pass_settings
def history(s: Settings, address: str) -> None:
    """The commits that changed one secret, newest first."""
    from polykey.cli.vaults import commit_lines

    vault_name, path = split_address(address)
    r = s.call("secrets.history", {"vault": vault_name, "path": path})
    emit(s, commit_lines(r["commits"]), r)


@secrets.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@click.argument("length_arg", metavar="[LENGTH]", required=False, type=click.IntRange(4, 4096))
@click.option("--length", type=click.IntRange(4, 4096), help="Characters (24 unless LENGTH).")
@click.option(
    "--charset",
    help="alnum, alpha, digits, hex, ascii (printable, no space; the default), "
    "or custom:CHARACTERS.",
)
@click.option("-n", "--no-symbols", is_flag=True, help="Letters and digits only (alnum).")
@click.option("--words", type=click.IntRange(3, 64), help="A passphrase of N BIP39 words instead.")
@click.option("-f", "--force", is_flag=True, help="Replace an existing secret without asking.")
@click.option(
    "--rotate",
    is_flag=True,
    help="Replace a secret that exists, without asking: rotate one `pk health` flags.",
)
@click.option("-c", "--clip", is_flag=True, help="Copy it to the clipboard instead of printing.")
@click.option(
    "--clear-after",
    type=click.IntRange(min=0),
    default=45,
    show_default=True,
    help="With --clip: clear the clipboard after this many seconds if it still holds it.",
)
@click.option("--show", is_flag=True, hidden=True)  # printing is the default now, as in pass
@pass_settings
def generate(
    s: Settings,
    address: str,
    length_arg: int | None,
    length: int | None,
    charset: str | None,
    no_symbols: bool,
    words: int | None,
    force: bool,
    rotate: bool,
    clip: bool,
    clear_after: int,
    show: bool,
) -> None:
    """Generate a random password (or passphrase), store it and print it (or copy it).

    As `pass generate`: LENGTH may follow the path; a secret that exists is replaced only after
    a yes at the prompt, or with --force. Naming an entry's folder replaces its password.
    --rotate replaces a secret that must exist (a password `pk health` says needs rotation:
    the new value clears that, as it is no value a node whose access ended received).
    """
    from polykey.vaults.generate import passphrase, password

    vault_name, path = split_address(address)
    if length_arg is not None and length is not None and length_arg != length:
        raise UsageError("two different lengths", hint="Give LENGTH or --length, not both.")
    if no_symbols and charset not in (None, "alnum"):
        raise UsageError("--no-symbols and --charset disagree", hint="Give one of them.")
    size = length_arg or length or 24
    value = (
        passphrase(words)
        if words
        else password(size, charset or ("alnum" if no_symbols else "ascii"))
    )
    if clip:
        from polykey.cli import clip as clipboard

        clipboard.tools()  # no clipboard: say so before anything is replaced
    if rotate:
        _must_exist(s, vault_name, path)
    path, address = _generate_target(s, vault_name, path, force or rotate)
    r = s.call("secrets.write", {"vault": vault_name, "path": path, "data": value.encode()})
    if clip:
        clipboard.copy(value.encode(), clear_after)
        when = f"clearing in {clear_after} s" if clear_after else "not cleared automatically"
        human = f"Copied the new secret of {shown(address)}; {when}."
        emit(s, human, {**r, "copied": True, "clear_after": clear_after})
        return
    emit(s, value, {**r, "value": value})


def _must_exist(s: Settings, vault_name: str, path: str) -> None:
    from polykey.vaults.errors import SecretNotFound

    if s.call("secrets.kind", {"vault": vault_name, "path": path})["kind"] is None:
        raise SecretNotFound(
            f"{vault_name}:{path}",
            hint="--rotate replaces a secret that exists; without it, generate makes a new one.",
        )


def _generate_target(s: Settings, vault_name: str, path: str, force: bool) -> tuple[str, str]:
    """Where `generate` writes (an entry folder: its password), asking before it replaces."""
    from polykey.vaults.errors import IsADirectory, SecretExists

    found = s.call("secrets.kind", {"vault": vault_name, "path": path, "entry": True})
    kind = found["kind"]
    if kind == "dir":
        where = f"{vault_name}:{path.strip('/')}"
        if not found.get("markers"):
            raise IsADirectory(
                f"{where} (a folder, not an entry)",
                hint=f"Name a new secret, or an entry's folder; `pk secrets ls {where}` lists it.",
            )
        path = f"{path.strip('/')}/password"
        kind = "secret" if "password" in found["markers"] else None
    address = f"{vault_name}:{path}"
    if kind is None or force:
        return path, address
    if sys.stdin.isatty() and sys.stderr.isatty():
        if click.confirm(f"{shown(address)} exists. Replace it?", default=False, err=True):
            return path, address
        raise SecretExists(f"{address}: kept as it was", hint="Add --force to replace it.")
    raise SecretExists(
        address, hint="Add --force to replace it (the old value stays in the history)."
    )


@secrets.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@click.option(
    "--allow-disk-temp",
    is_flag=True,
    help="Allow a disk-backed temporary file when no RAM-backed one exists (unsafe).",
)
@pass_settings
def edit(s: Settings, address: str, allow_disk_temp: bool) -> None:
    """Edit a secret in $EDITOR through a RAM-backed private temporary file, wiped after."""
    from polykey.cli.edit import NoRamTemp, edit_in_memory_file, ram_folder

    vault_name, path = split_address(address)
    if ram_folder() is None and not allow_disk_temp:
        raise NoRamTemp()
    kind = s.call("secrets.kind", {"vault": vault_name, "path": path})["kind"]
    old = b""
    if kind == "secret":
        old = s.call("secrets.cat", {"items": [[vault_name, path]]})["secrets"][0]["data"]
    elif kind == "dir":
        from polykey.vaults.errors import IsADirectory

        raise IsADirectory(address)
    new = edit_in_memory_file(old, Path(path).name, allow_disk=allow_disk_temp)
    if new == old:
        emit(s, "No changes.", {"changed": False})
        return
    r = s.call("secrets.write", {"vault": vault_name, "path": path, "data": new})
    emit(s, "", {"changed": True, **r})


@secrets.command()
@node_options
@click.argument("pattern")
@click.option("--vault", "vault_names", multiple=True, help="Only this vault (repeatable).")
@pass_settings
def find(s: Settings, pattern: str, vault_names: tuple[str, ...]) -> None:
    """Secrets whose path matches PATTERN (a glob, or a substring), across vaults."""
    r = s.call("secrets.find", {"pattern": pattern, "vaults": list(vault_names)})
    emit(s, "\n".join(f"{shown(h['vault'])}:{shown(h['path'])}" for h in r["matches"]), r)


@secrets.command()
@node_options
@click.argument("pattern")
@click.option("--vault", "vault_names", multiple=True, help="Only this vault (repeatable).")
@click.option("-i", "--ignore-case", is_flag=True)
@pass_settings
def grep(s: Settings, pattern: str, vault_names: tuple[str, ...], ignore_case: bool) -> None:
    """Lines of secrets that match the regular expression PATTERN, across vaults."""
    params = {"pattern": pattern, "vaults": list(vault_names), "ignore_case": ignore_case}
    r = s.call("secrets.grep", params)
    lines = (  # a line of a secret, which may come from another node: shown escaped
        f"{shown(h['vault'])}:{shown(h['path'])}: {shown(h['line'])}" for h in r["matches"]
    )
    emit(s, "\n".join(lines), r)
