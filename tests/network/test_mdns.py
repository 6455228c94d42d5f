"""The LAN (docs/spec/discovery.md section 4): mDNS between network namespaces (root only).

Two LANs joined by a router namespace: hosts A and B on 10.232.1.0/24, host C on
10.232.2.0/24. A node announced on A is found from B with the address it signed, not from C
(multicast DNS stays on its link, though C can route to A); an announcement under another
node's name, signed by the announcer's own key, is refused. Nothing leaves the namespaces.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.crypto.signing import SigningKey
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network import mdns, pkarr
from polykey.network.graph import Address
from tests.support import pk_env, run_pk

SEED_A, SEED_B = "11" * 32, "22" * 32
PUBLIC_A = SigningKey(bytes.fromhex(SEED_A)).public.hex()
LAN1 = {"a": "10.232.1.1", "b": "10.232.1.2"}
LAN2 = {"c": "10.232.2.3"}


def _ip(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], capture_output=True, check=False)


@pytest.fixture
def lans() -> Iterator[dict[str, str]]:
    """Namespaces a, b (LAN 1) and c (LAN 2) and the router between them: name -> ns."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    spaces = {n: f"pm{n}{tag}" for n in ("a", "b", "c", "r")}
    made: list[str] = []
    try:
        for ns in spaces.values():
            if _ip("netns", "add", ns).returncode != 0:
                pytest.skip("this machine does not allow network namespaces")
            made.append(ns)
        r = spaces["r"]
        steps: list[tuple[str, ...]] = [("-n", r, "link", "set", "lo", "up")]
        for lan, gateway in (("1", "10.232.1.254/24"), ("2", "10.232.2.254/24")):
            steps += [
                ("-n", r, "link", "add", f"br{lan}", "type", "bridge"),
                ("-n", r, "addr", "add", gateway, "dev", f"br{lan}"),
                ("-n", r, "link", "set", f"br{lan}", "up"),
            ]
        for name, ip in {**LAN1, **LAN2}.items():
            lan = "1" if name in LAN1 else "2"
            ns, here, there = spaces[name], f"h{name}{tag}", f"r{name}{tag}"
            steps += [
                ("link", "add", here, "type", "veth", "peer", "name", there),
                ("link", "set", here, "netns", ns),
                ("link", "set", there, "netns", r),
                ("-n", r, "link", "set", there, "master", f"br{lan}"),
                ("-n", r, "link", "set", there, "up"),
                ("-n", ns, "addr", "add", f"{ip}/24", "dev", here),
                ("-n", ns, "link", "set", here, "up"),
                ("-n", ns, "link", "set", "lo", "up"),
                ("-n", ns, "route", "add", "default", "via", f"10.232.{lan}.254"),
            ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"could not set up the namespaces: {done.stderr.decode().strip()}")
        subprocess.run(
            ["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True
        )
        yield spaces
    finally:
        for ns in made:
            _ip("netns", "del", ns)


def helper(ns: str, *args: str) -> list[str]:
    return [
        "ip",
        "netns",
        "exec",
        ns,
        sys.executable,
        "-m",
        "tests.network.standins.lan_node",
        *args,
    ]


@pytest.fixture
def announce(lans: dict[str, str]) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(host: str, seed: str, *extra: str) -> None:
        ip = {**LAN1, **LAN2}[host]
        proc = subprocess.Popen(
            helper(lans[host], "announce", seed, ip, "1314", *extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"

    try:
        yield start
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)


def lookup(lans: dict[str, str], host: str, public: str, *extra: str) -> object:
    ip = {**LAN1, **LAN2}[host]
    argv = helper(lans[host], "lookup", public, ip, *extra)
    done = subprocess.run(argv, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def test_a_node_is_found_on_its_lan_and_not_across_a_router(
    lans: dict[str, str], announce: object
) -> None:
    announce("a", SEED_A)  # type: ignore[operator]
    assert lookup(lans, "b", PUBLIC_A) == ["10.232.1.1:1314"]
    assert lookup(lans, "c", PUBLIC_A) is None
    route = _ip("-n", lans["c"], "route", "get", LAN1["a"])  # C routes to A: only the LAN
    assert b"via 10.232.2.254" in route.stdout  # discovery stops at the router


def test_an_announcement_under_another_nodes_name_is_refused(
    lans: dict[str, str], announce: object
) -> None:
    announce("b", SEED_B, PUBLIC_A)  # type: ignore[operator]
    assert lookup(lans, "a", PUBLIC_A) is None


def test_a_node_naming_only_a_relay_is_found_on_the_lan_with_that_relay(
    lans: dict[str, str], announce: object
) -> None:
    relay = f"{encode_node_id(NodeId(SigningKey(bytes.fromhex(SEED_B)).public))}@10.232.2.3:1315"
    announce("a", SEED_A, "--via", relay)  # type: ignore[operator]
    assert lookup(lans, "b", PUBLIC_A, "--relays") == {"addresses": [], "relays": [relay]}


def test_an_agent_started_in_the_background_with_lan_is_found_on_the_lan(
    lans: dict[str, str], tmp_path: Path
) -> None:
    env = pk_env(tmp_path / "a.pk", PK_PASSWORD="a", PK_RUNTIME_DIR=str(tmp_path / "run"))
    assert run_pk("bootstrap", env=env).returncode == 0
    node_id = json.loads(run_pk("keys", "public", "--format", "json", env=env).stdout)["node_id"]
    public_hex = bytes(decode_node_id(node_id)).hex()
    start = ["agent", "start", "-b", "--host", LAN1["a"], "--port", "1314", "--lan", "--no-publish"]
    argv = ["ip", "netns", "exec", lans["a"], sys.executable, "-m", "polykey", *start]
    try:
        started = subprocess.run(argv, env=env, capture_output=True, timeout=60)
        assert started.returncode == 0, started.stderr.decode()
        assert lookup(lans, "b", public_hex) == ["10.232.1.1:1314"]
    finally:
        run_pk("agent", "stop", env=env)


def test_the_txt_properties_carry_the_record_and_nothing_else_counts() -> None:
    key = SigningKey(bytes.fromhex(SEED_A))
    record = pkarr.sign(key, [Address("10.232.1.1", 1314), Address("10.232.1.9", 1314)])
    props = {k.encode(): v.encode() for k, v in mdns.properties(record).items()}
    assert all(len(v) <= mdns.PIECE_CHARS for v in props.values())
    assert mdns.record_from(key.public, dict(props)) == record
    with pytest.raises(pkarr.BadRecord):
        mdns.record_from(SigningKey(bytes(32)).public, dict(props))
    with pytest.raises(pkarr.BadRecord):
        mdns.record_from(key.public, {**props, b"v": b"2"})
    cut = base64.b64encode(record.relay_payload()[:-1])
    with pytest.raises(pkarr.BadRecord):
        mdns.record_from(key.public, {b"v": b"1", b"r0": cut})
