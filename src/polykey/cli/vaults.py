"""`pk vaults ...`: create, list, rename and remove vaults; their history and tags."""

from __future__ import annotations

import datetime
import sys

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.errors import UsageError


def when(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.group()
def vaults() -> None:
    """Vaults: git repositories of secrets inside the node."""


@vaults.command()
@node_options
@click.argument("name")
@click.option("--tag", "tags", multiple=True, help="A tag for the vault (repeatable).")
@pass_settings
def create(s: Settings, name: str, tags: tuple[str, ...]) -> None:
    """Create an empty vault NAME."""
    with s.open_node() as n:
        vault = n.vaults.create(name, list(tags))
        vault_id = vault.id
    emit(s, f"Created vault {name} ({vault_id}).", {"name": name, "id": vault_id})


@vaults.command("list")
@node_options
@click.option("--tag", help="Only vaults with this tag.")
@pass_settings
def list_(s: Settings, tag: str | None) -> None:
    """The vaults of this node."""
    with s.open_node() as n:
        infos = n.vaults.all(tag)
    rows = [f"{i.name}\t{i.id}" + (f"\t{','.join(i.tags)}" if i.tags else "") for i in infos]
    emit(
        s,
        "\n".join(rows),
        {
            "vaults": [
                {"name": i.name, "id": i.id, "created": i.created, "tags": i.tags} for i in infos
            ]
        },
    )


@vaults.command()
@node_options
@click.argument("old")
@click.argument("new")
@pass_settings
def rename(s: Settings, old: str, new: str) -> None:
    """Rename vault OLD to NEW (its id and history stay)."""
    with s.open_node() as n:
        n.vaults.rename(old, new)
    emit(s, f"Renamed vault {old} to {new}.", {"old": old, "new": new})


@vaults.command()
@node_options
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_settings
def rm(s: Settings, name: str, yes: bool) -> None:
    """Remove vault NAME with all its secrets and history."""
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"refusing to remove vault {name} without confirmation",
                hint="Add --yes to remove it (its secrets and history are deleted).",
            )
        click.confirm(f"Remove vault {name} with all its secrets and history?", abort=True)
    with s.open_node() as n:
        vault_id = n.vaults.remove(name)
    emit(s, f"Removed vault {name}.", {"name": name, "id": vault_id, "removed": True})


@vaults.command()
@node_options
@click.argument("name")
@click.option("-n", "limit", type=click.IntRange(min=1), help="At most N commits.")
@click.option("--path", help="Only commits that change this secret or directory.")
@pass_settings
def log(s: Settings, name: str, limit: int | None, path: str | None) -> None:
    """The history of vault NAME, newest first."""
    with s.open_node() as n:
        commits = n.vaults.open(name).log(limit, path)
    lines = [f"{c.id[:12]}  {when(c.time)}  {c.message}" for c in commits]
    emit(
        s,
        "\n".join(lines),
        {
            "commits": [
                {
                    "id": c.id,
                    "author": c.author,
                    "time": c.time,
                    "message": c.message,
                    "parents": list(c.parents),
                    "signed": c.signed,
                }
                for c in commits
            ]
        },
    )


@vaults.command()
@node_options
@click.argument("name")
@click.argument("rev1")
@click.argument("rev2", required=False)
@click.option("-p", "--patch", is_flag=True, help="Show the changed content (prints secrets).")
@pass_settings
def diff(s: Settings, name: str, rev1: str, rev2: str | None, patch: bool) -> None:
    """What changed between REV1 and REV2 (default: the newest revision)."""
    import difflib

    with s.open_node() as n:
        vault = n.vaults.open(name)
        changes = vault.diff(rev1, rev2)
        patches: dict[str, str] = {}
        if patch:
            for c in changes:
                old = vault.read_blob(c.old) if c.old else b""
                new = vault.read_blob(c.new) if c.new else b""
                try:
                    a, b = old.decode(), new.decode()
                except UnicodeDecodeError:
                    patches[c.path] = "Binary secret differs.\n"
                    continue
                patches[c.path] = "".join(
                    difflib.unified_diff(
                        a.splitlines(keepends=True),
                        b.splitlines(keepends=True),
                        f"a/{c.path}",
                        f"b/{c.path}",
                    )
                )
    mark = {"add": "A", "modify": "M", "delete": "D"}
    lines = []
    for c in changes:
        lines.append(f"{mark[c.kind]}  {c.path}")
        if patch:
            lines.append(patches[c.path].rstrip("\n"))
    doc: dict[str, object] = {"changes": [{"kind": c.kind, "path": c.path} for c in changes]}
    if patch:
        doc["patches"] = patches
    emit(s, "\n".join(lines), doc)


@vaults.command()
@node_options
@click.argument("name")
@click.argument("rev")
@pass_settings
def show(s: Settings, name: str, rev: str) -> None:
    """The secrets of vault NAME as they were at REV."""
    with s.open_node() as n:
        vault = n.vaults.open(name)
        commit = vault.resolve(rev).decode()
        entries = vault.ls("", recursive=True, rev=commit)
    emit(
        s,
        "\n".join(e.path + ("/" if e.kind == "dir" else "") for e in entries),
        {"commit": commit, "entries": [{"path": e.path, "kind": e.kind} for e in entries]},
    )


@vaults.command()
@node_options
@click.argument("name")
@click.argument("rev")
@pass_settings
def revert(s: Settings, name: str, rev: str) -> None:
    """Restore vault NAME to its content at REV, as a new commit (history is kept)."""
    with s.open_node() as n:
        commit = n.vaults.open(name).revert(rev).decode()
    emit(s, f"Reverted {name} to {rev} in commit {commit[:12]}.", {"commit": commit})


@vaults.command()
@node_options
@click.argument("name")
@click.argument("tag")
@pass_settings
def tag(s: Settings, name: str, tag: str) -> None:
    """Add TAG to vault NAME."""
    with s.open_node() as n:
        info = n.vaults.retag(name, [tag], [])
    emit(s, f"Vault {name}: tags {', '.join(info.tags)}.", {"name": name, "tags": info.tags})


@vaults.command()
@node_options
@click.argument("name")
@click.argument("tag")
@pass_settings
def untag(s: Settings, name: str, tag: str) -> None:
    """Remove TAG from vault NAME."""
    with s.open_node() as n:
        info = n.vaults.retag(name, [], [tag])
    shown = ", ".join(info.tags) or "none"
    emit(s, f"Vault {name}: tags {shown}.", {"name": name, "tags": info.tags})
