"""`pk agent ...`: start the agent, see it, stop it, and manage its sessions (the agent as a
process, its options and runtime folder: cli/agent_process.py)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import click

from polykey.cli.agent_process import (
    ENV_DHT,
    ENV_RELAYS,
    AgentOptions,
    check_relaying,
    ensured,
    env_dht,
    env_relays,
    live_status,
    run_child,
    serve,
    spawn,
)
from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.errors import PolykeyError


class AgentNotRunning(PolykeyError):
    """No agent is running for this node."""

    exit_code = 43
    hint = "Start one with `pk agent start --background`."


@click.group()
def agent() -> None:
    """The agent holds the unlocked node so that commands are fast and the password is typed
    once."""


@agent.command()
@node_options
@click.option("-b", "--background", is_flag=True, help="Detach and run in the background.")
@click.option(
    "--session-idle",
    type=click.IntRange(min=10),
    default=1800,
    show_default=True,
    help="Seconds a session may stay unused.",
)
@click.option(
    "--session-max",
    type=click.IntRange(min=10),
    default=12 * 3600,
    show_default=True,
    help="Seconds a session lasts at most.",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Also serve other nodes over SSH here.")
@click.option(
    "--host",
    default="0.0.0.0",  # noqa: S104 (a sharing agent is for other machines; only --port binds it)
    show_default=True,
    help="Address for --port: every interface by default, so other machines can reach this "
    "node; 127.0.0.1 serves this machine only. Listening sends nothing: announcing (--lan) "
    "and publishing are separate.",
)
@click.option(
    "--sync-interval",
    type=click.IntRange(min=5),
    help="Pull every cloned vault from its origin every this many seconds.",
)
@click.option(
    "--peer-idle",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Seconds a peer on --port may stay silent (between requests, inside one, or not reading)"
    " before its channel is closed; also caps the time to the hello.",
)
@click.option(
    "--publish/--no-publish",
    default=True,
    show_default=True,
    help="Publish this node's signed address record to the Pkarr relays configured "
    "(`pk nodes relays`) and to the Mainline DHT (`pk nodes dht-bootstrap`, with libtorrent); none "
    "by default, so nothing is published until one is set. --no-publish: the DHT is only read.",
)
@click.option(
    "--lan/--no-lan",
    default=False,
    show_default=True,
    help="Announce this node and look others up on the LAN with mDNS (only when --host is "
    "not loopback). Off by default: nothing is sent beyond this machine unless asked.",
)
@click.option(
    "--public-address",
    "public",
    multiple=True,
    metavar="HOST:PORT",
    help="Where others reach this node, as published (repeatable; at most 5): for a port "
    "forwarded by a router, or a name. Default: the --host address(es).",
)
@click.option(
    "--relay",
    "relay",
    is_flag=True,
    help="Relay connections to nodes behind NAT that register here (needs --port and an "
    "address others reach). Off by default.",
)
@click.option(
    "--relay-rate",
    type=click.IntRange(min=16),
    metavar="KIB",
    help="With --relay: KiB per second relayed for one node (both ways). Default 16384.",
)
@click.option(
    "--via-relay",
    metavar="NODEID@HOST:PORT",
    help="Stay registered with this relay so that others reach this node through it (needs "
    "--port). Default: the node's home relay (`pk nodes home-relay`), if set.",
)
@click.option(
    "--map-port",
    is_flag=True,
    help="Ask the router (PCP, else NAT-PMP, else UPnP IGD) to forward --port from its public "
    "address, publish that address, and delete the mapping on stop. Off by default.",
)
@click.option("--child", is_flag=True, hidden=True)
@pass_settings
def start(
    s: Settings,
    background: bool,
    session_idle: int,
    session_max: int,
    port: int | None,
    host: str,
    sync_interval: int | None,
    peer_idle: int,
    publish: bool,
    lan: bool,
    public: tuple[str, ...],
    relay: bool,
    relay_rate: int | None,
    via_relay: str | None,
    map_port: bool,
    child: bool,
) -> None:
    """Unlock the node once and serve the CLI on a private Unix socket."""
    from polykey.agent.server import AgentRunning

    path = s.node_path()
    if not path.exists():
        from polykey.errors import NodeNotFound

        raise NodeNotFound(str(path))
    peers = (host, port) if port else None
    from polykey.network.graph import parse_address

    for text in public:
        parse_address(text)  # refused here, before the password is asked
    relays = env_relays()
    env_dht()  # refused here, before the password is asked
    check_relaying(port, relay, relay_rate, via_relay)  # before the password is asked
    if map_port and port is None:
        from polykey.errors import UsageError

        raise UsageError("--map-port needs --port", hint="The mapping forwards the peer port.")
    opts = AgentOptions(
        session_idle,
        session_max,
        peers,
        sync_interval,
        peer_idle,
        publish,
        lan,
        relays,
        public,
        relay,
        relay_rate,
        via_relay,
        map_port,
    )
    if child:
        run_child(s, opts)
        return
    live = live_status(s)
    if live is not None:
        raise AgentRunning(f"pid {live.get('pid')}")
    ensured(s)  # no usable runtime folder: say so before asking for the password
    password = s.password()
    if background:
        status = spawn(s, password, opts)
    else:
        serve(s, password, opts, announce=True)
        return
    emit(
        s,
        f"Agent running: pid {status['pid']}, node {status['node_id']}, socket {status['socket']}",
        status,
    )


@agent.command()
@node_options
@pass_settings
def status(s: Settings) -> None:
    """Whether an agent runs for this node: pid, NodeId, socket, since (no password needed)."""
    live = live_status(s)
    if live is None:
        raise AgentNotRunning(str(s.node_path()))
    lines = [
        f"{k:<9} {live[k]}"
        for k in ("pid", "node_id", "node", "socket", "since", "clients", "peers")
        if k in live
    ]
    held = live.get("peers_connected")
    if isinstance(held, dict):
        lines.append(
            f"{'connected':<9} {held.get('nodes', 0)} node(s) on {held.get('connections', 0)}"
            f" connection(s), {held.get('channels', 0)} channel(s);"
            f" {held.get('authenticating', 0)} authenticating"
        )
    from polykey.cli.safe_text import shown

    found = live.get("discovery")
    mapped = live.get("portmap")
    if isinstance(mapped, dict):
        how = f"{shown(mapped.get('how'))}"
        lines.append(
            f"{'reachable':<9} mapped {shown(mapped['mapped'])} ({how})"
            if mapped.get("mapped")
            else f"{'reachable':<9} not mapped ({shown(mapped.get('error') or 'asking')})"
        )
    if isinstance(found, dict):
        lines.append(f"{'reachable':<9} {_reachable(found, shown)}")
    lines.extend(_source_lines(live, shown))
    reach = live.get("reach")
    if isinstance(reach, dict):
        lines.extend(_reach_lines(reach, shown))
    for problem in live.get("sync_problems") or []:
        vault, since = shown(problem.get("vault")), shown(problem.get("since"))
        lines.append(f"{'sync':<9} {vault}: failing since {since}: {shown(problem.get('error'))}")
    emit(s, "Agent running\n" + "\n".join(lines), {"running": True, **live})


def _reachable(d: dict[str, Any], shown: Any) -> str:
    """How others find this node: its addresses, the LAN, the relays published to."""
    addresses = ", ".join(shown(a) for a in d.get("addresses") or []) or "loopback only"
    parts = [addresses, "LAN (mDNS)" if d.get("lan") else "not on the LAN"]
    if d.get("publish") and d.get("relays"):
        results = [f"{shown(o.get('result'))}" for o in d.get("published") or []]
        parts.append(f"published to {len(d.get('relays') or [])} relay(s)")
        if results:
            parts[-1] += f" ({', '.join(results)})"
    else:
        parts.append("not published to relays")
    dht = d.get("dht")
    if isinstance(dht, dict):
        mode = "looking up only" if dht.get("read_only") else "publishing"
        put = f", last put {shown(dht['put'])}" if dht.get("put") else ""
        parts.append(f"DHT on ({mode}, {shown(dht.get('nodes', 0))} node(s) known{put})")
    else:
        parts.append("DHT off")
    return "; ".join(parts)


def _source_lines(live: dict[str, Any], shown: Any) -> list[str]:
    """Whether the DHT is on and where its bootstrap list came from; where the Pkarr relays
    came from (the node's settings, or the environment that overrides them)."""
    lines = []
    dht = live.get("dht_bootstrap")
    if isinstance(dht, dict):
        where = {ENV_DHT: ENV_DHT, "setting": "the setting (`pk nodes dht-bootstrap`)"}
        source = where.get(str(dht.get("from")))
        if source is None:
            text = "off: no bootstrap list (`pk nodes dht-bootstrap HOST:PORT|mainline`)"
        elif dht.get("on"):
            text = f"on, bootstrap list from {source}"
        else:
            text = f"off: not started, though {source} gives a list (see agent.log)"
        lines.append(f"{'dht':<9} {text}")
    relays = live.get("pkarr_relays")
    if isinstance(relays, dict):
        env = relays.get("from") == ENV_RELAYS
        source = ENV_RELAYS if env else "the setting (`pk nodes relays`)"
        urls = relays.get("urls")
        count = f"{len(urls)} Pkarr relay(s)" if isinstance(urls, list) else "Pkarr relays"
        count = "no Pkarr relay" if urls == [] else count
        lines.append(f"{'relays':<9} {shown(count)} from {source}")
    return lines


def _reach_lines(r: dict[str, Any], shown: Any) -> list[str]:
    """How this node is reached (network/reach.py): direct, mapped, behind NAT, via a relay;
    what the seeds see; and, on a relay, what it serves."""
    lines = [f"{'reach':<9} {shown(r.get('mode'))}"]
    via = r.get("via")
    if isinstance(via, dict):
        state = (
            f"registered since {shown(via.get('since'))}"
            if via.get("registered")
            else (f"not registered ({shown(via.get('error') or 'connecting')})")
        )
        lines.append(f"{'via relay':<9} {shown(via.get('relay'))}: {state}")
    for seen in r.get("seen_as") or []:
        lines.append(f"{'seen as':<9} {shown(seen.get('address'))} by {shown(seen.get('seed'))}")
    relay = r.get("relay")
    if isinstance(relay, dict):
        lines.append(
            f"{'relay':<9} serving: {shown(relay.get('registered'))} node(s) registered, "
            f"{shown(relay.get('relayed'))} connection(s) relayed now, "
            f"{shown(relay.get('refused'))} refused; {int(relay.get('rate') or 0) // 1024} KiB/s"
            " per node"
        )
    return lines


@agent.command()
@node_options
@pass_settings
def stop(s: Settings) -> None:
    """Stop the agent (it removes its socket and status)."""
    import signal

    from polykey.agent.runtime import pid_alive
    from polykey.cli.client import AgentClient, AgentGone

    live = live_status(s)
    if live is None:
        raise AgentNotRunning(str(s.node_path()))
    client = AgentClient.find(s.node_path(), strict=True)
    if client is not None:
        with contextlib.suppress(AgentGone):
            client.call("agent.stop", {}, token=False)
        client.close()
    pid = live.get("pid")
    deadline = time.monotonic() + 10
    while isinstance(pid, int) and pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if isinstance(pid, int) and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
    emit(s, "Agent stopped.", {"stopped": True, "pid": pid})


def _client(s: Settings) -> Any:
    from polykey.cli.client import AgentClient

    client = AgentClient.find(s.node_path(), strict=True)
    if client is None or live_status(s) is None:
        raise AgentNotRunning(str(s.node_path()))
    return client


@agent.command()
@node_options
@pass_settings
def lock(s: Settings) -> None:
    """Forget this client's session (the agent revokes its token)."""
    from polykey.cli.client import AgentError

    client = _client(s)
    revoked = False
    with contextlib.suppress(AgentError):
        revoked = bool(client.call("agent.lock", {})["revoked"])
    client.forget_token()
    client.close()
    emit(s, "Session locked.", {"locked": True, "revoked": revoked})


@agent.command()
@node_options
@pass_settings
def lockall(s: Settings) -> None:
    """Revoke every session of the agent at once."""
    client = _client(s)
    revoked = client.call("agent.lockall", {}, token=False)["revoked"]
    client.forget_token()
    client.close()
    emit(s, f"Revoked {revoked} session(s).", {"revoked": revoked})


@agent.command()
@node_options
@click.option("--print-token", is_flag=True, help="Print the token (for PK_TOKEN) as well.")
@pass_settings
def unlock(s: Settings, print_token: bool) -> None:
    """Open a new session for this shell (the password is asked)."""
    client = _client(s)
    token = s.unlock_agent(client)
    client.close()
    doc: dict[str, Any] = {"unlocked": True, "token_file": str(Path(client.token_file))}
    if print_token:
        doc["token"] = token
    emit(s, token if print_token else "Session unlocked.", doc)
