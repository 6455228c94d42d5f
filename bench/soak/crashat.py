"""`pk` crashed at a chosen write COMMIT of the node file, as its own process:

    python -m bench.soak.crashat N before|after PK-ARGS...

The command runs as `pk PK-ARGS...` does, with every SQLite connection traced: at the N-th
`COMMIT` of a write transaction (one begun `BEGIN IMMEDIATE`) the process ends at once with
`os._exit(CRASHED)`, *before* that COMMIT runs, or (``after``) at the first statement after it
ran (so the transaction is on disk and nothing later is). A crash at a COMMIT is the moment a
random kill rarely hits. A run that never reaches the N-th COMMIT ends as it would; with
SOAK_COMMITS_OUT set, it writes there how many write COMMITs it made (the soak learns the count
from unkilled runs). Only for commands that run without an agent (`PK_NO_AGENT=1`): the agent is
another process.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import sys
from typing import Any

CRASHED = 137  # the exit status of a SIGKILLed process, as a shell shows it


def main(argv: list[str]) -> None:
    target, when, args = int(argv[0]), argv[1], argv[2:]
    state = {"writing": False, "commits": 0, "armed": False}
    real = sqlite3.connect

    def trace(sql: str) -> None:
        if state["armed"]:
            os._exit(CRASHED)
        word = sql.strip().upper()
        if word.startswith("BEGIN IMMEDIATE"):
            state["writing"] = True
        elif word == "COMMIT" and state["writing"]:
            state["writing"] = False
            state["commits"] += 1
            if state["commits"] == target:
                if when == "before":
                    os._exit(CRASHED)
                state["armed"] = True
        elif word == "ROLLBACK":
            state["writing"] = False

    def connect(*a: Any, **k: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real(*a, **k)
        conn.set_trace_callback(trace)
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]
    out = os.environ.get("SOAK_COMMITS_OUT")
    if out:
        atexit.register(lambda: _write(out, int(state["commits"])))
    sys.argv = ["pk", *args]
    from polykey.cli.main import main as pk

    pk()


def _write(path: str, count: int) -> None:
    with open(path, "w") as f:
        f.write(str(count))


if __name__ == "__main__":
    main(sys.argv[1:])


# --- the soak's side ------------------------------------------------------------------------------


class CommitClock:
    """Where to crash: learns how many write COMMITs a kind of command makes when it is left
    alone, then crashes it before or after a random one of them; some runs are left alone."""

    def __init__(self, rng: Any, spare: float = 0.1) -> None:
        self.rng = rng
        self.spare = spare
        self.counts: dict[str, int] = {}

    def run(self, node: Any, kind: str, *args: str, stdin: bytes | None = None) -> Any:
        """Run `pk ARGS` on ``node``'s file (no agent), maybe crashed at a COMMIT; a Done whose
        ``killed`` says whether it crashed."""
        from bench.soak import procs

        known = self.counts.get(kind)
        target, when = 0, "before"
        if known and self.rng.random() >= self.spare:
            target, when = self.rng.randint(1, known), self.rng.choice(("before", "after"))
        counted = node.path.parent / f".commits-{kind}"
        counted.unlink(missing_ok=True)
        env = node.env_for(direct=True) | {"SOAK_COMMITS_OUT": str(counted)}
        argv = [sys.executable, "-m", "bench.soak.crashat", str(target), when, *args]
        done = procs.run(argv, env, stdin=stdin, cwd=REPO)
        done.killed = done.kill_sent = done.code == CRASHED
        if done.code == 0 and counted.exists():
            self.counts[kind] = max(self.counts.get(kind, 0), int(counted.read_text() or 0))
        return done


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
