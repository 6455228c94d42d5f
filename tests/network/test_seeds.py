"""Seeds (docs/spec/discovery.md section 10): named by DNS SRV records (a stand-in DNS server on
loopback), asked where a node is (``nodes.find``) and how they see this node
(``peer.observed``), by real agents on loopback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polykey.crypto.signing import SigningKey
from polykey.ids import NodeId, encode_node_id
from polykey.network.graph import Address
from polykey.network.seeds import DnsSeed, Seed, SeedUnusable, parse_seed, srv_seeds, told
from tests.network.standins.srv_dns import SrvStandIn
from tests.support import pk_env, run_pk

SEED_ID = encode_node_id(NodeId(SigningKey(bytes([7]) * 32).public))


@pytest.fixture(scope="module")
def dns_server() -> Iterator[SrvStandIn]:
    server = SrvStandIn()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _name(server: SrvStandIn, node_id: str, port: int, domain: str = "seeds.test") -> None:
    """A seed at 127.0.0.1:port under ``domain``'s SRV."""
    target = f"s{len(server.srv.get(f'_polykey._tcp.{domain}', []))}.{domain}"
    server.srv.setdefault(f"_polykey._tcp.{domain}", []).append((10, 5, port, target + "."))
    server.txt.setdefault(target, []).append([b"v=1", f"node={node_id}".encode()])
    server.a.setdefault(target, []).append("127.0.0.1")


def test_srv_records_name_the_seeds_and_broken_targets_are_skipped(
    dns_server: SrvStandIn,
) -> None:
    domain = "unit.test"
    _name(dns_server, SEED_ID, 1314, domain)
    srv = dns_server.srv[f"_polykey._tcp.{domain}"]
    srv.append((20, 1, 1315, "no-txt.unit.test."))  # no NodeId: skipped
    dns_server.a["no-txt.unit.test"] = ["127.0.0.2"]
    srv.append((30, 1, 1316, "bad.unit.test."))  # a NodeId that does not decode
    dns_server.txt["bad.unit.test"] = [[b"v=1", b"node=vnot"]]
    dns_server.a["bad.unit.test"] = ["127.0.0.3"]
    ns = f"127.0.0.1:{dns_server.port}"
    found = srv_seeds(DnsSeed(domain, ns))
    assert [str(s) for s in found] == [f"{SEED_ID}@127.0.0.1:1314"]
    assert srv_seeds(DnsSeed("nothing.test", ns), timeout=2) == []


def test_a_seed_is_a_node_at_an_address_or_a_domain() -> None:
    assert parse_seed(f"{SEED_ID}@192.0.2.1:1314") == Seed(
        NodeId(SigningKey(bytes([7]) * 32).public), Address("192.0.2.1", 1314)
    )
    assert parse_seed("_polykey._tcp.Example.ORG.") == DnsSeed("example.org")
    for bad in ("not a domain", "a..b", f"{SEED_ID}@nowhere", "x" * 300):
        with pytest.raises(SeedUnusable):
            parse_seed(bad)


def test_what_a_seed_tells_is_checked_and_a_relay_without_address_is_the_seed() -> None:
    seed = parse_seed(f"{SEED_ID}@192.0.2.1:1314")
    assert isinstance(seed, Seed)
    other = encode_node_id(NodeId(bytes(32)))
    answer = told(
        seed,
        {
            "addresses": ["192.0.2.9:1314", "not an address"],
            "relays": [
                {"node_id": SEED_ID, "address": ""},  # the seed itself
                {"node_id": other, "address": ""},  # another, but where? dropped
                {"node_id": "vbad", "address": "192.0.2.5:1"},
            ],
        },
    )
    assert [str(a) for a in answer.addresses] == ["192.0.2.9:1314"]
    assert [str(r) for r in answer.relays] == [f"{SEED_ID}@192.0.2.1:1314"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_agent_learns_a_nodes_address_through_a_seed_named_by_dns(
    dns_server: SrvStandIn, tmp_path: Path
) -> None:
    def node(name: str) -> tuple[dict[str, str], str]:
        env = pk_env(tmp_path / f"{name}.pk", PK_PASSWORD=name, PK_RUNTIME_DIR=str(tmp_path / name))
        assert run_pk("bootstrap", env=env).returncode == 0
        shown = run_pk("keys", "public", "--format", "json", env=env).stdout
        return env, json.loads(shown)["node_id"]

    def ok(env: dict[str, str], *args: str, stdin: bytes | None = None) -> dict[str, Any]:
        done = run_pk(*args, "--format", "json", env=env, input=stdin)
        assert done.returncode == 0, (args, done.stderr.decode())
        return json.loads(done.stdout) if done.stdout.strip() else {}

    (seed, seed_id), (target, target_id), (me, me_id) = (node(n) for n in ("s", "t", "c"))
    seed_port, target_port = _port(), _port()
    _name(dns_server, seed_id, seed_port)
    ok(target, "vaults", "create", "work")
    ok(target, "secrets", "write", "work:k", stdin=b"found through a seed")
    ok(target, "vaults", "share", "work", me_id)
    ok(seed, "nodes", "add", target_id, f"127.0.0.1:{target_port}")
    ok(me, "nodes", "seeds", "add", "seeds.test", "--nameserver", f"127.0.0.1:{dns_server.port}")
    quiet = ("--no-lan", "--no-publish")
    started = []
    try:
        for env, args in (
            (seed, ("--port", str(seed_port), "--relay")),
            (target, ("--port", str(target_port))),
            (me, ()),
        ):
            ok(env, "agent", "start", "-b", *args, *quiet)
            started.append(env)
        found = ok(me, "nodes", "find", target_id)
        assert found["addresses"] == [f"127.0.0.1:{target_port}"]
        assert (found["how"], found["source"]) == ("peer", seed_id)
        ok(me, "vaults", "clone", target_id, "work")
        assert run_pk("secrets", "cat", "work:k", env=me).stdout == b"found through a seed"
        deadline = time.monotonic() + 20
        seen: list[Any] = []
        while not seen and time.monotonic() < deadline:  # asked at start, in the background
            seen = ok(me, "agent", "status").get("reach", {}).get("seen_as", [])
            time.sleep(0.2)
        assert seen and seen[0]["seed"] == seed_id
        assert seen[0]["address"].startswith("127.0.0.1:")
    finally:
        for env in started:
            run_pk("agent", "stop", env=env)
