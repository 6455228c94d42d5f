"""Own nodes and merging: a pull that merges one concurrent edit on each side (over loopback
SSH, on an open connection), and `pk backup` of 100 vaults holding 10,000 secrets, first and
again after one change (the backup node in a file, opened in the same process)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Row, median_ms, two_nodes
from polykey.node import FAST_INSECURE_KDF, Node


def section(quick: bool) -> list[Row]:
    return _merge_pull(quick) + _backup(quick)


def _merge_pull(quick: bool) -> list[Row]:
    from polykey.network.graph import parse_address
    from polykey.sync.client import clone, pull, push

    tmp, pk, alice, _bob, port = two_nodes("pk-bench-merge-")
    a, _ = Node.bootstrap(tmp / "a.pk", b"a", kdf=FAST_INSECURE_KDF, allow_weak=True)
    b, _ = Node.bootstrap(tmp / "b.pk", b"b", kdf=FAST_INSECURE_KDF, allow_weak=True)
    vault = a.vaults.create("team")
    vault.write_many(
        [(f"app{i % 20:02d}/k{i:04d}", os.urandom(16).hex().encode()) for i in range(1000)], "Seed."
    )
    a.acl.grant(vault.id, b.node_id, ["pull", "push"])
    aid = a.node_id
    a.close()

    def run(*args: str, stdin: bytes | None = None) -> None:
        subprocess.run([pk, *args], env=alice, check=True, capture_output=True, input=stdin)

    run("agent", "start", "--background", "--port", str(port))
    merges: list[float] = []
    forwards: list[float] = []
    try:
        b.graph.add(aid, parse_address(f"127.0.0.1:{port}"))
        clone(b.vaults, b.peers, aid, "team", None)
        mine = b.vaults.open("team")
        rounds = 5 if quick else 15
        for i in range(rounds):
            run("secrets", "write", f"team:app00/k{i:04d}", stdin=f"alice {i}".encode())
            mine.write(f"app01/k{i:04d}", f"bob {i}".encode())  # one edit on each side
            t = time.perf_counter()
            result = pull(b.vaults, b.peers, "team")
            merges.append(time.perf_counter() - t)
            assert result["how"] == "merged", result
            push(b.vaults, b.peers, "team")  # alice takes the merge: the next pull is plain
            run("secrets", "write", f"team:app02/k{i:04d}", stdin=f"alice {i}".encode())
            t = time.perf_counter()
            result = pull(b.vaults, b.peers, "team")
            forwards.append(time.perf_counter() - t)
            assert result["how"] == "fast-forward", result
    finally:
        b.close()
        subprocess.run([pk, "agent", "stop"], env=alice, capture_output=True, check=False)
    return [
        ("pull that merges 1 edit each side, open conn", f"{median_ms(merges):.0f} ms", "< 150 ms"),
        ("pull that fast-forwards 1 commit, open conn", f"{median_ms(forwards):.0f} ms", ""),
    ]


def _backup(quick: bool) -> list[Row]:
    from polykey.backup import backup

    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-backup-"))
    node, _ = Node.bootstrap(tmp / "node.pk", b"n", kdf=FAST_INSECURE_KDF, allow_weak=True)
    vaults, per = (20, 100) if quick else (100, 100)
    try:
        for v in range(vaults):
            vault = node.vaults.create(f"v{v:03d}")
            items = [(f"s{i:03d}", os.urandom(16).hex().encode()) for i in range(per)]
            vault.write_many(items, "Seed.")
        target = tmp / "usb" / "backup.pk"
        target.parent.mkdir()
        t = time.perf_counter()
        backup(node, target, b"bk", kdf=FAST_INSECURE_KDF, allow_weak=True)
        first = time.perf_counter() - t
        again: list[float] = []
        for i in range(3 if quick else 5):
            node.vaults.open(f"v{i:03d}").write("s000", f"changed {i}".encode())
            t = time.perf_counter()
            backup(node, target, b"bk", allow_weak=True)
            again.append(time.perf_counter() - t)
    finally:
        node.close()
    label = f"{vaults} vaults, {vaults * per:,} secrets"
    return [
        (f"pk backup, first run ({label})", f"{first * 1000:.0f} ms", ""),
        (f"pk backup, one change since ({label})", f"{median_ms(again):.0f} ms", "< 1 s"),
    ]
