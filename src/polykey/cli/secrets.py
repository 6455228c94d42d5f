"""`pk secrets ...`: write, read, list, move and remove secrets; each change is one commit."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from polykey.cli.common import (
    Settings,
    emit,
    node_options,
    pass_settings,
    read_input,
)
from polykey.errors import InvalidInput, UsageError

MAX_DIR_FILES = 100_000


def split_address(text: str, *, need_path: bool = True) -> tuple[str, str]:
    """VAULT:PATH -> (vault, path); VAULT alone is allowed where a directory may be the root."""
    vault, sep, path = text.partition(":")
    if not vault or (need_path and (not sep or not path)):
        raise UsageError(
            f"expected VAULT:PATH, got {text[:80]!r}",
            hint="Name a secret as VAULT:PATH, for example work:db/password.",
        )
    return vault, path


def read_value_from_stdin(prompt: str) -> bytes:
    """A secret from standard input, or typed twice with echo off at a terminal."""
    if not sys.stdin.isatty():
        return sys.stdin.buffer.read()
    import getpass
    import hmac

    first = getpass.getpass(f"{prompt}: ")
    second = getpass.getpass(f"{prompt} (again): ")
    if not hmac.compare_digest(first.encode(), second.encode()):
        raise InvalidInput("the two entries differ", hint="Type the same secret twice.")
    return first.encode()


@click.group()
def secrets() -> None:
    """Secrets: files inside vaults, addressed as VAULT:PATH."""


@secrets.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@pass_settings
def write(s: Settings, address: str) -> None:
    """Write a secret from standard input (or typed twice at a prompt)."""
    vault_name, path = split_address(address)
    with s.open_node() as n:
        vault = n.vaults.open(vault_name)
        data = read_value_from_stdin(f"Secret for {address}")
        commit = vault.write(path, data).decode()
    emit(s, "", {"vault": vault_name, "path": path, "commit": commit})


@secrets.command()
@node_options
@click.argument("local_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("address", metavar="VAULT:PATH")
@pass_settings
def create(s: Settings, local_file: Path, address: str) -> None:
    """Store the content of LOCAL_FILE as a secret."""
    vault_name, path = split_address(address)
    data = read_input(str(local_file))
    with s.open_node() as n:
        commit = n.vaults.open(vault_name).write(path, data).decode()
    emit(s, "", {"vault": vault_name, "path": path, "commit": commit})


@secrets.command("dir")
@node_options
@click.argument("local_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("address", metavar="VAULT[:PATH]")
@pass_settings
def dir_(s: Settings, local_dir: Path, address: str) -> None:
    """Import every file under LOCAL_DIR into the vault, in one commit."""
    vault_name, base = split_address(address, need_path=False)
    base = base.strip("/")
    items: list[tuple[str, bytes]] = []
    for file in sorted(local_dir.rglob("*")):
        if file.is_symlink():
            raise InvalidInput(f"{file} is a symbolic link", hint="Vaults hold no links.")
        if file.is_file():
            rel = file.relative_to(local_dir).as_posix()
            items.append((f"{base}/{rel}" if base else rel, file.read_bytes()))
            if len(items) > MAX_DIR_FILES:
                raise InvalidInput(f"more than {MAX_DIR_FILES} files under {local_dir}")
    if not items:
        raise InvalidInput(f"{local_dir} holds no files")
    with s.open_node() as n:
        vault = n.vaults.open(vault_name)
        where = base or "the vault root"
        commit = vault.write_many(items, f"Import {len(items)} secrets into {where}.").decode()
    emit(s, f"Imported {len(items)} secrets.", {"count": len(items), "commit": commit})


@secrets.command()
@node_options
@click.argument("addresses", metavar="VAULT:PATH...", nargs=-1, required=True)
@click.option("--rev", help="Read the secret as it was at this revision.")
@pass_settings
def cat(s: Settings, addresses: tuple[str, ...], rev: str | None) -> None:
    """Print secrets, one after the other."""
    targets = [split_address(a) for a in addresses]
    if not s.json:
        out = sys.stdout.buffer
        with s.open_node() as n:
            streams = [n.vaults.open(v).read_parts(p, rev) for v, p in targets]
            first = [next(stream, b"") for stream in streams]  # every secret found before output
            for head, stream in zip(first, streams, strict=True):
                out.write(head)
                for part in stream:
                    out.write(part)
        out.flush()
        return
    with s.open_node() as n:
        values = [
            (address, n.vaults.open(v).read(p, rev))
            for address, (v, p) in zip(addresses, targets, strict=True)
        ]
    if s.json:
        docs = []
        for address, value in values:
            try:
                docs.append({"address": address, "value": value.decode()})
            except UnicodeDecodeError:
                import base64

                docs.append({"address": address, "base64": base64.b64encode(value).decode()})
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
    rows: list[dict[str, str]] = []
    with s.open_node() as n:
        names = [split_address(address, need_path=False)[0]] if address else None
        if tag is not None:
            for info in n.vaults.all():
                if names is not None and info.name not in names:
                    continue
                vault = n.vaults.open(info.name)
                for path, tags in sorted(vault.tags().items()):
                    if tag in tags:
                        rows.append({"vault": info.name, "path": path, "kind": "secret"})
        else:
            assert address is not None
            vault_name, path = split_address(address, need_path=False)
            for e in n.vaults.open(vault_name).ls(path, recursive=recursive):
                rows.append({"vault": vault_name, "path": e.path, "kind": e.kind})
    if tag is not None:
        human = "\n".join(f"{r['vault']}:{r['path']}" for r in rows)
    else:
        human = "\n".join(r["path"] + ("/" if r["kind"] == "dir" else "") for r in rows)
    emit(s, human, {"entries": rows})


@secrets.command()
@node_options
@click.argument("addresses", metavar="VAULT:PATH...", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Remove directories and what they hold.")
@pass_settings
def rm(s: Settings, addresses: tuple[str, ...], recursive: bool) -> None:
    """Remove secrets (one commit per vault, all in one transaction)."""
    groups: dict[str, list[str]] = {}
    for address in addresses:
        vault_name, path = split_address(address)
        groups.setdefault(vault_name, []).append(path)
    commits = {}
    with s.open_node() as n:
        opened = {name: n.vaults.open(name) for name in groups}
        with n.store.write() as tx:
            for name, paths in groups.items():
                commits[name] = opened[name].remove(paths, recursive=recursive, tx=tx).decode()
    emit(s, "", {"removed": list(addresses), "commits": commits})


def _move(s: Settings, src: str, dst: str, force: bool, copy: bool) -> None:
    from polykey.vaults.vault import transfer

    svault, spath = split_address(src)
    dvault, dpath = split_address(dst, need_path=False)
    with s.open_node() as n:
        source = n.vaults.open(svault)
        if svault == dvault:
            source.move_within(spath, dpath, force=force, copy=copy)
        else:
            transfer(source, spath, n.vaults.open(dvault), dpath, force=force, copy=copy)
    emit(s, "", {"from": src, "to": dst, "copied" if copy else "moved": True})


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
    with s.open_node() as n:
        commit = n.vaults.open(vault_name).mkdir(path, parents=parents).decode()
    emit(s, "", {"vault": vault_name, "path": path, "commit": commit})


@secrets.command("stat")
@node_options
@click.argument("address", metavar="VAULT:PATH")
@pass_settings
def stat_(s: Settings, address: str) -> None:
    """Size, creation and change times, last commit and tags of a secret."""
    from polykey.cli.vaults import when

    vault_name, path = split_address(address)
    with s.open_node() as n:
        st = n.vaults.open(vault_name).stat(path)
    emit(
        s,
        "\n".join(
            [
                f"Path      {vault_name}:{st.path}",
                f"Size      {st.size} bytes",
                f"Created   {when(st.created)}",
                f"Modified  {when(st.modified)}",
                f"Commit    {st.last_commit}",
                f"Tags      {', '.join(st.tags) or '-'}",
            ]
        ),
        {
            "vault": vault_name,
            "path": st.path,
            "size": st.size,
            "created": st.created,
            "modified": st.modified,
            "last_commit": st.last_commit,
            "tags": st.tags,
        },
    )


@secrets.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@pass_settings
def history(s: Settings, address: str) -> None:
    """The commits that changed one secret, newest first."""
    from polykey.cli.vaults import when

    vault_name, path = split_address(address)
    with s.open_node() as n:
        vault = n.vaults.open(vault_name)
        if vault.kind(path) is None and not vault.log(path=path):
            from polykey.vaults.errors import SecretNotFound

            raise SecretNotFound(address)
        commits = vault.log(path=path)
    emit(
        s,
        "\n".join(f"{c.id[:12]}  {when(c.time)}  {c.message}" for c in commits),
        {"commits": [{"id": c.id, "time": c.time, "message": c.message} for c in commits]},
    )


@secrets.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@click.option("--length", type=click.IntRange(4, 4096), default=24, show_default=True)
@click.option(
    "--charset",
    default="ascii",
    show_default=True,
    help="alnum, alpha, digits, hex, ascii (printable, no space), or custom:CHARACTERS.",
)
@click.option("--words", type=click.IntRange(3, 64), help="A passphrase of N BIP39 words instead.")
@click.option("--show", is_flag=True, help="Also print the generated secret.")
@pass_settings
def generate(
    s: Settings, address: str, length: int, charset: str, words: int | None, show: bool
) -> None:
    """Generate a random password (or passphrase) and store it."""
    from polykey.vaults.generate import passphrase, password

    vault_name, path = split_address(address)
    value = passphrase(words) if words else password(length, charset)
    with s.open_node() as n:
        commit = n.vaults.open(vault_name).write(path, value.encode()).decode()
    doc: dict[str, object] = {"vault": vault_name, "path": path, "commit": commit}
    if show:
        doc["value"] = value
    emit(s, value if show else "", doc)


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
    from polykey.cli.edit import edit_in_memory_file

    vault_name, path = split_address(address)
    with s.open_node() as n:
        vault = n.vaults.open(vault_name)
        old = vault.read(path) if vault.kind(path) == "secret" else b""
        new = edit_in_memory_file(old, Path(path).name, allow_disk=allow_disk_temp)
        if new == old:
            emit(s, "No changes.", {"changed": False})
            return
        commit = vault.write(path, new).decode()
    emit(s, "", {"changed": True, "commit": commit})


@secrets.command()
@node_options
@click.argument("pattern")
@click.option("--vault", "vault_names", multiple=True, help="Only this vault (repeatable).")
@pass_settings
def find(s: Settings, pattern: str, vault_names: tuple[str, ...]) -> None:
    """Secrets whose path matches PATTERN (a glob, or a substring), across vaults."""
    import fnmatch

    glob = any(ch in pattern for ch in "*?[")
    needle = pattern.casefold()
    hits: list[dict[str, str]] = []
    with s.open_node() as n:
        for info in n.vaults.all():
            if vault_names and info.name not in vault_names:
                continue
            for e in n.vaults.open(info.name).ls("", recursive=True):
                if e.kind != "secret":
                    continue
                name = e.path.casefold()
                ok = (
                    fnmatch.fnmatchcase(name, needle)
                    or fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], needle)
                    if glob
                    else needle in name
                )
                if ok:
                    hits.append({"vault": info.name, "path": e.path})
    emit(s, "\n".join(f"{h['vault']}:{h['path']}" for h in hits), {"matches": hits})


@secrets.command()
@node_options
@click.argument("pattern")
@click.option("--vault", "vault_names", multiple=True, help="Only this vault (repeatable).")
@click.option("-i", "--ignore-case", is_flag=True)
@pass_settings
def grep(s: Settings, pattern: str, vault_names: tuple[str, ...], ignore_case: bool) -> None:
    """Lines of secrets that match the regular expression PATTERN, across vaults."""
    import re

    try:
        regex = re.compile(pattern.encode(), re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise InvalidInput(f"bad regular expression: {exc}") from None
    hits: list[dict[str, str]] = []
    with s.open_node() as n:
        for info in n.vaults.all():
            if vault_names and info.name not in vault_names:
                continue
            vault = n.vaults.open(info.name)
            for e in vault.ls("", recursive=True):
                if e.kind != "secret" or e.blob is None:
                    continue
                for line in vault.read_blob(e.blob).splitlines():
                    if regex.search(line):
                        hits.append(
                            {
                                "vault": info.name,
                                "path": e.path,
                                "line": line.decode("utf-8", "replace"),
                            }
                        )
    emit(s, "\n".join(f"{h['vault']}:{h['path']}: {h['line']}" for h in hits), {"matches": hits})
