"""Relays (#16): a clone of a 1,000-secret vault (about 2 MiB in all) from a node reached
directly over loopback SSH, and from the same node reached through a relay (`--relay`, the node
registered with `--via-relay`): SSH inside SSH, the relay an agent of its own. Clones alternate,
each on a fresh connection; the ratio is the median of same-moment pairs."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import time

from bench.common import Row, median_ms, two_nodes
from polykey.ids import encode_node_id
from polykey.node import FAST_INSECURE_KDF, Node


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def section(quick: bool) -> list[Row]:
    from polykey.network.graph import Address
    from polykey.network.relay import RelaySpec
    from polykey.sync.client import clone

    tmp, pk, alice, _bob, port = two_nodes("pk-bench-relay-")
    relay_env = {**alice, "PK_NODE": str(tmp / "r.pk"), "PK_PASSWORD": "r"}
    a, _ = Node.bootstrap(tmp / "a.pk", b"a", kdf=FAST_INSECURE_KDF, allow_weak=True)
    r, _ = Node.bootstrap(tmp / "r.pk", b"r", kdf=FAST_INSECURE_KDF, allow_weak=True)
    b, _ = Node.bootstrap(tmp / "b.pk", b"b", kdf=FAST_INSECURE_KDF, allow_weak=True)
    vault = a.vaults.create("big")
    items = [(f"team{i % 20:02d}/s{i:04d}", os.urandom(1024)) for i in range(1000)]
    vault.write_many(items, "Seed.")
    a.acl.grant(vault.id, b.node_id, ["clone", "pull"])
    aid, rid = a.node_id, r.node_id
    a.close()
    r.close()
    relay_port = _port()
    spec = RelaySpec(rid, Address("127.0.0.1", relay_port))

    def run(env: dict[str, str], *args: str) -> bytes:
        done = subprocess.run([pk, *args], env=env, check=True, capture_output=True)
        return done.stdout

    quiet = ("--no-lan", "--no-publish")
    run(relay_env, "agent", "start", "-b", "--port", str(relay_port), "--relay", *quiet)
    via = ("--via-relay", str(spec))
    run(alice, "agent", "start", "-b", "--port", str(port), *via, *quiet)
    direct: list[float] = []
    relayed: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = json.loads(run(alice, "agent", "status", "--format", "json"))
            if status.get("reach", {}).get("via", {}).get("registered"):
                break
            time.sleep(0.2)
        for i in range(5 if quick else 9):
            b.graph.add(aid, Address("127.0.0.1", port))  # reached directly
            t = time.perf_counter()
            clone(b.vaults, b.peers, aid, "big", f"direct{i}")
            direct.append(time.perf_counter() - t)
            b.peers.close()  # the next clone dials again
            b.graph.remove(aid)  # no address: through the relay it was told of
            b.peers.reach.keep_relays(aid, [spec])
            t = time.perf_counter()
            clone(b.vaults, b.peers, aid, "big", f"relayed{i}")
            relayed.append(time.perf_counter() - t)
            b.peers.close()
    finally:
        b.close()
        for env in (alice, relay_env):
            subprocess.run([pk, "agent", "stop"], env=env, capture_output=True, check=False)
    ratio = statistics.median(r / d for r, d in zip(relayed, direct, strict=True))
    print(
        f"relay: direct clone {median_ms(direct):.0f} ms, through a relay "
        f"{median_ms(relayed):.0f} ms ({encode_node_id(aid)[:12]}...)"
    )
    return [
        ("clone 1,000 secrets (2 MiB), direct", f"{median_ms(direct):.0f} ms", ""),
        ("clone 1,000 secrets (2 MiB), through a relay", f"{median_ms(relayed):.0f} ms", ""),
        ("relayed / direct", f"{ratio:.2f}x", "<= 1.5x"),
    ]
