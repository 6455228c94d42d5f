"""kill -9 during key renewal (`pk keys renew`): the node keeps exactly one key, the recovery
code that matches it still recovers it, its sigchain verifies, its vaults' history verifies.

Node `a` (agent on 127.0.0.1) owns the vault `src`, shared with node `b` (its own agent), which
cloned it. Each run a writes a secret, then renews its key, killed as the mode says:
`agent-cli` (the CLI killed; a's agent renews on), `kill-agent` (a's agent killed while it
renews, then restarted), `direct` (no agent: the CLI renewing the file killed) and `commit`
(no agent: the CLI crashed just before or just after one of the renewal's COMMITs,
bench/soak/crashat.py). Half the runs take the new code with `--recovery-code-out FILE`, half
from the JSON output. Afterwards:

- a's file opens with its password, and its NodeId is the one before or a new one: the run is
  "before" when the NodeId is unchanged and the old recovery code still recovers the file;
  "after" when it changed and the new code this run was given recovers it. A new key whose
  code never reached the user (the command died after the renewal committed, before it handed
  over the code) is neither: the file can no longer be recovered (a half state);
- `pk sigchain verify` of a's own chain is clean;
- a writes again (signed by whichever key it holds) and b pulls, unkilled: b must take every
  commit, the old key's and the new key's (its clone's history verifies), and hold a's head.

The next run starts from the key and code the node holds (a code lost is not judged again).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.soak import reader
from bench.soak.core import Context, KillClock, register_modes
from bench.soak.crashat import CommitClock
from bench.soak.nodes import Node
from bench.soak.procs import Done
from bench.soak.scenarios.sharing import SharingScenario

MODES = ("agent-cli", "kill-agent", "direct", "commit")


def recovers(node: Node, code: str) -> str:
    """Why ``code`` does not recover ``node``'s file (as `pk keys recover` would, without
    setting a new password); empty when it does."""
    from polykey.errors import PolykeyError
    from polykey.keys import recovery
    from polykey.keys.root import RootKey
    from polykey.node import Node as PkNode
    from polykey.store.nodefile import NodeFile

    try:
        secret = recovery.parse(code).seed()
        store = NodeFile.open_with_recovery(Path(node.path), secret, allow_weak=True)
        opened = PkNode._with_key(store)
    except PolykeyError as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        if opened.key.signing.public != RootKey.from_seed(secret[:32]).signing.public:
            return "it unlocks the file but derives another key than the one in use"
        return ""
    finally:
        opened.close()


@register_modes(*MODES)
class Renewals(SharingScenario):
    """`pk keys renew` on a node that shares a vault, killed; then a peer pulls from it."""

    name = "renew"
    about = "pk keys renew (one key, its code recovers, chain + shared history verify)"
    check_every = 5
    guess = 0.6

    def __init__(self, ctx: Context, mode: str = "agent-cli") -> None:
        super().__init__(ctx, mode)
        self.clock = KillClock(self.rng, guess=self.guess)
        self.crash = CommitClock(self.rng)
        self.key_id = ""
        self.code: str | None = ""
        self.pending_shown = 0  # codes taken with `pk keys pending-code` after a kill
        self.ends: dict[str, int] = {}
        self.cut_off = 0  # the run after which b could no longer pull (0: it still can)

    def setup(self) -> None:
        from polykey.ids import encode_node_id
        from polykey.node import FAST_INSECURE_KDF
        from polykey.node import Node as PkNode

        password = self.a.env["PK_PASSWORD"].encode()
        made, code = PkNode.bootstrap(self.a.path, password, kdf=FAST_INSECURE_KDF, allow_weak=True)
        with made:
            self.a.node_id = self.key_id = encode_node_id(made.node_id)
        self.code = str(code)
        self.a.bootstrap = lambda: None  # type: ignore[method-assign]  # made above, with its code
        super().setup()

    def prepare(self) -> None:
        self.b.must("vaults", "clone", self.a.node_id, "src")
        self.hist.add(*self.read(self.a, "src", "cli"))
        self.b_idx = self.judge_copy(None, self.b, "src", 0, "b's first clone")

    # --- one run ------------------------------------------------------------------------------

    def renew(self, args: list[str]) -> Done:
        if self.mode in ("direct", "commit"):
            self.a.stop_agent()
            if self.mode == "commit":
                done: Done = self.crash.run(self.a, "renew", *args)
                self.count_kill(done)
            else:
                delay = self.clock.delay("renew")
                done = self.a.pk(*args, direct=True, kill_after=delay)
                self.clock.learn("renew", done)
                self.count_kill(done)
            self.note_exit(done)
            self.a.start_agent()
            return done
        delay = self.clock.delay("renew")
        kill = self.a.kill_agent if self.mode == "kill-agent" else None
        done = self.a.pk(*args, kill_after=delay, kill=kill)
        self.clock.learn("renew", done)
        self.count_kill(done)
        self.note_exit(done)
        self.a.ensure_agent()
        if done.killed:
            self.a.settle()  # a's agent finishes what the killed CLI asked before we look
        return done

    def step(self, budget_s: float) -> None:
        self.a_writes()
        to_file = self.rng.random() < 0.5
        out = self.ctx.work / f"code-{self.run_no}"
        args = ["keys", "renew", "--format", "json"]
        args += ["--recovery-code-out", str(out)] if to_file else []
        done = self.renew(args)
        now = str(reader._call(self.a, [("keys.public", {})])[0]["node_id"])
        given = self.given(done, out if to_file else None)
        renewed = now != self.key_id
        if renewed:
            why = recovers(self.a, given) if given else "the new code never reached the user"
        elif self.code is None:
            why = ""  # lost on an earlier run (reported then)
        else:
            why = recovers(self.a, self.code) and f"the old code: {recovers(self.a, self.code)}"
        end = ("acknowledged" if done.acked else "killed" if done.kill_sent else "failed") + (
            f": {'renewed' if renewed else 'old key'}" + (f", {why}" if why else "")
        )
        self.ends[end] = self.ends.get(end, 0) + 1
        self.record(
            acked=done.acked,
            applied=renewed and not why,
            unchanged=not renewed and not why,
            what=f"renewal ({'--recovery-code-out' if to_file else 'code in the output'})",
            detail=lambda: f"NodeId {self.key_id[:12]}… -> {now[:12]}…: {why or 'no renewal'}",
        )
        if renewed:
            self.key_id, self.code = now, (given if not why else None)
            self.a.node_id = now
        self.verify_chain()
        self.a_writes()
        self.b_pulls()

    def given(self, done: Done, out: Path | None) -> str:
        """The new recovery code the command handed over; if it died first, the code the node
        kept for `pk keys pending-code` (what its user runs when `pk keys renewals` says so)."""
        code = ""
        if out is not None:
            code = out.read_text().strip() if out.exists() else ""
        else:
            try:
                code = str(json.loads(done.text()).get("recovery_code", ""))
            except ValueError:
                code = ""
        if code:
            return code
        waiting = self.a.pk("keys", "pending-code", "--format", "json")
        if not waiting.acked:
            return ""
        self.pending_shown += 1
        return str(json.loads(waiting.text()).get("recovery_code", ""))

    def verify_chain(self) -> None:
        done = self.a.pk("sigchain", "verify")
        if not done.acked:
            self.stats.torn += 1
            self.stats.incident(f"SIGCHAIN DOES NOT VERIFY: {self.where()}: {done.why()}")

    def b_pulls(self, how: str | None = None) -> None:
        """An unkilled pull by b takes every new commit of a (old key's and new key's alike).
        Once b cannot pull any more, that is reported once and b is left alone (the other
        checks go on)."""
        if self.cut_off:
            return
        done = self.b.pk("vaults", "pull", "src")
        if not done.acked:
            self.cut_off = self.run_no
            self.stats.torn += 1
            self.stats.incident(f"PULL AFTER A RENEWAL FAILED: {self.where()}: {done.why()}")
            return
        self.b_idx = self.judge_copy(done, self.b, "src", self.b_idx, "b's pull after", how)

    def final(self) -> None:
        now = str(reader._call(self.a, [("keys.public", {})])[0]["node_id"])
        if now != self.key_id:
            self.stats.lost += 1
            self.stats.incident(f"KEY CHANGED at the end: {self.label}: {self.key_id} -> {now}")
        if self.code is not None and recovers(self.a, self.code):
            self.stats.lost += 1
            self.stats.incident(f"CODE NO LONGER RECOVERS at the end: {self.label}")
        self.verify_chain()
        for how in ("cli", "direct"):
            if not self.cut_off:
                self.judge_copy(None, self.b, "src", self.b_idx, "b's copy at the end", how)

    def summary_notes(self) -> None:
        super().summary_notes()
        ends = "; ".join(f"{n} {what}" for what, n in sorted(self.ends.items()))
        self.stats.note(f"{self.label}: renewals ended: {ends}")
        if self.pending_shown:
            self.stats.note(f"{self.label}: {self.pending_shown} code(s) from pk keys pending-code")
        if self.cut_off:
            self.stats.note(f"{self.label}: b could not pull from a after run {self.cut_off}")
