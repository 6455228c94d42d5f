"""A large history over the peer protocol: clone and pull of a vault whose history holds 200 MB
(eight 25 MB secrets), each in a fresh `pk` process against an agent, with the peak memory of
the cloning process, of the pulling process and of the agent. Before paged fetch such a vault
could not be cloned."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Row, two_nodes
from polykey.ids import encode_node_id
from polykey.node import FAST_INSECURE_KDF, Node

SECRET_BYTES = 25_000_000


def _incompressible(seed: int, size: int) -> bytes:
    block = b"".join(hashlib.sha512(b"%d-%d" % (seed, i)).digest() for i in range(1 << 14))
    return (block * (size // len(block) + 1))[:size]


def _peak_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(found.group(1)) if found else 0


def _peak_run(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run a command to its end: (seconds, its own peak resident memory in KiB)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(child.pid, 0)
        took = time.perf_counter() - t
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            out.seek(0)
            raise RuntimeError(f"{argv[1:3]} failed: {out.read()[-500:]!r}")
    return took, int(usage.ru_maxrss)


def section(quick: bool) -> list[Row]:
    tmp, pk, alice, bob, port = two_nodes("pk-bench-large-")
    count = 8
    try:
        a, _ = Node.bootstrap(tmp / "a.pk", b"a", kdf=FAST_INSECURE_KDF, allow_weak=True)
        b, _ = Node.bootstrap(tmp / "b.pk", b"b", kdf=FAST_INSECURE_KDF, allow_weak=True)
        aid = encode_node_id(a.node_id)
        vault = a.vaults.create("large")
        for i in range(count):
            vault.write(f"files/{i}", _incompressible(i, SECRET_BYTES))
        a.acl.grant(vault.id, b.node_id, ["clone", "pull"])
        a.close()
        b.close()

        def run(env: dict[str, str], *args: str) -> str:
            done = subprocess.run([pk, *args], env=env, check=True, capture_output=True)
            return done.stdout.decode()

        run(alice, "agent", "start", "--background", "--port", str(port))
        agent_pid = int(re.findall(r"pid +(\d+)", run(alice, "agent", "status"))[0])
        run(bob, "nodes", "add", aid, f"127.0.0.1:{port}")
        clone_s, clone_kib = _peak_run([pk, "vaults", "clone", aid, "large"], bob)
        with Node.open(tmp / "a.pk", b"a", allow_weak=True) as a:
            a.vaults.open("large").write("files/new", _incompressible(99, SECRET_BYTES))
        pull_s, pull_kib = _peak_run([pk, "vaults", "pull", "large"], bob)
        agent_kib = _peak_kib(agent_pid)
        total_mb = count * SECRET_BYTES / 1e6
        return [
            (
                f"clone of a {total_mb:.0f} MB history ({count} x 25 MB secrets), loopback SSH",
                f"{clone_s * 1000:.0f} ms",
                "works",
            ),
            ("  peak memory of the cloning `pk` process", f"{clone_kib / 1024:.0f} MiB", ""),
            ("  peak memory of the serving agent", f"{agent_kib / 1024:.0f} MiB", ""),
            ("pull of one more 25 MB secret", f"{pull_s * 1000:.0f} ms", ""),
            ("  peak memory of the pulling `pk` process", f"{pull_kib / 1024:.0f} MiB", ""),
        ]
    finally:
        subprocess.run([pk, "agent", "stop"], env=alice, check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
