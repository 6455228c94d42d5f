"""Scale (#16): one agent serving many peers at once. Each peer is its own `pk` process with its
own node file and SSH connection, and pulls its share of many shared vaults (`pk vaults pull
--all`); all peers start together. Printed: vault pulls per second, the median and 95th
percentile of one peer's whole pull (its process, start to end), the serving agent's peak
RSS, and every refusal with its reason (each must be one the agent's limits explain).

`python -m bench.scale PEERS VAULTS` runs one size on its own; the bench runs 100 peers and
1,000 vaults (20 and 200 with --quick).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Row, two_nodes
from polykey.ids import NodeId
from polykey.node import FAST_INSECURE_KDF, Node


@dataclass
class Scale:
    peers: int
    vaults: int
    pulled: int = 0  # vault pulls that brought the new commit
    wall: float = 0.0  # from the first peer's start to the last one's end
    latencies: list[float] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    agent_rss_kib: int = 0

    @property
    def per_second(self) -> float:
        return self.pulled / self.wall if self.wall else 0.0

    def p95(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0


def measure(peers: int, vaults: int) -> Scale:
    """Set up, pull once with every peer at the same time, and tear down."""
    tmp, pk, server_env, _, port = two_nodes("pk-bench-scale-")
    out = Scale(peers, vaults)
    run = _runner(pk, server_env)
    try:
        server, _ = Node.bootstrap(tmp / "a.pk", b"a", kdf=FAST_INSECURE_KDF, allow_weak=True)
        server_id = server.node_id
        clients = [
            Node.bootstrap(tmp / f"p{i}.pk", b"p", kdf=FAST_INSECURE_KDF, allow_weak=True)[0]
            for i in range(peers)
        ]
        names = [f"v{j:04d}" for j in range(vaults)]
        for j, name in enumerate(names):
            vault = server.vaults.create(name)
            vault.write("app/key", os.urandom(16).hex().encode())
            server.acl.grant(vault.id, clients[j % peers].node_id, ["clone", "pull"])
        server.close()
        run("agent", "start", "--background", "--port", str(port))
        try:
            _clone_all(clients, server_id, port, names)
            run("agent", "stop")
            server = Node.open(tmp / "a.pk", b"a", allow_weak=True)
            for name in names:  # one new commit in every vault
                server.vaults.open(name).write("app/key", os.urandom(16).hex().encode())
            server.close()
            run("agent", "start", "--background", "--port", str(port))
            pid = int(json.loads(run("agent", "status", "--format", "json"))["pid"])
            _pull_all(out, pk, server_env, tmp)
            out.agent_rss_kib = _peak_rss(pid)
        finally:
            subprocess.run([pk, "agent", "stop"], env=server_env, capture_output=True, check=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _runner(pk: str, env: dict[str, str]) -> Callable[..., str]:
    def run(*args: str) -> str:
        done = subprocess.run([pk, *args], env=env, check=True, capture_output=True, text=True)
        return done.stdout

    return run


def _clone_all(clients: list[Node], server_id: NodeId, port: int, names: list[str]) -> None:
    """Every peer clones its share of the vaults (in this process, one connection each)."""
    from polykey.network.graph import parse_address
    from polykey.sync.client import clone

    for i, node in enumerate(clients):
        node.graph.add(server_id, parse_address(f"127.0.0.1:{port}"))
        for name in names[i :: len(clients)]:
            clone(node.vaults, node.peers, server_id, name, None)
        node.close()


def _pull_all(out: Scale, pk: str, server_env: dict[str, str], tmp: Path) -> None:
    """Start every peer's `pk vaults pull --all` at once; time each, count what came."""

    def one(i: int) -> tuple[float, int, str]:
        env = {
            **server_env,
            "PK_NODE": str(tmp / f"p{i}.pk"),
            "PK_PASSWORD": "p",
            "PK_RUNTIME_DIR": str(tmp / f"run-p{i}"),
        }
        t = time.perf_counter()
        done = subprocess.run(
            [pk, "vaults", "pull", "--all", "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.perf_counter() - t
        if done.returncode != 0:
            return took, 0, (done.stderr.strip().splitlines() or ["(no message)"])[0]
        results = json.loads(done.stdout)["pulled"]
        errors = [r["error"] for r in results if r.get("error")]
        return took, sum(1 for r in results if r.get("updated")), "; ".join(errors)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=out.peers) as pool:
        for took, pulled, refusal in pool.map(one, range(out.peers)):
            out.latencies.append(took)
            out.pulled += pulled
            if refusal:
                out.refusals[refusal] += 1
    out.wall = time.perf_counter() - start


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rows(s: Scale) -> list[Row]:
    out: list[Row] = [
        (
            f"{s.peers} peers at once pull {s.vaults} vaults (1 new commit each)",
            f"{s.pulled}/{s.vaults} pulled",
            "all",
        ),
        ("  vault pulls per second", f"{s.per_second:.0f}/s", ""),
        ("  one peer's whole pull, median", f"{statistics.median(s.latencies) * 1000:.0f} ms", ""),
        ("  one peer's whole pull, 95th percentile", f"{s.p95() * 1000:.0f} ms", ""),
        ("  the serving agent's peak RSS", f"{s.agent_rss_kib / 1024:.0f} MiB", ""),
    ]
    for reason, n in s.refusals.most_common():
        out.append((f"  refused ({n}x): {reason[:70]}", "", "a limit"))
    return out


def section(quick: bool) -> list[Row]:
    return rows(measure(20, 200) if quick else measure(100, 1000))


if __name__ == "__main__":
    peers, vaults = (int(a) for a in sys.argv[1:3])
    for name, value, target in rows(measure(peers, vaults)):
        print(f"{name:<60} {value:>16}  {target}")
