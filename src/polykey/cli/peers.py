"""`pk nodes ...`: the other nodes this node knows, and whether they answer."""

from __future__ import annotations

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.cli.safe_text import indented, shown


@click.group()
def nodes() -> None:
    """Other nodes: their NodeIds and addresses."""


@nodes.command()
@node_options
@click.argument("node_id", metavar="NODEID")
@click.argument("address", metavar="HOST:PORT")
@pass_settings
def add(s: Settings, node_id: str, address: str) -> None:
    """Remember where NODEID can be reached."""
    r = s.call("nodes.add", {"node_id": node_id, "address": address})
    emit(s, f"Added {shown(node_id)} at {shown(r['address'])}.", r)


@nodes.command("list")
@node_options
@pass_settings
def list_(s: Settings) -> None:
    """The known nodes and their addresses."""
    r = s.call("nodes.list")
    emit(s, "\n".join(f"{shown(n['node_id'])}\t{shown(n['address'])}" for n in r["nodes"]), r)


@nodes.command()
@node_options
@click.argument("node_id", metavar="NODEID")
@pass_settings
def rm(s: Settings, node_id: str) -> None:
    """Forget a node's address."""
    emit(s, f"Removed {shown(node_id)}.", s.call("nodes.rm", {"node_id": node_id}))


@nodes.command()
@node_options
@click.argument("node_id", metavar="NODEID")
@pass_settings
def ping(s: Settings, node_id: str) -> None:
    """Connect to a node over SSH, its NodeId pinned, and ask it to answer."""
    r = s.call("nodes.ping", {"node_id": node_id})
    emit(
        s,
        f"{shown(r['node_id'])} answered in {shown(r['ms'])} ms "
        f"(protocol {shown(r['version'])}).",  # the other node's word
        r,
    )


@click.group()
def notifications() -> None:
    """Messages between nodes (sharing a vault sends one)."""


@notifications.command("send")
@node_options
@click.argument("node_id", metavar="NODEID")
@click.argument("message")
@pass_settings
def send_(s: Settings, node_id: str, message: str) -> None:
    """Send MESSAGE to NODEID now, or queue it for the agent to retry."""
    r = s.call("notifications.send", {"node_id": node_id, "message": message})
    emit(s, "Delivered." if r["delivered"] else "Queued: the agent will retry.", r)


@notifications.command("read")
@node_options
@click.option("--unread", is_flag=True, help="Only the ones not read before.")
@pass_settings
def read_(s: Settings, unread: bool) -> None:
    """The notifications received (they are marked read)."""
    from polykey.cli.vaults import when

    r = s.call("notifications.read", {"unread": unread})
    lines = []
    for n in r["notifications"]:  # the sender chose the message: escaped, lines indented
        lines.append(f"{when(n['time'])}  {shown(n['from'])}  {indented(n['message'], 4)}")
    if r["outbox"]:
        lines.append(f"({len(r['outbox'])} notification(s) waiting to be delivered)")
    emit(s, "\n".join(lines), r)


@notifications.command("clear")
@node_options
@pass_settings
def clear_(s: Settings) -> None:
    """Delete every received notification."""
    r = s.call("notifications.clear")
    emit(s, f"Cleared {r['cleared']} notification(s).", r)


@nodes.command()
@node_options
@pass_settings
def connections(s: Settings) -> None:
    """Open SSH connections to other nodes, reused by every operation, closed when idle."""
    r = s.call("nodes.connections")
    lines = [
        f"{shown(c['node_id'])}\t{shown(c['address'])}\tidle {shown(c['idle_s'])} s"
        for c in r["connections"]
    ]
    emit(s, "\n".join(lines) or "No open connections.", r)
