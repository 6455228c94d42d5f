"""`pk tags ...`: tags of secrets (kept inside their vaults) and of vaults, across the node."""

from __future__ import annotations

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings, split_address
from polykey.cli.safe_text import shown


@click.group()
def tags() -> None:
    """Tags group secrets across vaults: `pk secrets ls --tag T` lists one tag's secrets."""


@tags.command("list")
@node_options
@pass_settings
def list_(s: Settings) -> None:
    """Every tag in use, with how many secrets and vaults carry it."""
    r = s.call("tags.list")
    lines = [
        f"{shown(t)}\t{shown(c['secrets'])} secrets\t{shown(c['vaults'])} vaults"
        for t, c in r["tags"].items()
    ]
    for vault in r.get("unreadable_tags", []):
        click.echo(
            f"pk: warning: the tag file of vault {shown(vault)} is malformed; its secret tags "
            "are left out (`pk tags add` or `pk tags rm` in it replaces the file)",
            err=True,
        )
    emit(s, "\n".join(lines), r)


@tags.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@click.argument("tag_names", metavar="TAG...", nargs=-1, required=True)
@pass_settings
def add(s: Settings, address: str, tag_names: tuple[str, ...]) -> None:
    """Tag a secret (one commit)."""
    vault_name, path = split_address(address)
    params = {"vault": vault_name, "path": path, "add": list(tag_names), "remove": []}
    emit(s, "", {"added": list(tag_names), **s.call("tags.set", params)})


@tags.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@click.argument("tag_names", metavar="TAG...", nargs=-1, required=True)
@pass_settings
def rm(s: Settings, address: str, tag_names: tuple[str, ...]) -> None:
    """Remove tags from a secret (one commit)."""
    vault_name, path = split_address(address)
    params = {"vault": vault_name, "path": path, "add": [], "remove": list(tag_names)}
    emit(s, "", {"removed": list(tag_names), **s.call("tags.set", params)})
