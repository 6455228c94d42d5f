"""kill -9 across one node's writes: `pk secrets write`, vault commands, `mv`/`rm`, imports, and
requests straight to the agent.

Each scenario runs in three modes, one row each: `direct` (no agent: the CLI writes the node file
and is killed), `agent-cli` (an agent runs; the CLI talking to it is killed) and `kill-agent` (an
agent runs; the agent is killed while the command runs, then restarted; the CLI falls back to the
node file, as it does when its agent is gone).

After every run the scenario reads the node back (mostly the file itself, in the soak's process;
every eighth run through `pk export json` / `pk vaults list`) and judges the run against its model
of the node: an acknowledged command (exit 0) must show its whole
effect; an unacknowledged one shows its whole effect or none of it; anything else is a half state.
Since the model is the last state read back, every earlier acknowledged write is checked again
on every run, and once more at the end on the node file itself.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, ClassVar

from bench.soak import procs, reader
from bench.soak.core import Context, KillClock, Scenario, register, register_modes
from bench.soak.nodes import Node
from bench.soak.procs import Done

MODES = ("direct", "agent-cli", "kill-agent")

Secrets = dict[str, str]  # "vault:path" -> value
VaultState = dict[str, tuple[str, tuple[str, ...]]]  # vault name -> (id, tags)
ANY_ID = "?"


def export(node: Node, vault: str, *, direct: bool = False) -> tuple[str, Secrets, dict[str, Any]]:
    """(commit, {"vault:path": text}, {path: tags}) of a vault, read back by `pk export json`."""
    doc = json.loads(node.must("export", "json", vault, direct=direct))
    name = vault.split(":", 1)[0]
    secrets = {f"{name}:{s['path']}": str(s.get("text", s)) for s in doc["secrets"]}
    return str(doc["commit"]), secrets, dict(doc.get("tags") or {})


def diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    keys = sorted(set(before) | set(after))
    parts = [f"{k}: {before.get(k, '-')!r} -> {after.get(k, '-')!r}" for k in keys]
    changed = [p for k, p in zip(keys, parts, strict=True) if before.get(k) != after.get(k)]
    return "; ".join(changed[:8]) + (" ..." if len(changed) > 8 else "") or "(no change)"


def token(rng: Any, run: int) -> str:
    """A value no other write uses: the run number and random text of random length."""
    n = rng.choice((4, 12, 40, 300))
    return f"r{run}-" + "".join(rng.choice("abcdefghijkmnpqrstuvwxyz0123456789") for _ in range(n))


class LocalScenario(Scenario):
    """One node; an agent unless the mode is `direct`."""

    guess: ClassVar[float] = 0.3
    state: Any  # what the node should read back as now (each scenario's own shape)

    def __init__(self, ctx: Context, mode: str = "direct") -> None:
        super().__init__(ctx, mode)
        self.node = Node(ctx.work, "n")
        guess = self.guess if mode == "direct" else self.guess / 2
        self.clock = KillClock(self.rng, guess=guess)

    def nodes(self) -> list[Node]:
        return [self.node]

    def setup(self) -> None:
        self.node.bootstrap()
        self.prepare()
        if self.mode != "direct":
            self.node.start_agent()

    def prepare(self) -> None:
        """Make the vaults the scenario works on (before the agent starts)."""

    def how(self) -> str:
        """How to read the node back after a run: mostly the file itself in this process, every
        eighth run through `pk` (through the agent when one runs)."""
        return "cli" if self.run_no % 8 == 0 else "file"

    def secrets(self, vaults: list[str], how: str | None = None) -> Secrets:
        how = how or self.how()
        out: Secrets = {}
        if how == "file":
            for _, found, _ in reader.exports(self.node, vaults).values():
                out |= found
        else:
            for v in vaults:
                out |= export(self.node, v, direct=how == "direct")[1]
        return out

    def tags(self, vault: str, how: str | None = None) -> tuple[Secrets, dict[str, Any]]:
        how = how or self.how()
        if how == "file":
            _, found, tags = reader.exports(self.node, [vault])[vault]
        else:
            _, found, tags = export(self.node, vault, direct=how == "direct")
        return found, {k: sorted(v) for k, v in tags.items()}

    def vaults(self, how: str | None = None) -> VaultState:
        how = how or self.how()
        if how == "file":
            listed = reader.vault_list(self.node)
        else:
            listed = self.node.json("vaults", "list", direct=how == "direct")["vaults"]
        return {v["name"]: (v["id"], tuple(sorted(v["tags"]))) for v in listed}

    def read(self, how: str | None = None) -> Any:
        """The state the scenario keeps in ``self.state``, read back as ``how`` says."""
        raise NotImplementedError

    def change(self, before: Any, after: Any) -> str:
        """What differs between two states, for an incident line."""
        return diff(before, after)

    def final(self) -> None:
        """After the last run, the node reads back as the last state, on the file and through
        the agent alike (a scenario with a ledger of its own overrides this)."""
        for direct in (False, True):
            now = self.read("direct" if direct else "cli")
            if now != self.state:
                self.stats.lost += 1
                self.stats.incident(
                    f"CHANGED at the end ({'file' if direct else 'agent'}): {self.label}: "
                    f"{self.change(self.state, now)}"
                )

    def act(self, kind: str, *args: str, stdin: bytes | None = None) -> Done:
        """Run one command that may be killed, as the mode says."""
        delay = self.clock.delay(kind)
        kill = self.node.kill_agent if self.mode == "kill-agent" else None
        done = self.node.pk(*args, stdin=stdin, kill_after=delay, kill=kill)
        self.clock.learn(kind, done)
        self.count_kill(done)
        self.note_exit(done)
        if self.mode == "kill-agent":
            self.node.ensure_agent()
        elif self.mode == "agent-cli" and done.killed:
            self.node.settle()  # the agent finishes what the killed CLI asked before we look
        return done


# --- pk secrets write --------------------------------------------------------------------------


@register_modes(*MODES)
class Writes(LocalScenario):
    """`pk secrets write` of unique values to a few keys, the CLI or the agent killed."""

    name = "write"
    about = "pk secrets write (a few keys, unique values)"
    KEYS = (*(f"w:k{i}" for i in range(6)), "w:dir/deep/k")

    def prepare(self) -> None:
        self.node.must("vaults", "create", "w")
        self.state: Secrets = {}
        # per key: the last acknowledged value and the unacknowledged attempts since
        self.ledger: dict[str, tuple[str | None, list[str]]] = {k: (None, []) for k in self.KEYS}

    def step(self, budget_s: float) -> None:
        key = self.rng.choice(self.KEYS)
        value = token(self.rng, self.run_no)
        done = self.act("write", "secrets", "write", key, stdin=value.encode())
        last, since = self.ledger[key]
        self.ledger[key] = (value, []) if done.acked else (last, [*since, value])
        post = self.secrets(["w"])
        pre = self.state
        self.record(
            acked=done.acked,
            applied=post == {**pre, key: value},
            unchanged=post == pre,
            what=f"write {key}",
            detail=lambda: diff(pre, post),
        )
        self.state = post

    def final(self) -> None:
        for direct in (False, True):
            now = self.secrets(["w"], "direct" if direct else "cli")
            for key, (last, since) in self.ledger.items():
                allowed = set(since) | ({last} if last is not None else {None})
                if now.get(key) not in allowed:
                    self.stats.lost += 1
                    self.stats.incident(
                        f"LOST at the end ({'file' if direct else 'agent'}): {self.label}: "
                        f"{key} is {now.get(key)!r}, last acknowledged {last!r}"
                    )


# --- vaults create / rename / tag / untag / rm -------------------------------------------------


def same_vaults(expected: VaultState, post: VaultState, known_ids: set[str]) -> bool:
    if set(expected) != set(post):
        return False
    for name, (vid, tags) in expected.items():
        pid, ptags = post[name]
        if ptags != tags:
            return False
        if vid == ANY_ID:
            if pid in known_ids:
                return False
        elif pid != vid:
            return False
    return True


@register_modes(*MODES)
class VaultOps(LocalScenario):
    """`pk vaults create/rename/tag/untag/rm`, the CLI or the agent killed."""

    name = "vaults"
    about = "pk vaults create/rename/tag/untag/rm"

    def prepare(self) -> None:
        for name in ("a0", "a1", "a2"):
            self.node.must("vaults", "create", name)
        self.state = self.vaults("cli")

    def step(self, budget_s: float) -> None:
        pre = self.state
        names = sorted(pre)
        run = self.run_no
        ops = ["create", "rename", "tag", "tag", "untag"]
        if len(names) > 10:
            ops = ["rm", "rm", "rename", "tag"]
        elif len(names) < 3:
            ops = ["create"]
        op = self.rng.choice(ops)
        expected = dict(pre)
        if op == "create":
            args = ["vaults", "create", f"c{run}"]
            expected[f"c{run}"] = (ANY_ID, ())
        else:
            victim = self.rng.choice(names)
            vid, tags = pre[victim]
            if op == "rename":
                args = ["vaults", "rename", victim, f"r{run}"]
                del expected[victim]
                expected[f"r{run}"] = (vid, tags)
            elif op == "tag":
                args = ["vaults", "tag", victim, f"t{run}"]
                expected[victim] = (vid, tuple(sorted((*tags, f"t{run}"))))
            elif op == "untag" and tags:
                tag = self.rng.choice(tags)
                args = ["vaults", "untag", victim, tag]
                expected[victim] = (vid, tuple(t for t in tags if t != tag))
            elif op == "untag":
                args = ["vaults", "tag", victim, f"t{run}"]
                expected[victim] = (vid, tuple(sorted((*tags, f"t{run}"))))
            else:
                args = ["vaults", "rm", victim, "--yes"]
                del expected[victim]
        done = self.act(args[1], *args)
        post = self.vaults()
        ids = {vid for vid, _ in pre.values()}
        self.record(
            acked=done.acked,
            applied=same_vaults(expected, post, ids),
            unchanged=post == pre,
            what=" ".join(args),
            detail=lambda: diff(pre, post),
        )
        self.state = post

    def read(self, how: str | None = None) -> Any:
        return self.vaults(how)


# --- pk secrets mv / rm ------------------------------------------------------------------------


@register_modes(*MODES)
class MoveRemove(LocalScenario):
    """`pk secrets mv` (within and across vaults, files and directories, with --force) and
    `pk secrets rm` (several paths in two vaults, -r), the CLI or the agent killed."""

    name = "mv-rm"
    about = "pk secrets mv/rm (across two vaults, dirs, --force)"
    VAULTS = ("m1", "m2")

    def prepare(self) -> None:
        for v in self.VAULTS:
            self.node.must("vaults", "create", v)
        self.state: Secrets = {}

    def read(self, how: str | None = None) -> Secrets:
        return self.secrets(list(self.VAULTS), how)

    def step(self, budget_s: float) -> None:
        pre = self.state
        run = self.run_no
        files = sorted(pre)
        dirs = sorted({k.rsplit("/", 1)[0] for k in files if "/" in k.split(":", 1)[1]})
        ops = ["write", "mv", "mv", "mv-force", "mv-dir", "rm", "rm-r"]
        if len(files) < 6:
            ops = ["write"]
        elif len(files) > 24:
            ops = ["rm", "rm-r", "mv"]
        op = self.rng.choice(ops)
        expected = dict(pre)
        stdin = None
        fresh = f"{self.rng.choice(self.VAULTS)}:d{self.rng.randrange(4)}/f{run}"
        if op == "write":
            value = token(self.rng, run)
            args = ["secrets", "write", fresh]
            stdin = value.encode()
            expected[fresh] = value
        elif op == "mv" or (op == "mv-force" and len(files) < 2) or (op == "mv-dir" and not dirs):
            src = self.rng.choice(files)
            args = ["secrets", "mv", src, fresh]
            expected[fresh] = expected.pop(src)
        elif op == "mv-force":
            src, dst = self.rng.sample(files, 2)
            args = ["secrets", "mv", "--force", src, dst]
            expected[dst] = expected.pop(src)
        elif op == "mv-dir":
            src = self.rng.choice(dirs)
            dst = f"{self.rng.choice(self.VAULTS)}:e{run}"
            args = ["secrets", "mv", src, dst]
            for k in [k for k in pre if k.startswith(src + "/")]:
                expected[dst + k[len(src) :]] = expected.pop(k)
        elif op == "rm" or not dirs:
            gone = self.rng.sample(files, min(len(files), self.rng.randint(1, 3)))
            args = ["secrets", "rm", *gone]
            for k in gone:
                del expected[k]
        else:
            src = self.rng.choice(dirs)
            args = ["secrets", "rm", "-r", src]
            for k in [k for k in pre if k.startswith(src + "/")]:
                del expected[k]
        done = self.act(op, *args, stdin=stdin)
        post = self.read()
        self.record(
            acked=done.acked,
            applied=post == expected,
            unchanged=post == pre,
            what=" ".join(args),
            detail=lambda: diff(pre, post),
        )
        self.state = post


# --- pk import dotenv / json -------------------------------------------------------------------


@register_modes(*MODES)
class Imports(LocalScenario):
    """`pk import dotenv` and `pk import json` (with secret tags) of generated files, each into
    a new folder: all of an import or none of it."""

    name = "import"
    about = "pk import dotenv/json of generated files (all or nothing)"
    KEEP = 24  # folders kept; older ones are removed (not killed) so the vault stays small

    def prepare(self) -> None:
        self.folders: list[str] = []
        self.node.must("vaults", "create", "imp")
        self.state: tuple[Secrets, dict[str, Any]] = ({}, {})

    def read(self, how: str | None = None) -> tuple[Secrets, dict[str, Any]]:
        return self.tags("imp", how)

    def step(self, budget_s: float) -> None:
        run = self.run_no
        if len(self.folders) > self.KEEP:
            old = self.folders.pop(0)
            self.node.must("secrets", "rm", "-r", f"imp:{old}")
            self.state = self.read()
        pre_secrets, pre_tags = self.state
        folder = f"i{run}"
        count = self.rng.randint(1, 12)
        values = {f"VAR_{i}_{run}": token(self.rng, run) for i in range(count)}
        src = self.ctx.work / f"import-{run}"
        expected = dict(pre_secrets)
        expected_tags = dict(pre_tags)
        if self.rng.random() < 0.5:
            kind = "dotenv"
            src.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        else:
            kind = "json"
            tags = {k: [f"t{run}"] for k in list(values)[: self.rng.randint(0, count)]}
            secrets = [{"path": f"sub/{k}", "text": v} for k, v in values.items()]
            doc = {"format": "polykey-export", "version": 1, "secrets": secrets}
            doc["tags"] = {f"sub/{k}": t for k, t in tags.items()}
            src.write_text(json.dumps(doc))
            values = {f"sub/{k}": v for k, v in values.items()}
            expected_tags |= {f"{folder}/sub/{k}": t for k, t in tags.items()}
        for k, v in values.items():
            expected[f"imp:{folder}/{k}"] = v
        done = self.act(kind, "import", kind, str(src), "--vault", f"imp:{folder}")
        src.unlink()
        post = self.read()
        pre = self.state
        self.record(
            acked=done.acked,
            applied=post == (expected, expected_tags),
            unchanged=post == pre,
            what=f"import {kind} of {count} secrets into imp:{folder}",
            detail=lambda: diff(pre[0], post[0]) + " / tags " + diff(pre[1], post[1]),
        )
        if post[0] != pre_secrets:
            self.folders.append(folder)
        self.state = post

    def change(self, before: Any, after: Any) -> str:
        return diff(before[0], after[0])


# --- requests straight to the agent ------------------------------------------------------------

RAW_CLIENT = [sys.executable, "-m", "bench.soak.rawclient"]


@register
class AgentRequests(LocalScenario):
    """Several requests in flight at once and the agent killed among them: raw `secrets.write_many`
    requests on the agent's socket (no fallback to the file), `pk secrets write` through the
    agent (falls back to the file when the agent dies), and the agent killed while it starts."""

    name = "agent-requests"
    about = "concurrent agent requests (raw write_many + CLI), agent killed; kill during start"
    CLIENTS = 4
    KEYS = 3

    def __init__(self, ctx: Context, mode: str = "") -> None:
        super().__init__(ctx, "")
        self.mode = "kill-agent"
        self.clock = KillClock(self.rng, guess=0.25, spare=0.1)

    def prepare(self) -> None:
        self.node.must("vaults", "create", "ag")
        self.state: Secrets = {}

    def step(self, budget_s: float) -> None:
        if self.rng.random() < 0.1:
            self.kill_during_start()
            return
        run = self.run_no
        clients = self.rng.randint(2, self.CLIENTS)
        delay = self.clock.delay(f"burst{clients}")
        plans: list[tuple[list[str], bytes | None, dict[str, str]]] = []
        for c in range(clients):
            values = {f"ag:c{c}/k{i}": token(self.rng, run) for i in range(self.KEYS)}
            if self.rng.random() < 0.5:
                params = {"vault": "ag", "items": [[k.split(":")[1], v] for k, v in values.items()]}
                argv = [*RAW_CLIENT, "secrets.write_many", json.dumps(params)]
                plans.append((argv, None, values))
            else:
                key = f"ag:c{c}/k0"
                values = {key: values[key]}
                plans.append(
                    (self.node.argv(["secrets", "write", key]), values[key].encode(), values)
                )
        results: list[Done | None] = [None] * clients
        env = self.node.env_for()

        def go(i: int) -> None:
            argv, stdin, _ = plans[i]
            results[i] = procs.run(argv, env, stdin=stdin, cwd=str(_repo()))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        killed = False
        if delay is not None:
            while time.monotonic() - started < delay and any(t.is_alive() for t in threads):
                time.sleep(0.002)
            if any(t.is_alive() for t in threads):
                killed = self.node.kill_agent()
        for t in threads:
            t.join()
        if killed:
            self.stats.kills += 1
        else:
            seconds = time.monotonic() - started
            old = self.clock.seconds.get(f"burst{clients}", seconds)
            self.clock.seconds[f"burst{clients}"] = 0.8 * old + 0.2 * seconds
        self.node.ensure_agent()
        post = self.read()
        pre = self.state
        for i, (argv, _, values) in enumerate(plans):
            done = results[i]
            assert done is not None
            self.note_exit(done)
            mine_pre = {k: pre.get(k) for k in values}
            mine_post = {k: post.get(k) for k in values}
            self.record(
                acked=done.acked,
                applied=mine_post == values,
                unchanged=mine_post == mine_pre,
                what=f"{'raw write_many' if argv[0] == sys.executable else 'pk secrets write'}"
                f" of {sorted(values)}",
                detail=lambda a=mine_pre, b=mine_post: diff(a, b),  # type: ignore[misc]
            )
        self.state = post

    def kill_during_start(self) -> None:
        """Kill the agent while it starts (unlock, open, recovery of the last kill), then check
        the node is unchanged."""
        self.node.stop_agent()
        self.node.agent_wanted = True
        starter = threading.Thread(target=lambda: self.node.pk("agent", "start", "--background"))
        starter.start()
        deadline = time.monotonic() + self.rng.uniform(0.05, 0.6)
        pid = None
        while time.monotonic() < deadline:
            pid = _agent_child(self.node)
            time.sleep(0.005)
        pid = pid or _agent_child(self.node)
        if pid is not None and procs.sigkill(pid):
            self.stats.kills += 1
        starter.join()
        self.node.ensure_agent()
        post = self.read()
        pre = self.state
        self.record(
            acked=False,
            applied=False,
            unchanged=post == pre,
            what="agent killed while starting",
            detail=lambda: diff(pre, post),
        )
        self.state = post

    def read(self, how: str | None = None) -> Secrets:
        return self.secrets(["ag"], how)


def _repo() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def _agent_child(node: Node) -> int | None:
    """The pid of the agent process (`pk agent start --child`) serving ``node``, if any."""
    want = str(node.path).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--child" in argv and want in argv and procs.alive(int(entry)):
            return int(entry)
    return None
