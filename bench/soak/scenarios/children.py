"""kill -9 across child delegations (`pk child create/join/pull/revoke`): a delegation is fully
there (the parent's claim, countersigned by the child, which pulls its vault) or absent, and a
join token is never used twice.

Parent `a` (agent on 127.0.0.1) owns `src`. Each run a makes a child `cN` with a one-time token
(`pk child create cN --vault src --token`, unkilled), and a new node joins with it (`pk child
join TOKEN`, which makes the child's node file first), killed as the mode says: `client-cli`
(the joining CLI) or `server-agent` (a's agent, while it answers; restarted). Every other run a
also revokes the child made the run before, killed the same way (a's CLI, or a's agent).
Afterwards:

- a's file and the child's file (when the join made it) open, and a's own sigchain verifies;
- the delegation is either whole (a's `child.show` says `live` for the child's NodeId, and an
  unkilled `pk child pull` on the child takes `src` with a's secrets) or absent (not live, and
  the child's pull holds no delegation); an acknowledged join must be whole;
- a second node then tries the same token (unkilled): refused whenever the child reached a;
  if it is taken, the first child's retry must be refused. A killed join whose retry by the
  same child is refused left the token spent with no delegation (counted in the notes);
- a revocation leaves the child `live` or `revoked`; an acknowledged one, `revoked`, and the
  child's next pull then holds no delegation.
"""

from __future__ import annotations

import json

from bench.soak import reader
from bench.soak.core import Context, KillClock, register_modes
from bench.soak.nodes import Node
from bench.soak.procs import Done
from bench.soak.scenarios.local import token
from bench.soak.scenarios.sharing import SharingScenario

MODES = ("client-cli", "server-agent")


@register_modes(*MODES)
class Delegations(SharingScenario):
    """`pk child join` (and `pk child revoke`) killed; a token tried twice."""

    name = "child"
    about = "pk child create/join/pull/revoke (whole or absent; a token never used twice)"
    check_every = 6
    guess = 0.6

    def __init__(self, ctx: Context, mode: str = "client-cli") -> None:
        super().__init__(ctx, mode)
        self.clock = KillClock(self.rng, guess=self.guess)
        self.children: list[tuple[str, Node]] = []  # (name, node) of the children that joined
        self.live: dict[str, bool] = {}  # child name -> whether its delegation is live
        self.ends: dict[str, int] = {}

    def setup(self) -> None:
        self.a.bootstrap()
        self.a.start_agent()
        self.a.must("vaults", "create", "src")
        for i in range(3):
            self.a.must("secrets", "write", f"src:k{i}", stdin=token(self.rng, 0).encode())

    def nodes(self) -> list[Node]:
        return [self.a, *(n for _, n in self.children)]

    def count(self, what: str) -> None:
        self.ends[what] = self.ends.get(what, 0) + 1

    def killed(self, node: Node, kind: str, *args: str) -> Done:
        """Run a command of ``node`` killed as the mode says (its CLI, or a's agent)."""
        delay = self.clock.delay(kind)
        kill = self.a.kill_agent if self.mode == "server-agent" else None
        done = node.pk(*args, kill_after=delay, kill=kill)
        self.clock.learn(kind, done)
        self.count_kill(done)
        self.note_exit(done)
        self.a.ensure_agent()
        if done.killed:
            self.a.settle()
        return done

    def state(self, name: str) -> tuple[str, str]:
        """(state, child NodeId) of child ``name`` as a's file holds it."""
        shown = reader._call(self.a, [("child.show", {"name": name})])[0]
        return str(shown.get("state", "")), str(shown.get("node_id") or "")

    def opens(self, node: Node) -> str:
        """The NodeId of ``node``'s file (raises Unopenable when it does not open)."""
        return str(reader._call(node, [("keys.public", {})])[0]["node_id"])

    def pulls(self, node: Node) -> tuple[str, dict[str, str]]:
        """An unkilled `pk child pull` on ``node``: (its delegation, src's secrets there)."""
        done = node.pk("child", "pull", "--format", "json")
        if not done.acked:
            return f"refused (exit {done.code})", {}
        doc = json.loads(done.text())
        if doc.get("delegation") != "live":
            return str(doc.get("delegation")), {}
        got = reader.exports(node, ["src"])["src"][1] if "src" in self.names(node) else {}
        return "live", got

    @staticmethod
    def names(node: Node) -> list[str]:
        return [str(v["name"]) for v in reader.vault_list(node)]

    # --- one run ------------------------------------------------------------------------------

    def step(self, budget_s: float) -> None:
        live = [n for n, node in self.children if self.live.get(n)]
        if self.run_no % 2 == 0 and live:
            self.revoke(live[-1], dict(self.children)[live[-1]])
        name = f"c{self.run_no}"
        made = self.a.must("child", "create", name, "--vault", "src", "--token")
        tok = made.strip().splitlines()[-1].strip()
        child = Node(self.ctx.work, name)
        done = self.killed(child, "join", "child", "join", tok)
        if child.path.exists():
            child.node_id = self.opens(child)
            self.children.append((name, child))
        whole, joined_id = self.judge_join(done, name, child)
        self.verify_parent()
        self.twice(name, tok, child, whole, joined_id)
        self.live[name] = self.state(name)[0] == "live"

    def judge_join(self, done: Done, name: str, child: Node) -> tuple[bool, str]:
        """Judge the join of ``name`` by ``child``: (whether the delegation is whole, the
        NodeId a holds for the child)."""
        state, joined_id = self.state(name)
        whole = state == "live" and joined_id == child.node_id != ""
        pulled, got = self.pulls(child) if child.path.exists() else ("no node file", {})
        want = reader.exports(self.a, ["src"])["src"][1]
        why = ""
        if whole and (pulled != "live" or got != want):
            same = "matches" if got == want else "differs"
            why = f"a says live; the child's pull: {pulled}, src {same}"
        elif not whole and pulled == "live":
            why = f"a says {state!r}, yet the child's pull holds a live delegation"
        self.count(
            f"join {'acknowledged' if done.acked else 'killed' if done.kill_sent else 'failed'}: "
            f"{'whole' if whole else state}"
        )
        self.record(
            acked=done.acked,
            applied=whole and not why,
            unchanged=not whole and not why,
            what=f"join of {name}",
            detail=lambda: why,
        )
        return whole, joined_id

    def twice(self, name: str, tok: str, child: Node, whole: bool, joined_id: str) -> None:
        """A second node tries the token; if it takes it, the first may not."""
        thief = Node(self.ctx.work, f"t{self.run_no}")
        second = thief.pk("child", "join", tok)
        self.note_exit(second)
        if thief.path.exists():
            thief.node_id = self.opens(thief)
            self.children.append((f"t{self.run_no}", thief))
        if second.acked and (whole or joined_id):
            self.stats.torn += 1
            self.stats.incident(
                f"TOKEN USED TWICE: {self.where()}: {name}'s token, after the child "
                f"{'joined' if whole else 'reached a'}, also let {thief.node_id[:12]}… join"
            )
            return
        if whole:
            return
        again = child.pk("child", "join", tok)
        if second.acked and again.acked:
            self.stats.torn += 1
            self.stats.incident(f"TOKEN USED TWICE: {self.where()}: {name} and a second node")
        elif not second.acked and not again.acked and joined_id:
            self.count("a killed join left its token spent, no delegation")

    def revoke(self, name: str, child: Node) -> None:
        done = self.killed(self.a, "revoke", "child", "revoke", name)
        state, _ = self.state(name)
        self.count(f"revoke {'acknowledged' if done.acked else 'killed'}: {state}")
        pulled, _ = self.pulls(child)
        self.record(
            acked=done.acked,
            applied=state == "revoked" and pulled != "live",
            unchanged=state == "live",
            what=f"revocation of {name}",
            detail=lambda: f"a says {state!r}, the child's pull: {pulled}",
        )
        self.live[name] = state == "live"
        self.verify_parent()

    def verify_parent(self) -> None:
        done = self.a.pk("sigchain", "verify")
        if not done.acked:
            self.stats.torn += 1
            self.stats.incident(f"SIGCHAIN DOES NOT VERIFY: {self.where()}: {done.why()}")

    def final(self) -> None:
        for name, live in self.live.items():
            if (self.state(name)[0] == "live") != live:
                self.stats.lost += 1
                self.stats.incident(f"CHANGED at the end: {self.label}: {name} live was {live}")
        self.verify_parent()

    def teardown(self) -> None:
        self.a.stop_agent()

    def summary_notes(self) -> None:
        super().summary_notes()
        ends = "; ".join(f"{n} {what}" for what, n in sorted(self.ends.items()))
        self.stats.note(f"{self.label}: {ends}")
