"""`pk vaults ...`: create, list, rename and remove vaults; their history and tags."""

from __future__ import annotations

import datetime
import sys

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.errors import UsageError


def when(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def commit_lines(commits: list[dict[str, object]]) -> str:
    return "\n".join(
        f"{c['id']!s:.12}  {when(int(str(c['time'])))}  {c['message']}" for c in commits
    )


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
    r = s.call("vaults.create", {"name": name, "tags": list(tags)})
    emit(s, f"Created vault {r['name']} ({r['id']}).", r)


@vaults.command("list")
@node_options
@click.option("--tag", help="Only vaults with this tag.")
@pass_settings
def list_(s: Settings, tag: str | None) -> None:
    """The vaults of this node."""
    r = s.call("vaults.list", {"tag": tag})
    rows = [
        f"{i['name']}\t{i['id']}" + (f"\t{','.join(i['tags'])}" if i["tags"] else "")
        for i in r["vaults"]
    ]
    emit(s, "\n".join(rows), r)


@vaults.command()
@node_options
@click.argument("old")
@click.argument("new")
@pass_settings
def rename(s: Settings, old: str, new: str) -> None:
    """Rename vault OLD to NEW (its id and history stay)."""
    r = s.call("vaults.rename", {"old": old, "new": new})
    emit(s, f"Renamed vault {old} to {new}.", r)


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
    r = s.call("vaults.rm", {"name": name})
    emit(s, f"Removed vault {name}.", r)


@vaults.command()
@node_options
@click.argument("name")
@click.option("-n", "limit", type=click.IntRange(min=1), help="At most N commits.")
@click.option("--path", help="Only commits that change this secret or directory.")
@pass_settings
def log(s: Settings, name: str, limit: int | None, path: str | None) -> None:
    """The history of vault NAME, newest first."""
    r = s.call("vaults.log", {"name": name, "limit": limit, "path": path})
    emit(s, commit_lines(r["commits"]), r)


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

    r = s.call("vaults.diff", {"name": name, "rev1": rev1, "rev2": rev2, "patch": patch})
    mark = {"add": "A", "modify": "M", "delete": "D"}
    lines: list[str] = []
    patches: dict[str, str] = {}
    for c in r["changes"]:
        lines.append(f"{mark[c['kind']]}  {c['path']}")
        if not patch:
            continue
        try:
            old, new = c["old"].decode(), c["new"].decode()
        except UnicodeDecodeError:
            patches[c["path"]] = "Binary secret differs.\n"
        else:
            a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
            patches[c["path"]] = "".join(
                difflib.unified_diff(a, b, f"a/{c['path']}", f"b/{c['path']}")
            )
        lines.append(patches[c["path"]].rstrip("\n"))
    doc: dict[str, object] = {
        "changes": [{"kind": c["kind"], "path": c["path"]} for c in r["changes"]]
    }
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
    r = s.call("vaults.show", {"name": name, "rev": rev})
    emit(s, "\n".join(e["path"] + ("/" if e["kind"] == "dir" else "") for e in r["entries"]), r)


@vaults.command()
@node_options
@click.argument("name")
@click.argument("rev")
@pass_settings
def revert(s: Settings, name: str, rev: str) -> None:
    """Restore vault NAME to its content at REV, as a new commit (history is kept)."""
    r = s.call("vaults.revert", {"name": name, "rev": rev})
    emit(s, f"Reverted {name} to {rev} in commit {r['commit'][:12]}.", r)


@vaults.command()
@node_options
@click.argument("name")
@click.argument("tag")
@pass_settings
def tag(s: Settings, name: str, tag: str) -> None:
    """Add TAG to vault NAME."""
    r = s.call("vaults.retag", {"name": name, "add": [tag], "remove": []})
    emit(s, f"Vault {name}: tags {', '.join(r['tags'])}.", r)


@vaults.command()
@node_options
@click.argument("name")
@click.argument("tag")
@pass_settings
def untag(s: Settings, name: str, tag: str) -> None:
    """Remove TAG from vault NAME."""
    r = s.call("vaults.retag", {"name": name, "add": [], "remove": [tag]})
    emit(s, f"Vault {name}: tags {', '.join(r['tags']) or 'none'}.", r)
