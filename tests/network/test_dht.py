"""The Mainline DHT (docs/spec/discovery.md section 7) on a local DHT of 20 libtorrent
sessions on loopback: a record put by us is a BEP 44 item any client reads (Pkarr's seq and
signature), one put by libtorrent's own client is read by us, a record naming only a relay is
found with it, forged and older records never win, nothing leaves loopback, and an agent's
NodeId alone is enough to clone from it (the finder's DHT list the setting kept in its node,
`pk nodes dht-bootstrap`; the publisher's PK_DHT_BOOTSTRAP)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

lt = pytest.importorskip("libtorrent")

from polykey.crypto.signing import SigningKey  # noqa: E402
from polykey.ids import NodeId, encode_node_id  # noqa: E402
from polykey.network import krpc, pkarr  # noqa: E402
from polykey.network.dht import ByDht, Dht, DhtConfig, RecordCache, verified  # noqa: E402
from polykey.network.graph import Address  # noqa: E402
from polykey.network.resolve import Resolver  # noqa: E402
from tests.network.standins.local_dht import (  # noqa: E402
    HostileNode,
    LocalDht,
    bound_on_loopback,
    check_local,
)
from tests.support import pk_env  # noqa: E402

KEY = SigningKey(bytes(range(32)))
HERE = (Address("127.0.0.1", 4242),)
THERE = (Address("127.0.0.1", 4343),)


@pytest.fixture(scope="module")
def local_dht() -> Iterator[LocalDht]:
    dht = LocalDht(20).start()
    try:
        yield dht
    finally:
        dht.stop()


async def with_dht(config: DhtConfig, cache: RecordCache | None = None) -> Dht:
    dht = Dht(config, cache or RecordCache())
    await dht.start()
    return dht


def raw_get(session: Any, public: bytes) -> tuple[int, bytes, Any]:
    """libtorrent's own get, as any BEP 44 client: (seq, signature, value) once complete."""
    session.apply_settings({"alert_mask": int(lt.alert_category.dht)})
    session.dht_get_mutable_item(public, b"")
    deadline = time.monotonic() + 10
    found: tuple[int, bytes, Any] = (0, b"", b"")
    while time.monotonic() < deadline:
        session.wait_for_alert(200)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.dht_mutable_item_alert) and bytes(alert.key) == public:
                if alert.seq > found[0]:
                    found = (alert.seq, bytes(alert.signature), alert.item)
                if alert.authoritative or found[0]:
                    return found
    return found


def expanded_secret(seed: bytes) -> bytes:
    """libtorrent's form of an Ed25519 private key: SHA-512 of the seed, the scalar clamped."""
    digest = bytearray(hashlib.sha512(seed).digest())
    digest[0] &= 248
    digest[31] = (digest[31] & 63) | 64
    return bytes(digest)


def test_a_record_put_by_another_bep44_client_is_resolved(local_dht: LocalDht) -> None:
    seed = bytes([9]) * 32
    public = SigningKey(seed).public
    packet = pkarr.dns_packet(public, THERE)
    writer = local_dht.sessions[5]  # libtorrent signs it itself, with seq 1
    # first in this module: libtorrent's put waits out its lookup, which nodes that have
    # left (our put sockets, once closed: every storing node notes them) would slow down
    writer.apply_settings({"alert_mask": int(lt.alert_category.dht)})
    writer.dht_put_mutable_item(expanded_secret(seed), public, packet, b"")
    deadline = time.monotonic() + 10
    stored = 0
    while time.monotonic() < deadline and not stored:
        writer.wait_for_alert(200)
        for alert in writer.pop_alerts():
            if isinstance(alert, lt.dht_put_alert):
                stored = alert.num_success

    async def find() -> Any:
        reader = await with_dht(DhtConfig(local_dht.bootstrap, read_only=True))
        try:
            return await ByDht(reader).find(NodeId(public))
        finally:
            await reader.close()

    found = asyncio.run(find())
    assert found is not None and found.addresses == THERE


def test_a_record_we_put_is_a_bep44_item_with_pkarrs_seq_and_signature(
    local_dht: LocalDht,
) -> None:
    record = pkarr.sign(KEY, HERE)

    async def put() -> krpc.PutResult:
        dht = await with_dht(DhtConfig(local_dht.bootstrap))
        try:
            return await dht.put(record)
        finally:
            await dht.close()

    result = asyncio.run(put())
    assert result.stored >= 3 and result.result == "stored"
    seq, signature, value = raw_get(local_dht.sessions[11], KEY.public)
    assert (seq, signature, value) == (record.timestamp, record.signature, record.dns)
    assert pkarr.from_bytes(KEY.public + signature + seq.to_bytes(8, "big") + value) == record


def test_a_node_publishes_and_another_session_resolves_it(local_dht: LocalDht) -> None:
    key = SigningKey(bytes([7]) * 32)
    record = pkarr.sign(key, HERE + THERE)

    async def publish_then_find() -> Any:
        alice = await with_dht(DhtConfig(local_dht.bootstrap))
        bob = await with_dht(DhtConfig(local_dht.bootstrap[1:], read_only=True))
        try:
            await alice.put(record)
            return await ByDht(bob).find(NodeId(key.public))
        finally:
            await alice.close()
            await bob.close()

    found = asyncio.run(publish_then_find())
    assert found is not None
    assert (found.how, found.addresses) == ("dht", HERE + THERE)


def test_a_node_naming_only_a_relay_is_found_with_that_relay(local_dht: LocalDht) -> None:
    key = SigningKey(bytes([8]) * 32)  # behind NAT: reachable only through its relay
    relay = f"{encode_node_id(NodeId(KEY.public))}@127.0.0.1:4444"
    record = pkarr.sign(key, [], relays=[relay])

    async def publish_then_find() -> Any:
        alice = await with_dht(DhtConfig(local_dht.bootstrap))
        bob = await with_dht(DhtConfig(local_dht.bootstrap[1:], read_only=True))
        try:
            await alice.put(record)
            return await Resolver([ByDht(bob)]).find(NodeId(key.public))
        finally:
            await alice.close()
            await bob.close()

    found = asyncio.run(publish_then_find())
    assert found is not None and found.how == "dht"
    assert (found.addresses, [str(r) for r in found.relays]) == ((), [relay])


def test_a_record_with_a_bad_signature_is_ignored(local_dht: LocalDht) -> None:
    key = SigningKey(bytes([11]) * 32)
    good = pkarr.sign(key, HERE)
    forged = pkarr.sign(key, THERE, good.timestamp + 10**6)
    bad_signature = bytes([forged.signature[0] ^ 1]) + forged.signature[1:]
    hostile = HostileNode(key.public, (forged.timestamp, bad_signature, forged.dns)).start()

    async def find() -> Any:
        alice = await with_dht(DhtConfig(local_dht.bootstrap))
        bob = await with_dht(DhtConfig((hostile.address, *local_dht.bootstrap), read_only=True))
        try:
            await alice.put(good)
            return await ByDht(bob).find(NodeId(key.public))
        finally:
            await alice.close()
            await bob.close()

    try:
        found = asyncio.run(find())
    finally:
        hostile.stop()
    assert hostile.gets >= 1  # the forged record was offered
    assert found is not None and found.addresses == HERE
    # and our own check, whatever libtorrent does: the payload is refused
    assert verified(key.public, forged.timestamp, bad_signature, forged.dns) is None
    assert verified(key.public, forged.timestamp, forged.signature, forged.dns) == forged


def test_an_older_record_never_replaces_a_newer_one_seen_before(local_dht: LocalDht) -> None:
    key = SigningKey(bytes([13]) * 32)
    old = pkarr.sign(key, THERE)
    new = pkarr.sign(key, HERE, old.timestamp + 1)
    hostile = HostileNode(key.public, (old.timestamp, old.signature, old.dns)).start()
    only_hostile = DhtConfig((hostile.address,), read_only=True)

    async def find() -> tuple[Any, Any]:
        alice = await with_dht(DhtConfig(local_dht.bootstrap))
        cache = RecordCache()
        bob = await with_dht(DhtConfig(local_dht.bootstrap, read_only=True), cache)
        fooled = await with_dht(only_hostile)  # an empty cache: it believes the old one
        misled = await with_dht(only_hostile, cache)  # has seen the new one
        try:
            await alice.put(new)
            assert await bob.get(key.public) == new
            return await ByDht(fooled).find(NodeId(key.public)), await misled.get(key.public)
        finally:
            for dht in (alice, bob, fooled, misled):
                await dht.close()

    try:
        fooled, kept = asyncio.run(find())
    finally:
        hostile.stop()
    assert fooled is not None and fooled.addresses == THERE  # the hostile node was asked
    assert kept == new


def test_sessions_stay_on_loopback(local_dht: LocalDht) -> None:
    async def check() -> None:
        dht = await with_dht(DhtConfig(local_dht.bootstrap))
        try:
            check_local(dict(dht.session.get_settings()))
            assert bound_on_loopback(dht.port)
            local = krpc.Krpc("127.0.0.1", local=True)
            async with local:
                with pytest.raises(OSError, match="never sends off loopback"):
                    await local.query(("192.0.2.1", 6881), b"ping", {})
        finally:
            await dht.close()

    asyncio.run(check())
    for port in local_dht.ports:
        assert bound_on_loopback(port)


def test_bencoding_round_trips_and_refuses_garbage() -> None:
    value = {b"a": [1, -2, b"x"], b"b": {b"c": b""}}
    assert krpc.bdecode(krpc.bencode(value)) == value
    assert krpc.bencode({b"b": 1, b"a": 2}) == b"d1:ai2e1:bi1ee"
    for garbage in (b"", b"i1", b"5:abc", b"d1:ai1e", b"i1ei2e", b"x", b"di1ei2ee"):
        with pytest.raises(ValueError):
            krpc.bdecode(garbage)


def test_without_libtorrent_there_is_no_dht_and_nothing_imports_it() -> None:
    code = (
        "import sys\n"
        "import polykey.agent.server, polykey.network.resolve, polykey.network.dht\n"
        "assert 'libtorrent' not in sys.modules\n"
        "sys.modules['libtorrent'] = None\n"
        "from polykey.network.dht import available\n"
        "from polykey.network.resolve import dht_for\n"
        "from polykey.network.graph import Address\n"
        "assert not available()\n"
        "assert dht_for([Address('127.0.0.1', 1)], '127.0.0.1', read_only=False) is None\n"
        "assert dht_for([], '127.0.0.1', read_only=False) is None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


# --- end to end: an agent publishes; another resolves its NodeId and clones -------------------


def pk(env: dict[str, str], *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "polykey", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, (args, done.stderr.decode())
    return done.stdout.decode()


def test_an_agent_found_through_the_dht_is_cloned_from_by_nodeid_alone(
    local_dht: LocalDht, tmp_path: Path
) -> None:
    import socket

    envs: dict[str, dict[str, str]] = {}
    try:
        for name in ("alice", "bob"):
            env = pk_env(
                tmp_path / f"{name}.pk",
                PK_PASSWORD=f"{name} pw",
                PK_RUNTIME_DIR=str(tmp_path / "run"),
            )
            pk(env, "bootstrap")
            if name == "alice":
                env["PK_DHT_BOOTSTRAP"] = local_dht.env
            else:  # bob's list is the setting kept in his node
                pk(env, "nodes", "dht-bootstrap", local_dht.env)
            env["ID"] = pk(env, "keys", "public").split()[0]
            envs[name] = env
        alice, bob = envs["alice"], envs["bob"]
        pk(alice, "vaults", "create", "work")
        pk(alice, "secrets", "write", "work:db", stdin=b"found in the DHT")
        pk(alice, "vaults", "share", "work", bob["ID"])
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        here = f"127.0.0.1:{port}"
        pk(alice, "agent", "start", "-b", "--port", str(port), "--public-address", here)
        deadline = time.monotonic() + 30
        while True:
            dht = json.loads(pk(alice, "agent", "status", "--format", "json"))["discovery"]["dht"]
            if dht.get("put") == "stored" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert dht["put"] == "stored" and not dht["read_only"]
        assert "DHT on (publishing" in pk(alice, "agent", "status")

        pk(bob, "agent", "start", "-b")  # finds others only: its DHT session looks up
        sources = json.loads(pk(bob, "agent", "status", "--format", "json"))["dht_bootstrap"]
        assert sources == {"on": True, "from": "setting", "in_use": local_dht.env.split(",")}
        pk(bob, "vaults", "clone", alice["ID"], "work")
        assert pk(bob, "secrets", "cat", "work:db") == "found in the DHT"
        found = json.loads(pk(bob, "nodes", "find", "--fresh", alice["ID"], "--format", "json"))
        assert (found["how"], found["addresses"]) == ("dht", [here])
    finally:
        for env in envs.values():
            subprocess.run(
                [sys.executable, "-m", "polykey", "agent", "stop"],
                env=env,
                capture_output=True,
                timeout=60,
            )
