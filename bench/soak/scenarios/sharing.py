"""kill -9 across sharing on loopback: `pk vaults clone`, `pull` and `push` between two agents.

Node `a` serves `--port` on 127.0.0.1 and owns the vaults; node `b` (its own agent, its own port)
clones, pulls and pushes. Three kill modes, one row each: `client-cli` (b's CLI is killed; b's
agent may finish the request after), `client-agent` (b's agent is killed; b's CLI then works on
b's file and dials a itself), `server-agent` (a's agent is killed while it serves).

The model is the history of the side that writes (a for clone and pull, b for push), read back
after each of its writes. The receiving side may only ever hold one of those commits, with exactly
that commit's secrets, and never move back; an acknowledged command must leave it at the head.
A request whose CLI was killed may still land later (the agent goes on with it): that is allowed,
as long as what lands is whole.
"""

from __future__ import annotations

import json
import socket
from typing import ClassVar

from bench.soak import reader
from bench.soak.core import Context, KillClock, Scenario, register_modes
from bench.soak.nodes import Node
from bench.soak.procs import Done
from bench.soak.scenarios.local import Secrets, diff, export, token

MODES = ("client-cli", "client-agent", "server-agent")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class History:
    """The commits one side made, in order, with the secrets each holds."""

    def __init__(self) -> None:
        self.commits: list[str] = []
        self.secrets: dict[str, Secrets] = {}

    def add(self, commit: str, secrets: Secrets) -> None:
        if commit not in self.secrets:
            self.commits.append(commit)
        self.secrets[commit] = {k.split(":", 1)[1]: v for k, v in secrets.items()}

    @property
    def head(self) -> int:
        return len(self.commits) - 1

    def judge(self, commit: str, secrets: Secrets, floor: int) -> tuple[int | None, str]:
        """(index of the commit, "" if the copy is whole and not older than ``floor``, else why)."""
        if commit not in self.secrets:
            return None, f"commit {commit[:12]} is not one the writer made"
        idx = self.commits.index(commit)
        mine = {k.split(":", 1)[1]: v for k, v in secrets.items()}
        if mine != self.secrets[commit]:
            return (
                idx,
                f"secrets differ from commit {commit[:12]}: {diff(self.secrets[commit], mine)}",
            )
        if idx < floor:
            return idx, f"went back from commit #{floor} to #{idx}"
        return idx, ""


class SharingScenario(Scenario):
    perms: ClassVar[str] = "clone,pull"
    guess: ClassVar[float] = 0.5

    def __init__(self, ctx: Context, mode: str = "client-cli") -> None:
        super().__init__(ctx, mode)
        self.a = Node(ctx.work, "a", port=free_port())
        self.b = Node(ctx.work, "b", port=free_port())
        self.clock = KillClock(self.rng, guess=self.guess)
        self.hist = History()

    def nodes(self) -> list[Node]:
        return [self.a, self.b]

    def setup(self) -> None:
        for n in (self.a, self.b):
            n.bootstrap()
            n.start_agent()
        self.a.must("nodes", "add", self.b.node_id, f"127.0.0.1:{self.b.port}")
        self.b.must("nodes", "add", self.a.node_id, f"127.0.0.1:{self.a.port}")
        self.a.must("vaults", "create", "src")
        for i in range(3):
            self.a.must("secrets", "write", f"src:k{i}", stdin=token(self.rng, 0).encode())
        self.a.must("vaults", "share", "src", self.b.node_id, "--perm", self.perms)
        self.prepare()

    def prepare(self) -> None:
        pass

    def act(self, kind: str, *args: str) -> Done:
        delay = self.clock.delay(kind)
        kill = {"client-cli": None, "client-agent": self.b.kill_agent}.get(
            self.mode, self.a.kill_agent
        )
        done = self.b.pk(*args, kill_after=delay, kill=kill)
        self.clock.learn(kind, done)
        self.count_kill(done)
        self.note_exit(done)
        self.a.ensure_agent()
        self.b.ensure_agent()
        return done

    def read(self, node: Node, vault: str, how: str | None = None) -> tuple[str, Secrets]:
        """A vault's commit and secrets: mostly from the file in this process, every eighth run
        and at the end through `pk` (through the agent, or with `direct`, on the file)."""
        how = how or ("cli" if self.run_no % 8 == 0 else "file")
        if how == "file":
            commit, secrets, _ = reader.exports(node, [vault])[vault]
        else:
            commit, secrets, _ = export(node, vault, direct=how == "direct")
        return commit, secrets

    def a_writes(self, vault: str = "src") -> None:
        key = f"{vault}:k{self.rng.randrange(5)}"
        self.a.must("secrets", "write", key, stdin=token(self.rng, self.run_no).encode())
        self.hist.add(*self.read(self.a, vault))

    def judge_copy(
        self,
        done: Done | None,
        node: Node,
        vault: str,
        floor: int,
        what: str,
        how: str | None = None,
    ) -> int:
        """Judge ``node``'s copy of ``vault`` against the writer's history; return its index."""
        commit, secrets = self.read(node, vault, how)
        idx, why = self.hist.judge(commit, secrets, floor)
        acked = done is not None and done.acked
        self.record(
            acked=acked,
            applied=not why and idx == self.hist.head,
            unchanged=not why,
            what=what,
            detail=lambda: why or f"at commit #{idx} of {self.hist.head}",
        )
        return floor if idx is None or why else idx


@register_modes(*MODES)
class Clones(SharingScenario):
    """`pk vaults clone` of a's vault into a new name on b, again and again."""

    name = "clone"
    about = "pk vaults clone over loopback SSH (client CLI, client agent, server agent killed)"

    def prepare(self) -> None:
        self.hist.add(*self.read(self.a, "src", "cli"))

    def clones(self, how: str = "file") -> list[str]:
        if how == "file":
            listed = reader.vault_list(self.b)
        else:
            listed = json.loads(
                self.b.must("vaults", "list", "--format", "json", direct=how == "direct")
            )["vaults"]
        return sorted(v["name"] for v in listed if v["name"].startswith("cl"))

    def step(self, budget_s: float) -> None:
        if self.rng.random() < 0.3:
            self.a_writes()
        name = f"cl{self.run_no}"
        done = self.act("clone", "vaults", "clone", self.a.node_id, "src", name)
        present = self.clones()
        if name in present:
            self.judge_copy(done, self.b, name, 0, f"clone into {name}")
        else:
            self.record(
                acked=done.acked,
                applied=False,
                unchanged=True,
                what=f"clone into {name}",
                detail=lambda: "no such vault on b",
            )
        for other in present:  # this clone, and any that a killed CLI's agent finished later
            if other != name:
                self.judge_copy(None, self.b, other, 0, f"late clone {other}")
            self.b.must("vaults", "rm", other, "--yes")

    def final(self) -> None:
        for how in ("cli", "direct"):
            for name in self.clones(how):
                self.judge_copy(None, self.b, name, 0, f"clone {name} at the end", how)


@register_modes(*MODES)
class Pulls(SharingScenario):
    """a writes one commit, b pulls it."""

    name = "pull"
    about = "pk vaults pull over loopback SSH (client CLI, client agent, server agent killed)"

    def prepare(self) -> None:
        self.hist.add(*self.read(self.a, "src", "cli"))
        self.b.must("vaults", "clone", self.a.node_id, "src")
        self.b_idx = self.judge_copy(None, self.b, "src", 0, "first clone")

    def step(self, budget_s: float) -> None:
        self.a_writes()
        done = self.act("pull", "vaults", "pull", "src")
        self.b_idx = self.judge_copy(done, self.b, "src", self.b_idx, "pull")

    def final(self) -> None:
        for how in ("cli", "direct"):
            self.judge_copy(None, self.b, "src", self.b_idx, "b's copy at the end", how)


@register_modes(*MODES)
class Pushes(SharingScenario):
    """b writes one commit to its clone, pushes it to a (which granted push)."""

    name = "push"
    about = "pk vaults push over loopback SSH (client CLI, client agent, server agent killed)"
    perms = "clone,pull,push"

    def prepare(self) -> None:
        self.b.must("vaults", "clone", self.a.node_id, "src", "dst")
        self.hist.add(*self.read(self.b, "dst", "cli"))
        self.a_idx = self.judge_copy(None, self.a, "src", 0, "a before any push")

    def step(self, budget_s: float) -> None:
        self.b.ensure_agent()
        value = token(self.rng, self.run_no).encode()
        self.b.must("secrets", "write", f"dst:p{self.rng.randrange(5)}", stdin=value)
        self.hist.add(*self.read(self.b, "dst"))
        done = self.act("push", "vaults", "push", "dst", self.a.node_id)
        self.a_idx = self.judge_copy(done, self.a, "src", self.a_idx, "push")

    def final(self) -> None:
        for how in ("cli", "direct"):
            self.judge_copy(None, self.a, "src", self.a_idx, "a's vault at the end", how)
