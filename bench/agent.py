"""Agent figures: whole-process `pk secrets cat/write` through the agent next to `pass`,
agent start-up with the default KDF, and the agent's idle memory with 100 vaults."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, median_ms, run_process
from bench.vaults import setup_pass
from polykey.node import DEFAULT_KDF, Node

PASSWORD = "bench password"


def section(quick: bool) -> list[Row]:
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-agent-"))
    py = sys.executable
    pk = shutil.which("pk", path=str(Path(py).parent)) or "pk"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    env.update(PK_NODE=str(tmp / "node.pk"), PK_RUNTIME_DIR=str(tmp / "run"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # timed as an installed `pk` runs: compiled once
    try:
        node, _ = Node.bootstrap(tmp / "node.pk", PASSWORD.encode(), kdf=DEFAULT_KDF)
        for i in range(100):
            vault = node.vaults.create(f"v{i:03d}")
            vault.write("db/password", os.urandom(16).hex().encode())
        node.close()
        starts = []
        for _ in range(2 if quick else 5):
            t = time.perf_counter()
            subprocess.run(
                [pk, "agent", "start", "--background"],
                env={**env, "PK_PASSWORD": PASSWORD},
                check=True,
                capture_output=True,
            )
            starts.append(time.perf_counter() - t)
            subprocess.run([pk, "agent", "stop"], env=env, check=True, capture_output=True)
        rows.append(
            (
                "pk agent start --background to ready, default KDF",
                f"{median_ms(starts):.0f} ms",
                "< 1 s",
            )
        )
        subprocess.run(
            [pk, "agent", "start", "--background"],
            env={**env, "PK_PASSWORD": PASSWORD},
            check=True,
            capture_output=True,
        )
        n = 15 if quick else 40
        penv = setup_pass(tmp)
        if penv is not None:
            subprocess.run(
                ["pass", "insert", "-m", "team/s1"],
                env=penv,
                input=b"v",
                check=True,
                capture_output=True,
            )
        # pk and pass in turn (A B A B ...), so that a drift of the machine's speed hits both
        cats, writes, shows, inserts = [], [], [], []
        for i in range(n):
            cats += run_process([pk, "secrets", "cat", "v001:db/password"], env, 1)
            writes += run_process([pk, "secrets", "write", f"v002:w/{i}"], env, 1, stdin=b"value")
            if penv is not None:
                shows += run_process(["pass", "show", "team/s1"], penv, 1)
                inserts += run_process(["pass", "insert", "-m", f"team/x{i}"], penv, 1, stdin=b"v")
        status = subprocess.run(
            [pk, "agent", "status", "--format", "json"], env=env, check=True, capture_output=True
        ).stdout
        import json

        pid = json.loads(status)["pid"]
        rss_kb = _rss_kb(pid)
        cat_ms, write_ms = median_ms(cats), median_ms(writes)
        rows.append(("pk secrets cat, agent running (whole process)", f"{cat_ms:.0f} ms", ""))
        rows.append(("pk secrets write, agent running (whole process)", f"{write_ms:.0f} ms", ""))
        if penv is None:
            rows.append(("pass show / insert", "not installed", ""))
        else:
            show_ms, insert_ms = median_ms(shows), median_ms(inserts)
            rows.append(("pass show (whole process), same run", f"{show_ms:.0f} ms", "peer"))
            rows.append(("pass insert (whole process), same run", f"{insert_ms:.0f} ms", "peer"))
            cat_r = statistics.median(a / b for a, b in zip(cats, shows, strict=True))
            write_r = statistics.median(a / b for a, b in zip(writes, inserts, strict=True))
            rows.append(("  ratio cat / pass show (median of pairs)", f"{cat_r:.2f}", "< 0.7"))
            rows.append(
                ("  ratio write / pass insert (median of pairs)", f"{write_r:.2f}", "< 0.6")
            )
        rows.append(
            ("agent resident memory, idle, 100 vaults", f"{rss_kb / 1024:.0f} MB", "< 80 MB")
        )
        subprocess.run([pk, "agent", "stop"], env=env, check=False, capture_output=True)
    finally:
        subprocess.run([pk, "agent", "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
