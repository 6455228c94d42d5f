"""One node of the soak: its file, its environment, its agent, and the checks every node gets.

Nodes use the test-only fast KDF (PK_UNSAFE_FAST_KDF=1, as tests/support.py does) and take the
password from PK_PASSWORD. A node may live in a network namespace (its commands then run under
`ip netns exec`) and may have a skewed wall clock (libfaketime, for it and its agent).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.soak import procs
from bench.soak.procs import Done


class HarnessError(Exception):
    """A step the soak needs (not one it kills) failed: reported as an error, never ignored."""


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PK_", "FAKETIME"))}
    env.pop("LD_PRELOAD", None)
    env["PK_UNSAFE_FAST_KDF"] = "1"
    return env


class Node:
    def __init__(
        self,
        work: Path,
        name: str,
        *,
        ns: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        sync_interval: int | None = None,
    ) -> None:
        self.name = name
        self.path = work / f"{name}.pk"
        self.runtime_base = work / "run"
        self.ns = ns
        self.host = host
        self.port = port
        self.sync_interval = sync_interval
        self.skew: str | None = None
        self.node_id = ""
        self.agent_wanted = False  # the scenario wants an agent serving this node
        self.env = base_env() | {
            "PK_NODE": str(self.path),
            "PK_PASSWORD": f"soak password of {name}",
            "PK_RUNTIME_DIR": str(self.runtime_base),
        }

    # --- running commands ---------------------------------------------------------------------

    def argv(self, args: tuple[str, ...] | list[str]) -> list[str]:
        prefix = ["ip", "netns", "exec", self.ns] if self.ns else []
        return [*prefix, *procs.PK, *args]

    def env_for(self, *, direct: bool = False) -> dict[str, str]:
        env = self.env | procs.skew_env(self.skew)
        if direct:
            env["PK_NO_AGENT"] = "1"
        return env

    def pk(
        self,
        *args: str,
        stdin: bytes | None = None,
        direct: bool = False,
        kill_after: float | None = None,
        kill: Any = None,
        timeout: float = procs.DEFAULT_TIMEOUT_S,
    ) -> Done:
        return procs.run(
            self.argv(args),
            self.env_for(direct=direct),
            stdin=stdin,
            kill_after=kill_after,
            kill=kill,
            timeout=timeout,
        )

    def must(self, *args: str, stdin: bytes | None = None, direct: bool = False) -> str:
        """Run a command the soak needs to succeed (never killed)."""
        done = self.pk(*args, stdin=stdin, direct=direct)
        if not done.acked:
            raise HarnessError(f"{self.name}: {done.why()}")
        return done.text()

    def json(self, *args: str, direct: bool = False) -> dict[str, Any]:
        doc = json.loads(self.must(*args, "--format", "json", direct=direct))
        if not isinstance(doc, dict):
            raise HarnessError(f"{self.name}: {args} printed no JSON object")
        return doc

    def bootstrap(self) -> None:
        """Create the node file (in this process: set-up is not what the soak tests)."""
        from polykey.ids import encode_node_id
        from polykey.node import FAST_INSECURE_KDF
        from polykey.node import Node as PkNode

        password = self.env["PK_PASSWORD"].encode()
        node, _ = PkNode.bootstrap(self.path, password, kdf=FAST_INSECURE_KDF, allow_weak=True)
        with node:
            self.node_id = encode_node_id(node.node_id)

    # --- the agent ----------------------------------------------------------------------------

    @property
    def runtime(self) -> Path:
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        return self.runtime_base / digest

    def agent_pid(self) -> int | None:
        """The pid in the agent's status file, if that process is alive."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            doc = json.loads((self.runtime / "status.json").read_text())
            pid = int(doc["pid"])
            if procs.alive(pid):
                return pid
        return None

    def start_agent(self, *, tries: int = 5) -> None:
        """`pk agent start --background`; retried a few times (a port the killed agent held may
        take a moment to free). Raises HarnessError if it never starts."""
        self.agent_wanted = True
        args = ["agent", "start", "--background"]
        if self.port is not None:
            args += ["--host", self.host, "--port", str(self.port)]
        if self.sync_interval is not None:
            args += ["--sync-interval", str(self.sync_interval)]
        last = ""
        for attempt in range(tries):
            if self.agent_pid() is not None:
                return
            done = self.pk(*args, timeout=90)
            if done.acked:
                return
            if done.code == 40:  # AgentRunning: one got there (a status file race); fine
                return
            last = done.why()
            time.sleep(0.3 * (attempt + 1))
        raise HarnessError(f"{self.name}: the agent did not start: {last}")

    def stop_agent(self) -> None:
        """Stop the agent (gracefully, then SIGKILL after 10 s)."""
        self.agent_wanted = False
        pid = self.agent_pid()
        if pid is None:
            return
        self.pk("agent", "stop", timeout=30)
        deadline = time.monotonic() + 10
        while procs.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        procs.sigkill(pid)

    def kill_agent(self) -> bool:
        """SIGKILL the agent; True if one was running."""
        pid = self.agent_pid()
        return pid is not None and procs.sigkill(pid)

    def ensure_agent(self) -> None:
        """Restart the agent if the scenario wants one and it is gone (killed)."""
        if self.agent_wanted and self.agent_pid() is None:
            self.start_agent()

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the agent has answered every CLI request still in it (a killed CLI's
        request runs to its end in the agent): `clients` in agent.status counts them."""
        from polykey.cli.client import AgentClient, AgentError, AgentGone

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not (self.runtime / "agent.sock").exists():
                return
            try:
                client = AgentClient(self.runtime)
                try:
                    if client.call("agent.status", {}, token=False).get("clients", 0) == 0:
                        return
                finally:
                    client.close()
            except (AgentGone, AgentError, OSError):
                return
            time.sleep(0.02)
        raise HarnessError(f"{self.name}: the agent still had CLI requests after {timeout:.0f} s")

    # --- the checks every node gets -------------------------------------------------------------

    def check(self, *, direct: bool = False) -> tuple[bool, bool, str]:
        """(opens, whole, why): `pk node check` exits 0 (every record and object authenticated);
        when it does not, `pk node info` on the file tells whether the file opens at all."""
        done = self.pk("node", "check", direct=direct, timeout=300)
        if done.acked:
            return True, True, ""
        info = self.pk("node", "info", direct=True, timeout=120)
        return info.acked, False, done.why() + ("" if info.acked else "; " + info.why())
