"""A node behind a NAT router (network namespaces, tests/network/netns.py) maps its peer port
with `pk agent start --map-port`, first on a router that speaks PCP, then on one that speaks
only UPnP IGD (PCP and NAT-PMP unanswered); each mapping is a real nftables DNAT rule on the
router, and a peer on the "internet" side clones a vault through the mapped address. Stopping
the agent deletes the mapping. A device that refuses (a SOAP fault) leaves the agent running,
unmapped, its status saying why each protocol failed. Nothing leaves the namespaces made
here (docs/spec/discovery.md section 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tests.network.netns import Host, in_ns, internet

PREFIX = "10.238"
ROUTER_LAN, ROUTER_WAN = f"{PREFIX}.1.254", f"{PREFIX}.0.1"
PORT = "14438"
PUBLIC = f"{ROUTER_WAN}:{PORT}"


@contextmanager
def router(ns: str, module: str, *args: str) -> Iterator[IO[bytes]]:
    """A stand-in router (tests/network/standins/MODULE) in ``ns``: its event lines."""
    root = str(Path(__file__).resolve().parents[2])
    argv = [sys.executable, "-m", f"tests.network.standins.{module}", ROUTER_LAN, ROUTER_WAN]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, *argv, "--wan", "wan", *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == b"ready"
        yield proc.stdout
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _event(events: IO[bytes]) -> dict[str, Any]:
    return dict(json.loads(events.readline()))


def _mapped_by(home: Host, how: str, events: IO[bytes]) -> None:
    home.ok("agent", "start", "-b", "--port", PORT, "--map-port", "--no-lan")
    made = _event(events)
    assert made["event"] == "map" and made["how"] == how, made
    assert made["client"] == f"{PREFIX}.1.1" and made["external"] == int(PORT)
    status = home.wait(lambda s: s.get("portmap", {}).get("mapped") == PUBLIC)
    assert status["portmap"]["how"] == how
    assert f"reachable mapped {PUBLIC} ({how})" in home.ok("agent", "status").decode()


def test_a_node_maps_its_port_by_pcp_then_by_upnp_and_is_cloned_from_through_it(
    tmp_path: Path,
) -> None:
    with internet(PREFIX, {"outside": 2}, {"home": (1, 1, "masquerade")}) as net:
        gateway = net.ns["rhome"]  # forwards what a mapping lets in (as a router's UPnP does)
        in_ns(gateway, "nft", "insert", "rule", "ip", "pknat", "guard", "ct", "status", "dnat",
              "accept")  # fmt: skip
        home = Host(net.ns["home"], tmp_path, "home")
        outside = Host(net.ns["outside"], tmp_path, "outside")
        home.ok("vaults", "create", "work")
        secret = os.urandom(4096)
        home.ok("secrets", "write", "work:k", stdin=secret)
        home.ok("vaults", "share", "work", outside.id)
        outside.ok("nodes", "add", home.id, PUBLIC)
        try:
            with router(gateway, "upnp_igd", "--mode", "fault"):  # no PCP, no NAT-PMP either
                home.ok("agent", "start", "-b", "--port", PORT, "--map-port", "--no-lan")
                home.wait(lambda s: "error" in s.get("portmap", {}))
                shown = home.ok("agent", "status").decode()  # the agent goes on, unmapped
                assert f"PCP: no answer from the router {ROUTER_LAN}; NAT-PMP: no answer" in shown
                assert "UPnP IGD: the router refused AddPortMapping: 718 Conflict" in shown
                home.ok("agent", "stop")

            with router(gateway, "natpmp", "--pcp") as events:
                _mapped_by(home, "PCP", events)
                outside.ok("vaults", "clone", home.id, "work")
                assert outside.ok("secrets", "cat", "work:k") == secret
                home.ok("agent", "stop")
                gone = _event(events)
                assert gone["event"] == "delete" and gone["how"] == "PCP", gone

            with router(gateway, "upnp_igd") as events:
                _mapped_by(home, "UPnP IGD", events)
                outside.ok("vaults", "clone", home.id, "work", "again")
                assert outside.ok("secrets", "cat", "again:k") == secret
                home.ok("agent", "stop")
                gone = _event(events)
                assert gone["event"] == "delete" and gone["how"] == "UPnP IGD", gone
            rules = subprocess.run(
                ["ip", "netns", "exec", gateway, "nft", "list", "chain", "ip", "pkportmap", "pre"],
                capture_output=True,
                check=True,
            )
            assert b"dnat" not in rules.stdout  # both mappings deleted on the router
        finally:
            home.run("agent", "stop")
