"""The agent as a process: the options `pk agent start` takes, the node's runtime folder, the
agent started detached (a child handed the password on a pipe) or served in this process, and
its log. The `pk agent` commands themselves are in cli/agent.py."""

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

from polykey.cli.common import Settings, emit
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


class AgentFailed(PolykeyError):
    """The agent did not start."""

    exit_code = 44
    hint = "See the agent's log in its runtime folder for the reason."


def runtime_of(s: Settings) -> Runtime | None:
    """The node's runtime folder; None when there is no place for one (no home, see
    polykey.cli.fast.runtime_base)."""
    from polykey.agent.runtime import Runtime
    from polykey.cli.fast import runtime_base

    base = runtime_base()
    return None if base is None else Runtime.for_node(Path(base), s.node_path())


def ensured(s: Settings) -> Runtime:
    """The runtime folder, made 0700 if missing; refused (exit 41) when it is not private."""
    runtime = runtime_of(s)
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


def live_status(s: Settings) -> dict[str, Any] | None:
    """The running agent's status (it answers on its socket), cleaning up after a dead one.
    A runtime folder that is not private is refused (exit 41), never cleaned."""
    from polykey.agent.runtime import UnsafeRuntime
    from polykey.cli.client import AgentClient, AgentGone, not_private

    runtime = runtime_of(s)
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


def check_relaying(
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


def env_relays() -> tuple[str, ...] | None:
    """PK_PKARR_RELAYS, checked; None when unset."""
    raw = os.environ.get(ENV_RELAYS)
    if raw is None:
        return None
    from polykey.network.relays import check_relay_url

    return tuple(check_relay_url(u) for u in raw.split(",") if u.strip())


def env_dht() -> tuple[Any, ...]:
    """PK_DHT_BOOTSTRAP as network.graph.Address values, checked; empty when unset."""
    raw = os.environ.get(ENV_DHT, "").strip()
    if not raw:
        return ()
    from polykey.network.dht import parse_bootstrap

    return parse_bootstrap(raw)


def dht_bootstrap(node: Any) -> tuple[list[Any], str]:
    """The DHT bootstrap list the agent joins from, and where it came from: PK_DHT_BOOTSTRAP
    when set (it overrides the setting), else the node's setting (`pk nodes dht-bootstrap`);
    neither: none, and the DHT is off."""
    env = env_dht()
    if env:
        return list(env), ENV_DHT
    kept = node.graph.dht_bootstrap()
    if not kept:
        return [], ""
    from polykey.network.dht import parse_bootstrap

    return list(parse_bootstrap(",".join(kept))), "setting"


def spawn(s: Settings, password: bytes, opts: AgentOptions) -> dict[str, Any]:
    """Start the agent as a detached child; hand it the password on a pipe, never in argv/env."""
    runtime = ensured(s)
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


def run_child(s: Settings, opts: AgentOptions) -> None:
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
        serve(s, raw, opts, announce=False, ready=ready)
    except PolykeyError as exc:
        if not ready_out.closed:
            doc = {"message": exc.message, "hint": exc.user_hint, "exit_code": exc.exit_code}
            ready_out.write(json.dumps({"error": doc}) + "\n")
            ready_out.close()
        raise


def serve(
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
    runtime = ensured(s)
    if live_status(s) is not None:
        raise AgentRunning()
    runtime.clear()
    if len(os.fsencode(str(runtime.socket))) > MAX_SOCKET_PATH:
        raise AgentFailed(
            f"its socket path is too long: {runtime.socket_path}",
            hint="Set PK_RUNTIME_DIR to a shorter folder of yours.",
        )
    setup_log(runtime)
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
    agent_.dht_bootstrap, agent_.dht_from = dht_bootstrap(node)
    set_relaying(agent_, opts)
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


def set_relaying(agent_: Any, opts: AgentOptions) -> None:
    from polykey.network.relay import parse_relay

    agent_.relay_serving = opts.relay
    agent_.relay_rate = opts.relay_rate * 1024 if opts.relay_rate else None
    agent_.via_relay = parse_relay(opts.via_relay) if opts.via_relay else None


def setup_log(runtime: Runtime) -> None:
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
