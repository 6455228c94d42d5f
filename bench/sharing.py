"""Sharing figures: clone of a 1,000-commit, 1,000-secret vault over loopback SSH, and a pull of
one new commit (each through a fresh `pk` process and SSH connection)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, median_ms
from polykey.ids import encode_node_id
from polykey.node import FAST_INSECURE_KDF, Node


def section(quick: bool) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-share-"))
    pk = shutil.which("pk", path=str(Path(sys.executable).parent)) or "pk"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    base.update(PK_UNSAFE_FAST_KDF="1", PK_RUNTIME_DIR=str(tmp / "run"))
    alice = {**base, "PK_NODE": str(tmp / "a.pk"), "PK_PASSWORD": "a"}
    bob = {**base, "PK_NODE": str(tmp / "b.pk"), "PK_PASSWORD": "b"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        a, _ = Node.bootstrap(tmp / "a.pk", b"a", kdf=FAST_INSECURE_KDF, allow_weak=True)
        b, _ = Node.bootstrap(tmp / "b.pk", b"b", kdf=FAST_INSECURE_KDF, allow_weak=True)
        aid, bid = encode_node_id(a.node_id), encode_node_id(b.node_id)
        vault = a.vaults.create("big")
        for i in range(1000):
            vault.write(f"team{i % 20:02d}/s{i:04d}", os.urandom(24).hex().encode())
        a.close()
        b.close()

        def run(env: dict[str, str], *args: str, stdin: bytes | None = None) -> None:
            subprocess.run([pk, *args], env=env, check=True, capture_output=True, input=stdin)

        run(alice, "vaults", "share", "big", bid)
        run(alice, "agent", "start", "--background", "--port", str(port))
        run(bob, "nodes", "add", aid, f"127.0.0.1:{port}")
        clones = []
        for i in range(1 if quick else 3):
            t = time.perf_counter()
            run(bob, "vaults", "clone", aid, "big", f"big{i}")
            clones.append(time.perf_counter() - t)
        pulls = []
        for i in range(5 if quick else 15):
            run(alice, "secrets", "write", f"big:team00/new{i}", stdin=b"new value")
            t = time.perf_counter()
            run(bob, "vaults", "pull", "big0")
            pulls.append(time.perf_counter() - t)
        from polykey.sync.fetch import pull

        node = Node.open(tmp / "b.pk", b"b", allow_weak=True)
        inproc = []
        for i in range(5 if quick else 15):
            run(alice, "secrets", "write", f"big:team01/new{i}", stdin=b"new value")
            t = time.perf_counter()
            pull(node.store, node.vaults, node.key, "big0")
            inproc.append(time.perf_counter() - t)
        node.close()
        return [
            (
                "clone 1,000 commits / 1,000 secrets, loopback SSH",
                f"{median_ms(clones):.0f} ms",
                "< 2 s",
            ),
            (
                "pull of 1 new commit, in-process (fresh SSH connection)",
                f"{median_ms(inproc):.0f} ms",
                "< 100 ms",
            ),
            ("pull of 1 new commit, whole `pk` process", f"{median_ms(pulls):.0f} ms", ""),
        ]
    finally:
        subprocess.run([pk, "agent", "stop"], env=alice, check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
