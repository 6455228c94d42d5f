"""`pk backup PATH` and `pk backup restore PATH`: a backup that is a node of its own."""

from __future__ import annotations

from pathlib import Path

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings, read_new_secret
from polykey.cli.safe_text import shown
from polykey.errors import UsageError

ENV_BACKUP_PASSWORD = "PK_BACKUP_PASSWORD"  # noqa: S105 (the name of a variable)


@click.command()
@node_options
@click.argument("words", nargs=-1, metavar="[restore] PATH", required=True)
@click.option(
    "--backup-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The backup node's password, from this file (first line). Else PK_BACKUP_PASSWORD, "
    "else a prompt.",
)
@pass_settings
def backup(s: Settings, words: tuple[str, ...], backup_password_file: Path | None) -> None:
    """Make or update a backup node at PATH (a USB stick), or restore this node from one.

    `pk backup PATH`: the first time, a new node file with its own key and password (asked
    twice), linked to this node; every time, every vault of this node goes there with its
    history, id, name, tags and grants. No agent, port or network is used for the backup.

    `pk backup restore PATH`: vaults this node lacks come back from the backup, records that
    no longer read are written again from it, and every vault is synced. On a new device:
    `pk bootstrap` (with `--recovery-code-file` to keep the NodeId), then restore.
    """
    from polykey.cli.common import read_secret

    if words[0] == "restore" and len(words) == 2:
        mode, path = "restore", Path(words[1])
    elif len(words) == 1:
        mode, path = "backup", Path(words[0])
    else:
        raise UsageError("give PATH, or restore PATH")
    if mode == "backup" and not path.exists():
        if path.is_dir():
            path = path / "backup.pk"
        password = read_new_secret(
            backup_password_file, ENV_BACKUP_PASSWORD, "New password for the backup node"
        )
    else:
        if path.is_dir():
            path = path / "backup.pk"
        password = read_secret(
            backup_password_file, ENV_BACKUP_PASSWORD, "Password of the backup node"
        )
    params = {
        "path": str(path.absolute()),
        "password": password.decode("utf-8", "surrogateescape"),
        "weak_kdf": s.allow_weak(),
    }
    if mode == "restore":
        r = s.call("node.restore", params)
        lines = [f"Restored from {shown(r['path'])} (backup node {shown(r['backup_node'])})."]
        lines += [f"  repaired: {shown(x)}" for x in r["repaired"]]
    else:
        r = s.call("node.backup", params)
        made = "Made the backup node" if r["created"] else "Updated the backup"
        lines = [f"{made} {shown(r['path'])} ({shown(r['backup_node'])})."]
    for v in r["vaults"]:
        if "error" in v:
            lines.append(f"  {shown(v['vault'])}: refused: {shown(v['error'])}")
        else:
            lines.append(f"  {shown(v['vault'])}: {shown(v.get('how', ''))}")
    emit(s, "\n".join(lines), r)
