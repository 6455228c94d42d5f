"""`pk import ...` and `pk export ...`: bring secrets from pass, KeePass, Bitwarden, 1Password,
browser CSV and .env files, and take them out again (docs/spec/entries.md).

Sources are read and decrypted here, in memory; the node writes the whole import in one
transaction (all or nothing). Nothing decrypted touches the disk, except what `export git` and
`export dotenv --to` write on purpose, and say so.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from polykey.cli.common import (
    Settings,
    emit,
    node_options,
    pass_settings,
    read_input,
    read_new_secret,
    read_secret,
    split_address,
)
from polykey.errors import InvalidInput, UsageError

PROGRESS_FROM = 200  # entries; fewer finish before a bar is worth drawing

Skipped = list[tuple[str, str]]


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on standard error for long runs when standard output is a terminal."""
    if total < PROGRESS_FROM or not sys.stdout.isatty():
        yield None
        return
    lock = threading.Lock()
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:

        def step(n: int) -> None:
            with lock:
                bar.update(n)

        yield step


def _warn(lines: list[str]) -> None:
    """Warnings name secrets and entries, whose names may come from another node: escaped."""
    from polykey.cli.safe_text import shown

    for line in lines:
        click.echo(f"pk: warning: {shown(line)}", err=True)


def _skipped_lines(skipped: Skipped) -> list[str]:
    return [f"skipped {label}: {why}" for label, why in skipped]


def import_options(f: Any) -> Any:
    f = click.option("--dry-run", is_flag=True, help="List what would be written; write nothing.")(
        f
    )
    f = click.option(
        "--overwrite",
        is_flag=True,
        help="Replace entries and secrets that exist at the same paths.",
    )(f)
    f = click.option(
        "--skip-bad",
        is_flag=True,
        help="Skip entries that cannot be imported (and list them) instead of importing nothing.",
    )(f)
    return click.option(
        "--vault",
        "target",
        required=True,
        metavar="VAULT[:DIR]",
        help="Where to put the entries (the vault is created if it does not exist).",
    )(f)


def write_entries(
    s: Settings,
    target: str,
    entries: list[Any],
    skipped: Skipped,
    source: str,
    *,
    skip_bad: bool,
    overwrite: bool,
    dry_run: bool,
    commit_each: bool = False,
    notes: list[str] | None = None,
) -> None:
    """Lay entries out, then have the node write them in one transaction."""
    from polykey.interop.layout import to_files

    vault, prefix = split_address(target, need_path=False)
    files, bad = to_files(entries, prefix, skip_bad=skip_bad)
    skipped = skipped + bad
    if not files.groups:
        raise InvalidInput(
            f"nothing to import from {source}"
            + (f" ({len(skipped)} entries skipped)" if skipped else ""),
            hint="Check the source; with --skip-bad every entry may have been skipped.",
        )
    if commit_each:
        commits = [
            [f"Import {label} from {source}.", items, {where: files.tags[where]}]
            if where in files.tags
            else [f"Import {label} from {source}.", items, {}]
            for label, where, items in files.groups
        ]
    else:
        noun = "entry" if files.entries == 1 else "entries"
        commits = [[f"Import {files.entries} {noun} from {source}.", files.items, files.tags]]
    replace = [
        where for _, where, items in files.groups if not (len(items) == 1 and items[0][0] == where)
    ]
    _write(
        s, vault, commits, files.entries, len(files.items), source, skipped, overwrite, dry_run,
        replace,
    )  # fmt: skip
    _warn([f"renamed {r}" for r in files.renamed] + (notes or []))


def _write(
    s: Settings,
    vault: str,
    commits: list[list[Any]],
    entries: int,
    secrets: int,
    source: str,
    skipped: Skipped,
    overwrite: bool,
    dry_run: bool,
    replace: list[str] | None = None,
) -> None:
    doc: dict[str, Any] = {"vault": vault, "entries": entries, "secrets": secrets}
    doc["skipped"] = [{"entry": label, "reason": why} for label, why in skipped]
    params = {"vault": vault, "commits": commits, "create": True, "overwrite": overwrite}
    params |= {"replace": replace or [], "dry_run": dry_run}
    r = s.call("vaults.import", params)
    doc |= r
    removed = r.get("removed") or []
    if dry_run:
        from polykey.cli.safe_text import shown

        lines = [*map(shown, r["paths"]), *(f"(remove) {shown(p)}" for p in removed)]
        lines.append(f"(dry run: {secrets} secrets, nothing written)")
        emit(s, "\n".join(lines), doc)
        _warn(_skipped_lines(skipped))
        return
    made = " (created)" if r["created"] else ""
    n = r["commits"]
    emit(
        s,
        (
            f"Imported {entries} entries ({secrets} secrets)"
            if entries != secrets or source not in (".env", "JSON")
            else f"Imported {secrets} secret{'s' if secrets != 1 else ''}"
        )
        + f" from {source} into vault "
        f"{r['vault']}{made} in {n} commit{'s' if n != 1 else ''}."
        + (f" Skipped {len(skipped)}." if skipped else "")
        + (f" Removed {len(removed)} old secrets of replaced entries." if removed else ""),
        doc,
    )
    _warn(_skipped_lines(skipped))


# --- import ------------------------------------------------------------------------------------


@click.group("import")
def import_() -> None:
    """Bring secrets in from pass, KeePass, Bitwarden, 1Password, browser CSV or .env files."""


@import_.command("pass")
@node_options
@click.argument("store", required=False, type=click.Path(file_okay=False, path_type=Path))
@import_options
@click.option("--commit-each", is_flag=True, help="One commit per entry instead of one for all.")
@click.option("--raw", is_flag=True, help="Keep every entry as password + notes, unparsed.")
@pass_settings
def import_pass(
    s: Settings,
    store: Path | None,
    target: str,
    skip_bad: bool,
    overwrite: bool,
    dry_run: bool,
    commit_each: bool,
    raw: bool,
) -> None:
    """Import a password-store (STORE, else $PASSWORD_STORE_DIR, else ~/.password-store).

    Entries are decrypted with your own gpg (and gpg-agent), in memory only.
    """
    from polykey.interop import passstore
    from polykey.interop.errors import ImportFailed

    root = store or passstore.default_store()
    names = passstore.find_entries(root)
    folders = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    entries, skipped = [], []
    with progress(len(names), "Decrypting") as step:
        for name, result in passstore.read_store(root, names, step):
            if isinstance(result, ImportFailed):
                if not skip_bad:
                    raise result
                skipped.append((name, result.detail))
                continue
            entries.append(passstore.parse(name, result, raw=raw, folder=name in folders))
    write_entries(
        s,
        target,
        entries,
        skipped,
        "pass",
        skip_bad=skip_bad,
        overwrite=overwrite,
        dry_run=dry_run,
        commit_each=commit_each,
    )


def _source_secret(file: Path | None, prompt: str) -> str:
    return read_secret(file, "PK_SOURCE_PASSWORD", prompt).decode("utf-8")


@import_.command("keepass")
@node_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@import_options
@click.option(
    "--source-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The KeePass file's password (first line). Else PK_SOURCE_PASSWORD, else a prompt.",
)
@click.option(
    "--keyfile", type=click.Path(dir_okay=False, path_type=Path), help="The KeePass key file."
)
@click.option("--no-password", is_flag=True, help="The file is opened by the key file alone.")
@pass_settings
def import_keepass(
    s: Settings,
    file: Path,
    target: str,
    skip_bad: bool,
    overwrite: bool,
    dry_run: bool,
    source_password_file: Path | None,
    keyfile: Path | None,
    no_password: bool,
) -> None:
    """Import a KeePass database (KDBX 3 or 4): groups, entries, fields, attachments, tags."""
    from polykey.interop import keepass

    if no_password and keyfile is None:
        raise UsageError("--no-password needs --keyfile")
    password = None if no_password else _source_secret(source_password_file, "KeePass password")
    kp = keepass.open_kdbx(file, password, keyfile)
    entries, binned = keepass.read_entries(kp)
    notes = [f"left out {binned} entries in the recycle bin"] if binned else []
    write_entries(
        s,
        target,
        entries,
        [],
        f"KeePass {file.name}",
        skip_bad=skip_bad,
        overwrite=overwrite,
        dry_run=dry_run,
        notes=notes,
    )


@import_.command("bitwarden")
@node_options
@click.argument("file")
@import_options
@pass_settings
def import_bitwarden(
    s: Settings, file: str, target: str, skip_bad: bool, overwrite: bool, dry_run: bool
) -> None:
    """Import Bitwarden's unencrypted JSON export (FILE, or - for standard input)."""
    from polykey.interop.formats import read_bitwarden

    entries, skipped = read_bitwarden(read_input(file, "export"), skip_bad=skip_bad)
    write_entries(
        s,
        target,
        entries,
        skipped,
        "Bitwarden",
        skip_bad=skip_bad,
        overwrite=overwrite,
        dry_run=dry_run,
    )


@import_.command("1password")
@node_options
@click.argument("file")
@import_options
@pass_settings
def import_1password(
    s: Settings, file: str, target: str, skip_bad: bool, overwrite: bool, dry_run: bool
) -> None:
    """Import 1Password's unencrypted export (a .1pux FILE, or - for standard input)."""
    from polykey.interop.onepassword import read_1pux

    entries, skipped = read_1pux(read_input(file, "export"), skip_bad=skip_bad)
    write_entries(
        s,
        target,
        entries,
        skipped,
        "1Password",
        skip_bad=skip_bad,
        overwrite=overwrite,
        dry_run=dry_run,
    )


@import_.command("csv")
@node_options
@click.argument("file")
@import_options
@click.option(
    "--columns",
    help="The columns in order, for files without a known header: "
    "name,url,username,password,notes,otp,folder (others become fields; 'skip' drops one).",
)
@pass_settings
def import_csv(
    s: Settings,
    file: str,
    target: str,
    skip_bad: bool,
    overwrite: bool,
    dry_run: bool,
    columns: str | None,
) -> None:
    """Import a CSV of logins (Chrome, Firefox, Edge, Safari exports, or any with --columns)."""
    from polykey.interop.formats import read_csv

    names = [c for c in columns.split(",")] if columns else None
    entries, skipped = read_csv(read_input(file, "CSV file"), names, skip_bad=skip_bad)
    write_entries(
        s, target, entries, skipped, "CSV", skip_bad=skip_bad, overwrite=overwrite, dry_run=dry_run
    )


@import_.command("dotenv")
@node_options
@click.argument("file")
@import_options
@pass_settings
def import_dotenv(
    s: Settings, file: str, target: str, skip_bad: bool, overwrite: bool, dry_run: bool
) -> None:
    """Import a .env file: one secret per variable, named after it, in VAULT[:DIR]."""
    from polykey.interop.formats import read_dotenv

    variables, skipped = read_dotenv(read_input(file, ".env file"), skip_bad=skip_bad)
    vault, prefix = split_address(target, need_path=False)
    prefix = prefix.strip("/")
    if not variables:
        raise InvalidInput(f"no variables in {file}")
    items = [(f"{prefix}/{name}" if prefix else name, value) for name, value in variables]
    commits = [[f"Import {len(items)} variables from {Path(file).name}.", items, {}]]
    _write(s, vault, commits, len(items), len(items), ".env", skipped, overwrite, dry_run)


@import_.command("json")
@node_options
@click.argument("file")
@import_options
@pass_settings
def import_json(
    s: Settings, file: str, target: str, skip_bad: bool, overwrite: bool, dry_run: bool
) -> None:
    """Import a `pk export json` file (every secret at its path, with its tags)."""
    from polykey.interop.formats import read_json

    files, tags = read_json(read_input(file, "export"))
    vault, prefix = split_address(target, need_path=False)
    prefix = prefix.strip("/")

    def at(path: str) -> str:
        return f"{prefix}/{path}" if prefix else path

    items = [(at(path), value) for path, value in files]
    commits = [[f"Import {len(items)} secrets from {Path(file).name}.", items, {}]]
    commits[0][2] = {at(k): v for k, v in tags.items()}
    _write(s, vault, commits, len(items), len(items), "JSON", [], overwrite, dry_run)


# --- export ------------------------------------------------------------------------------------


@click.group("export")
def export() -> None:
    """Take secrets out: to pass, KeePass, .env, JSON, or a plain git repository."""


def _export(s: Settings, source: str) -> tuple[str, dict[str, Any]]:
    vault, path = split_address(source, need_path=False)
    r = s.call("vaults.export", {"vault": vault, "path": path})
    return r["vault"], r


@export.command("pass")
@node_options
@click.argument("source", metavar="VAULT[:DIR]")
@click.option(
    "--to", "dest", required=True, type=click.Path(path_type=Path), help="A new store folder."
)
@click.option(
    "--gpg-recipient",
    "recipients",
    multiple=True,
    required=True,
    help="Encrypt to this GnuPG key (repeatable); written to .gpg-id.",
)
@pass_settings
def export_pass(s: Settings, source: str, dest: Path, recipients: tuple[str, ...]) -> None:
    """Write a password-store that `pass show` reads, encrypted with your gpg."""
    from polykey.interop import passstore

    vault, r = _export(s, source)
    items = passstore.store_files(dict(r["files"]))
    with progress(len(items), "Encrypting") as step:
        passstore.write_store(dest, items, list(recipients), step)
    emit(
        s,
        f"Exported {len(items)} pass entries from vault {vault} to {dest}.",
        {"vault": vault, "to": str(dest), "entries": len(items)},
    )


@export.command("keepass")
@node_options
@click.argument("source", metavar="VAULT[:DIR]")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--target-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new file's password (first line). Else PK_TARGET_PASSWORD, else asked twice.",
)
@click.option(
    "--keyfile", type=click.Path(dir_okay=False, path_type=Path), help="Also lock it with this."
)
@pass_settings
def export_keepass(
    s: Settings, source: str, file: Path, target_password_file: Path | None, keyfile: Path | None
) -> None:
    """Write a new KeePass (KDBX 4) file: folders as groups, entries with their fields."""
    from polykey.interop import keepass
    from polykey.interop.layout import from_files

    vault, r = _export(s, source)
    entries = from_files(dict(r["files"]), r["tags"], vault)
    password = read_new_secret(target_password_file, "PK_TARGET_PASSWORD", "KeePass password")
    with progress(len(entries), "Writing") as step:
        notes = keepass.write_kdbx(file, entries, password.decode("utf-8"), keyfile, step)
    _warn(notes)
    emit(
        s,
        f"Exported {len(entries)} entries from vault {vault} to {file}.",
        {"vault": vault, "to": str(file), "entries": len(entries), "notes": notes},
    )


@export.command("dotenv")
@node_options
@click.argument("source", metavar="VAULT[:DIR]")
@click.option(
    "--to",
    "dest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write this new file (plaintext on disk, mode 0600) instead of standard output.",
)
@pass_settings
def export_dotenv(s: Settings, source: str, dest: Path | None) -> None:
    """The secrets directly in VAULT[:DIR] as NAME=value lines of a .env file."""
    from polykey.cli.common import write_output
    from polykey.cli.envfmt import render, valid_name

    _, r = _export(s, source)
    variables, left = [], []
    for path, value in r["files"]:
        if "/" not in path and valid_name(path):
            variables.append((path, value))
        else:
            left.append(path)
    text = render(variables, "dotenv")
    if left:
        _warn([f"left out {len(left)} secrets that are not variable names: {', '.join(left[:5])}"])
    if dest is not None:
        write_output(text.encode("utf-8"), dest, binary=False)
        _warn([f"{dest} holds {len(variables)} secrets in plaintext; delete it when done"])
    else:
        sys.stdout.write(text)


@export.command("json")
@node_options
@click.argument("source", metavar="VAULT[:DIR]")
@click.option(
    "--to",
    "dest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write this new file (plaintext on disk, mode 0600) instead of standard output.",
)
@pass_settings
def export_json(s: Settings, source: str, dest: Path | None) -> None:
    """Every secret of VAULT[:DIR] with its path and tags, as JSON (`pk import json` reads it)."""
    from polykey.cli.common import write_output
    from polykey.interop.formats import write_json

    vault, r = _export(s, source)
    text = write_json(vault, r["head"], [(p, v) for p, v in r["files"]], r["tags"])
    if dest is not None:
        write_output(text.encode("utf-8"), dest, binary=False)
        _warn([f"{dest} holds {len(r['files'])} secrets in plaintext; delete it when done"])
    else:
        sys.stdout.write(text)


@export.command("git")
@node_options
@click.argument("vault")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Yes, write every secret to DEST in plaintext.")
@pass_settings
def export_git(s: Settings, vault: str, dest: Path, yes: bool) -> None:
    """A plain git repository of VAULT with its whole signed history, checked out in DEST."""
    from polykey.interop.gitexport import write_repository

    if not yes:
        raise UsageError(
            f"export git writes every secret of {vault} in plaintext to {dest}",
            hint="Add --yes if that is what you want; `export pass` or `export keepass` "
            "keep them encrypted.",
        )
    r = s.call("vaults.objects", {"vault": vault})
    writers = sorted(r["writers"])
    others = write_repository(dest, r["head"], r["objects"], writers=writers, until=r.get("until"))
    if others:
        _warn(
            [
                f"{len(others)} key(s) that may not write {r['vault']} signed commits of it; "
                f"git does not call their signatures good: {', '.join(others)}"
            ]
        )
    emit(
        s,
        f"Exported vault {r['vault']} ({len(r['objects'])} objects) to {dest}. "
        f"It is plaintext on disk: delete it when done.\n"
        f"Check its signatures: git -C {dest} log --show-signature "
        f"(its writers are the allowed signers, in .git/polykey-allowed-signers).",
        {
            "vault": r["vault"],
            "to": str(dest),
            "objects": len(r["objects"]),
            "signers": writers,
            "not_writers": others,
        },
    )
