"""kill -9 across relaying (issue #16): a node behind a relay stays reachable by its NodeId
alone, and the relay holds one registration for it, whatever is killed and when.

Three agents on one host's loopback: `relay` (`--relay`, slowed with `--relay-rate` so that a
clone through it takes a couple of seconds), `node` (`--via-relay RELAY`: its registration is an
SSH connection to the relay with a remote forward named by its NodeId) and a client `c` with no
agent, whose only seed is the relay. When root with nftables, all three run in a private network
namespace of their own whose firewall lets TCP through only to and from the relay's and the
node's ports: a punched connection cannot form, so every clone goes through the relay (else
punching on loopback may carry it; the notes say which carried the clones).

Each run kills one agent (the mode: `node-agent` or `relay-agent`) at one of these points:
right after it started (the node while it registers; the relay while the node registers again),
while the client clones `work` from the node by NodeId (through the relay), or while idle. The
killed agent is restarted; then, within SETTLE_S (the registrar's longest retry and more):

- the node's agent says it is registered, the relay's agent counts exactly one registration
  (a stale one, kept for a connection that died, would make two or misroute) and no relayed
  connection open (a kill mid-transfer must give its counts back, or the relay's per-node bound
  would lock the node out after a few kills);
- an unkilled `pk vaults clone NODEID work` on the client succeeds and holds the node's secrets.

A killed clone left the client either without the vault or with all of it (an acknowledged one,
with all of it). A run whose settling fails is counted `diverged`, with what the relay and the
node said.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench.soak import netns, reader
from bench.soak.core import Context, KillClock, Scenario, register_modes
from bench.soak.nodes import Node
from bench.soak.procs import Done
from bench.soak.scenarios.sharing import free_port

MODES = ("node-agent", "relay-agent")
KINDS = ("start", "clone", "idle")
SETTLE_S = 45.0  # network/relay.py's longest retry (30 s), a keepalive's worth of slack
RATE_KIB = 256  # the relay's rate per node: the 512 KiB secret takes ~2 s through it
BIG = 512 * 1024


class AgentHost(Node):
    """A soak node whose `pk agent start` takes options of its own (``extra``)."""

    def __init__(self, work: Path, name: str, *, extra: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(work, name, **kw)
        self.extra = extra

    def pk(self, *args: str, **kw: Any) -> Done:
        if args[:2] == ("agent", "start"):
            args = (*args, *self.extra)
        return super().pk(*args, **kw)

    def status(self) -> dict[str, Any]:
        """`pk agent status` (empty when no agent answers)."""
        done = self.pk("agent", "status", "--format", "json", timeout=30)
        if not done.acked:
            return {}
        doc = json.loads(done.text())
        return doc if isinstance(doc, dict) else {}


class Island:
    """A network namespace of its own (loopback only) whose firewall passes TCP only to and
    from ``ports``: no packet leaves it, no punched connection forms in it."""

    def __init__(self) -> None:
        self.ns = f"pkr{uuid.uuid4().hex[:6]}"
        self.made = False

    @staticmethod
    def unavailable() -> str | None:
        return netns.unavailable() or (None if shutil.which("nft") else "needs nftables")

    def setup(self, ports: tuple[int, ...]) -> None:
        steps = [["ip", "netns", "add", self.ns], ["ip", "-n", self.ns, "link", "set", "lo", "up"]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, check=False, timeout=30)
            if done.returncode != 0:
                raise OSError(f"{' '.join(step)}: {done.stderr.decode().strip()}")
            self.made = True
        listed = ", ".join(str(p) for p in ports)
        rules = (
            "table inet pksoak {\n chain out {\n  type filter hook output priority 0;\n"
            f"  tcp dport {{ {listed} }} accept;\n  tcp sport {{ {listed} }} accept;\n"
            "  meta l4proto tcp reject with tcp reset;\n }\n}\n"
        )
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns, "nft", "-f", "-"],
            input=rules.encode(),
            capture_output=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            raise OSError(f"nft in {self.ns}: {done.stderr.decode().strip()}")

    def teardown(self) -> None:
        if self.made:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
            self.made = False


@dataclass(frozen=True)
class RelayView:
    """What the relay and the node say once the faults stopped, and an unkilled clone."""

    node_registered: bool  # the node's agent: registered with its relay
    registrations: int | None  # the relay's agent: nodes registered (None: it did not answer)
    relayed: int | None  # the relay's agent: relayed connections open now
    clone: str = ""  # why an unkilled clone by NodeId failed ("" when it took the vault whole)

    @property
    def settled(self) -> bool:
        return self.node_registered and self.registrations == 1 and self.relayed == 0


def judge(view: RelayView) -> list[str]:
    """What is wrong once the faults stopped (empty: nothing)."""
    problems = []
    if not view.node_registered:
        problems.append("the node's agent is not registered with the relay")
    if view.registrations is None:
        problems.append("the relay's agent did not answer")
    elif view.registrations != 1:
        problems.append(f"the relay holds {view.registrations} registrations for its one node")
    if view.relayed:
        problems.append(f"the relay counts {view.relayed} relayed connection(s), none open")
    if view.clone:
        problems.append(f"a clone by NodeId alone failed: {view.clone}")
    return problems


@register_modes(*MODES)
class Relaying(Scenario):
    """A node behind a relay and the relay itself killed; the node must be registered again."""

    name = "relay"
    about = "node behind a relay / the relay killed (re-registered once, cloned by NodeId)"
    check_every: ClassVar[int] = 10

    def __init__(self, ctx: Context, mode: str = "node-agent") -> None:
        super().__init__(ctx, mode)
        self.island = Island() if Island.unavailable() is None else None
        ns = self.island.ns if self.island is not None else None
        quiet = ("--no-lan", "--no-publish")
        self.relay = AgentHost(
            ctx.work,
            "relay",
            ns=ns,
            port=free_port(),
            extra=("--relay", "--relay-rate", str(RATE_KIB), *quiet),
        )
        self.at = ""  # RELAYID@127.0.0.1:PORT, once the relay's NodeId is known
        self.node = AgentHost(ctx.work, "node", ns=ns, port=free_port())
        self.client = AgentHost(ctx.work, "c", ns=ns)
        self.clock = KillClock(self.rng, guess=2.0, spare=0.15)
        self.want: dict[str, str] = {}  # the node's `work`: {"work:path": text}
        self.ends: dict[str, int] = {}
        self.carried = self.punches = 0
        self.slowest = 0.0  # the longest wait for the relay and the node to settle

    def nodes(self) -> list[Node]:
        return [self.relay, self.node, self.client]

    def setup(self) -> None:
        if self.island is not None:
            assert self.relay.port is not None and self.node.port is not None
            self.island.setup((self.relay.port, self.node.port))
        for n in self.nodes():
            n.bootstrap()
        self.at = f"{self.relay.node_id}@127.0.0.1:{self.relay.port}"
        self.node.extra = ("--via-relay", self.at, "--no-lan", "--no-publish")
        self.node.must("vaults", "create", "work")
        big = self.rng.randbytes(BIG // 2).hex().encode()
        self.node.must("secrets", "write", "work:big", stdin=big)
        self.node.must("secrets", "write", "work:k", stdin=b"from behind the relay")
        self.node.must("vaults", "share", "work", self.client.node_id)
        self.want = reader.exports(self.node, ["work"])["work"][1]
        self.client.must("nodes", "seeds", "add", self.at)
        self.relay.start_agent()
        self.node.start_agent()
        self.settle("set-up")

    # --- one run ------------------------------------------------------------------------------

    def victim(self) -> AgentHost:
        return self.node if self.mode == "node-agent" else self.relay

    def step(self, budget_s: float) -> None:
        kind = self.rng.choice(KINDS)
        target = self.victim()
        if kind == "start":
            target.kill_agent()
            target.start_agent()
            time.sleep(self.rng.uniform(0.0, 0.8))  # registering (again), or just registered
            self.stats.kills += target.kill_agent()
        elif kind == "idle":
            self.stats.kills += target.kill_agent()
        else:
            self.clone_killed()
        target.ensure_agent()
        self.settle(kind)

    def clone_killed(self) -> None:
        """The client clones by NodeId, the victim killed at a random point of it."""
        local = f"w{self.run_no}"
        delay = self.clock.delay("clone")
        done = self.client.pk(
            "vaults",
            "clone",
            self.node.node_id,
            "work",
            local,
            kill_after=delay,
            kill=self.victim().kill_agent,
        )
        self.clock.learn("clone", done)
        self.count_kill(done)
        self.note_exit(done)
        got = self.held(local)
        why = "" if got in (None, self.want) else f"{len(got or {})} secrets, not the node's"
        end = "acknowledged" if done.acked else "killed" if done.kill_sent else "failed"
        held = "absent" if got is None else "torn" if why else "whole"
        self.ends[f"clone {end}: {held}"] = self.ends.get(f"clone {end}: {held}", 0) + 1
        self.record(
            acked=done.acked,
            applied=got == self.want,
            unchanged=got is None,
            what="a clone through the relay",
            detail=lambda: why or "the vault is not there",
        )
        if got is not None:
            self.client.must("vaults", "rm", local, "--yes")

    def held(self, local: str) -> dict[str, str] | None:
        """The client's copy of ``local`` as {"work:path": text}, or None when it has none."""
        if local not in [str(v["name"]) for v in reader.vault_list(self.client)]:
            return None
        got = reader.exports(self.client, [local])[local][1]
        return {"work:" + k.split(":", 1)[1]: v for k, v in got.items()}

    # --- the judge ----------------------------------------------------------------------------

    def look(self) -> RelayView:
        node = self.node.status().get("reach", {})
        relay = self.relay.status().get("reach", {}).get("relay")
        return RelayView(
            node_registered=bool(node.get("via", {}).get("registered")),
            registrations=None if relay is None else int(relay.get("registered", -1)),
            relayed=None if relay is None else int(relay.get("relayed", -1)),
        )

    def settle(self, kind: str) -> None:
        """Wait for the relay and the node to agree (SETTLE_S at most), then clone unkilled."""
        started = time.monotonic()
        view = self.look()
        while not view.settled and time.monotonic() - started < SETTLE_S:
            time.sleep(0.25)
            view = self.look()
        waited = time.monotonic() - started
        self.slowest = max(self.slowest, waited)
        before = self.relay.status().get("reach", {}).get("relay", {})
        local = f"s{self.run_no}"
        done = self.client.pk("vaults", "clone", self.node.node_id, "work", local)
        got = self.held(local) if done.acked else None
        why = "" if got == self.want else done.why() if not done.acked else "secrets differ"
        after = self.relay.status().get("reach", {}).get("relay", {})
        self.carried += int(after.get("carried", 0)) - int(before.get("carried", 0))
        self.punches += int(after.get("punches", 0)) - int(before.get("punches", 0))
        self.record(
            acked=done.acked,
            applied=got == self.want,
            unchanged=got is None,
            what="an unkilled clone once settled",
            detail=lambda: why,
        )
        if done.acked:
            self.client.must("vaults", "rm", local, "--yes")
        problems = judge(RelayView(view.node_registered, view.registrations, view.relayed, why))
        if problems:
            self.stats.diverged += 1
            self.stats.incident(
                f"NOT SETTLED {waited:.0f} s after a kill ({kind}): {self.where()}: "
                + "; ".join(problems)
            )

    def final(self) -> None:
        self.settle("final")

    def teardown(self) -> None:
        try:
            for n in (self.node, self.relay):
                n.stop_agent()
        finally:
            if self.island is not None:
                self.island.teardown()
            for host in self.nodes():  # the files stay, checked outside the namespace
                host.ns = None

    def summary_notes(self) -> None:
        super().summary_notes()
        ends = "; ".join(f"{n} {what}" for what, n in sorted(self.ends.items()))
        if ends:
            self.stats.note(f"{self.label}: {ends}")
        where = "a private namespace, punching blocked" if self.island else "loopback"
        self.stats.note(
            f"{self.label}: in {where}; settled within {self.slowest:.1f} s at most; unkilled "
            f"clones: {self.carried} carried by the relay ({self.punches} punches asked through it)"
        )
