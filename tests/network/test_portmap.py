"""Port mapping (docs/spec/discovery.md section 11): NAT-PMP (RFC 6886) against a stand-in
router, on loopback in this process, then a real agent behind a router made of network
namespaces whose mappings are real nftables DNAT rules, reached from the "internet" side.

PCP is tried first: this router answers it with NAT-PMP's "unsupported version" (RFC 6887
section 9), and NAT-PMP maps the port. Refused: malformed replies (wrong version, wrong
opcode, truncated), oversized ones, a good reply from another address, a router that refuses
(result code) or does not answer at all.
Nothing leaves loopback or the namespaces made here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polykey.network import portmap
from polykey.network.graph import Address
from polykey.network.portmap import Mapping, NoMapping, PortMapper
from tests.network.mapping import map_renew_close
from tests.network.standins.natpmp import NatPmpStandIn
from tests.support import pk_env, run_pk

PUBLIC_IP = "198.51.100.7"


def _mapper(router: NatPmpStandIn, port: int = 4242, **kw: Any) -> PortMapper:
    at = {"gateway": "127.0.0.1", "server_port": router.port, "protocols": ("PCP", "NAT-PMP")}
    return PortMapper(port, **at, **kw)


def _router(mode: str = "ok", **kw: Any) -> NatPmpStandIn:
    return NatPmpStandIn("127.0.0.1", PUBLIC_IP, mode=mode, **kw).start()


def test_the_requests_are_the_bytes_of_rfc_6886() -> None:
    assert portmap.address_request() == b"\x00\x00"
    assert portmap.map_request(4242, 4242, 7200) == bytes.fromhex("0002 0000 1092 1092 00001c20")
    assert portmap.map_request(4242, 0, 0) == bytes.fromhex("0002 0000 1092 0000 00000000")


def test_replies_are_read_strictly() -> None:
    ok = bytes.fromhex("0080 0000 00000005") + bytes([203, 0, 113, 9])
    assert portmap.parse_address_reply(ok) == "203.0.113.9"
    mapped = bytes.fromhex("0082 0000 00000005 1092 1f90 00000e10")
    assert portmap.parse_map_reply(mapped, 4242) == (8080, 3600)
    for bad in (ok[:-1], ok + b"\x00", b"\x01" + ok[1:], b"\x00\x81" + ok[2:], b""):
        with pytest.raises(portmap.BadReply):
            portmap.parse_address_reply(bad)
    with pytest.raises(portmap.BadReply):  # a reply about another port
        portmap.parse_map_reply(mapped, 4243)
    with pytest.raises(NoMapping, match="not authorised"):
        portmap.parse_map_reply(bytes.fromhex("0082 0002 00000005"), 4242)
    for useless in ("0.0.0.0", "127.0.0.1", "224.0.0.1", "169.254.1.1"):
        reply = bytes.fromhex("0080 0000 00000005") + socket.inet_aton(useless)
        with pytest.raises(NoMapping, match="no usable external address"):
            portmap.parse_address_reply(reply)


def test_the_default_gateway_is_read_from_the_routing_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    head = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
    table.write_text(
        head
        + "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # the LAN, no gateway
        + "eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        + "eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"  # lowest metric
        + "junk line\n"
        + "eth2\t00000000\tZZZZZZZZ\t0003\t0\t0\t1\t00000000\t0\t0\t0\n"
        + "eth3\t00000000\t0200A8C0\t0001\t0\t0\t1\t00000000\t0\t0\t0\n"  # not a gateway route
    )
    assert portmap.default_gateway(str(table)) == "192.168.0.1"
    table.write_text(head + "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert portmap.default_gateway(str(table)) is None
    assert portmap.default_gateway(str(tmp_path / "absent")) is None


def test_a_port_is_mapped_renewed_and_deleted_on_close() -> None:
    router = _router(max_lifetime=60)
    try:
        run = map_renew_close(lambda: _mapper(router))
    finally:
        router.close()
    changes = run.changes
    assert run.renewed == changes[0]  # a renewal: the same mapping, no change told
    assert changes == [Mapping(Address(PUBLIC_IP, 4242), 4242, 60, "127.0.0.1")]
    assert str(changes[0]) == f"{PUBLIC_IP}:4242 (NAT-PMP)"
    assert [e["event"] for e in router.events] == ["map", "map", "delete"]
    assert {e["lifetime"] for e in router.events[:2]} == {60}  # asked 7200, granted 60


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("malformed", "NAT-PMP: refused the router's reply: a reply of 11 bytes, not 12"),
        ("oversized", "NAT-PMP: refused the router's reply: a reply of 60 bytes, more than 16"),
        ("wrong-source", "NAT-PMP: refused the router's reply: a reply from 127.0.0.2:"),
        ("silent", "no answer from the router"),
        ("refuse", "not authorised"),
    ],
)
def test_a_bad_router_gives_no_mapping(mode: str, reason: str) -> None:
    router = _router(mode)
    told: list[Mapping | None] = []

    async def scenario() -> PortMapper:
        mapper = _mapper(router, timeout=0.3)
        with pytest.raises(NoMapping, match=reason):
            await mapper.map_once()

        async def changed(mapping: Mapping | None) -> None:
            told.append(mapping)

        task = asyncio.create_task(mapper.run(changed))
        while not mapper.error:
            await asyncio.sleep(0.01)
        task.cancel()
        await mapper.close()  # nothing mapped: nothing sent
        return mapper

    try:
        mapper = asyncio.run(scenario())
    finally:
        router.close()
    assert told == [] and mapper.mapping is None
    assert reason in mapper.status()["error"]
    assert mapper.status()["how"] is None  # no protocol mapped it


def test_a_lie_from_another_port_is_ignored_and_the_routers_reply_taken() -> None:
    """A spoofer answers first, from another port, with another address; the router's own
    reply, a moment later, is the one used."""
    router = _router("spoofed")
    try:
        mapping = asyncio.run(_mapper(router).map_once())
    finally:
        router.close()
    assert mapping.external == Address(PUBLIC_IP, 4242)


# --- a real agent behind a router of namespaces ----------------------------------------------

LAN = {"agent": "10.234.1.1", "router": "10.234.1.254"}
WAN = {"router": "10.234.2.1", "internet": "10.234.2.2"}
AGENT_PORT = 14420
MASQUERADE = """
table ip pkmasq {
  chain post { type nat hook postrouting priority 100; ip saddr 10.234.1.0/24 masquerade; }
}
"""


def _ip(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], capture_output=True, check=False)


@pytest.fixture(scope="module")
def home() -> Iterator[dict[str, str]]:
    """Namespaces: agent (10.234.1.1) behind router (LAN 10.234.1.254, WAN 10.234.2.1), and
    internet (10.234.2.2), which has no route to the LAN: name -> namespace, plus the router's
    WAN interface as ``wan``."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("needs root, iproute2 and nftables")
    tag = uuid.uuid4().hex[:6]
    spaces = {n: f"pm{n[:2]}{tag}" for n in ("agent", "router", "internet")}
    made: list[str] = []
    try:
        for ns in spaces.values():
            if _ip("netns", "add", ns).returncode != 0:
                pytest.skip("this machine does not allow network namespaces")
            made.append(ns)
        r = spaces["router"]
        steps: list[tuple[str, ...]] = [("-n", ns, "link", "set", "lo", "up") for ns in made]
        for name, side, mine, theirs in (
            ("agent", "l", LAN["agent"], LAN["router"]),
            ("internet", "w", WAN["internet"], WAN["router"]),
        ):
            ns, here, there = spaces[name], f"pm{side}h{tag}", f"pm{side}r{tag}"
            steps += [
                ("link", "add", here, "type", "veth", "peer", "name", there),
                ("link", "set", here, "netns", ns),
                ("link", "set", there, "netns", r),
                ("-n", ns, "addr", "add", f"{mine}/24", "dev", here),
                ("-n", r, "addr", "add", f"{theirs}/24", "dev", there),
                ("-n", ns, "link", "set", here, "up"),
                ("-n", r, "link", "set", there, "up"),
            ]
        steps.append(("-n", spaces["agent"], "route", "add", "default", "via", LAN["router"]))
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"could not set up the namespaces: {done.stderr.decode().strip()}")
        netns = ["ip", "netns", "exec", r]
        subprocess.run([*netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        subprocess.run([*netns, "nft", "-f", "-"], input=MASQUERADE.encode(), check=True)
        yield {**spaces, "wan": f"pmwr{tag}"}
    finally:
        for ns in made:
            _ip("netns", "del", ns)


def _banner(ns: str, host: str, port: int) -> bytes:
    """The first bytes a TCP connection from ``ns`` to host:port reads (b"" if refused)."""
    code = (
        "import socket,sys\n"
        "try:\n"
        f"  s=socket.create_connection(({host!r},{port}),timeout=3)\n"
        "  sys.stdout.buffer.write(s.recv(8))\n"
        "except OSError: pass\n"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True
    )
    return done.stdout


def test_an_agent_maps_its_port_publishes_it_and_deletes_it_on_stop(
    home: dict[str, str], tmp_path: Path
) -> None:
    router = subprocess.Popen(
        [
            "ip", "netns", "exec", home["router"], sys.executable, "-m",
            "tests.network.standins.natpmp", LAN["router"], WAN["router"], "--wan", home["wan"],
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert router.stdout is not None and router.stdin is not None
    assert router.stdout.readline().strip() == b"ready"
    env = pk_env(tmp_path / "a.pk", PK_PASSWORD="a", PK_RUNTIME_DIR=str(tmp_path / "run"))
    assert run_pk("bootstrap", env=env).returncode == 0
    in_ns = ["ip", "netns", "exec", home["agent"], sys.executable, "-m", "polykey"]

    def pk(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*in_ns, *args], env=env, capture_output=True, timeout=60)

    public = f"{WAN['router']}:{AGENT_PORT}"
    # before: the internet side cannot reach the LAN at all
    assert _ip("-n", home["internet"], "route", "get", LAN["agent"]).returncode != 0
    try:
        started = pk("agent", "start", "-b", "--port", str(AGENT_PORT), "--map-port", "--no-lan")
        assert started.returncode == 0, started.stderr.decode()
        mapped = json.loads(router.stdout.readline())
        assert mapped == {  # PCP first: the router answers "unsupported version", NAT-PMP then
            "event": "map",
            "how": "NAT-PMP",
            "client": LAN["agent"],
            "internal": AGENT_PORT,
            "external": AGENT_PORT,
            "lifetime": 3600,
        }
        status: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = json.loads(pk("agent", "status", "--format", "json").stdout)
            if status.get("discovery", {}).get("addresses", [None])[0] == public:
                break
            time.sleep(0.2)
        assert status["portmap"]["mapped"] == public
        assert status["discovery"]["addresses"][0] == public  # what is published
        assert status["reach"]["mode"] == "mapped"
        assert f"reachable mapped {public} (NAT-PMP)" in pk("agent", "status").stdout.decode()
        # the internet side reaches the agent's SSH port through the router's address
        assert _banner(home["internet"], WAN["router"], AGENT_PORT).startswith(b"SSH-2.0")
        assert pk("agent", "stop").returncode == 0
        deleted = json.loads(router.stdout.readline())
        assert deleted["event"] == "delete" and deleted["external"] == AGENT_PORT
        assert _banner(home["internet"], WAN["router"], AGENT_PORT) == b""
    finally:
        pk("agent", "stop")
        router.stdin.close()
        router.wait(timeout=10)


def test_map_port_needs_a_peer_port(tmp_path: Path) -> None:
    env = pk_env(tmp_path / "b.pk", PK_PASSWORD="b", PK_RUNTIME_DIR=str(tmp_path / "run"))
    assert run_pk("bootstrap", env=env).returncode == 0
    done = run_pk("agent", "start", "-b", "--map-port", env=env)
    assert done.returncode == 2
    assert b"--map-port needs --port" in done.stderr and b"Traceback" not in done.stderr
