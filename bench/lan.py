"""LAN discovery (#16: "under 1.5 s, Polykey's mDNS timeout"): two hosts as network namespaces
on one link (a veth pair, no route anywhere else: multicast never leaves them), an agent on
each started with `--lan`. Alice's announces her record; each repetition starts Bob's agent
afresh (an empty mDNS cache) and times `pk nodes find --fresh ALICE` from asking to the
answer, as a user sees it (the `pk` process included). Then the LAN strategy alone
(mdns.ByLan), each lookup on a fresh zeroconf inside Bob's namespace. Needs root and iproute2;
prints the median and 95th percentile."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import Row, two_nodes

NET = "10.233.7"
ALICE_IP, BOB_IP = f"{NET}.1", f"{NET}.2"
PORT = 1314
TARGET = "< 1500 ms"
ROOT = str(Path(__file__).resolve().parents[1])


def section(quick: bool) -> list[Row]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return [("LAN discovery (needs root and iproute2: skipped)", "-", TARGET)]
    spaces = _link()
    if spaces is None:
        return [("LAN discovery (no network namespaces here: skipped)", "-", TARGET)]
    try:
        return _measure(spaces, 5 if quick else 15)
    finally:
        for ns in spaces:
            _ip("netns", "del", ns)


def _ip(*args: str) -> bool:
    return subprocess.run(["ip", *args], capture_output=True, check=False).returncode == 0


def _link() -> tuple[str, str] | None:
    """Two namespaces joined by a veth pair: the whole LAN, reaching nothing else."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"pkla{tag}", f"pklb{tag}"
    made = [ns for ns in (a, b) if _ip("netns", "add", ns)]
    steps = [
        ("link", "add", f"vla{tag}", "type", "veth", "peer", "name", f"vlb{tag}"),
        ("link", "set", f"vla{tag}", "netns", a),
        ("link", "set", f"vlb{tag}", "netns", b),
        ("-n", a, "addr", "add", f"{ALICE_IP}/24", "dev", f"vla{tag}"),
        ("-n", b, "addr", "add", f"{BOB_IP}/24", "dev", f"vlb{tag}"),
    ]
    steps += [("-n", ns, "link", "set", dev, "up") for ns in (a, b) for dev in ("lo",)]
    steps += [
        ("-n", a, "link", "set", f"vla{tag}", "up"),
        ("-n", b, "link", "set", f"vlb{tag}", "up"),
    ]
    if len(made) < 2 or not all(_ip(*step) for step in steps):
        for ns in made:
            _ip("netns", "del", ns)
        return None
    return a, b


def _measure(spaces: tuple[str, str], n: int) -> list[Row]:
    tmp, pk, alice, bob, _ = two_nodes("pk-bench-lan-")
    a_ns, b_ns = spaces

    def run(env: dict[str, str], *args: str, ns: str | None = None) -> bytes:
        argv = [pk, *args] if ns is None else ["ip", "netns", "exec", ns, pk, *args]
        return subprocess.run(argv, env=env, check=True, capture_output=True).stdout

    lan = ("--port", str(PORT), "--lan", "--no-publish")
    try:
        for env in (alice, bob):
            run(env, "bootstrap")
        alice_id = json.loads(run(alice, "keys", "public", "--format", "json"))["node_id"]
        run(alice, "agent", "start", "-b", "--host", ALICE_IP, *lan, ns=a_ns)
        time.sleep(2.5)  # her announcements are over: Bob's answers come from his queries
        found: list[float] = []
        for _ in range(n):
            run(bob, "agent", "start", "-b", "--host", BOB_IP, *lan, ns=b_ns)
            t = time.perf_counter()
            answer = run(bob, "nodes", "find", "--fresh", alice_id, "--format", "json")
            found.append((time.perf_counter() - t) * 1000)
            assert json.loads(answer)["how"] == "lan", answer
            run(bob, "agent", "stop")
        strategy = _probe(b_ns, alice_id, n)
    finally:
        for env in (alice, bob):
            subprocess.run([pk, "agent", "stop"], env=env, capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return [
        *_rows("`pk nodes find --fresh` through an agent, LAN", found),
        *_rows("mDNS lookup alone (mdns.ByLan, cold cache)", strategy),
    ]


def _rows(name: str, samples: list[float]) -> list[Row]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return [
        (f"{name}: median", f"{statistics.median(samples):.0f} ms", TARGET),
        (f"{name}: p95", f"{p95:.0f} ms", TARGET),
    ]


def _probe(ns: str, node_id: str, n: int) -> list[float]:
    """``n`` lookups by the LAN strategy, run in ``ns`` (this module's ``probe``)."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.lan", "probe", node_id, str(n)]
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    samples = json.loads(done.stdout)
    assert isinstance(samples, list)
    return [float(s) for s in samples]


def probe(node_id: str, n: int) -> None:
    """In Bob's namespace: each lookup on a fresh zeroconf (no cached answer), timed alone."""
    import asyncio

    from polykey.ids import decode_node_id
    from polykey.network import mdns

    target = decode_node_id(node_id)
    samples = []
    for _ in range(n):
        zc = mdns.open_zeroconf(BOB_IP)
        try:
            t = time.perf_counter()
            found = asyncio.run(mdns.ByLan(zc).find(target))
            samples.append((time.perf_counter() - t) * 1000)
            assert found is not None and found.how == "lan"
        finally:
            zc.close()
    print(json.dumps(samples))


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe"]:
        probe(sys.argv[2], int(sys.argv[3]))
