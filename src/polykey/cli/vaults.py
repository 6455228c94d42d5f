"""`pk vaults ...`: create, list, rename and remove vaults; their history and tags."""

from __future__ import annotations

import datetime
import sys
from typing import TYPE_CHECKING

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.cli.safe_text import indented, shown
from polykey.errors import UsageError

if TYPE_CHECKING:
    from typing import Any

COMMIT_INDENT = len("0123456789ab  2000-01-01 00:00:00 UTC  v0123456789  ")
AUTHOR_CHARS = 11  # of the author's NodeId: enough to tell a vault's writers apart


def when(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def commit_lines(commits: list[dict[str, object]]) -> str:
    """One commit a line, with who made it; a message's further lines are indented under its
    first (a commit may come from another node: its message is escaped, and cannot pass for
    another commit)."""
    return "\n".join(
        f"{shown(c['id']):.12}  {when(int(str(c['time'])))}  {_author(c.get('author'))}  "
        f"{indented(c['message'], COMMIT_INDENT)}"
        for c in commits
    )


def _author(author: object) -> str:
    """Who made a commit: the start of the NodeId it names (`NODEID <NODEID>`)."""
    name = str(author or "").split(" <", 1)[0].strip() or "?"
    return shown(name)[:AUTHOR_CHARS].ljust(AUTHOR_CHARS)


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
    emit(s, f"Created vault {shown(r['name'])} ({shown(r['id'])}).", r)


@vaults.command("list")
@node_options
@click.option("--tag", help="Only vaults with this tag.")
@pass_settings
def list_(s: Settings, tag: str | None) -> None:
    """The vaults of this node."""
    r = s.call("vaults.list", {"tag": tag})
    rows = [
        f"{shown(i['name'])}\t{shown(i['id'])}"
        + (f"\t{shown(','.join(i['tags']))}" if i["tags"] else "")
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
    emit(s, f"Renamed vault {shown(old)} to {shown(new)}.", r)


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
    emit(s, f"Removed vault {shown(name)}.", r)


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
        lines.append(f"{mark.get(c['kind'], '?')}  {shown(c['path'])}")
        if not patch:
            continue
        try:
            old, new = c["old"].decode(), c["new"].decode()
        except UnicodeDecodeError:
            patches[c["path"]] = "Binary secret differs.\n"
        else:
            a, b = _lines(old), _lines(new)
            patches[c["path"]] = "".join(
                difflib.unified_diff(a, b, f"a/{c['path']}", f"b/{c['path']}")
            )
        lines.append(shown(patches[c["path"]].rstrip("\n"), multiline=True))
    doc: dict[str, object] = {
        "changes": [{"kind": c["kind"], "path": c["path"]} for c in r["changes"]]
    }
    if patch:
        doc["patches"] = patches
    emit(s, "\n".join(lines), doc)


def _lines(text: str) -> list[str]:
    """Lines split at newlines only (a carriage return in a secret is shown, not obeyed)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


@vaults.command()
@node_options
@click.argument("name")
@click.argument("rev")
@pass_settings
def show(s: Settings, name: str, rev: str) -> None:
    """The secrets of vault NAME as they were at REV."""
    r = s.call("vaults.show", {"name": name, "rev": rev})
    emit(
        s,
        "\n".join(shown(e["path"]) + ("/" if e["kind"] == "dir" else "") for e in r["entries"]),
        r,
    )


@vaults.command()
@node_options
@click.argument("name")
@click.argument("rev")
@pass_settings
def revert(s: Settings, name: str, rev: str) -> None:
    """Restore the whole vault NAME to its content at REV, as a new commit (history is kept).
    To take back one commit's changes only, use `pk vaults undo`."""
    r = s.call("vaults.revert", {"name": name, "rev": rev})
    emit(s, f"Reverted {shown(name)} to {shown(rev)} in commit {shown(r['commit'][:12])}.", r)


@vaults.command()
@node_options
@click.argument("name")
@click.argument("rev")
@pass_settings
def undo(s: Settings, name: str, rev: str) -> None:
    """Take back the changes of commit REV alone, as a new commit (git's `revert`): what it
    added goes, what it changed or removed comes back. Refused when a later commit changed the
    same secrets. To restore the whole vault to REV, use `pk vaults revert`."""
    r = s.call("vaults.undo", {"name": name, "rev": rev})
    emit(s, f"Undid {shown(rev)} in {shown(name)}: commit {shown(r['commit'][:12])}.", r)


@vaults.command()
@node_options
@click.argument("name")
@click.argument("tag")
@pass_settings
def tag(s: Settings, name: str, tag: str) -> None:
    """Add TAG to vault NAME."""
    r = s.call("vaults.retag", {"name": name, "add": [tag], "remove": []})
    emit(s, f"Vault {shown(name)}: tags {shown(', '.join(r['tags']))}.", r)


@vaults.command()
@node_options
@click.argument("name")
@click.argument("tag")
@pass_settings
def untag(s: Settings, name: str, tag: str) -> None:
    """Remove TAG from vault NAME."""
    r = s.call("vaults.retag", {"name": name, "add": [], "remove": [tag]})
    emit(s, f"Vault {shown(name)}: tags {shown(', '.join(r['tags']) or 'none')}.", r)


@vaults.command()
@node_options
@click.argument("name", metavar="VAULT[:PATH]")
@click.argument("node_id", metavar="NODEID|PROVIDER:NAME")
@click.option(
    "--perm",
    "perms",
    default="scan,clone,pull",
    show_default=True,
    help="Comma-separated: scan, clone, pull, push (push: not with a PATH).",
)
@pass_settings
def share(s: Settings, name: str, node_id: str, perms: str) -> None:
    """Let NODEID see and clone vault NAME; or a person (github:bob, after `pk identities
    discover`): every node of their verified gestalt, including nodes they link later.

    NAME:PATH shares only that folder (or secret): the node is served a vault holding only
    it, with a history of its changes alone, and may not push (docs/spec/derived.md)."""
    wanted = [p.strip() for p in perms.split(",") if p.strip()]
    params: dict[str, Any] = {"name": name, "node_id": node_id, "permissions": wanted}
    if ":" in name:
        params["name"], params["path"] = name.split(":", 1)
    r = s.call("vaults.share", params)
    if ":" in node_id:
        n = len(r.get("nodes", {}))
        told = f"{n} of their nodes known now; the reachable ones were told."
    elif r.get("delivered"):
        told = "The node was told."
    elif r.get("queued"):
        told = "The node could not be reached: it will be told when the agent reaches it."
    else:
        told = f"The node was not told: add its address with `pk nodes add {node_id} HOST:PORT`."
    granted = shown(", ".join(r["permissions"]))
    emit(s, f"Shared {shown(name)} with {shown(node_id)}: {granted}. {shown(told)}", r)


@vaults.command()
@node_options
@click.argument("name")
@click.argument("node_id", metavar="NODEID|PROVIDER:NAME")
@pass_settings
def unshare(s: Settings, name: str, node_id: str) -> None:
    """Take back every permission NODEID has on vault NAME."""
    r = s.call("vaults.unshare", {"name": name, "node_id": node_id})
    emit(s, f"Unshared {shown(name)} from {shown(node_id)}.", r)


@vaults.command()
@node_options
@click.argument("name")
@pass_settings
def permissions(s: Settings, name: str) -> None:
    """Which nodes may do what with vault NAME."""
    r = s.call("vaults.permissions", {"name": name})
    lines = [f"{shown(n)}\t{shown(', '.join(p))}" for n, p in sorted(r["permissions"].items())]
    emit(s, "\n".join(lines), r)


@vaults.command()
@node_options
@click.argument("node_id", metavar="NODEID")
@pass_settings
def scan(s: Settings, node_id: str) -> None:
    """The vaults NODEID shares with this node."""
    r = s.call("vaults.scan", {"node_id": node_id})
    emit(s, "\n".join(_scanned(v) for v in r["vaults"]), r)


def _scanned(v: object) -> str:
    """One vault of another node's scan answer: every field is that node's word."""
    if not isinstance(v, dict):
        return shown(v)
    perms = v.get("permissions")
    perms_text = ",".join(map(str, perms)) if isinstance(perms, list) else str(perms)
    line = f"{shown(v.get('name'))}\t{shown(v.get('id'))}\t{shown(perms_text)}"
    if v.get("folder") is not None:  # a folder grant: the node serves only that folder
        line += f"\tfolder {shown(v.get('folder'))}"
    return line


@vaults.command("clone")
@node_options
@click.argument("node_id", metavar="NODEID")
@click.argument("vault")
@click.argument("local_name", required=False)
@pass_settings
def clone_(s: Settings, node_id: str, vault: str, local_name: str | None) -> None:
    """Clone VAULT (its name or id) from NODEID; every commit is checked before it lands."""
    r = s.call("vaults.clone", {"node_id": node_id, "vault": vault, "name": local_name})
    emit(s, f"Cloned {shown(vault)} from {shown(node_id)} as {shown(r['name'])}.", r)


@vaults.command()
@node_options
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Pull every cloned vault.")
@pass_settings
def pull(s: Settings, name: str | None, all_: bool) -> None:
    """Fetch what is new in a cloned vault from the node it came from, and merge it with the
    changes made here (a secret both sides changed keeps the other value beside it as a
    conflict copy: `pk vaults conflicts`)."""
    if not name and not all_:
        raise UsageError("name a vault, or --all")
    r = s.call("vaults.pull", {"name": None if all_ else name})
    lines = []
    for p in r["pulled"]:
        if "error" in p:
            lines.append(f"{shown(p['vault'])}: refused: {shown(p['error'])}")
        elif not p["updated"]:
            lines.append(f"{shown(p['vault'])}: up to date")
        elif p.get("how") == "merged":
            lines.append(f"{shown(p['vault'])}: merged, now at {shown(p['head'][:12])}")
        else:
            lines.append(f"{shown(p['vault'])}: updated to {shown(p['head'][:12])}")
        lines.extend(_conflict_lines(p.get("conflicts", []), p["vault"]))
    emit(s, "\n".join(lines), r)


def _conflict_lines(conflicts: list[dict[str, Any]], vault: str) -> list[str]:
    """What a merge kept beside a secret both sides changed."""
    out = [
        f"  conflict: {shown(vault)}:{shown(c['path'])}: the other value is kept as "
        f"{shown(c['copy'])}"
        for c in conflicts
    ]
    if out:
        out.append(
            f"  Keep one with `pk vaults resolve {shown(vault)}:PATH --keep mine|theirs|COPY`."
        )
    return out


@vaults.command()
@node_options
@click.argument("name")
@click.argument("node_id", metavar="[NODEID]", required=False)
@pass_settings
def push(s: Settings, name: str, node_id: str | None) -> None:
    """Send this node's new commits of a cloned vault back to the node it was cloned from
    (which granted push); NODEID, when given, must be that node."""
    r = s.call("vaults.push", {"name": name, "node_id": node_id})
    human = (
        f"Pushed {shown(name)} to {shown(str(r.get('node_id', node_id)))}"
        + (" (its new changes were pulled and merged first)." if r.get("merged_first") else ".")
        if r["pushed"]
        else f"{shown(name)}: nothing to push."
    )
    lines = [human, *_conflict_lines(r.get("conflicts", []), name)]
    emit(s, "\n".join(lines), r)


@vaults.command()
@node_options
@click.argument("name", required=False)
@click.option(
    "--all", "all_", is_flag=True, help="Every vault (the default when NAME is not given)."
)
@click.option("--with", "with_", metavar="NODEID", help="Only with this one of your linked nodes.")
@pass_settings
def sync(s: Settings, name: str | None, all_: bool, with_: str | None) -> None:
    """Bring vault NAME (or every vault) to agreement with all your linked nodes (`pk nodes
    link`): pull, merge, push, until they agree. Vaults only another node of yours holds come
    here too; nothing is deleted."""
    if name and all_:
        raise UsageError("name a vault or give --all, not both")
    r = s.call("vaults.sync", {"name": name, "node_id": with_})
    lines = []
    for n in r["nodes"]:
        lines.append(f"{shown(n['node_id'])}:")
        if "error" in n:
            lines.append(f"  unreachable or refused: {shown(n['error'])}")
        for v in n["vaults"]:
            if "error" in v:
                lines.append(f"  {shown(v['vault'])}: refused: {shown(v['error'])}")
                continue
            how = {
                "up-to-date": "up to date",
                "pulled": "brought its changes here",
                "sent": "sent this node's changes",
                "merged": "merged both sides' changes",
                "adopted": "new here, from that node",
                "empty": "empty, nothing to send",
            }.get(str(v.get("how")), str(v.get("how")))
            lines.append(f"  {shown(v['vault'])}: {how}")
            lines.extend(_conflict_lines(v.get("conflicts", []), v["vault"]))
    emit(s, "\n".join(lines), r)


@vaults.command()
@node_options
@click.argument("name", required=False)
@pass_settings
def conflicts(s: Settings, name: str | None) -> None:
    """List the conflict copies a merge kept (in vault NAME, or in every vault)."""
    r = s.call("vaults.conflicts", {"name": name})
    lines = [
        f"{shown(c['vault'])}:{shown(c['path'])}\t{shown(c['copy'])}\t"
        f"made by {shown(c['node'])}… at {shown(c['time'])}"
        for c in r["conflicts"]
    ]
    emit(s, "\n".join(lines) if lines else "No conflict copies.", r)


@vaults.command()
@node_options
@click.argument("target", metavar="VAULT:PATH")
@click.option(
    "--keep",
    required=True,
    metavar="mine|theirs|COPY",
    help="The value to keep at PATH: this node's, the other node's, or a copy by name.",
)
@pass_settings
def resolve(s: Settings, target: str, keep: str) -> None:
    """Settle a conflict: keep one value at PATH and remove its conflict copies (one commit;
    the other values stay in the history)."""
    vault, sep, path = target.partition(":")
    if not sep or not vault or not path:
        raise UsageError("give VAULT:PATH, the path of the secret that has conflict copies")
    r = s.call("vaults.resolve", {"name": vault, "path": path, "keep": keep})
    human = f"{shown(vault)}:{shown(r['path'])}: kept {shown(r['kept'])}"
    emit(s, f"{human}; removed {shown(r['removed'])}.", r)


def _valid_before(until: object) -> str:
    """The allowed-signers option that ends a key at ``until`` (unix seconds), if any."""
    import datetime

    if not isinstance(until, int):
        return ""
    when = datetime.datetime.fromtimestamp(until, datetime.UTC).strftime("%Y%m%d%H%M%S")
    return f',valid-before="{when}Z"'


@vaults.command()
@node_options
@click.argument("name")
@click.option(
    "--from",
    "origin",
    metavar="NODEID",
    help="Ask NODEID about its vault NAME (for a stock `git clone` of it): a fetch of the vault.",
)
@pass_settings
def signers(s: Settings, name: str, origin: str | None) -> None:
    """git's allowed-signers lines for every node that may write vault NAME.

    The writers of a vault are its owner and the nodes granted `push` on it (for a clone: the
    node it came from and the writers that node named). With these lines in the file
    gpg.ssh.allowedSignersFile names, `git verify-commit` and `git log --show-signature` call a
    commit good only when one of them signed it.
    """
    from polykey.crypto.signing import openssh_public_line
    from polykey.ids import decode_node_id

    params = {"name": name} if origin is None else {"name": name, "node_id": origin}
    r = s.call("vaults.signers", params)
    until = r.get("until") or {}  # a renewed key: its commits up to the renewal (or theft)
    lines = [
        f'{w} namespaces="git"{_valid_before(until.get(w))} '
        f"{openssh_public_line(bytes(decode_node_id(w)))}"
        for w in r["writers"]
    ]
    emit(s, "\n".join(lines), {**r, "lines": lines})
