"""`pk agent ...`: start the agent, see it, stop it, and manage its sessions."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.errors import PolykeyError

if TYPE_CHECKING:
    from polykey.agent.runtime import Runtime

READY_TIMEOUT_S = 60.0
ENV_RELAYS = "PK_PKARR_RELAYS"
"""Comma-separated Pkarr relay URLs the agent uses instead of the node's list (tests)."""
ENV_DHT = "PK_DHT_BOOTSTRAP"
"""Comma-separated HOST:PORT of Mainline DHT nodes to join (or `mainline`); it overrides the
node's setting (`pk nodes dht-bootstrap`). Neither set (the default): no DHT."""
LOG_MAX_BYTES_ENV = "PK_AGENT_LOG_MAX_BYTES"
"""Overrides the size at which agent.log rotates (tests); read by the agent process only."""


@dataclass(frozen=True)
class AgentOptions:
    idle: int
    maximum: int
    peers: tuple[str, int] | None
    sync_interval: int | None
    peer_idle: int = 60
    publish: bool = True
    lan: bool = True
    relays: tuple[str, ...] | None = None  # PK_PKARR_RELAYS; None: the node's own list
    public: tuple[str, ...] = ()
    relay: bool = False  # --relay: relay connections to nodes registered here
    relay_rate: int | None = None  # --relay-rate, KiB/s per NodeId
    via_relay: str | None = None  # --via-relay NODEID@HOST:PORT
    map_port: bool = False  # --map-port: ask the router (PCP, NAT-PMP, UPnP) to forward --port


class AgentNotRunning(PolykeyError):
    """No agent is running for this node."""

    exit_code = 43
    hint = "Start one with `pk agent start --background`."


class AgentFailed(PolykeyError):
    """The agent did not start."""

    exit_code = 44
    hint = "See the agent's log in its runtime folder for the reason."


def _runtime(s: Settings) -> Runtime | None:
    """The node's runtime folder; None when there is no place for one (no home, see
    polykey.cli.fast.runtime_base)."""
    from polykey.agent.runtime import Runtime
    from polykey.cli.fast import runtime_base

    base = runtime_base()
    return None if base is None else Runtime.for_node(Path(base), s.node_path())


def _ensured(s: Settings) -> Runtime:
    """The runtime folder, made 0700 if missing; refused (exit 41) when it is not private."""
    runtime = _runtime(s)
    if runtime is None:
        raise AgentFailed(
            "there is no folder for its socket (no home folder)",
            hint="Set PK_RUNTIME_DIR (or XDG_RUNTIME_DIR, or HOME) to a folder of yours.",
        )
    try:
        runtime.ensure()
    except OSError as exc:
        raise AgentFailed(
            f"cannot make its runtime folder {runtime.folder}: {exc.strerror or exc}",
            hint="Set PK_RUNTIME_DIR to a folder of yours.",
        ) from None
    return runtime


def _live_status(s: Settings) -> dict[str, Any] | None:
    """The running agent's status (it answers on its socket), cleaning up after a dead one.
    A runtime folder that is not private is refused (exit 41), never cleaned."""
    from polykey.agent.runtime import UnsafeRuntime
    from polykey.cli.client import AgentClient, AgentGone, not_private

    runtime = _runtime(s)
    if runtime is None or not os.path.lexists(runtime.folder):
        return None
    for folder in (runtime.folder.parent, runtime.folder):
        reason = not_private(str(folder), directory=True)
        if reason is not None:
            raise UnsafeRuntime(reason)
    client = AgentClient.find(s.node_path(), strict=True)
    if client is not None:
        try:
            return runtime.shown(client.call("agent.status", {}, token=False))
        except AgentGone:
            pass
        finally:
            client.close()
    runtime.clear()  # stale: the agent died (kill -9) without removing its socket and status
    return None


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
    relays = _env_relays()
    _env_dht()  # refused here, before the password is asked
    _check_relaying(port, relay, relay_rate, via_relay)  # before the password is asked
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
        _run_child(s, opts)
        return
    live = _live_status(s)
    if live is not None:
        raise AgentRunning(f"pid {live.get('pid')}")
    _ensured(s)  # no usable runtime folder: say so before asking for the password
    password = s.password()
    if background:
        status = _spawn(s, password, opts)
    else:
        _serve(s, password, opts, announce=True)
        return
    emit(
        s,
        f"Agent running: pid {status['pid']}, node {status['node_id']}, socket {status['socket']}",
        status,
    )


def _check_relaying(
    port: int | None, relay: bool, relay_rate: int | None, via_relay: str | None
) -> None:
    from polykey.errors import UsageError

    if (relay or via_relay) and port is None:
        raise UsageError(
            f"{'--relay' if relay else '--via-relay'} needs --port",
            hint="Relayed connections arrive at the peer port: give --port N.",
        )
    if relay_rate is not None and not relay:
        raise UsageError("--relay-rate is for a relay (--relay)")
    if via_relay is not None:
        from polykey.network.relay import parse_relay

        parse_relay(via_relay)


def _env_relays() -> tuple[str, ...] | None:
    """PK_PKARR_RELAYS, checked; None when unset."""
    raw = os.environ.get(ENV_RELAYS)
    if raw is None:
        return None
    from polykey.network.relays import check_relay_url

    return tuple(check_relay_url(u) for u in raw.split(",") if u.strip())


def _env_dht() -> tuple[Any, ...]:
    """PK_DHT_BOOTSTRAP as network.graph.Address values, checked; empty when unset."""
    raw = os.environ.get(ENV_DHT, "").strip()
    if not raw:
        return ()
    from polykey.network.dht import parse_bootstrap

    return parse_bootstrap(raw)


def _dht_bootstrap(node: Any) -> tuple[list[Any], str]:
    """The DHT bootstrap list the agent joins from, and where it came from: PK_DHT_BOOTSTRAP
    when set (it overrides the setting), else the node's setting (`pk nodes dht-bootstrap`);
    neither: none, and the DHT is off."""
    env = _env_dht()
    if env:
        return list(env), ENV_DHT
    kept = node.graph.dht_bootstrap()
    if not kept:
        return [], ""
    from polykey.network.dht import parse_bootstrap

    return list(parse_bootstrap(",".join(kept))), "setting"


def _spawn(s: Settings, password: bytes, opts: AgentOptions) -> dict[str, Any]:
    """Start the agent as a detached child; hand it the password on a pipe, never in argv/env."""
    runtime = _ensured(s)
    args = [sys.executable, "-m", "polykey", "agent", "start", "--child"]
    args += ["--node", str(s.node_path()), "--session-idle", str(opts.idle)]
    args += ["--session-max", str(opts.maximum)]
    if opts.peers is not None:
        args += ["--host", opts.peers[0], "--port", str(opts.peers[1])]
    if opts.sync_interval:
        args += ["--sync-interval", str(opts.sync_interval)]
    args += ["--peer-idle", str(opts.peer_idle)]
    args += [] if opts.publish else ["--no-publish"]
    args += ["--lan"] if opts.lan else ["--no-lan"]  # the child's default is --no-lan
    for text in opts.public:
        args += ["--public-address", text]
    args += ["--relay"] if opts.relay else []
    args += ["--relay-rate", str(opts.relay_rate)] if opts.relay_rate else []
    args += ["--via-relay", opts.via_relay] if opts.via_relay else []
    args += ["--map-port"] if opts.map_port else []
    env = {k: v for k, v in os.environ.items() if k not in ("PK_PASSWORD", "PK_NEW_PASSWORD")}
    log_fd = os.open(runtime.log_file, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log_fd)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(password + b"\n")
    proc.stdin.close()
    deadline = time.monotonic() + READY_TIMEOUT_S
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line or proc.poll() is not None:
            break
    proc.stdout.close()
    try:
        doc = json.loads(line)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise AgentFailed(f"see {runtime.log_file}")
    if "error" in doc:
        err = doc["error"]
        raise _Relayed(err["message"], err.get("hint", ""), int(err.get("exit_code", 44)))
    return doc


class _Relayed(PolykeyError):
    def __init__(self, message: str, hint: str, exit_code: int) -> None:
        self._message = message
        super().__init__(message, hint=hint)
        self.exit_code = exit_code  # type: ignore[misc]

    @property
    def message(self) -> str:
        return self._message


def _run_child(s: Settings, opts: AgentOptions) -> None:
    """The detached agent: password from stdin, one JSON line on stdout when ready."""
    raw = sys.stdin.buffer.readline().rstrip(b"\n")
    ready_out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)

    def ready(status: dict[str, Any]) -> None:
        ready_out.write(json.dumps(status) + "\n")
        ready_out.close()

    try:
        _serve(s, raw, opts, announce=False, ready=ready)
    except PolykeyError as exc:
        if not ready_out.closed:
            doc = {"message": exc.message, "hint": exc.user_hint, "exit_code": exc.exit_code}
            ready_out.write(json.dumps({"error": doc}) + "\n")
            ready_out.close()
        raise


def _serve(
    s: Settings,
    password: bytes,
    opts: AgentOptions,
    *,
    announce: bool,
    ready: Any = None,
) -> None:
    import asyncio

    from polykey.agent.runtime import MAX_SOCKET_PATH
    from polykey.agent.server import Agent, AgentRunning, harden_process
    from polykey.agent.sessions import Sessions
    from polykey.cli.client import AgentClient
    from polykey.network.graph import parse_address
    from polykey.node import Node

    harden_process()
    runtime = _ensured(s)
    if _live_status(s) is not None:
        raise AgentRunning()
    runtime.clear()
    if len(os.fsencode(str(runtime.socket))) > MAX_SOCKET_PATH:
        raise AgentFailed(
            f"its socket path is too long: {runtime.socket_path}",
            hint="Set PK_RUNTIME_DIR to a shorter folder of yours.",
        )
    _setup_log(runtime)
    node = Node.open(s.node_path(), password, allow_weak=s.allow_weak())
    del password
    sessions = Sessions(opts.idle, opts.maximum)
    agent_ = Agent(node, s.node_path(), runtime, sessions)
    if opts.peers is not None:
        agent_.peer_host, agent_.peer_port = opts.peers
    agent_.sync_interval = float(opts.sync_interval or 0)
    agent_.peer_idle = float(opts.peer_idle)
    agent_.publish, agent_.lan = opts.publish, opts.lan
    agent_.relay_urls = list(opts.relays) if opts.relays is not None else None
    agent_.public_addresses = [parse_address(a) for a in opts.public]
    agent_.dht_bootstrap, agent_.dht_from = _dht_bootstrap(node)
    _set_relaying(agent_, opts)
    agent_.map_port = opts.map_port
    token = sessions.issue()
    AgentClient(runtime.folder).save_token(token)

    def on_ready(status: dict[str, Any]) -> None:
        status = runtime.shown(status)
        if announce:
            emit(
                s,
                f"Agent running in the foreground: pid {status['pid']}, socket {status['socket']}"
                " (Ctrl-C stops it)",
                status,
            )
            sys.stdout.flush()
        if ready is not None:
            ready(status)

    try:
        asyncio.run(agent_.serve(on_ready))
    finally:
        node.close()


def _set_relaying(agent_: Any, opts: AgentOptions) -> None:
    from polykey.network.relay import parse_relay

    agent_.relay_serving = opts.relay
    agent_.relay_rate = opts.relay_rate * 1024 if opts.relay_rate else None
    agent_.via_relay = parse_relay(opts.via_relay) if opts.via_relay else None


def _setup_log(runtime: Runtime) -> None:
    """The agent logs to agent.log, rotated (LOG_MAX_BYTES, LOG_BACKUPS older files); Python
    warnings and other libraries' warnings go there too, not to an unbounded stderr."""
    import logging

    from polykey.agent.runtime import LOG_MAX_BYTES, agent_log_handler

    max_bytes = LOG_MAX_BYTES
    with contextlib.suppress(ValueError):
        max_bytes = max(1024, int(os.environ.get(LOG_MAX_BYTES_ENV, "") or LOG_MAX_BYTES))
    handler = agent_log_handler(runtime.log_file, max_bytes=max_bytes)
    log = logging.getLogger("polykey.agent")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]  # asyncio, asyncssh: warnings and errors only (root's level)
    logging.captureWarnings(True)


@agent.command()
@node_options
@pass_settings
def status(s: Settings) -> None:
    """Whether an agent runs for this node: pid, NodeId, socket, since (no password needed)."""
    live = _live_status(s)
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

    live = _live_status(s)
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
    if client is None or _live_status(s) is None:
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
