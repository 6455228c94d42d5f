"""`pk nodes ...`: the other nodes this node knows, whether they answer, and which are its own."""

from __future__ import annotations

from typing import Any

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.cli.nodes import dht_bootstrap, find, home_relay, relays, seeds
from polykey.cli.safe_text import indented, shown


@click.group()
def nodes() -> None:
    """Other nodes: their NodeIds and addresses, and which of them are your own."""


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
@click.argument("node_id", metavar="NODEID")
@pass_settings
def link(s: Settings, node_id: str) -> None:
    """Make NODEID one of your own nodes: both run `pk nodes link` for the other.

    Linked nodes may scan, clone, pull and push every vault of each other, with no grant. The
    other node is reached at the address `pk nodes add` gave; running this again is harmless
    and finishes a link the other side missed."""
    r = s.call("nodes.link", {"node_id": node_id})
    emit(s, linked_text(r), r)


def linked_text(r: dict[str, Any]) -> str:
    other, me = shown(r["node_id"]), shown(r["this_node"])
    why = f" ({r['reason']})" if r.get("reason") else ""  # the whole line is escaped by emit
    state, told = r["state"], r["told"]
    if state == "linked" and told:
        return f"Linked: {other} is one of your nodes."
    if state == "linked":
        return (
            f"Linked: {other} is one of your nodes. It was not told{why}, so it does not let "
            f"this node in yet: run this command again once it is reachable, or "
            f"`pk nodes link {me}` on it."
        )
    if state == "pending" and told:
        return f"Asked {other}: run `pk nodes link {me}` on that node to confirm."
    if state == "pending":
        return (
            f"Could not ask {other}{why}. The request is kept: run `pk nodes link {me}` on "
            f"that node, or this command again once it is reachable."
        )
    return f"{other} is {shown(state)} now: a command here changed it meanwhile (`pk nodes mine`)."


@nodes.command()
@node_options
@click.argument("node_id", metavar="NODEID")
@pass_settings
def unlink(s: Settings, node_id: str) -> None:
    """NODEID is no longer one of your nodes (or withdraw a request, or decline one).

    It loses access to this node's vaults at once, and is told when it can be reached."""
    r = s.call("nodes.unlink", {"node_id": node_id})
    emit(s, unlinked_text(r), r)


def unlinked_text(r: dict[str, Any]) -> str:
    other = shown(r["node_id"])
    why = f" ({r['reason']})" if r.get("reason") else ""
    again = "run this command again once it is reachable"
    was, told = r["was"], r["told"]
    if was == "unlinked":
        if told:
            return f"{other} was unlinked already; it was told again."
        if not why:
            return f"{other} was unlinked already (it ended the link)."
        return f"{other} was unlinked already; it was not told{why}: {again}."
    if was == "pending":
        first = f"Withdrew the request to link {other}."
    elif was == "offered":
        first = f"Declined the request of {other} to link."
    else:
        damaged = " (its link record was damaged)" if was == "damaged" else ""
        first = f"Unlinked {other}{damaged}: it may no longer use this node's vaults."
        if told:
            return f"{first} It was told, and no longer lets this node use its own."
        return f"{first} It was not told{why} and still lets this node use its vaults: {again}."
    return f"{first} It was told." if told else f"{first} It was not told{why}."


@nodes.command()
@node_options
@pass_settings
def mine(s: Settings) -> None:
    """Your own nodes (linked), and the requests to link in either direction."""
    r = s.call("nodes.mine")
    lines = []
    order = {"linked": 0, "pending": 1, "offered": 2, "damaged": 3}
    for n in sorted(r["nodes"], key=lambda n: (order.get(n["state"], 4), n["node_id"])):
        nid, state = shown(n["node_id"]), n["state"]
        if state == "linked":
            lines.append(f"{nid}\tlinked")
        elif state == "pending":
            lines.append(f"{nid}\tasked: it has not confirmed yet")
        elif state == "offered":
            lines.append(f"{nid}\tasks to be one of your nodes: `pk nodes link {nid}` to confirm")
        elif state == "damaged":
            problem = shown(n.get("problem", ""))
            lines.append(f"{nid}\tdamaged, so not linked: {problem} (`pk node check`)")
    emit(s, "\n".join(lines) or "No linked nodes. Link one with `pk nodes link NODEID`.", r)


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


nodes.add_command(find)  # discovery (network/resolve.py): written beside `pk node`'s commands
nodes.add_command(relays)
nodes.add_command(dht_bootstrap)
nodes.add_command(seeds)  # seeds and relays of connections (network/seeds.py, relay.py)
nodes.add_command(home_relay)
