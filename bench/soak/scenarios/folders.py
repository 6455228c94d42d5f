"""kill -9 across folder shares (`pk vaults share V:PATH NODE`): derived views cloned and pulled
while an agent is killed; a clone holds PATH and nothing else, or is not there at all.

Node `a` (agent on 127.0.0.1) owns `src`, with secrets inside `sub/` and outside it, and
shares only `src:sub` with node `b` (clone, pull). Each run a writes a secret (inside the folder
or outside it), then b clones the view into a new vault (`pk vaults clone A src NAME`) or pulls
its standing clone `fp`, killed as the mode says: `server-agent` (a's agent, while it derives
and serves the view; restarted) or `client-agent` (b's agent, while it fetches; b's CLI then
works on b's file). Afterwards:

- b's new vault is absent, or holds exactly the folder as a held it at one of its commits so
  far (a view never holds another path, and is never a mix);
- `fp` is at one of those views, never older than before; an acknowledged command leaves the
  view of a's head;
- an unkilled `pk vaults pull` of `fp` (and of the new clone, when it is there) then works and
  brings the view of a's head.
"""

from __future__ import annotations

from bench.soak import reader
from bench.soak.core import Context, register_modes
from bench.soak.procs import Done
from bench.soak.scenarios.local import Secrets, diff, token
from bench.soak.scenarios.sharing import SharingScenario

MODES = ("server-agent", "client-agent")
FOLDER = "sub"


def view(secrets: Secrets) -> dict[str, str]:
    """The folder's secrets (path -> value) of a vault's {"vault:path": value}."""
    plain = {k.split(":", 1)[1]: v for k, v in secrets.items()}
    return {p: v for p, v in plain.items() if p.startswith(FOLDER + "/")}


@register_modes(*MODES)
class FolderShares(SharingScenario):
    """b clones and pulls the view of one folder of a's vault; an agent killed."""

    name = "folder"
    about = "clone/pull of a folder share (derived view), server or client agent killed"
    check_every = 6

    def __init__(self, ctx: Context, mode: str = "server-agent") -> None:
        super().__init__(ctx, mode)
        self.views: list[dict[str, str]] = []  # the folder at each of a's commits, in order
        self.fp_idx = 0
        self.ends: dict[str, int] = {}

    def setup(self) -> None:
        for n in (self.a, self.b):
            n.bootstrap()
            n.start_agent()
        self.a.must("nodes", "add", self.b.node_id, f"127.0.0.1:{self.b.port}")
        self.b.must("nodes", "add", self.a.node_id, f"127.0.0.1:{self.a.port}")
        self.a.must("vaults", "create", "src")
        for path in ("out0", "sub/k0", "sub/d/k1", "other/k2"):
            self.a.must("secrets", "write", f"src:{path}", stdin=token(self.rng, 0).encode())
        self.a.must("vaults", "share", f"src:{FOLDER}", self.b.node_id, "--perm", "clone,pull")
        self.note_view()
        self.b.must("vaults", "clone", self.a.node_id, "src", "fp")
        self.fp_idx = self.judge_view(None, "fp", 0, "b's first clone of the folder")

    def note_view(self) -> None:
        now = view(self.read(self.a, "src")[1])
        if not self.views or self.views[-1] != now:
            self.views.append(now)

    def judge_view(
        self, done: Done | None, vault: str, floor: int, what: str, how: str = ""
    ) -> int:
        _, secrets = self.read(self.b, vault, how or None)
        got = {k.split(":", 1)[1]: v for k, v in secrets.items()}
        idx = next((i for i in range(len(self.views) - 1, -1, -1) if self.views[i] == got), None)
        why = ""
        if idx is None:
            outside = sorted(p for p in got if not p.startswith(FOLDER + "/"))
            why = f"holds {outside} outside {FOLDER}/" if outside else "not one of a's views"
            why += f": {diff(self.views[-1], got)}"
        elif idx < floor:
            why = f"went back from view #{floor} to #{idx}"
        self.record(
            acked=done is not None and done.acked,
            applied=not why and idx == len(self.views) - 1,
            unchanged=not why,
            what=what,
            detail=lambda: why or f"at view #{idx} of {len(self.views) - 1}",
        )
        return floor if idx is None or why else idx

    def vaults_of_b(self) -> list[str]:
        return sorted(v["name"] for v in reader.vault_list(self.b))

    def step(self, budget_s: float) -> None:
        inside = self.rng.random() < 0.6
        key = (
            f"src:{FOLDER}/k{self.rng.randrange(3)}" if inside else f"src:o{self.rng.randrange(3)}"
        )
        self.a.must("secrets", "write", key, stdin=token(self.rng, self.run_no).encode())
        self.note_view()
        if self.rng.random() < 0.5:
            name = f"f{self.run_no}"
            done = self.act("clone", "vaults", "clone", self.a.node_id, "src", name)
            if done.killed or self.mode == "client-agent":
                self.b.settle()
            present = name in self.vaults_of_b()
            end = f"clone {'acknowledged' if done.acked else 'unacknowledged'}: "
            self.ends[end + ("made" if present else "absent")] = (
                self.ends.get(end + ("made" if present else "absent"), 0) + 1
            )
            if present:
                self.judge_view(done, name, 0, f"clone of the folder into {name}")
                self.later_pull(name, 0)
                self.b.must("vaults", "rm", name, "--yes")
            else:
                self.record(
                    acked=done.acked,
                    applied=False,
                    unchanged=True,
                    what=f"clone of the folder into {name}",
                    detail=lambda: "no such vault on b",
                )
        else:
            done = self.act("pull", "vaults", "pull", "fp")
            if done.killed:
                self.b.settle()
            self.fp_idx = self.judge_view(done, "fp", self.fp_idx, "pull of the folder")
        self.fp_idx = self.later_pull("fp", self.fp_idx)

    def later_pull(self, vault: str, floor: int) -> int:
        """An unkilled pull works and brings the view of a's head."""
        done = self.b.pk("vaults", "pull", vault)
        self.note_exit(done)
        if not done.acked:
            self.stats.torn += 1
            self.stats.incident(f"LATER PULL FAILED: {self.where()}: {vault}: {done.why()}")
            return floor
        return self.judge_view(done, vault, floor, f"the next pull of {vault}")

    def final(self) -> None:
        for how in ("cli", "direct"):
            self.judge_view(None, "fp", self.fp_idx, "fp at the end", how)
        extra = [n for n in self.vaults_of_b() if n != "fp"]
        if extra:
            self.stats.torn += 1
            self.stats.incident(f"LEFT OVER at the end: {self.label}: b holds {extra}")

    def summary_notes(self) -> None:
        super().summary_notes()
        ends = "; ".join(f"{n} {what}" for what, n in sorted(self.ends.items()))
        self.stats.note(f"{self.label}: clones ended: {ends}")
