"""kill -9 across publishing (issue #16): the record a Pkarr relay holds for an agent is never
empty, never older than one it held before, and names the agent's current address once a
restart has settled; the relay's 429s are honoured.

One node, its agent on 127.0.0.1 (`--port`, `--public-address 127.0.0.1:PORT`, `--no-lan`),
publishing to the Pkarr relay stand-in of tests/network (tests/network/standins/pkarr_relay.py,
run here in the soak's own process on 127.0.0.1: the relay HTTP API with a real relay's checks,
409 for an older record). `pk nodes relays URL` names it; nothing else is asked. Each run moves
the node to a new public address half the time and restarts its agent, which is killed:

- while it publishes: the stand-in, on receiving the PUT, SIGKILLs the agent before storing
  the record (the PUT never landed) or after storing it (the answer never arrives);
- at a random moment of its first second (mostly while it publishes);

then started again, unkilled, and given SETTLE_S to publish. The modes add one fault each:
`kill-agent` none; `limited` the stand-in answers 429 (Retry-After RETRY_AFTER_S) to every PUT
during the restart, then takes PUTs again; `clock-back` the restarted agent's wall clock is an
hour behind (libfaketime) every other run, as after a clock corrected backwards.

The judge looks at the stand-in's record after every kill and once settled: it is there once
one was stored, names an address, its timestamp (the Pkarr sequence) never goes back, and once
settled it names the current address (and only it). One agent never PUTs again before a 429's
Retry-After has passed; a restarted agent that does is counted in the notes (it cannot know).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from bench.soak import procs
from bench.soak.core import Context, Scenario, register_modes
from bench.soak.nodes import HarnessError, Node
from bench.soak.scenarios.relaying import AgentHost
from bench.soak.scenarios.sharing import free_port

MODES = ("kill-agent", "limited", "clock-back")
SETTLE_S = 10.0  # the agent publishes at once when it starts
RETRY_AFTER_S = 2
SKEW = "-1h"


@dataclass(frozen=True)
class Held:
    """One look at the record the stand-in holds: its sequence and what it names."""

    timestamp: int
    addresses: tuple[str, ...]
    relays: tuple[str, ...] = ()


@dataclass(frozen=True)
class Put:
    """One PUT the stand-in answered: when (monotonic), from which agent life, with what."""

    at: float
    life: int
    status: int
    retry_after: float = 0.0


def judge_record(before: Held | None, now: Held | None, want: str | None) -> list[str]:
    """What is wrong with the record ``now`` after ``before`` (empty: nothing); ``want``, once
    a restart has settled, is the one address it must name."""
    if now is None:
        if before is not None:
            return ["the relay holds no record any more"]
        return ["the relay holds no record"] if want is not None else []
    problems = []
    if not now.addresses and not now.relays:
        problems.append("the record names nothing")
    if before is not None and now.timestamp < before.timestamp:
        problems.append(f"its sequence went back from {before.timestamp} to {now.timestamp}")
    if want is not None and now.addresses != (want,):
        problems.append(f"it names {', '.join(now.addresses) or 'no address'}, not {want}")
    return problems


def judge_puts(puts: list[Put]) -> tuple[list[str], int]:
    """(PUTs one agent made before a 429's Retry-After had passed, how many PUTs a restarted
    agent made inside the Retry-After an earlier life was given)."""
    problems: list[str] = []
    across = 0
    limited: dict[int, float] = {}  # life -> monotonic time its latest 429 ends
    for put in puts:
        ends = limited.get(put.life)
        if ends is not None and put.at < ends - 0.05:
            problems.append(f"a PUT {ends - put.at:.1f} s before the 429's Retry-After ended")
        elif any(life < put.life and put.at < t for life, t in limited.items()):
            across += 1
        if put.status == 429:
            limited[put.life] = put.at + put.retry_after
    return problems, across


def make_standin() -> Any:
    """The stand-in of tests/network, its PUTs logged and a hook called on each."""
    from tests.network.standins.pkarr_relay import PkarrRelayStandIn

    class StandIn(PkarrRelayStandIn):
        life = 0
        log: list[Put]
        on_put: tuple[str, Callable[[], None]] | None = None  # (before/after, the kill)

        def put(self, name: str, body: bytes) -> tuple[int, dict[str, str]]:
            hook, self.on_put = self.on_put, None
            headers: dict[str, str] = {}
            if hook is not None and hook[0] == "before":
                hook[1]()
                status = 503  # the PUT never landed
            else:
                status, headers = super().put(name, body)
                if hook is not None:
                    hook[1]()  # stored; the answer never arrives
            after = float(headers.get("Retry-After", 0))
            self.log.append(Put(time.monotonic(), self.life, status, after))
            return status, headers

    standin = StandIn(retry_after=str(RETRY_AFTER_S))
    standin.log = []
    quiet: Any = lambda request, client_address: None  # noqa: E731
    standin.server.handle_error = quiet  # type: ignore[method-assign]  # a killed client's socket
    return standin.start()


@register_modes(*MODES)
class Publishing(Scenario):
    """An agent publishing its Pkarr record, killed mid-publish and restarted elsewhere."""

    name = "pkarr"
    about = "agent publishing to a local Pkarr relay killed (record never empty/older, current)"
    check_every: ClassVar[int] = 10

    @classmethod
    def unavailable(cls) -> str | None:
        return None

    def __init__(self, ctx: Context, mode: str = "kill-agent") -> None:
        super().__init__(ctx, mode)
        self.node = AgentHost(ctx.work, "a", port=free_port())
        self.standin: Any = None
        self.address = ""
        self.last: Held | None = None
        self.ends: dict[str, int] = {}
        self.slowest = 0.0
        self.settle_s = SETTLE_S
        self.rude = 0  # PUTs made inside a Retry-After, reported so far
        self.outcomes: dict[str, int] = {}  # what the agent said of its last publish, settled

    def nodes(self) -> list[Node]:
        return [self.node]

    def setup(self) -> None:
        if self.mode == "clock-back" and procs.faketime_lib() is None:
            raise HarnessError("clock-back needs libfaketime (Debian's package faketime)")
        self.standin = make_standin()
        self.node.bootstrap()
        self.node.must("nodes", "relays", self.standin.url)
        self.move()
        self.start()
        self.settle("set-up")

    def move(self) -> None:
        self.address = f"127.0.0.1:{self.rng.randrange(20000, 60000)}"
        self.node.extra = ("--public-address", self.address, "--no-lan")

    def start(self) -> None:
        self.standin.life += 1
        self.node.start_agent()

    # --- one run ------------------------------------------------------------------------------

    def kill(self) -> bool:
        return self.node.kill_agent()

    def step(self, budget_s: float) -> None:
        if self.rng.random() < 0.5:
            self.move()
        self.node.kill_agent()
        self.node.skew = SKEW if self.mode == "clock-back" and self.run_no % 2 else None
        how = self.rng.choice(("before", "after", "timer"))
        if how == "timer":
            self.start()
            time.sleep(self.rng.uniform(0.0, 1.0))
            killed = self.kill()
        else:
            hit: list[bool] = []

            self.standin.on_put = (how, lambda: hit.append(self.kill()))
            self.start()
            deadline = time.monotonic() + SETTLE_S
            while not hit and time.monotonic() < deadline:
                time.sleep(0.02)
            self.standin.on_put = None
            killed = bool(hit and hit[0])
        self.stats.kills += killed
        self.count(f"killed {how if killed else 'too late (not running)'}")
        self.look("after the kill")
        if self.rng.random() < 0.3:
            self.move()  # restarted elsewhere
        if self.mode == "limited":
            self.standin.limit = len([p for p in self.standin.puts if p[1] == 204])
        self.start()
        if self.mode == "limited":
            time.sleep(self.rng.uniform(0.2, 1.5))  # a 429 or two, then the relay takes PUTs
            self.standin.limit = None
        self.settle("after the restart")

    def count(self, what: str) -> None:
        self.ends[what] = self.ends.get(what, 0) + 1

    # --- the judge ----------------------------------------------------------------------------

    def held(self) -> Held | None:
        from polykey.network import pkarr

        records = dict(self.standin.records)
        if not records:
            return None
        public, stored = next(iter(records.items()))
        try:
            record = pkarr.from_relay_payload(public, stored.payload)
        except pkarr.BadRecord as exc:  # the stand-in took it: its checks differ from ours
            return Held(stored.timestamp, (), (f"bad: {exc.detail}",))
        return Held(record.timestamp, tuple(map(str, record.addresses)), record.relays)

    def look(self, when: str, want: str | None = None) -> list[str]:
        now = self.held()
        problems = judge_record(self.last, now, want)
        if now is not None and (self.last is None or now.timestamp >= self.last.timestamp):
            self.last = now
        return problems

    def settle(self, when: str) -> None:
        started = time.monotonic()
        wait = self.settle_s + (RETRY_AFTER_S if self.mode == "limited" else 0)
        while self.look(when, self.address) and time.monotonic() - started < wait:
            time.sleep(0.2)
        self.slowest = max(self.slowest, time.monotonic() - started)
        problems = self.look(when, self.address)
        said = self.published()
        self.outcomes[said] = self.outcomes.get(said, 0) + 1
        if problems:
            self.stats.diverged += 1
            self.stats.incident(
                f"RECORD NOT CURRENT {wait:.0f} s {when}: {self.where()}: "
                + "; ".join(problems)
                + f" (the agent says: {said}"
                + (f", its clock {self.node.skew}" if self.node.skew else "")
                + ")"
            )
        rude, _ = judge_puts(self.standin.log)
        if len(rude) > self.rude:
            self.stats.torn += len(rude) - self.rude
            self.stats.incident(f"429 NOT HONOURED: {self.where()}: {rude[-1]}")
            self.rude = len(rude)

    def published(self) -> str:
        doc = self.node.status().get("discovery", {})
        results = [str(o.get("result")) for o in doc.get("published") or []]
        return ", ".join(results) or "nothing published"

    def final(self) -> None:
        self.node.skew = None
        self.node.kill_agent()
        self.start()
        self.settle("at the end")

    def teardown(self) -> None:
        self.node.stop_agent()
        if self.standin is not None:
            self.standin.stop()
            self.standin = None

    def summary_notes(self) -> None:
        super().summary_notes()
        ends = "; ".join(f"{n} {what}" for what, n in sorted(self.ends.items()))
        if ends:
            self.stats.note(f"{self.label}: {ends}")
        said = "; ".join(f"{n} {what}" for what, n in sorted(self.outcomes.items()))
        self.stats.note(f"{self.label}: settled in {self.slowest:.1f} s at most; said: {said}")
        if self.standin is not None:
            _, across = judge_puts(self.standin.log)
            if across:
                self.stats.note(
                    f"{self.label}: {across} PUT(s) by a restarted agent inside a "
                    "429's Retry-After given to the agent before it"
                )
