"""The soak's command line: pick the scenarios, share out the time, run, finish, print the table.

`scripts/soak --minutes N [--seed S] [--only kills|network] [--runs N] [--scenario NAME]...`

Kill scenarios take turns, a few runs each (the one that has had the least time next), until
their share of the time is used (or each has done `--runs` runs); then the network scenario
runs rounds in the rest. Afterwards every scenario restarts what was killed and re-reads every
acknowledged write (`final`), every agent is stopped, and every node file is opened and checked
on the file itself. Exit 0 only when nothing
was lost, no file failed to open, no state was half-made, every node check was clean and the
network converged; 2 when only steps of the soak itself failed (listed).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench.soak import report
from bench.soak.core import Context, Entry, Scenario, Stats, discover
from bench.soak.nodes import HarnessError
from bench.soak.reader import Unopenable

DEFAULT_MINUTES = 25.0
KILL_SHARE = 0.75  # of the time, when both groups run
BATCH = 3  # runs of one scenario before the next takes its turn


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    import bench.soak

    about = (bench.soak.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    p = argparse.ArgumentParser(prog="scripts/soak", description=about)
    p.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_MINUTES,
        help=f"how long to run (default {DEFAULT_MINUTES:g}: over 1,000 kills on 2 cores)",
    )
    p.add_argument("--seed", type=int, help="random seed (printed; default: a new one)")
    p.add_argument("--only", choices=("kills", "network"), help="run one group of scenarios")
    p.add_argument(
        "--runs", type=int, help="runs per kill scenario (and network rounds) instead of a time"
    )
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        help="only scenarios whose name starts with this (repeatable)",
    )
    p.add_argument("--network-phase", type=float, help="seconds of faults per network round")
    p.add_argument(
        "--keep", action="store_true", help="keep the work folder (kept anyway on failure)"
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return p.parse_args(argv)


def select(entries: list[Entry], opts: argparse.Namespace) -> list[Entry]:
    out = []
    for e in entries:
        if opts.only and e.group != opts.only:
            continue
        if opts.scenario and not any(e.name.startswith(s) for s in opts.scenario):
            continue
        out.append(e)
    return out


class Runner:
    def __init__(self, opts: argparse.Namespace, seed: int, work: Path) -> None:
        self.opts = opts
        self.seed = seed
        self.work = work
        self.rows: list[tuple[str, Stats]] = []
        self.live: list[Scenario] = []  # set up, not torn down
        self.broken: list[Scenario] = []  # whose set-up failed: no final check
        self.started = time.monotonic()
        self.last_progress = self.started

    def make(self, entry: Entry) -> Scenario:
        folder = self.work / re.sub(r"[^a-z0-9]+", "-", entry.name)
        folder.mkdir(parents=True)
        stats = Stats()
        self.rows.append((entry.name, stats))
        ctx = Context(
            folder,
            self.seed,
            random.Random(f"{self.seed}:{entry.name}"),
            stats,
            phase_s=self.opts.network_phase,
        )
        return entry.make(ctx)

    def set_up(self, sc: Scenario) -> bool:
        try:
            sc.setup()
        except (HarnessError, OSError) as exc:
            sc.stats.errors += 1
            sc.stats.incident(f"{sc.label}: set-up failed: {exc}")
            self.live.append(sc)
            self.broken.append(sc)
            return False
        self.live.append(sc)
        return True

    def one(self, sc: Scenario, budget: float) -> None:
        sc.run_no += 1
        sc.stats.runs += 1
        started = time.monotonic()
        try:
            sc.step(budget)
            sc.periodic_check()
        except Unopenable as exc:
            sc.stats.unopenable += 1
            sc.stats.incident(f"UNOPENABLE: {sc.where()}: {exc}")
        except HarnessError as exc:
            sc.stats.errors += 1
            sc.stats.incident(f"{sc.where()}: {exc}")
            for node in sc.nodes():  # recover: the next run starts with its agents up
                try:
                    node.ensure_agent()
                except HarnessError as again:
                    sc.stats.incident(f"{sc.where()}: {again}")
        finally:
            sc.stats.seconds += time.monotonic() - started
        self.progress()

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_progress < 30:
            return
        self.last_progress = now
        t = report.total(self.rows)
        print(
            f"[{(now - self.started) / 60:5.1f} min] {t.runs} runs, {t.kills} kills, "
            f"{t.acked} acked writes, {t.lost} lost, {t.torn} half states, "
            f"{t.unopenable} unopenable, {t.check_failures} check failures, {t.errors} errors",
            flush=True,
        )

    def run_kills(self, scenarios: list[Scenario], until: float) -> None:
        """Scenarios take turns, a few runs at a time; the one that has had the least time goes
        next, so each gets about the same time (quick ones do more runs). With --runs, each
        does that many runs."""
        runs = self.opts.runs
        active = [sc for sc in scenarios if self.set_up(sc)]
        while active:
            sc = min(active, key=lambda x: x.stats.seconds)
            for _ in range(BATCH):
                if runs is None and time.monotonic() >= until:
                    return
                if runs is not None and sc.run_no >= runs:
                    active.remove(sc)
                    break
                self.one(sc, until - time.monotonic())

    def run_network(self, scenarios: list[Scenario], until: float) -> None:
        for sc in scenarios:
            if not self.set_up(sc):
                continue
            rounds = self.opts.runs or 1_000_000
            while sc.run_no < rounds:
                left = until - time.monotonic()
                if self.opts.runs is None and sc.run_no > 0 and left < 60:
                    break
                self.one(sc, left)

    def finish(self) -> None:
        """Restart what was killed, re-read every acknowledged write, stop every agent, then open
        and check every node file on the file itself."""
        for sc in self.live:
            if sc in self.broken:
                continue
            try:
                for node in sc.nodes():
                    node.ensure_agent()
                sc.final()
            except Unopenable as exc:
                sc.stats.unopenable += 1
                sc.stats.incident(f"UNOPENABLE: {sc.label}: final check: {exc}")
            except HarnessError as exc:
                sc.stats.errors += 1
                sc.stats.incident(f"{sc.label}: final check: {exc}")
            sc.summary_notes()
        for sc in list(self.live):
            self.tear_down(sc)
            for node in sc.nodes():
                if node.path.exists():
                    sc.check_node(node, " (at the end, on the file)", direct=True)

    def tear_down(self, sc: Scenario) -> None:
        if sc in self.live:
            self.live.remove(sc)
        try:
            sc.teardown()
        except (HarnessError, OSError) as exc:
            sc.stats.incident(f"{sc.label}: teardown: {exc}")


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    entries = discover()
    if opts.list:
        for e in entries:
            why = e.unavailable()
            print(
                f"{e.name:28} {e.group:8} {e.about}" + (f"  [skipped here: {why}]" if why else "")
            )
        return 0
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1_000_000)
    chosen = []
    for e in select(entries, opts):
        why = e.unavailable()
        if why:
            print(f"skipping {e.name}: {why}")
        else:
            chosen.append(e)
    if not chosen:
        print("no scenario to run", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="pk-soak-"))
    runner = Runner(opts, seed, work)
    total_s = opts.minutes * 60
    kills = [runner.make(e) for e in chosen if e.group != "network"]
    network = [runner.make(e) for e in chosen if e.group == "network"]
    share = KILL_SHARE if kills and network else 1.0
    length = f"{opts.runs} runs each" if opts.runs else f"{opts.minutes:g} min"
    print(
        f"soak: seed {seed}, {length}, "
        f"{len(kills)} kill scenarios, {len(network)} network; work in {work}",
        flush=True,
    )
    interrupted = False
    try:
        try:
            runner.run_kills(kills, runner.started + total_s * share)
            runner.run_network(network, runner.started + total_s)
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: finishing (Ctrl-C again to skip the final checks)", flush=True)
        runner.finish()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for sc in list(runner.live):
            runner.tear_down(sc)
    minutes = (time.monotonic() - runner.started) / 60
    t = report.total(runner.rows)
    print()
    print(report.table(runner.rows, f"Polykey soak, seed {seed}, {minutes:.1f} min"))
    incidents = [i for _, st in runner.rows for i in st.incidents]
    notes = [n for _, st in runner.rows for n in st.notes]
    if notes:
        print("\nnotes:")
        for n in notes:
            print(f"  {n}")
    if incidents:
        print("\nincidents:")
        for i in incidents:
            print(f"  {i}")
    print()
    print(report.summary(runner.rows, minutes, seed), flush=True)
    bad = any(st.bad for _, st in runner.rows)
    if bad or t.errors or interrupted or opts.keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if bad:
        return 1
    if t.errors or interrupted:
        return 2
    return 0
