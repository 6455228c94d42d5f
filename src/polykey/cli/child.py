"""`pk child ...`: child nodes that hold a delegated subset of this node's vaults
(docs/spec/delegation.md; the unattended story: docs/unattended.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from polykey.cli.common import (
    Settings,
    emit,
    node_options,
    pass_settings,
    read_new_secret,
    read_secret_file,
)
from polykey.cli.safe_text import shown
from polykey.errors import InvalidInput, NodeExists, PolykeyError

ENV_CHILD_PASSWORD = "PK_CHILD_PASSWORD"  # noqa: S105 - the name of a variable


@click.group()
def child() -> None:
    """Child nodes: small nodes holding only the vaults (or folders) delegated to them."""


def _duration(text: str | None) -> int:
    from polykey.child import parse_duration

    return parse_duration(text) if text else 0


def _agent_address(s: Settings) -> str:
    """Where this node's agent serves peers, when it runs and listens."""
    client = s.agent()
    if client is None:
        return ""
    from polykey.cli.client import AgentGone

    try:
        return str(client.call("agent.status", {}, token=False).get("peers", ""))
    except (PolykeyError, AgentGone):  # no address known: the command asks for --address
        return ""
    finally:
        client.close()


def _child_password(file: Path | None) -> bytes:
    """The child's password: --child-password-file, PK_CHILD_PASSWORD, standard input (its first
    line, when it is not a terminal), else typed twice."""
    if file is None and ENV_CHILD_PASSWORD not in os.environ and not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise InvalidInput("no password for the child on standard input")
        import unicodedata

        return unicodedata.normalize("NFC", line).encode()
    return read_new_secret(file, ENV_CHILD_PASSWORD, "Password for the child node")


@child.command()
@node_options
@click.argument("name")
@click.option(
    "--vault",
    "vaults",
    multiple=True,
    required=True,
    metavar="V[:PATH]",
    help="A vault (or one folder of it) the child may hold; repeat for more.",
)
@click.option(
    "--perm",
    "perms",
    multiple=True,
    default=("pull",),
    show_default=True,
    type=click.Choice(["scan", "clone", "pull", "push"]),
    help="What the child may do (pull brings clone; push brings pull).",
)
@click.option("--expires", metavar="DURATION", help="30d, 12h, 15m or 90s; else never.")
@click.option("--reshare", is_flag=True, help="Let the child delegate (a part of) it further.")
@click.option(
    "--address",
    metavar="HOST:PORT",
    help="Where the child reaches this node; else this node's agent's peer port.",
)
@click.option(
    "--to",
    "to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the child's node file here (else print a one-time join token).",
)
@click.option("--token", "token", is_flag=True, help="Print a one-time join token (default).")
@click.option(
    "--child-address",
    metavar="HOST:PORT",
    help="Where the child will serve peers (for a revocation's notice); else it tells this "
    "node when it joins or pulls with its agent serving peers.",
)
@click.option(
    "--child-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --to: the child's password (first line). Else PK_CHILD_PASSWORD, "
    "else standard input, else a prompt.",
)
@pass_settings
def create(
    s: Settings,
    name: str,
    vaults: tuple[str, ...],
    perms: tuple[str, ...],
    expires: str | None,
    reshare: bool,
    address: str | None,
    to: Path | None,
    token: bool,
    child_address: str | None,
    child_password_file: Path | None,
) -> None:
    """Make a child node NAME that holds only the vaults given."""
    if to is not None and token:
        raise InvalidInput("choose --to PATH or --token, not both")
    if to is not None and to.exists():
        raise NodeExists(str(to))
    params: dict[str, Any] = {
        "name": name,
        "vaults": list(vaults),
        "perms": list(perms),
        "expires_in": _duration(expires),
        "reshare": reshare,
        "address": address or _agent_address(s),
        "child_address": child_address or "",
    }
    if to is not None:
        params |= {"to": str(to.absolute()), "password": _child_password(child_password_file)}
        params["fast_kdf"] = s.allow_weak()
    r = s.call("child.create", params)
    if to is not None:
        emit(s, str(r["node_id"]), r)
    else:
        emit(s, str(r["token"]), r)


@child.command()
@node_options
@click.argument("token", required=False)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the token from this file ('-' or no TOKEN: standard input).",
)
@click.option(
    "--address",
    metavar="HOST:PORT",
    help="Where this node serves peers, told to the parent (a revocation is then told at "
    "once); else this node's agent's peer port, when it runs.",
)
@pass_settings
def join(s: Settings, token: str | None, token_file: Path | None, address: str | None) -> None:
    """On a new node: prove the parent's one-time TOKEN, take the delegation, clone what it
    allows. The node is made first when it does not exist (its password as for any command:
    --password-file, PK_PASSWORD_FILE, a systemd credential, PK_PASSWORD)."""
    if token_file is not None:
        token = read_secret_file(token_file, "token")
    elif token in (None, "-"):
        token = sys.stdin.readline().strip()
    if not token:
        raise InvalidInput("no token given", hint="Pass TOKEN, --token-file FILE, or stdin.")
    path = s.node_path()
    if not path.exists():
        from polykey.node import Node

        password = read_new_secret(s.password_file, "PK_PASSWORD", "New password")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        node, _code = Node.bootstrap(path, password, kdf=s.kdf_cost(), allow_weak=s.allow_weak())
        node.close()
    address = address or _agent_address(s)
    r = s.call("child.join", {"token": token.strip(), "address": address})
    emit(s, f"{shown(r['node_id'])} joined {shown(r['parent'])}: {_pulled(r)}", r)


def _pulled(r: dict[str, Any]) -> str:
    if r.get("delegation") != "live":
        return f"its delegation is {r.get('delegation')}."
    names = [shown(v.get("vault", "")) for v in r.get("vaults", [])]
    return f"holds {', '.join(names) or 'nothing yet'}."


@child.command()
@node_options
@click.option(
    "--address",
    metavar="HOST:PORT",
    help="Where this node serves peers, told to the parent; else this node's agent's peer "
    "port, when it runs.",
)
@pass_settings
def pull(s: Settings, address: str | None) -> None:
    """On a child: take the parent's news (a renewal, a revocation), then clone or pull what
    the delegation allows (a folder: the vault derived to it, holding nothing else)."""
    r = s.call("child.pull", {"address": address or _agent_address(s)})
    emit(s, _pulled(r).capitalize(), r)


@child.command("list")
@node_options
@pass_settings
def list_(s: Settings) -> None:
    """This node's children and the state of their delegations."""
    r = s.call("child.list")
    lines = [f"{c['name']}\t{c.get('node_id') or '-'}\t{c['state']}" for c in r["children"]]
    emit(s, "\n".join(lines), r)


@child.command()
@node_options
@click.argument("name")
@pass_settings
def show(s: Settings, name: str) -> None:
    """One child: its NodeId, its delegation (vaults, actions, expiry) and its state."""
    r = s.call("child.show", {"name": name})
    lines = [f"name: {r['name']}", f"node: {r.get('node_id') or '-'}", f"state: {r['state']}"]
    for v in (r.get("grant") or {}).get("vaults", []):
        where = v.get("name", v["id"]) + (":" + v["path"] if v.get("path") else "")
        lines.append(f"vault: {where} ({', '.join(v['actions'])})")
    if r.get("grant"):
        lines.append(f"expires: {r['grant'].get('expires') or 'never'}")
    emit(s, "\n".join(lines), r)


@child.command()
@node_options
@click.argument("name")
@click.option("--expires", metavar="DURATION", help="30d, 12h, 15m or 90s; else never.")
@pass_settings
def renew(s: Settings, name: str, expires: str | None) -> None:
    """Renew NAME's delegation with a new expiry; it takes effect at the child's next pull."""
    r = s.call("child.renew", {"name": name, "expires_in": _duration(expires)})
    emit(s, f"Renewal of {name} waits for its next pull.", r)


@child.command()
@node_options
@click.argument("name")
@pass_settings
def revoke(s: Settings, name: str) -> None:
    """Revoke NAME's delegation: refused here at once; the child notified at the address it
    told, so its agent takes this node's chain at once (else at its next pull)."""
    r = s.call("child.revoke", {"name": name})
    emit(s, f"Revoked {name}." if r["revoked"] else f"{name} held no live delegation.", r)
