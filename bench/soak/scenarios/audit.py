"""kill -9 across requests the audit log records: the hash chain is never broken, every write
that committed is recorded and nothing else is.

One node and its agent (the agent alone records: docs/spec/audit.md). Each run writes one
secret (or reads one, a third of the time) through the agent, and is killed as the mode says:
`agent-cli` (`pk secrets write` / `pk secrets cat`, the CLI killed; the agent finishes what it
was asked) or `kill-agent` (a raw `secrets.write_many` / `secrets.cat` request on the agent's
socket, which never falls back to the file, and the agent killed while it serves). Afterwards,
on the node file (every eighth run through `pk audit verify` / `pk audit log` too):

- the log verifies (`audit.verify` names no problem) and the records read before are still
  there, byte for byte (their digests): a kill never breaks or rewrites the chain;
- the run's records are all about its own vault and path (nothing else is recorded);
- a write that committed (the vault moved to a commit holding the value) has its `begun`
  record, and, when it was acknowledged, its `ok` record naming that commit; an `ok` record
  names only the commit the write made (no record of a write that did not happen). A write
  that committed with only its `begun` record (the agent killed between the write's commit
  and its outcome's: allowed by the spec, "a change is never started unrecorded") is counted
  in the notes;
- an acknowledged read has its `ok` record naming the head it was given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.soak import procs, reader
from bench.soak.core import Context, register_modes
from bench.soak.nodes import HarnessError
from bench.soak.procs import Done
from bench.soak.scenarios.local import LocalScenario, diff, token

MODES = ("agent-cli", "kill-agent")
RAW_CLIENT = [sys.executable, "-m", "bench.soak.rawclient"]
REPO = str(Path(__file__).resolve().parents[3])

Records = list[dict[str, Any]]


@register_modes(*MODES)
class AuditedWrites(LocalScenario):
    """Writes and reads through the agent, recorded; the CLI or the agent killed."""

    name = "audit"
    about = "writes/reads the audit log records (chain whole, each commit recorded, no other)"
    VAULT = "au"
    KEYS = ("k0", "k1", "k2", "d/k3")
    READS = 0.3

    def __init__(self, ctx: Context, mode: str = "agent-cli") -> None:
        super().__init__(ctx, mode)
        self.records: Records = []  # the log as last read: every record, oldest first
        self.head = ""
        self.secrets_now: dict[str, str] = {}
        self.ends: dict[str, int] = {}

    def prepare(self) -> None:
        self.node.must("vaults", "create", self.VAULT)

    def setup(self) -> None:
        super().setup()
        self.head, self.secrets_now, self.records = self.look("file")

    # --- reading the node ---------------------------------------------------------------------

    def look(self, how: str) -> tuple[str, dict[str, str], Records]:
        """(the vault's head, its secrets, every audit record), after checking the log
        verifies; how = "file" (in this process) or "cli"/"direct" (`pk audit ...`)."""
        if how == "file":
            calls: list[tuple[str, dict[str, Any]]] = [
                ("audit.verify", {}),
                ("vaults.export", {"vault": self.VAULT}),
            ]
            verdict, exp = reader._call(self.node, calls)
            problems = [str(p["problem"]) for p in verdict["problems"]]
            try:
                records = list(reader._call(self.node, [("audit.log", {})])[0]["records"])
            except reader.Unopenable:
                raise
            except HarnessError as exc:  # a log that does not verify may not read either
                problems.append(f"`pk audit log` fails: {exc}")
                records = list(self.records)
            head = str(exp["head"])
            secrets = {p: d.decode(errors="replace") for p, d in exp["files"]}
        else:
            direct = how == "direct"
            done = self.node.pk("audit", "verify", "--format", "json", direct=direct)
            problems = [] if done.acked else [done.why()]
            every = str(len(self.records) + 10_000)  # `pk audit log` shows the last 200 else
            records = list(
                self.node.json("audit", "log", "--limit", every, direct=direct)["records"]
            )
            # on the file: a read through the agent would be recorded, and is not this run's
            doc = json.loads(self.node.must("export", "json", self.VAULT, direct=True))
            head = str(doc["commit"])
            secrets = {str(s["path"]): str(s.get("text", s)) for s in doc["secrets"]}
        if problems:
            self.stats.torn += 1
            self.stats.incident(f"AUDIT LOG BROKEN ({how}): {self.where()}: {problems[:3]}")
        return head, secrets, records

    def macs(self) -> dict[str, str]:
        """path -> how records name it (the keyed hash), from the records of this run's keys."""
        out: dict[str, str] = {}
        calls = [("audit.log", {"path": k, "limit": 1}) for k in self.KEYS]
        for key, r in zip(self.KEYS, reader._call(self.node, calls), strict=True):
            if r["records"]:
                out[str(r["records"][0]["path"])] = key
        return out

    # --- one run --------------------------------------------------------------------------------

    def step(self, budget_s: float) -> None:
        key = self.rng.choice(self.KEYS)
        read = self.rng.random() < self.READS and key in self.secrets_now
        value = token(self.rng, self.run_no)
        done = self.request(key, value, read)
        new, head, secrets = self.fresh("cli" if self.run_no % 8 == 0 else "file")
        if read:
            self.judge_read(done, key, new, head)
        else:
            self.judge_write(done, key, value, new, head, secrets)
        self.head, self.secrets_now = head, secrets
        self.records += new

    def fresh(self, how: str = "file") -> tuple[Records, str, dict[str, str]]:
        """(the records added since the last look, the vault's head, its secrets), after
        checking the log verifies and the records read before are unchanged."""
        head, secrets, records = self.look(how)
        self.judge_chain(records)
        return [r for r in records if r["seq"] > len(self.records)], head, secrets

    def request(self, key: str, value: str, read: bool) -> Done:
        kind = "read" if read else "write"
        if self.mode == "agent-cli":
            if read:
                return self.act(kind, "secrets", "cat", f"{self.VAULT}:{key}")
            return self.act(kind, "secrets", "write", f"{self.VAULT}:{key}", stdin=value.encode())
        if read:
            params: dict[str, Any] = {"items": [[self.VAULT, key]]}
            argv = [*RAW_CLIENT, "secrets.cat", json.dumps(params)]
        else:
            params = {"vault": self.VAULT, "items": [[key, value]]}
            argv = [*RAW_CLIENT, "secrets.write_many", json.dumps(params)]
        delay = self.clock.delay(kind)
        done = procs.run(
            argv, self.node.env_for(), kill_after=delay, kill=self.node.kill_agent, cwd=REPO
        )
        self.clock.learn(kind, done)
        self.count_kill(done)
        if done.code != 3:  # 3: the agent was gone (killed) before it answered
            self.note_exit(done)
        self.node.ensure_agent()
        return done

    def judge_chain(self, records: Records) -> None:
        """The records read before are all still there, unchanged, in their places."""
        old = self.records
        kept = records[: len(old)]
        if kept != old:
            first = next(
                (a["seq"] for a, b in zip(old, kept, strict=False) if a != b), len(kept) + 1
            )
            self.stats.torn += 1
            self.stats.incident(
                f"AUDIT RECORDS CHANGED: {self.where()}: {len(old)} records before, "
                f"{len(records)} now; record {first} differs or is gone"
            )

    def mine(self, new: Records, key: str, action: str) -> Records:
        """The new records about this run's request; any other new record is an incident."""
        macs = self.macs()
        out: Records = []
        other: Records = []
        for r in new:
            ok = r["vault"] == self.VAULT and macs.get(r["path"]) == key and r["who"] == "local"
            (out if ok and r["action"] == action else other).append(r)
        for r in other:
            self.stats.torn += 1
            self.stats.incident(
                f"AUDIT RECORD OF NOTHING ASKED: {self.where()}: {action} of {key} made "
                f"record {r['seq']}: {r['action']} {r['outcome']} vault {r['vault']!r}"
            )
        return out

    def judge_write(
        self, done: Done, key: str, value: str, new: Records, head: str, secrets: dict[str, str]
    ) -> None:
        pre, pre_head = self.secrets_now, self.head
        self.record(
            acked=done.acked,
            applied=secrets == {**pre, key: value},
            unchanged=secrets == pre,
            what=f"write {key}",
            detail=lambda: diff(pre, secrets),
        )
        committed = head != pre_head and secrets.get(key) == value
        action = "secrets.write_many" if self.mode == "kill-agent" else "secrets.write"
        mine = self.mine(new, key, action)
        outcomes = [r["outcome"] for r in mine]
        oks = [r for r in mine if r["outcome"] == "ok"]
        why = ""
        if committed and "begun" not in outcomes:
            why = f"commit {head[:12]} has no begun record (records: {outcomes})"
        elif done.acked and not any(r["commit"] == head for r in oks):
            why = f"acknowledged commit {head[:12]} has no ok record naming it ({outcomes})"
        elif any(r["commit"] != head or not committed for r in oks):
            named = [r["commit"][:12] for r in oks]
            why = f"an ok record names {named}, the write made {head[:12] if committed else '-'}"
        elif len(oks) > 1 or outcomes.count("begun") > 1:
            why = f"more than one record of one write: {outcomes}"
        end = (
            ("acknowledged" if done.acked else "committed" if committed else "not committed")
            + ": "
            + ",".join(outcomes or ["no record"])
        )
        self.ends[end] = self.ends.get(end, 0) + 1
        if why:
            if done.acked:
                self.stats.lost += 1
            else:
                self.stats.torn += 1
            self.stats.incident(f"AUDIT: {self.where()}: write {key}: {why}")

    def judge_read(self, done: Done, key: str, new: Records, head: str) -> None:
        mine = self.mine(new, key, "secrets.cat")
        oks = [r for r in mine if r["outcome"] == "ok"]
        end = ("acknowledged" if done.acked else "unacknowledged") + f" read: {len(oks)} records"
        self.ends[end] = self.ends.get(end, 0) + 1
        why = ""
        if done.acked and not oks:
            why = "an acknowledged read has no record"
        elif len(mine) != len(oks) or len(oks) > 1:
            why = f"records {[r['outcome'] for r in mine]} for one read"
        elif oks and oks[0]["commit"] != head:
            why = f"the read's record names {oks[0]['commit'][:12]}, the head is {head[:12]}"
        if done.acked:
            self.stats.acked += 1
            self.stats.verified += 0 if why else 1
        if why:
            self.stats.lost += 1 if done.acked else 0
            self.stats.torn += 0 if done.acked else 1
            self.stats.incident(f"AUDIT: {self.where()}: read of {key}: {why}")

    def final(self) -> None:
        """The last state, through the agent and on the file; the log verifies both ways."""
        for how in ("cli", "direct"):
            head, secrets, records = self.look(how)
            if (head, secrets) != (self.head, self.secrets_now):
                self.stats.lost += 1
                self.stats.incident(
                    f"CHANGED at the end ({how}): {self.label}: {diff(self.secrets_now, secrets)}"
                )
            self.judge_chain(records)

    def summary_notes(self) -> None:
        super().summary_notes()
        ends = "; ".join(f"{n} {what}" for what, n in sorted(self.ends.items()))
        self.stats.note(f"{self.label}: requests ended: {ends}")
