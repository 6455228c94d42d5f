"""kill -9 during a merge and during a backup: nothing half-merged, the next run completes.

`merge` (three kill modes, one row each, as scenarios/sharing.py): node `a` serves `--port` on
127.0.0.1 and owns the vault `src`, shared with node `b` with `--perm push`; b cloned it. Each run
writes one secret on each side (different secrets, or the same one about a third of the time),
then b runs `pk vaults pull src` (or `pk vaults push src`, which merges first), killed as the mode
says: `client-cli` (b's CLI; b's agent finishes the request, the soak waits for it), `client-agent`
(b's agent, the one merging), `server-agent` (a's agent, while it serves). Afterwards b's vault
must be its state before the command or a complete merge: a merge commit whose parents are the
two heads, with both sides' edits, and for a secret both changed both values, one at the path
and one in a `PATH.conflict-…` copy that the merge commit names and `pk vaults conflicts` lists.
After a push, a holds its own head or b's merge, nothing else. An acknowledged command must have
merged (and, for a push, a must hold the merge). Then an unkilled `pk vaults pull` must complete
the merge, an unkilled `pk vaults push` must make both nodes agree (the same `pk vaults log`),
and both nodes' `pk node check` must be clean.

`backup` (two modes: `direct`, no agent, the CLI making the backup killed; `kill-agent`, the
agent making it killed, then restarted): a node with a few vaults changes between runs and
`pk backup PATH --backup-password-file F` is killed at random moments, on the run that makes the
backup node and on later runs (now and then the backup is thrown away, so the first run is
killed again). After each run the backup file is absent only if no run has made it yet;
otherwise it opens with its password (`pk --node PATH --password-file F node check` clean) and
each of its vaults is the node's vault at the node's head or at an older commit of the node's
history (a prefix, never something else). An unacknowledged run is followed at once by an
unkilled one half the time (always when it left the two nodes unlinked), which must complete.
An acknowledged backup holds every vault at exactly the node's head, with its name and tags; so
does the final unkilled one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.soak import reader
from bench.soak.core import Context, KillClock, register_modes
from bench.soak.nodes import Node
from bench.soak.procs import Done
from bench.soak.scenarios.local import LocalScenario, diff, token
from bench.soak.scenarios.sharing import MODES as SHARING_MODES
from bench.soak.scenarios.sharing import SharingScenario

Plain = dict[str, str]  # path in the vault -> value (no "vault:" prefix)


def plain(secrets: dict[str, str]) -> Plain:
    return {k.split(":", 1)[1]: v for k, v in secrets.items()}


def commits_of(node: Node, vault: str, how: str, limit: int | None = None) -> list[dict[str, Any]]:
    """`pk vaults log VAULT` (newest first): through `pk` (``cli``: the agent when one runs;
    ``direct``: the file) or in this process on the file (``file``)."""
    if how == "file":
        params: dict[str, Any] = {"name": vault}
        if limit is not None:
            params["limit"] = limit
        commits = reader._call(node, [("vaults.log", params)])[0]["commits"]
    else:
        args = ["vaults", "log", vault] + (["-n", str(limit)] if limit is not None else [])
        commits = node.json(*args, direct=how == "direct")["commits"]
    return [dict(c) for c in commits]


# --- merging ------------------------------------------------------------------------------------


@dataclass
class Edits:
    """One run's two edits, made before the command: a wrote ``ka``, b wrote ``kb``."""

    base: Plain  # both sides agreed on this before the run
    ka: str
    va: str
    kb: str
    vb: str
    a_head: str
    b_head: str

    def expected(self) -> Plain:
        """The merged secrets when the edits touch two secrets."""
        return {**self.base, self.ka: self.va, self.kb: self.vb}


@register_modes(*SHARING_MODES)
class Merges(SharingScenario):
    """One edit on each side, then b pulls (or pushes, which merges first), killed."""

    name = "merge"
    about = "merging pull/push of one edit on each side (client CLI, client agent, server agent)"
    perms = "push"
    check_every = 1  # `pk node check` on a and b after every run
    KEYS = ("k0", "k1", "k2", "k3", "k4", "d/k5")
    SAME = 0.35  # how often both sides edit the same secret
    PUSH = 0.3  # how often b runs push (merging first) instead of pull
    MAX_COPIES = 8  # conflict copies kept; then they are removed (not killed) and pushed

    def __init__(self, ctx: Context, mode: str = "client-cli") -> None:
        super().__init__(ctx, mode)
        self.clock = KillClock(self.rng, guess=0.3 if mode == "client-cli" else self.guess)
        self.base: Plain = {}
        self.head = ""
        # how the commands ended: acknowledged, or not and then merged / as before / neither
        self.outcomes: dict[str, int] = {}

    def prepare(self) -> None:
        self.b.must("vaults", "clone", self.a.node_id, "src")
        self.converge("after the clone", how="cli")

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
        if done.killed:
            self.b.settle()  # b's agent finishes what the killed CLI asked before we look
        return done

    def vault(self, node: Node, how: str | None = None) -> tuple[str, Plain]:
        commit, secrets = self.read(node, "src", how)
        return commit, plain(secrets)

    # --- one run ------------------------------------------------------------------------------

    def step(self, budget_s: float) -> None:
        run = self.run_no
        ka = self.rng.choice(self.KEYS)
        kb = (
            ka
            if self.rng.random() < self.SAME
            else self.rng.choice([k for k in self.KEYS if k != ka])
        )
        va, vb = token(self.rng, run), token(self.rng, run)
        self.a.must("secrets", "write", f"src:{ka}", stdin=va.encode())
        self.b.must("secrets", "write", f"src:{kb}", stdin=vb.encode())
        a_head, a_pre = self.vault(self.a)
        b_head, b_pre = self.vault(self.b)
        for who, got, key, value in (("a", a_pre, ka, va), ("b", b_pre, kb, vb)):
            want = {**self.base, key: value}
            self.record(
                acked=True,
                applied=got == want,
                unchanged=got == self.base,
                what=f"{who}'s write of {key}",
                detail=lambda w=want, g=got: diff(w, g),  # type: ignore[misc]
            )
        ed = Edits(dict(self.base), ka, va, kb, vb, a_head, b_head)
        op = "push" if self.rng.random() < self.PUSH else "pull"
        done = self.act(op, "vaults", op, "src")

        b_now, b_post = self.vault(self.b)
        why = self.merged(ed, b_now, b_post)
        b_same = b_now == b_head and b_post == b_pre
        end = "acknowledged" if done.acked else "merged" if not why else "as before"
        end = end if done.acked or not why or b_same else "neither"
        self.count(f"{op} {end}" + (" (a conflict)" if ka == kb and not why else ""))
        self.record(
            acked=done.acked,
            applied=not why,
            unchanged=b_same,
            what=f"{op}: b merges a's edit ({'same secret' if ka == kb else 'two secrets'})",
            detail=lambda: f"{why}; b's vault: {diff(b_pre, b_post)}",
        )
        a_now, a_post = self.vault(self.a)
        a_same = a_now == a_head and a_post == a_pre
        if op == "push":
            self.record(
                acked=done.acked,
                applied=not why and a_now == b_now and a_post == b_post,
                unchanged=a_same,
                what="push: a takes b's merge",
                detail=lambda: f"a at {a_now[:12]}, b at {b_now[:12]}: {diff(a_pre, a_post)}",
            )
        else:
            self.record(
                acked=False,
                applied=False,
                unchanged=a_same,
                what="pull: a's vault stays as it was",
                detail=lambda: diff(a_pre, a_post),
            )
        self.complete(ed)
        if sum(".conflict-" in p for p in self.base) > self.MAX_COPIES:
            copies = [f"src:{p}" for p in self.base if ".conflict-" in p]
            self.b.must("secrets", "rm", *copies)
            self.b.must("vaults", "push", "src")
            self.converge("after removing the conflict copies")

    def count(self, what: str) -> None:
        self.outcomes[what] = self.outcomes.get(what, 0) + 1

    def summary_notes(self) -> None:
        super().summary_notes()
        ends = "; ".join(f"{n} {what}" for what, n in sorted(self.outcomes.items()))
        self.stats.note(f"{self.label}: commands ended: {ends}")

    def merged(self, ed: Edits, commit: str, got: Plain, how: str = "file") -> str:
        """What keeps ``commit`` (with secrets ``got``) from being a complete merge of the run's
        two edits; empty when it is one."""
        if commit in (ed.a_head, ed.b_head):
            whose = "its own" if commit == ed.b_head else "a's"
            return f"b is at {whose} head, not a merge"
        top = commits_of(self.b, "src", how, limit=1)[0]
        if top["id"] != commit:
            return f"the log's head {top['id'][:12]} is not the vault's head {commit[:12]}"
        if list(top["parents"]) != [ed.b_head, ed.a_head]:
            return f"merge parents {[p[:12] for p in top['parents']]} are not [b's, a's] head"
        if ed.ka != ed.kb:
            want = ed.expected()
            return "" if got == want else f"secrets differ from the merge: {diff(want, got)}"
        k = ed.ka
        extra = sorted(set(got) - set(ed.base) - {k})
        if len(extra) != 1 or not extra[0].startswith(f"{k}.conflict-"):
            return f"expected one new conflict copy of {k}, found {extra}"
        copy = extra[0]
        if {got.get(k), got[copy]} != {ed.va, ed.vb}:
            return f"{k} and {copy} hold {got.get(k)!r} and {got[copy]!r}, not both values"
        rest = {p: v for p, v in got.items() if p not in (k, copy)}
        if rest != {p: v for p, v in ed.base.items() if p != k}:
            return f"other secrets changed: {diff(ed.base, got)}"
        if f"Conflict: {k} -> {copy}" not in str(top.get("message", "")):
            return f"the merge commit does not name the conflict {k} -> {copy}"
        listed = self.b.json("vaults", "conflicts", "src", direct=how == "direct")["conflicts"]
        if not any(c.get("path") == k and c.get("copy") == copy for c in listed):
            return f"`pk vaults conflicts` does not list {copy}: {listed}"
        return ""

    def complete(self, ed: Edits) -> None:
        """The next unkilled pull completes the merge; the next push makes a and b agree."""
        done = self.b.pk("vaults", "pull", "src")
        self.note_exit(done)
        if not done.acked:
            self.stats.torn += 1
            self.stats.incident(f"NEXT PULL FAILED: {self.where()}: {done.why()}")
            self.b.must("vaults", "pull", "src")  # once more, or the run ends as an error
        commit, got = self.vault(self.b)
        why = self.merged(ed, commit, got)
        if why:
            self.stats.torn += 1
            self.stats.incident(f"NEXT PULL DID NOT MERGE: {self.where()}: {why}")
        self.b.must("vaults", "push", "src")
        self.converge("after the next pull and push")

    def converge(self, when: str, how: str | None = None) -> None:
        """a and b hold the same vault (head, secrets, `pk vaults log`); it becomes the base."""
        a_head, a_got = self.vault(self.a, how)
        b_head, b_got = self.vault(self.b, how)
        a_log = [c["id"] for c in commits_of(self.a, "src", "cli" if how is None else how)]
        b_log = [c["id"] for c in commits_of(self.b, "src", "cli" if how is None else how)]
        if (a_head, a_got, a_log) != (b_head, b_got, b_log):
            self.stats.diverged += 1
            self.stats.incident(
                f"DIVERGED {when}: {self.where()}: a at {a_head[:12]} ({len(a_log)} commits), "
                f"b at {b_head[:12]} ({len(b_log)} commits): {diff(a_got, b_got)}"
            )
        self.head, self.base = b_head, b_got

    def final(self) -> None:
        """Both nodes hold the last agreed state, through the agents and on the files."""
        for how in ("cli", "direct"):
            for node in (self.a, self.b):
                commit, got = self.vault(node, how)
                if (commit, got) != (self.head, self.base):
                    self.stats.lost += 1
                    self.stats.incident(
                        f"CHANGED at the end ({how}): {self.label}: {node.name} at "
                        f"{commit[:12]}, agreed {self.head[:12]}: {diff(self.base, got)}"
                    )
            a_log = [c["id"] for c in commits_of(self.a, "src", how)]
            b_log = [c["id"] for c in commits_of(self.b, "src", how)]
            if a_log != b_log:
                self.stats.diverged += 1
                self.stats.incident(f"DIVERGED at the end ({how}): {self.label}: logs differ")


# --- backups ------------------------------------------------------------------------------------

Vaults = dict[str, tuple[str, tuple[str, ...], list[str]]]  # id -> (name, tags, commits)


@register_modes("direct", "kill-agent")
class Backups(LocalScenario):
    """`pk backup PATH` killed on its first run and on later ones, with changes in between."""

    name = "backup"
    about = "pk backup to a backup node file, killed (first run and later ones)"
    guess = 0.6
    check_every = 10
    VAULTS = ("v0", "v1", "v2")
    MAX_VAULTS = 7
    AGAIN = 0.5  # how often an unacknowledged backup is followed at once by an unkilled one
    ANEW = 0.12  # how often the backup is thrown away so that the next run makes it again

    def __init__(self, ctx: Context, mode: str = "direct") -> None:
        super().__init__(ctx, mode)
        self.bk = Node(ctx.work, "backup")
        self.bk.env["PK_PASSWORD"] = "soak password of the backup"
        self.password_file = ctx.work / "backup-password"
        self.made = False  # a run has made the backup file (it must stay)
        self.last = ""  # what the last judged backup file was
        self.vaults_made = 0
        self.remade = 0
        self.outcomes: dict[str, int] = {}  # what the backup file was after each command

    @property
    def path(self) -> Path:
        return self.bk.path

    def nodes(self) -> list[Node]:
        return [self.node, self.bk]

    def periodic_check(self) -> None:
        """The node, and the backup when there is one (each run checks it too)."""
        if self.run_no % self.check_every == 0:
            for node in self.nodes():
                if node is self.node or self.path.exists():
                    self.check_node(node, "")

    def prepare(self) -> None:
        self.password_file.write_text(self.bk.env["PK_PASSWORD"] + "\n")
        for v in self.VAULTS:
            self.node.must("vaults", "create", v)
            for i in range(2):
                self.node.must("secrets", "write", f"{v}:s{i}", stdin=token(self.rng, 0).encode())

    def backup_args(self) -> tuple[str, ...]:
        return ("backup", str(self.path), "--backup-password-file", str(self.password_file))

    # --- reading both nodes -------------------------------------------------------------------

    def holdings(self, node: Node, how: str) -> Vaults:
        """Every vault of ``node``: its name, tags and history (newest first)."""
        if how == "file":
            listed = reader.vault_list(node)
        else:
            listed = node.json(*self.on(node), "vaults", "list", direct=how == "direct")["vaults"]
        out: Vaults = {}
        for v in listed:
            if how == "file":
                commits = commits_of(node, v["name"], "file")
            else:
                doc = node.json(*self.on(node), "vaults", "log", v["name"], direct=how == "direct")
                commits = [dict(c) for c in doc["commits"]]
            ids = [str(c["id"]) for c in commits]
            out[str(v["id"])] = (str(v["name"]), tuple(sorted(v["tags"])), ids)
        return out

    def on(self, node: Node) -> tuple[str, ...]:
        """The backup is opened as a user would: `pk --node PATH --password-file F`."""
        if node is self.bk:
            return ("--node", str(self.path), "--password-file", str(self.password_file))
        return ()

    def linked(self) -> bool:
        """Each of the two nodes holds the other as one of its own (`pk nodes mine`)."""
        (theirs, me) = reader._call(self.bk, [("nodes.mine", {}), ("keys.public", {})])
        mine = reader._call(self.node, [("nodes.mine", {})])[0]
        return self.node.node_id in theirs.get("mine", []) and me.get("node_id") in mine.get(
            "mine", []
        )

    # --- one run ------------------------------------------------------------------------------

    def step(self, budget_s: float) -> None:
        if self.made and self.run_no > 1 and self.rng.random() < self.ANEW:
            self.throw_away("to make it again")
        self.edit()
        want = self.holdings(self.node, "file")
        first = not self.path.exists()
        done = self.act("backup", *self.backup_args())
        how = "cli" if self.run_no % 8 == 0 else "file"
        usable = self.judge(done, want, "first backup" if first else "backup", how)
        self.count(done, first)
        if done.acked:
            return
        if usable is False or self.rng.random() < self.AGAIN:
            again = self.node.pk(*self.backup_args())
            self.clock.learn("backup", again)
            self.note_exit(again)
            if not again.acked:
                self.stats.torn += 1
                left = "an unusable backup file" if self.path.exists() else "no backup file"
                self.stats.incident(
                    f"HALF STATE: {self.where()}: the killed {'first ' if first else ''}backup "
                    f"left {left}: the next unkilled `pk backup` fails: {again.why()}"
                )
                if self.path.exists():
                    self.throw_away("after it was left unusable")
                return
            self.judge(again, want, "the next backup after a kill", how)

    def count(self, done: Done, first: bool) -> None:
        if done.acked:
            what = "acknowledged"
        elif not self.path.exists():
            what = "unacknowledged (no file)"
        else:
            what = f"unacknowledged ({self.last})"
        what = ("first run " if first else "") + what
        self.outcomes[what] = self.outcomes.get(what, 0) + 1

    def edit(self) -> None:
        """A few unkilled changes to the node: secrets written, now and then a new vault or a
        vault tag (mirrored to the backup)."""
        names = [v["name"] for v in reader.vault_list(self.node)]
        for _ in range(self.rng.randint(1, 3)):
            roll = self.rng.random()
            if roll < 0.1 and len(names) < self.MAX_VAULTS:
                self.vaults_made += 1
                name = f"n{self.vaults_made}"
                self.node.must("vaults", "create", name)
                names.append(name)
            elif roll < 0.2:
                self.node.must("vaults", "tag", self.rng.choice(names), f"t{self.run_no}")
            else:
                key = f"{self.rng.choice(names)}:s{self.rng.randrange(4)}"
                self.node.must("secrets", "write", key, stdin=token(self.rng, self.run_no).encode())

    def judge(self, done: Done, want: Vaults, what: str, how: str) -> bool | None:
        """Judge the backup file after ``done``; returns whether it is linked with the node
        (None when there is no file, or it did not check clean)."""
        if not self.path.exists():
            self.record(
                acked=done.acked,
                applied=False,
                unchanged=not self.made,
                what=what,
                detail=lambda: "the backup file is gone" if self.made else "no backup file",
            )
            return None
        self.made = True
        self.last = "a file that does not check"
        check = self.bk.pk(*self.on(self.bk), "node", "check", direct=True, timeout=300)
        if not check.acked:
            opens = self.bk.pk(*self.on(self.bk), "node", "info", direct=True).acked
            if opens:
                self.stats.check_failures += 1
            else:
                self.stats.unopenable += 1
            self.stats.incident(
                f"{'node check failed' if opens else 'UNOPENABLE'}: {self.where()}: the backup "
                f"after {what}: {check.why()}"
            )
            return None
        have = self.holdings(self.bk, how)
        not_prefix = self.prefix(want, have)
        not_exact = self.exact(want, have)
        linked = self.linked()
        self.record(
            acked=done.acked,
            applied=linked and not not_exact,
            unchanged=not not_prefix,
            what=what,
            detail=lambda: not_prefix or not_exact or "the backup and the node are not linked",
        )
        self.last = (
            "not linked"
            if not linked
            else "every vault at the node's head"
            if not not_exact
            else "older vaults"
        )
        return linked

    @staticmethod
    def prefix(want: Vaults, have: Vaults) -> str:
        """What keeps the backup from holding each of its vaults at the node's head or at an
        older commit of the node's history; empty when it does."""
        for vid, (name, _, commits) in have.items():
            if vid not in want:
                return f"the backup holds a vault {name} ({vid}) the node does not"
            if not commits:
                return f"the backup's {name} has no history"
            if commits[0] not in want[vid][2]:
                return f"the backup's {name} is at {commits[0][:12]}, not in the node's history"
            if commits != want[vid][2][want[vid][2].index(commits[0]) :]:
                return f"the backup's history of {name} is not the node's below its head"
        return ""

    @staticmethod
    def exact(want: Vaults, have: Vaults) -> str:
        """What keeps the backup from holding every vault at the node's head, with its name and
        tags; empty when it does."""
        for vid, (name, tags, commits) in want.items():
            got = have.get(vid)
            if got is None:
                return f"the backup lacks {name}"
            if got[2][:1] != commits[:1]:
                return f"the backup's {name} is at {got[2][0][:12]}, the node's {commits[0][:12]}"
            if got[:2] != (name, tags):
                return f"the backup's vault {vid} is {got[:2]}, the node's {(name, tags)}"
        return ""

    def throw_away(self, why: str) -> None:
        """Remove the backup file (and its -wal, -shm): the next run makes a new one."""
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()
        self.made = False
        self.remade += 1
        self.stats.note(f"{self.label}: the backup file was thrown away {why}")

    def final(self) -> None:
        """An unkilled backup completes, and then the backup holds every vault of the node at
        its head (read with `pk`, through the agent and on the files)."""
        done = self.node.pk(*self.backup_args())
        if not done.acked:
            self.stats.torn += 1
            self.stats.incident(f"FINAL BACKUP FAILED: {self.label}: {done.why()}")
            return
        for how in ("cli", "direct"):
            want = self.holdings(self.node, how)
            have = self.holdings(self.bk, "direct")
            why = self.exact(want, have) or self.prefix(want, have)
            if why:
                self.stats.lost += 1
                self.stats.incident(f"LOST at the end ({how}): {self.label}: {why}")

    def summary_notes(self) -> None:
        super().summary_notes()
        ends = "; ".join(f"{n} {what}" for what, n in sorted(self.outcomes.items()))
        self.stats.note(f"{self.label}: backups ended: {ends}")
        litter = sorted(p.name for p in self.path.parent.glob(f".{self.path.name}.*.creating*"))
        if litter:
            self.stats.note(
                f"{self.label}: {len(litter)} files of killed node creations left beside the "
                f"backup (e.g. {litter[0]})"
            )
