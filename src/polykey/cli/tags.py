"""`pk tags ...`: tags of secrets (kept inside their vaults) and of vaults, across the node."""

from __future__ import annotations

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.cli.secrets import split_address


@click.group()
def tags() -> None:
    """Tags group secrets across vaults: `pk secrets ls --tag T` lists one tag's secrets."""


@tags.command("list")
@node_options
@pass_settings
def list_(s: Settings) -> None:
    """Every tag in use, with how many secrets and vaults carry it."""
    counts: dict[str, dict[str, int]] = {}
    with s.open_node() as n:
        for info in n.vaults.all():
            for t in info.tags:
                counts.setdefault(t, {"secrets": 0, "vaults": 0})["vaults"] += 1
            for secret_tags in n.vaults.open(info.name).tags().values():
                for t in secret_tags:
                    counts.setdefault(t, {"secrets": 0, "vaults": 0})["secrets"] += 1
    lines = [
        f"{t}\t{c['secrets']} secrets\t{c['vaults']} vaults" for t, c in sorted(counts.items())
    ]
    emit(s, "\n".join(lines), {"tags": {t: counts[t] for t in sorted(counts)}})


@tags.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@click.argument("tag_names", metavar="TAG...", nargs=-1, required=True)
@pass_settings
def add(s: Settings, address: str, tag_names: tuple[str, ...]) -> None:
    """Tag a secret (one commit)."""
    vault_name, path = split_address(address)
    with s.open_node() as n:
        commit = n.vaults.open(vault_name).set_tags(path, list(tag_names), []).decode()
    emit(s, "", {"vault": vault_name, "path": path, "added": list(tag_names), "commit": commit})


@tags.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@click.argument("tag_names", metavar="TAG...", nargs=-1, required=True)
@pass_settings
def rm(s: Settings, address: str, tag_names: tuple[str, ...]) -> None:
    """Remove tags from a secret (one commit)."""
    vault_name, path = split_address(address)
    with s.open_node() as n:
        commit = n.vaults.open(vault_name).set_tags(path, [], list(tag_names)).decode()
    emit(s, "", {"vault": vault_name, "path": path, "removed": list(tag_names), "commit": commit})
