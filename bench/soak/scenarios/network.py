"""Three nodes on three hosts (network namespaces on a bridge) share a vault under faults.

Node a owns vault `net` and shares it with b and c, which clone it; b's and c's agents pull it
every 5 s (`--sync-interval`) and the soak also runs `pk vaults pull` on them at random. Only a
writes: merging is not built yet, so concurrent writers would diverge by design (a merge scenario
joins when merging lands). Each round: a writes unique values to a few keys all along, while
faults are put on at random: a host unplugged at the switch, a silent black hole (its switch
port stops forwarding, its link stays up), a link slowed to 16 kbit/s (tc tbf), an agent killed
-9 (restarted a few seconds later), a host's clock moved by minutes to days (libfaketime: its
agent restarts under the new clock and its commands run under it too). Then the faults stop
(links mended, clocks true, agents up), b and c pull, and the round checks: all three hold the
same commit of `net` with the same secrets, every write a acknowledged is there (its value, or a
later write's to the same key), and `pk node check` is clean on all three.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, ClassVar

from bench.soak import netns, procs
from bench.soak.core import Context, Scenario, register
from bench.soak.nodes import HarnessError, Node
from bench.soak.procs import Done
from bench.soak.scenarios.local import diff, export, token

PORT = 14191
SKEWS = ("-3d", "-2h", "-7m", "+6m", "+3h", "+2d")


@register
class Network(Scenario):
    name = "network"
    group = "network"
    about = "3 hosts in namespaces: links cut, agents killed, clocks skewed; owner writes only"
    check_every: ClassVar[int] = 1_000_000  # every round checks its nodes itself

    @classmethod
    def unavailable(cls) -> str | None:
        return netns.unavailable()

    def __init__(self, ctx: Context, mode: str = "") -> None:
        super().__init__(ctx, mode)
        self.net = netns.Switch()
        self.peers = [
            Node(
                ctx.work,
                name,
                ns=self.net.hosts[i],
                host=self.net.address(i + 1),
                port=PORT,
                sync_interval=None if name == "a" else 5,
            )
            for i, name in enumerate("abc")
        ]
        self.a, self.b, self.c = self.peers
        # every write a attempted, in order: (key, value, acknowledged)
        self.attempts: list[tuple[str, str, bool]] = []
        self.counted = 0  # attempts already counted in the table
        self.lost_seen: set[int] = set()
        self.faults: dict[str, int] = {}
        self.pulls: dict[str, int] = {}  # how the pulls during faults ended
        self.lock = threading.Lock()

    def nodes(self) -> list[Node]:
        return self.peers

    def setup(self) -> None:
        self.net.setup()
        skew = "libfaketime" if procs.faketime_lib() else "none: libfaketime is not installed"
        holes = "bridge port disabled" if self.net.has_bridge else "no black holes (no `bridge`)"
        slow = "tc tbf 16 kbit/s" if self.net.has_tc else "no slow links (no tc tbf)"
        self.stats.note(
            f"network: clock skew by {skew}; link faults: switch port down, {holes}, {slow}"
        )
        for n in self.peers:
            n.bootstrap()
            n.start_agent()
        for n in self.peers:
            for other in self.peers:
                if other is not n:
                    n.must("nodes", "add", other.node_id, f"{other.host}:{other.port}")
        self.a.must("vaults", "create", "net")
        for i in range(3):
            self.write(f"net:k{i}", must=True)
        for n in (self.b, self.c):
            self.a.must("vaults", "share", "net", n.node_id)
            n.must("vaults", "clone", self.a.node_id, "net")

    def write(self, key: str, *, must: bool = False, rng: random.Random | None = None) -> Done:
        value = token(rng or self.rng, self.run_no)
        done = self.a.pk("secrets", "write", key, stdin=value.encode(), timeout=60)
        if must and not done.acked:
            raise HarnessError(f"a: {done.why()}")
        with self.lock:
            self.attempts.append((key, value, done.acked))
            self.note_exit(done)
        return done

    # --- one round ------------------------------------------------------------------------------

    def step(self, budget_s: float) -> None:
        phase = self.ctx.phase_s or max(8.0, min(60.0, budget_s - 40.0))
        stop = threading.Event()
        workers = [
            threading.Thread(target=self.writer, args=(stop,)),
            threading.Thread(target=self.puller, args=(stop,)),
        ]
        for t in workers:
            t.start()
        try:
            self.inject(phase)
        finally:
            stop.set()
            self.heal()
            for t in workers:
                t.join()
        self.heal()  # an agent the puller's timeout raced with, restarted
        self.converge_and_check(f"round {self.run_no}")

    def writer(self, stop: threading.Event) -> None:
        rng = random.Random(self.rng.random())
        while not stop.is_set():
            self.write(f"net:k{rng.randrange(6)}", rng=rng)
            time.sleep(rng.uniform(0.05, 0.6))

    def puller(self, stop: threading.Event) -> None:
        rng = random.Random(self.rng.random())
        while not stop.is_set():
            n = rng.choice((self.b, self.c))
            kill_after = rng.uniform(0.0, 2.0) if rng.random() < 0.3 else 30.0
            done = n.pk("vaults", "pull", "net", kill_after=kill_after, timeout=60)
            if done.kill_sent:
                self.stats.kills += 1
            ended = "killed" if done.kill_sent else "ok" if done.acked else f"exit {done.code}"
            with self.lock:
                self.pulls[ended] = self.pulls.get(ended, 0) + 1
                self.note_exit(done)
            time.sleep(rng.uniform(0.2, 2.0))

    def inject(self, seconds: float) -> None:
        """Faults at random until ``seconds`` have passed; each is undone a few seconds later."""
        rng = self.rng
        end = time.monotonic() + seconds
        undo: list[tuple[float, Any]] = []
        kinds = ["cut", "kill", "kill"]
        if self.net.has_bridge:
            kinds += ["blackhole"]
        if self.net.has_tc:
            kinds += ["slow"]
        if procs.faketime_lib():
            kinds += ["skew"]
        while time.monotonic() < end:
            now = time.monotonic()
            for due, fn in [u for u in undo if u[0] <= now]:
                undo.remove((due, fn))
                fn()
            kind = rng.choice(kinds)
            i = rng.randrange(3)
            node, hostno = self.peers[i], i + 1
            later = now + rng.uniform(1.0, 10.0)
            self.faults[kind] = self.faults.get(kind, 0) + 1
            if kind == "cut":
                self.net.cut(hostno)
                undo.append((later, lambda h=hostno: self.net.mend(h)))
            elif kind == "blackhole":
                self.net.blackhole(hostno)
                undo.append((later, lambda h=hostno: self.net.unhole(h)))
            elif kind == "slow":
                self.net.slow(hostno)
                undo.append((later, lambda h=hostno: self.net.fast(h)))
            elif kind == "kill":
                if node.kill_agent():
                    self.stats.kills += 1
                undo.append((now + rng.uniform(0.0, 5.0), lambda n=node: self.restart(n)))
            else:  # skew: the host's clock jumps; its agent restarts under the new clock
                node.skew = rng.choice(SKEWS)
                if node.kill_agent():
                    self.stats.kills += 1
                self.restart(node)
            time.sleep(rng.uniform(0.5, 3.0))
        for _, fn in undo:
            fn()

    def restart(self, node: Node) -> None:
        try:
            node.ensure_agent()
        except HarnessError as exc:
            self.stats.errors += 1
            self.stats.incident(f"{self.where()}: {exc}")

    def heal(self) -> None:
        """The faults stop: links mended, clocks true (skewed agents restart), agents up."""
        self.net.heal()
        for n in self.peers:
            if n.skew is not None:
                n.skew = None
                n.stop_agent()
                n.agent_wanted = True
            n.ensure_agent()

    def converge_and_check(self, what: str) -> None:
        deadline = time.monotonic() + 150
        for n in (self.b, self.c):
            while True:
                done = n.pk("vaults", "pull", "net", timeout=130)
                if done.acked:
                    break
                if time.monotonic() > deadline:
                    self.stats.diverged += 1
                    self.stats.incident(
                        f"{what}: {n.name} could not pull after healing: {done.why()}"
                    )
                    break
                time.sleep(2)
        heads = {n.name: export(n, "net") for n in self.peers}
        commit, secrets, _ = heads["a"]
        for n in (self.b, self.c):
            other = heads[n.name]
            if other[0] != commit or {k: v for k, v in other[1].items()} != secrets:
                self.stats.diverged += 1
                self.stats.incident(
                    f"{what} (seed {self.ctx.seed}): {n.name} at {other[0][:12]}, a at "
                    f"{commit[:12]}: {diff(secrets, other[1])}"
                )
        self.judge_writes(secrets, what)
        for n in self.peers:
            self.check_node(n, f" ({what})")

    def judge_writes(self, now: dict[str, str], what: str) -> None:
        """Every acknowledged write of a is there: its value, or one written later to its key."""
        with self.lock:
            attempts = list(self.attempts)
        later: dict[str, set[str]] = {}
        verdicts: list[bool] = []
        for key, value, _ in reversed(attempts):
            later.setdefault(key, set()).add(value)
            verdicts.append(now.get(key) in later[key])
        verdicts.reverse()
        for i, (key, value, acked) in enumerate(attempts):
            if not acked:
                continue
            fresh = i >= self.counted
            if fresh:
                self.stats.acked += 1
            if verdicts[i]:
                self.stats.verified += fresh
            elif i not in self.lost_seen:
                self.lost_seen.add(i)
                self.stats.lost += 1
                self.stats.incident(
                    f"LOST: {what} (seed {self.ctx.seed}): {key}={value[:16]}... acknowledged, "
                    f"now {now.get(key, '-')!r:.24}"
                )
        self.counted = len(attempts)

    def final(self) -> None:
        self.heal()
        self.converge_and_check("after the soak")
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        self.stats.note(f"network: faults injected: {faults or 'none'}")
        pulls = ", ".join(f"{k} {v}" for k, v in sorted(self.pulls.items()))
        self.stats.note(f"network: `pk vaults pull` during faults: {pulls or 'none'}")
        log = self.a.json("vaults", "log", "net")["commits"]
        now = time.time()
        skewed = [c["time"] - now for c in log if abs(c["time"] - now) > 300]
        if skewed:
            hours = f"{min(skewed) / 3600:+.1f} h to {max(skewed) / 3600:+.1f} h"
            self.stats.note(
                f"network: {len(skewed)} of a's {len(log)} commits carry a skewed time ({hours})"
            )

    def teardown(self) -> None:
        try:
            for n in self.peers:
                n.skew = None
                n.stop_agent()
        finally:
            self.net.teardown()
            for n in self.peers:  # the files stay, checked outside the namespaces
                n.ns = None
