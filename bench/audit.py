"""The audit log: `pk audit verify` of 100,000 records (target: under 2 s), and what recording
adds to each request (an agent's `secrets cat` round trip is about 1 ms).

One node (fast test KDF) with 100,000 records appended in batches; verified by a whole
`pk audit verify` process (no agent: unlock, read every record, check the chain) and in
process. The cost per request: one record appended (one fsync'd SQLite commit), and
`secrets.cat` called as the agent calls it, recorded and not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, median_ms, timed
from polykey.agent import methods
from polykey.agent.methods.audit import call_recorded
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults.audit import Event

RECORDS = 100_000
BATCH = 5_000
PASSWORD = "bench audit"


def section(quick: bool) -> list[Row]:
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-audit-"))
    try:
        path = tmp / "node.pk"
        node, _ = Node.bootstrap(path, PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True)
        vault = node.vaults.create("work")
        vault.write("db/password", b"correct horse")
        rows += _per_call(node, quick)
        event = Event("local", "secrets.cat", "work", "db/password", "ab" * 20)
        have = node.audit.head().count
        for start in range(have, RECORDS, BATCH):
            node.audit.append([event] * min(BATCH, RECORDS - start))
        cpu = time.process_time()
        runs = timed(node.audit.verify, 1 if quick else 3)
        cpu = (time.process_time() - cpu) / len(runs)
        node.close()
        rows.append((f"audit verify, {RECORDS:,} records, in process", _ms(runs), "< 2 s"))
        rows.append((f"audit verify, {RECORDS:,} records, in process (CPU)", _ms([cpu]), ""))
        pk = shutil.which("pk", path=str(Path(sys.executable).parent)) or "pk"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
        env.update(PK_NODE=str(path), PK_PASSWORD=PASSWORD, PK_UNSAFE_FAST_KDF="1")
        env.update(PK_NO_AGENT="1")
        whole = []
        cpu = _children_cpu()
        for _ in range(1 if quick else 3):
            t = time.perf_counter()
            done = subprocess.run(
                [pk, "audit", "verify"], env=env, capture_output=True, check=False
            )
            whole.append(time.perf_counter() - t)
            if done.returncode != 0:
                raise SystemExit(done.stderr.decode())
        cpu = (_children_cpu() - cpu) / len(whole)
        rows.append((f"pk audit verify, {RECORDS:,} records (process)", _ms(whole), "< 2 s"))
        rows.append((f"pk audit verify, {RECORDS:,} records (process CPU)", _ms([cpu]), ""))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _per_call(node: Node, quick: bool) -> list[Row]:
    n = 200 if quick else 1000
    event = Event("local", "secrets.cat", "work", "db/password", "ab" * 20)
    append = timed(lambda: node.audit.append([event]), n)
    params = {"items": [["work", "db/password"]]}
    plain = timed(lambda: methods.call(node, "secrets.cat", dict(params)), n)
    recorded = timed(lambda: call_recorded(node, "secrets.cat", dict(params)), n)
    added = median_ms(recorded) - median_ms(plain)
    return [
        ("audit: one record appended (fsync'd commit)", f"{median_ms(append):.2f} ms", "small"),
        ("audit: secrets.cat in process, not recorded", f"{median_ms(plain):.2f} ms", ""),
        ("audit: secrets.cat in process, recorded", f"{median_ms(recorded):.2f} ms", ""),
        ("audit: added per recorded request", f"{added:.2f} ms", "small vs ~1 ms"),
    ]


def _children_cpu() -> float:
    """CPU seconds of the waited-for child processes so far (the wall time on a shared machine
    also counts the waits for a core)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _ms(samples: list[float]) -> str:
    return f"{median_ms(samples):.0f} ms"
