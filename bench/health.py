"""`pk health` over 10,000 secrets (target: under 10 s), and the breach file: converting Have I
Been Pwned's list and looking a password up in it.

Two nodes: a mixed one (2,000 entries of password, username, url and notes, 1,000 API tokens
and 1,000 one-line passwords: 10,000 secrets, 4,000 of them passwords, some reused, some with
later changes) and a worst case (10,000 secrets, every one a distinct 20-character password).
Each is checked by a whole `pk health` process (no agent: the check runs in that process and
builds zxcvbn's tables there), with a breach list of 1,000,000 hashes."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, median_ms
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults.breaches import BreachFile, convert

BREACH_LINES = 1_000_000
ALPHABET = string.ascii_letters + string.digits + "!#$%&*+-=?@^_"


def _password(rng: random.Random, n: int) -> bytes:
    return "".join(rng.choice(ALPHABET) for _ in range(n)).encode()


def _mixed(node: Node, rng: random.Random) -> None:
    vault = node.vaults.create("mixed")
    shared = [_password(rng, 10) for _ in range(50)]
    items: list[tuple[str, bytes]] = []
    for i in range(2000):
        entry = f"Group{i % 20}/Entry {i}"
        value = shared[i % 50] if i % 10 == 0 else _password(rng, rng.randint(8, 24))
        items += [
            (f"{entry}/password", value),
            (f"{entry}/username", f"user{i}@example.com".encode()),
            (f"{entry}/url", f"https://site{i}.example.com/login".encode()),
            (f"{entry}/notes", b"Security question: first pet.\nAnswer in the safe.\n"),
        ]
    items += [(f"services/svc{i}/API_TOKEN", os.urandom(20).hex().encode()) for i in range(1000)]
    items += [(f"apps/app{i}/DB_PASSWORD", _password(rng, 16)) for i in range(1000)]
    for k in range(0, len(items), 1000):
        vault.write_many(items[k : k + 1000], "Import 1000 secrets.")
    for i in range(100):  # later changes, one commit each
        vault.write(f"apps/app{i * 7}/DB_PASSWORD", _password(rng, 16))


def _worst(node: Node, rng: random.Random) -> None:
    vault = node.vaults.create("worst")
    items = [(f"p{i:05d}", _password(rng, 20)) for i in range(10_000)]
    for k in range(0, len(items), 2000):
        vault.write_many(items[k : k + 2000], "Import 2000 secrets.")


def _breach_list(path: Path, rng: random.Random, extra: list[bytes]) -> None:
    with path.open("wb") as f:
        lines = [
            f"{rng.getrandbits(160):040X}:{rng.randint(1, 9999)}\n" for _ in range(BREACH_LINES)
        ]
        lines += [f"{hashlib.sha1(p).hexdigest().upper()}:3\n" for p in extra]
        f.write("".join(sorted(lines)).encode())


def _children_cpu() -> float:
    """CPU seconds (user and system) of the waited-for child processes so far: on a shared
    machine the wall time also counts the waits for a core."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def section(quick: bool) -> list[Row]:
    rng = random.Random(15)
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-health-"))
    rows: list[Row] = []
    try:
        nodes = {}
        for name, fill in (("mixed", _mixed), ("worst", _worst)):
            path = tmp / name / "node.pk"
            node, _ = Node.bootstrap(path, b"bench", kdf=FAST_INSECURE_KDF, allow_weak=True)
            fill(node, rng)
            node.close()
            nodes[name] = path
        source = tmp / "pwned.txt"
        _breach_list(source, rng, [b"password", b"123456"])
        target = tmp / "breaches.pkb"
        t = time.perf_counter()
        with source.open("rb") as f:
            convert(f, target)
        convert_s = time.perf_counter() - t
        with BreachFile(target) as breaches:
            probes = [hashlib.sha1(os.urandom(8)).digest() for _ in range(20_000)]
            t = time.perf_counter()
            for probe in probes:
                breaches.breached(probe)
            lookup_us = (time.perf_counter() - t) / len(probes) * 1e6
        env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
        env.update(PK_UNSAFE_FAST_KDF="1", PK_PASSWORD="bench", PK_NO_AGENT="1")
        runs = 1 if quick else 3
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for name, path in nodes.items():
            args = [sys.executable, "-m", "polykey", "health", "--breaches", str(target)]
            for _ in range(runs):
                t = time.perf_counter()
                used = _children_cpu()
                done = subprocess.run(
                    args, env={**env, "PK_NODE": str(path)}, capture_output=True, check=False
                )
                times.setdefault(name, []).append(time.perf_counter() - t)
                cpu.setdefault(name, []).append(_children_cpu() - used)
                if done.returncode not in (0, 7):
                    raise RuntimeError(done.stderr.decode(errors="replace"))
        rows += [
            ("pk health, 10,000 secrets (whole process, no agent):", "", ""),
            (
                "  mixed: 4,000 passwords, entries, tokens (wall / CPU)",
                f"{median_ms(times['mixed']) / 1000:.1f} / {median_ms(cpu['mixed']) / 1000:.1f} s",
                "< 10 s",
            ),
            (
                "  worst: 10,000 distinct 20-character passwords (wall / CPU)",
                f"{median_ms(times['worst']) / 1000:.1f} / {median_ms(cpu['worst']) / 1000:.1f} s",
                "< 10 s",
            ),
            (
                f"breach list of {BREACH_LINES:,} hashes: import (sorted text)",
                f"{convert_s:.1f} s",
                "",
            ),
            ("  lookup of one password (binary search, mmap)", f"{lookup_us:.1f} µs", "µs"),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for row in section(quick="--quick" in sys.argv):
        print("  ".join(row))
