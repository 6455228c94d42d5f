"""Shell completion figures: the whole `pk` process a shell runs for one TAB, through the agent,
in a vault of 10,000 secrets, next to a bare `python -c pass` of the same interpreter, measured
in turns in the same run; and once through bash's own completion function.

The processes get their bytecode cached (PYTHONPYCACHEPREFIX, in the bench's temporary folder),
as an installed `pk` has it, even where PYTHONDONTWRITEBYTECODE is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, median_ms
from bench.vaults import _fill
from polykey.node import DEFAULT_KDF, Node

PASSWORD = "bench password"


def section(quick: bool) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-completion-"))
    py = sys.executable
    pk = shutil.which("pk", path=str(Path(py).parent)) or "pk"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        PK_NODE=str(tmp / "node.pk"),
        PK_RUNTIME_DIR=str(tmp / "run"),
        PYTHONPYCACHEPREFIX=str(tmp / "pycache"),
    )
    try:
        node, _ = Node.bootstrap(tmp / "node.pk", PASSWORD.encode(), kdf=DEFAULT_KDF)
        _fill(node.vaults.create("big"), 0, 10_000)  # team00..team99/svc0..6/sNNNNN
        flat = node.vaults.create("flat")
        flat.write_many([(f"s{i:05d}", b"v") for i in range(10_000)], "Import secrets.")
        for i in range(20):
            node.vaults.create(f"vault{i:02d}")
        node.close()
        subprocess.run(
            [pk, "agent", "start", "--background"],
            env={**env, "PK_PASSWORD": PASSWORD},
            check=True,
            capture_output=True,
        )
        script = tmp / "pk.bash"
        made = subprocess.run([pk, "completion", "bash"], env=env, check=True, capture_output=True)
        script.write_bytes(made.stdout)
        tab = {**env, "_PK_COMPLETE": "bash_complete"}
        bash_line = "pk secrets cat big:team42/svc3/"
        runs: list[tuple[str, list[str], dict[str, str], str]] = [
            (f"{Path(py).name} -c pass (same interpreter, same run)", [py, "-c", "pass"], env, ""),
            _tab("pk secrets cat b<TAB>: a vault name (22 vaults)", pk, tab, ""),
            _tab("pk secrets cat big:team4<TAB>: 10 folders", pk, tab, "< 50 ms"),
            _tab("pk secrets cat big:team42/svc3/<TAB>: 14 secrets", pk, tab, "< 50 ms"),
            _tab("pk read pk://big/team4<TAB>", pk, tab, "< 50 ms"),
            _tab("pk secrets cat flat:s09<TAB>: 1,000 of a folder of 10,000", pk, tab, ""),
            _tab("pk secrets cat flat:<TAB>: all of a folder of 10,000", pk, tab, ""),
            _tab("pk se<TAB>: a command name (click)", pk, tab, ""),
            (
                "bash -c with _pk_completion, big:team42/svc3/<TAB>",
                ["bash", "--norc", "-c", _bash_tab(script, pk, bash_line)],
                env,
                "< 50 ms",
            ),
        ]
        for name, args, run_env, _ in runs:  # warm: bytecode written, caches filled
            out = subprocess.run(args, env=run_env, check=True, capture_output=True).stdout
            if "<TAB>" in name and not out.strip():
                raise RuntimeError(f"no completion for {name}")
        n = 11 if quick else 41
        samples: list[list[float]] = [[] for _ in runs]
        for _ in range(n):  # in turns, so that the load of a shared machine hits each alike
            for k, (_, args, run_env, _) in enumerate(runs):
                t = time.perf_counter()
                subprocess.run(args, env=run_env, check=True, capture_output=True)
                samples[k].append(time.perf_counter() - t)
        base = median_ms(samples[0])
        rows: list[Row] = []
        for k, (name, _, _, target) in enumerate(runs):
            ms = median_ms(samples[k])
            shown = f"{ms:.0f} ms" if k == 0 else f"{ms:.0f} ms ({ms / base:.1f}x)"
            rows.append((name, shown, target))
        return rows
    finally:
        subprocess.run([pk, "agent", "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _tab(
    name: str, pk: str, env: dict[str, str], target: str
) -> tuple[str, list[str], dict[str, str], str]:
    """A row for the words before <TAB> in ``name``: the process the completion scripts run."""
    words = name.partition("<TAB>")[0].split()
    return name, [pk, *words[1:]], env, target


def _bash_tab(script: Path, pk: str, line: str) -> str:
    """A bash command that completes ``line`` as readline would at its end (COMP_WORDS split at
    ':' as bash splits them) and prints the completions."""
    words = line.replace(":", " : ").split()
    quoted = " ".join(f"'{w}'" for w in words)
    return (
        f"source '{script}'; COMP_LINE='{line}'; COMP_POINT={len(line)}; "
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
        f'_pk_completion "{pk}"; printf "%s\\n" "${{COMPREPLY[@]}}"'
    )
