"""Node-file figures: unlock, record writes and reads, cold process start."""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import Row, median_ms, run_process, timed
from polykey.node import DEFAULT_KDF, Node
from polykey.store.records import Namespace

PASSWORD = b"benchmark password"
NS = Namespace("bench/records")


def section(quick: bool) -> list[Row]:
    reps = 3 if quick else 1
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-"))
    try:
        path = tmp / "node.pk"
        node, _ = Node.bootstrap(path, PASSWORD, kdf=DEFAULT_KDF)
        node.close()
        unlock = timed(lambda: Node.open(path, PASSWORD).close(), 7 // reps + 2)
        rows.append(
            ("unlock, default KDF (64 MiB, t=3, p=4)", f"{median_ms(unlock):.0f} ms", "0.1-0.5 s")
        )
        node = Node.open(path, PASSWORD)
        store = node.store
        with store.write() as tx:
            for i in range(1000):
                tx.put(NS, f"seed/{i:05d}".encode(), os.urandom(64))
        counter = iter(range(10**9))

        def put_one() -> None:
            with store.write() as tx:
                tx.put(NS, f"w/{next(counter):06d}".encode(), os.urandom(64))

        writes = timed(put_one, 1500 // reps)
        rows.append(
            ("write 1 record (1 transaction, fsync)", f"{median_ms(writes):.2f} ms", "< 2 ms")
        )
        rows.append(
            (
                "write throughput, 1 record/transaction",
                f"{1 / statistics.median(writes):.0f} /s",
                "",
            )
        )

        def put_batch() -> None:
            i = next(counter)
            with store.write() as tx:
                for j in range(100):
                    tx.put(NS, f"b/{i:06d}/{j:03d}".encode(), os.urandom(64))

        batch = timed(put_batch, 30 // reps)
        rows.append(
            (
                "write throughput, 100 records/transaction",
                f"{100 / statistics.median(batch):.0f} /s",
                "",
            )
        )
        keys = [f"seed/{i:05d}".encode() for i in range(1000)]
        reads = timed(lambda: [store.get(NS, k) for k in keys], 10)
        rows.append(
            ("read 1 record, node open", f"{min(reads) / len(keys) * 1e6:.0f} µs", "< 0.1 ms")
        )
        node.close()

        env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
        env.update(PK_NODE=str(path), PK_PASSWORD=PASSWORD.decode())
        py = sys.executable
        pk = shutil.which("pk", path=str(Path(py).parent)) or "pk"
        cold_read = (
            "from pathlib import Path; from polykey.node import Node; "
            "from polykey.store.records import Namespace; "
            f"n = Node.open(Path({str(path)!r}), {PASSWORD!r}); "
            "assert n.store.get(Namespace('bench/records'), b'seed/00001'); n.close()"
        )
        cold = run_process([py, "-c", cold_read], env, 7 // reps + 2)
        rows.append(
            ("cold process: open node + read 1 record", f"{median_ms(cold):.0f} ms", "KDF-bound")
        )
        bare = run_process([py, "-c", "pass"], env, 7 // reps + 2)
        rows.append(("  (bare python startup, for scale)", f"{median_ms(bare):.0f} ms", ""))
        version = run_process([pk, "--version"], env, 15 // reps + 2)
        rows.append(("pk --version (wall)", f"{median_ms(version):.0f} ms", "< 60 ms"))
        info = run_process([pk, "node", "info"], env, 7 // reps + 2)
        rows.append(("pk node info, cold (PK_PASSWORD)", f"{median_ms(info):.0f} ms", "KDF-bound"))
        rows.append(
            (
                "  of which not the KDF (startup, imports)",
                f"{median_ms(info) - median_ms(unlock):.0f} ms",
                "< KDF",
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
