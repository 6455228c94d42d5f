"""Relays in records and hole punching (docs/spec/discovery.md sections 2, 9 and 12).

In process: records naming relays (and only relays) are made, read and resolved; the punch
request's vectors and refusals; a punch signalled through a relay on loopback gives a direct
connection on which the node authenticates the caller itself.

In namespaces (root): a relay on the "internet", a node on it, and two homes behind NAT routers
(nftables masquerade; nothing let in unasked). The node behind NAT2 is found by its NodeId alone
through its Pkarr record, which names its relay; a node behind NAT1 clones from it over a
punched connection (the relay carried none); with NAT2 made symmetric the clone falls back to
the relay.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from polykey.crypto.signing import SigningKey
from polykey.ids import NodeId, encode_node_id
from polykey.network import pkarr, punch
from polykey.network.graph import Address
from polykey.network.punch import Puncher, PunchRefused
from polykey.network.relay import Registrar, Relay, RelaySpec, Tunnels
from polykey.network.relays import Relays
from polykey.network.resolve import ByRelays, Resolver
from polykey.network.ssh import PeerClient, serve, serve_socket, ssh_key
from tests.network.netns import Host, internet, pkarr_relay, registered
from tests.network.standins.pkarr_relay import PkarrRelayStandIn
from tests.support import pk_env, run_pk

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec" / "discovery.md"


def vectors() -> Any:
    text = SPEC.read_text()
    block = text.split("## 12.", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return json.loads(block)


V = vectors()
KEY = SigningKey(bytes(32))
RELAY_ID = NodeId(SigningKey(bytes([1]) * 32).public)
RELAY_TEXT = f"{encode_node_id(RELAY_ID)}@192.0.2.7:1314"


# --- relays in records ---------------------------------------------------------------------


def test_a_record_names_relays_after_its_addresses_and_reads_them_back() -> None:
    record = pkarr.sign(KEY, [Address("192.0.2.1", 1314)], 5, [RELAY_TEXT])
    again = pkarr.from_bytes(record.to_bytes())
    assert again.addresses == (Address("192.0.2.1", 1314),)
    assert again.relays == (RELAY_TEXT,)
    assert record.dns.hex() == V["record_with_relay"]["dns"]


def test_a_record_of_relays_alone_is_made_and_read_and_an_empty_one_never() -> None:
    record = pkarr.from_bytes(pkarr.sign(KEY, [], 5, [RELAY_TEXT]).to_bytes())
    assert record.addresses == () and record.relays == (RELAY_TEXT,)
    with pytest.raises(pkarr.EmptyRecord):
        pkarr.sign(KEY, [], 5, [])


def test_a_record_with_a_relay_that_does_not_parse_and_no_address_is_refused() -> None:
    bad = bytes.fromhex(V["record_refused"]["signed_packet"])
    with pytest.raises(pkarr.BadRecord, match="no address and no relay"):
        pkarr.from_bytes(bad)


def test_the_largest_record_fits_in_the_dns_limit() -> None:
    host = "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]"
    relays = [f"{encode_node_id(NodeId(bytes([i]) * 32))}@{host}:6553{i}" for i in range(3)]
    addresses = [Address(host[1:-1], 60000 + i) for i in range(5)]
    record = pkarr.sign(KEY, addresses, 1, relays)
    assert pkarr.from_bytes(record.to_bytes()).relays == tuple(relays)
    with pytest.raises(Exception, match="at most 3 relays"):
        pkarr.sign(KEY, addresses, 1, [*relays, RELAY_TEXT])


def test_the_resolver_takes_a_record_naming_relays_but_no_address() -> None:
    standin = PkarrRelayStandIn().start()
    try:
        relays = Relays([standin.url])
        asyncio.run(relays.publish(pkarr.sign(KEY, [], None, [RELAY_TEXT])))
        found = asyncio.run(Resolver([ByRelays(relays)]).find(NodeId(KEY.public)))
    finally:
        standin.stop()
    assert found is not None and found.addresses == ()
    assert [str(r) for r in found.relays] == [RELAY_TEXT]


# --- the punch request ----------------------------------------------------------------------


def test_the_request_vector_is_signed_exactly_and_checks() -> None:
    r = V["request"]
    request, signature = punch.read_request(r["request"], r["signature"])
    key = ssh_key(KEY.openssh_private_pem())
    assert punch.signable(r["request"]).decode() == r["signable"]
    assert punch.sign(key, request).hex() == r["signature"]
    punch.check_request(request, signature, request.target, r["request"]["time"], set())


@pytest.mark.parametrize("case", V["refusals"], ids=lambda c: str(c["why"]))
def test_a_refused_request_is_refused(case: dict[str, Any]) -> None:
    r = V["request"]
    doc = {**r["request"], **case.get("change", {})}
    seen = {bytes.fromhex(r["request"]["nonce"])} if case.get("replayed") else set()
    target = NodeId(bytes.fromhex(case["me"])) if "me" in case else None
    with pytest.raises(PunchRefused):
        request, signature = punch.read_request(doc, case.get("signature", r["signature"]))
        now = r["request"]["time"] + case.get("later", 0)
        punch.check_request(request, signature, target or request.target, now, seen)


# --- a punch on loopback ----------------------------------------------------------------------


class Endpoint:
    def __init__(self, seed: int) -> None:
        self.id = NodeId(SigningKey(bytes([seed]) * 32).public)
        self.key = ssh_key(SigningKey(bytes([seed]) * 32).openssh_private_pem())
        self.callers: list[NodeId] = []
        self.server: Any = None
        self.port = 0
        self.puncher: Puncher | None = None

    async def handle(self, peer: NodeId, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method in punch.METHODS and self.puncher is not None:
            return await self.puncher.handle(peer, method, params)
        self.callers.append(peer)
        if method == "peer.hello":
            return {"version": 1, "node_id": encode_node_id(self.id)}
        return {"me": encode_node_id(self.id)}

    async def serve(self, relay: Relay | None = None) -> None:
        self.server = await serve("127.0.0.1", 0, self.key, self.handle, relay=relay)
        self.port = self.server.get_port()

        async def accept(sock: Any) -> Any:
            return await serve_socket(sock, self.key, self.handle)

        self.puncher = Puncher(self.key, accept, host="127.0.0.1", relay=relay)
        if relay is not None:
            relay.punch = self.puncher


def test_a_punch_signalled_through_the_relay_gives_a_direct_connection() -> None:
    async def scenario() -> None:
        s, b, a = Endpoint(1), Endpoint(2), Endpoint(3)
        relay = Relay()
        await s.serve(relay)
        await b.serve()
        spec = RelaySpec(s.id, Address("127.0.0.1", s.port))
        registrar = Registrar(b.key, b.id, spec, Address("127.0.0.1", b.port))
        task = asyncio.create_task(registrar.run())
        tunnels = Tunnels()
        try:
            for _ in range(200):
                if relay.is_registered(b.id):
                    break
                await asyncio.sleep(0.02)
            conn = await punch.punch(a.key, b.id, spec, await tunnels.relay_connection(a.key, spec))
            client = await PeerClient.over(conn, b.id)
            assert await client.call("echo", {}) == {"me": encode_node_id(b.id)}
            conn.close()
            # the node authenticated the caller itself (the relay called it only to offer)
            assert b.callers == [s.id, a.id, a.id, a.id]  # hellos, then the call
            assert relay.carried == 0 and s.puncher is not None and s.puncher.forwarded == 1
            assert b.puncher is not None and b.puncher.punched == 1
        finally:
            task.cancel()
            registrar.close()
            await tunnels.close()
            for e in (s, b):
                e.server.close()

    asyncio.run(scenario())


# --- across NAT routers (namespaces; root only) ---------------------------------------------

PUBLIC = {"relay": 1, "open": 2}  # on the switch: 10.235.0.N
HOMES = {"one": (11, 1, "masquerade"), "two": (12, 2, "masquerade")}  # router, LAN, NAT
RELAY_IP, RELAY_PORT, NODE_PORT = "10.235.0.1", "14330", "14331"


def _relay_status(relay: Host) -> dict[str, Any]:
    return dict(relay.status()["reach"]["relay"])


def test_a_node_behind_nat_is_found_by_node_id_punched_to_and_relayed_when_symmetric(
    tmp_path: Path,
) -> None:
    with internet("10.235", PUBLIC, HOMES) as net:
        relay = Host(net.ns["relay"], tmp_path, "relay")
        opened = Host(net.ns["open"], tmp_path, "open")
        one = Host(net.ns["one"], tmp_path, "one")
        two = Host(net.ns["two"], tmp_path, "two")
        two.ok("vaults", "create", "work")
        secret = os.urandom(64 * 1024)
        two.ok("secrets", "write", "work:k", stdin=secret)
        for other in (opened, one):
            two.ok("vaults", "share", "work", other.id)
        at = f"{relay.id}@{RELAY_IP}:{RELAY_PORT}"
        with pkarr_relay(net.ns["relay"], RELAY_IP) as url:
            for host in (two, opened, one):
                host.ok("nodes", "relays", url)
            try:
                relay.ok(
                    "agent", "start", "-b", "--host", RELAY_IP, "--port", RELAY_PORT,
                    "--relay", "--no-lan", "--no-publish",
                )  # fmt: skip
                two.ok("agent", "start", "-b", "--port", NODE_PORT, "--via-relay", at, "--no-lan")
                two.wait(lambda s: registered(s) and "published" in s.get("discovery", {}))

                # found by its NodeId alone: its record names the relay (no nodes add, no seed)
                shown = opened.ok("nodes", "find", two.id).decode()
                assert f"via relay {relay.id}" in shown, shown
                opened.ok("vaults", "clone", two.id, "work")
                assert opened.ok("secrets", "cat", "work:k") == secret

                # behind NAT1 to behind NAT2: punched, the relay signals and carries nothing
                one.ok("vaults", "clone", two.id, "work")
                assert one.ok("secrets", "cat", "work:k") == secret
                counts = _relay_status(relay)
                assert counts["punches"] >= 2 and counts["carried"] == 0, counts

                # NAT2 made symmetric: a new port per destination, the punch misses: relayed
                net.remasquerade("two", 2, "masquerade fully-random")
                one.ok("vaults", "clone", two.id, "work", "again")
                assert one.ok("secrets", "cat", "again:k") == secret
                assert _relay_status(relay)["carried"] >= 1
            finally:
                for host in (two, relay):
                    host.run("agent", "stop")


def test_find_says_a_node_that_names_only_a_relay_is_reached_through_it(tmp_path: Path) -> None:
    standin = PkarrRelayStandIn().start()
    try:
        asyncio.run(Relays([standin.url]).publish(pkarr.sign(KEY, [], None, [RELAY_TEXT])))
        env = pk_env(tmp_path / "n.pk", PK_PASSWORD="n", PK_RUNTIME_DIR=str(tmp_path / "run"))
        assert run_pk("bootstrap", env=env).returncode == 0
        assert run_pk("nodes", "relays", standin.url, env=env).returncode == 0
        done = run_pk("nodes", "find", encode_node_id(NodeId(KEY.public)), env=env)
    finally:
        standin.stop()
    assert done.returncode == 0, done.stderr.decode()
    shown = done.stdout.decode()
    assert f"via relay {encode_node_id(RELAY_ID)} (reachable only through a relay)" in shown
