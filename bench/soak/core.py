"""What every soak scenario is made of, and the registry that lists them.

A scenario owns its nodes and repeats one *run*: an action that may be killed (kill -9 at a random
moment), the acknowledgement record (the action counts as a write only when its command exited 0),
and a verification of what the node holds afterwards against the scenario's model. At the end the
soak restarts what was killed and calls `final()`, which re-reads every acknowledged write, then
it checks every node file of every scenario (`pk node info` opens it, `pk node check` is clean).

To add a scenario (merging, backups, discovery, child nodes...): add a module under
bench/soak/scenarios/ that defines a `Scenario` subclass and registers it with `@register` (or
`register_modes` for one class run in several kill modes). Modules there are found by name; no
other file changes. The shape of one, e.g. for backups:

    @register_modes("direct", "kill-agent")
    class Backups(LocalScenario):              # scenarios/local.py: one node, agent per mode
        name = "backup"
        about = "pk backup to a second node file, killed"

        def prepare(self) -> None: ...         # vaults to back up (before the agent starts)

        def step(self, budget_s: float) -> None:
            done = self.act("backup", "backup", "to", str(self.ctx.work / "copy.pk"))
            after = ...                        # read back what the action should have made
            self.record(acked=done.acked, applied=..., unchanged=..., what="backup",
                        detail=lambda: "...")

        def final(self) -> None: ...           # re-read every acknowledged write at the end

`record` does the counting (acknowledged, verified, lost, half states); the soak counts kills
from `act`, runs `pk node check` every `check_every` runs and on every node file at the end.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

from bench.soak.nodes import Node
from bench.soak.procs import Done

MAX_INCIDENTS = 25
WORRYING = {14: "node damaged", 15: "not a node", 70: "internal error"}


@dataclass
class Stats:
    """One row of the final table."""

    runs: int = 0
    kills: int = 0
    acked: int = 0  # acknowledged writes (commands that exited 0 and changed something)
    verified: int = 0  # acknowledged writes found afterwards
    lost: int = 0  # acknowledged writes not found afterwards
    torn: int = 0  # states that are neither before nor after an action (a half state)
    unopenable: int = 0  # node files that did not open
    check_failures: int = 0  # `pk node check` runs that did not exit 0
    diverged: int = 0  # network rounds whose nodes did not agree once the faults stopped
    errors: int = 0  # steps the soak needed that failed (not killed ones)
    seconds: float = 0.0  # time spent in this scenario's runs
    incidents: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def incident(self, text: str) -> None:
        if len(self.incidents) < MAX_INCIDENTS:
            self.incidents.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def bad(self) -> bool:
        return bool(
            self.lost or self.torn or self.unopenable or self.check_failures or self.diverged
        )


@dataclass
class Context:
    work: Path  # a private folder for this scenario's nodes
    seed: int
    rng: random.Random
    stats: Stats
    phase_s: float | None = None  # the length of a network round's fault phase (None: auto)


class Scenario:
    """Base class. Subclasses set `name`, `group` and `about`, and implement the four steps."""

    name: ClassVar[str] = ""
    group: ClassVar[str] = "kills"  # "kills" or "network": what `--only` selects
    about: ClassVar[str] = ""
    check_every: ClassVar[int] = 40  # runs between mid-soak `pk node check`s

    def __init__(self, ctx: Context, mode: str = "") -> None:
        self.ctx = ctx
        self.mode = mode
        self.label = f"{self.name}/{mode}" if mode else self.name
        self.rng = ctx.rng
        self.stats = ctx.stats
        self.run_no = 0
        # exit codes of commands that failed by themselves (not killed): count, first message
        self.exit_codes: dict[int, tuple[int, str]] = {}

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this scenario cannot run on this machine (it is then skipped, with the reason)."""
        return None

    def nodes(self) -> list[Node]:
        raise NotImplementedError

    def setup(self) -> None:
        raise NotImplementedError

    def step(self, budget_s: float) -> None:
        """One run: act (maybe killed), record the acknowledgement, verify."""
        raise NotImplementedError

    def final(self) -> None:
        """After the runs, with every wanted agent restarted: re-read every acknowledged write."""
        raise NotImplementedError

    def teardown(self) -> None:
        for node in self.nodes():
            node.stop_agent()

    # --- helpers for subclasses -----------------------------------------------------------------

    def where(self) -> str:
        return f"{self.label} run {self.run_no} (seed {self.ctx.seed})"

    def count_kill(self, done: Done) -> None:
        if done.killed or done.kill_sent:
            self.stats.kills += 1

    def note_exit(self, done: Done) -> None:
        """Keep count of how unacknowledged commands failed when they were not killed; a hang,
        an internal error or a damaged node is an error of its own."""
        if done.hung:
            self.stats.errors += 1
            self.stats.incident(f"hung (killed after the timeout): {self.where()}: {done.why()}")
        elif not done.killed and done.code not in (0, None):
            count, first = self.exit_codes.get(done.code, (0, done.why()))
            self.exit_codes[done.code] = (count + 1, first)
            if done.code in WORRYING or b"Traceback" in done.err:
                self.stats.errors += 1
                worry = WORRYING.get(done.code, "traceback")
                self.stats.incident(f"{worry}: {self.where()}: {done.why()}")

    def summary_notes(self) -> None:
        for code, (count, first) in sorted(self.exit_codes.items()):
            self.stats.note(f"{self.label}: {count} unkilled runs exited {code}, first: {first}")

    def record(
        self,
        *,
        acked: bool,
        applied: bool,
        unchanged: bool,
        what: str,
        detail: Callable[[], str],
    ) -> None:
        """Judge one action from what the node holds after it.

        acked and applied: verified. acked and not applied: lost. Neither the state before nor
        the state after (a half state): torn, and lost too if it was acknowledged. Not acked:
        before or after are both fine.
        """
        if acked:
            self.stats.acked += 1
        if applied:
            if acked:
                self.stats.verified += 1
            return
        if unchanged and not acked:
            return
        if not unchanged:
            self.stats.torn += 1
        if acked:
            self.stats.lost += 1
        kind = "LOST (acknowledged, not there)" if unchanged else "HALF STATE"
        self.stats.incident(f"{kind}: {self.where()}: {what}: {detail()}")

    def periodic_check(self) -> None:
        if self.run_no % self.check_every:
            return
        for node in self.nodes():
            self.check_node(node, "")

    def check_node(self, node: Node, when: str, *, direct: bool = False) -> None:
        """`pk node check` on one node; a failure is counted (unopenable, or damaged)."""
        opens, whole, why = node.check(direct=direct)
        where = f"{self.where()}{when}: {node.name}"
        if not opens:
            self.stats.unopenable += 1
            self.stats.incident(f"UNOPENABLE: {where}: {why}")
        elif not whole:
            self.stats.check_failures += 1
            self.stats.incident(f"node check failed: {where}: {why}")


class KillClock:
    """When to kill: learns how long each kind of command takes when it is left alone, then
    kills anywhere in it (half the time) or in its second half, where the write and the commit
    happen (the other half). Some runs are left alone, so writes also get acknowledged."""

    def __init__(self, rng: random.Random, guess: float = 0.4, spare: float = 0.1) -> None:
        self.rng = rng
        self.guess = guess
        self.spare = spare
        self.seconds: dict[str, float] = {}

    def delay(self, key: str) -> float | None:
        if self.rng.random() < self.spare:
            return None
        d = self.seconds.get(key, self.guess)
        if self.rng.random() < 0.5:
            return self.rng.uniform(0.0, d)
        return self.rng.uniform(0.4 * d, 1.05 * d)

    def learn(self, key: str, done: Done) -> None:
        if done.kill_sent or done.code != 0:
            return
        old = self.seconds.get(key, done.seconds)
        self.seconds[key] = 0.8 * old + 0.2 * done.seconds


@dataclass(frozen=True)
class Entry:
    name: str
    group: str
    make: Callable[[Context], Scenario]
    unavailable: Callable[[], str | None]
    about: str


REGISTRY: list[Entry] = []
S = TypeVar("S", bound=Scenario)


def register(cls: type[S]) -> type[S]:
    REGISTRY.append(Entry(cls.name, cls.group, cls, cls.unavailable, cls.about))
    return cls


def register_modes(*modes: str) -> Callable[[type[S]], type[S]]:
    """Register one scenario class once per kill mode; the row is named `NAME/MODE` and the
    instance gets `self.mode` (and `self.label`, the row's name)."""

    def wrap(cls: type[S]) -> type[S]:
        for mode in modes:

            def make(ctx: Context, mode: str = mode) -> Scenario:
                return cls(ctx, mode)

            label = f"{cls.name}/{mode}"
            REGISTRY.append(Entry(label, cls.group, make, cls.unavailable, cls.about))
        return cls

    return wrap


def discover() -> list[Entry]:
    """Import every module of bench.soak.scenarios (each registers its scenarios)."""
    from bench.soak import scenarios

    for info in sorted(pkgutil.iter_modules(scenarios.__path__), key=lambda i: i.name):
        importlib.import_module(f"{scenarios.__name__}.{info.name}")
    return REGISTRY
