"""The Pkarr relay client against a relay stand-in on loopback (real HTTP, the relay's checks)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from polykey.crypto.signing import SigningKey
from polykey.errors import InvalidInput
from polykey.network import pkarr, resolve, zbase32
from polykey.network.graph import Address
from polykey.network.relays import Relays, check_relay_url, retry_after
from polykey.network.resolve import Discovery
from tests.network.standins.pkarr_relay import PkarrRelayStandIn

KEY = SigningKey(bytes(32))
HERE = Address("192.0.2.1", 1314)


@pytest.fixture
def relay() -> Iterator[PkarrRelayStandIn]:
    standin = PkarrRelayStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


def test_a_published_record_is_found_through_the_relay(relay: PkarrRelayStandIn) -> None:
    relays = Relays([relay.url])
    record = pkarr.sign(KEY, [HERE])
    outcomes = asyncio.run(relays.publish(record))
    assert [(o.result, o.status) for o in outcomes] == [("stored", 204)]
    found = asyncio.run(relays.resolve(KEY.public))
    assert found is not None
    assert found[0] == relay.url and found[1] == record and found[1].addresses == (HERE,)


def test_a_key_with_no_record_is_not_found(relay: PkarrRelayStandIn) -> None:
    assert asyncio.run(Relays([relay.url]).resolve(SigningKey(bytes([7]) * 32).public)) is None
    assert relay.gets[-1][1] == 404


def test_an_older_record_gets_409_and_the_newer_one_stays(relay: PkarrRelayStandIn) -> None:
    relays = Relays([relay.url])
    new = pkarr.sign(KEY, [HERE], 2_000)
    old = pkarr.sign(KEY, [Address("192.0.2.9", 9)], 1_000)
    assert asyncio.run(relays.publish(new))[0].stored
    conflict = asyncio.run(relays.publish(old))[0]
    assert (conflict.result, conflict.status) == ("conflict", 409)
    found = asyncio.run(relays.resolve(KEY.public))
    assert found is not None and found[1] == new


def test_the_same_record_again_is_stored_again(relay: PkarrRelayStandIn) -> None:
    record = pkarr.sign(KEY, [HERE], 5_000)
    relays = Relays([relay.url])
    assert asyncio.run(relays.publish(record))[0].stored
    assert asyncio.run(relays.publish(record))[0].stored


def test_a_rate_limit_is_honoured_until_its_retry_after(relay: PkarrRelayStandIn) -> None:
    relay.limit, relay.retry_after = 1, "120"
    relays = Relays([relay.url])
    assert asyncio.run(relays.publish(pkarr.sign(KEY, [HERE], 1)))[0].stored
    limited = asyncio.run(relays.publish(pkarr.sign(KEY, [HERE], 2)))[0]
    assert (limited.result, limited.status, limited.retry_after) == ("limited", 429, 120.0)
    puts = len(relay.puts)
    again = asyncio.run(relays.publish(pkarr.sign(KEY, [HERE], 3)))[0]
    assert again.result == "limited" and len(relay.puts) == puts  # not asked at all


def test_the_relay_refuses_a_forged_or_oversized_body(relay: PkarrRelayStandIn) -> None:
    record = pkarr.sign(KEY, [HERE], 7)
    body = bytearray(record.relay_payload())
    body[3] ^= 1
    with httpx.Client(trust_env=False) as client:
        name = zbase32.encode(KEY.public)
        assert client.put(f"{relay.url}/{name}", content=bytes(body)).status_code == 400
        assert client.put(f"{relay.url}/{name}", content=bytes(1073)).status_code == 413
        other = zbase32.encode(SigningKey(bytes([3]) * 32).public)
        payload = record.relay_payload()
        assert client.put(f"{relay.url}/{other}", content=payload).status_code == 400
        assert client.put(f"{relay.url}/{name.upper()}", content=payload).status_code == 400
    assert relay.records == {}


def test_a_relay_serving_a_bad_record_counts_as_no_answer(relay: PkarrRelayStandIn) -> None:
    from tests.network.standins.pkarr_relay import Stored

    record = pkarr.sign(KEY, [HERE], 9)
    forged = bytearray(record.relay_payload())
    forged[-1] ^= 1  # the relay (or the network) changed the address after signing
    relay.records[KEY.public] = Stored(bytes(forged), 9, b"", 0.0)
    assert asyncio.run(Relays([relay.url]).resolve(KEY.public)) is None


def test_a_relay_serving_a_huge_body_counts_as_no_answer(relay: PkarrRelayStandIn) -> None:
    """A hostile relay answers a lookup with 8 MiB: refused by its length, never buffered
    (a record is at most 1,072 bytes)."""
    from tests.network.standins.pkarr_relay import Stored

    relay.records[KEY.public] = Stored(b"\0" * (8 << 20), 9, b"", 0.0)
    assert asyncio.run(Relays([relay.url]).resolve(KEY.public)) is None


def test_the_first_good_answer_wins_over_a_dead_relay(relay: PkarrRelayStandIn) -> None:
    dead = PkarrRelayStandIn()  # bound, never serving: its port refuses nothing, answers nothing
    dead.server.server_close()
    relays = Relays([dead.url, relay.url], timeout=2)
    outcomes = asyncio.run(relays.publish(pkarr.sign(KEY, [HERE])))
    assert [o.result for o in outcomes] == ["unreachable", "stored"]
    found = asyncio.run(relays.resolve(KEY.public))
    assert found is not None and found[0] == relay.url


def test_relay_urls_are_checked() -> None:
    assert check_relay_url("https://relay.example.org/") == "https://relay.example.org"
    for bad in ("relay.example.org", "ftp://x", "http://", "http://a b"):
        with pytest.raises(InvalidInput):
            check_relay_url(bad)


def test_retry_after_is_bounded_and_tolerant() -> None:
    assert retry_after("5") == 5.0
    assert retry_after(None) == retry_after("Fri, 18 Oct 2024 13:24:21 GMT") == 60.0
    assert retry_after("-3") == retry_after("nan") == 60.0
    assert retry_after("999999") == 3600.0


def _discovery(relay: PkarrRelayStandIn, *addresses: Address) -> Discovery:
    return Discovery(KEY, Relays([relay.url]), publish=True, lan=False, public=addresses)


def test_a_restarted_agent_whose_clock_went_back_still_replaces_its_record(
    relay: PkarrRelayStandIn,
) -> None:
    """An earlier run, its clock an hour ahead, left a newer record: the relay answers 409, and
    the agent signs again after the record held (soak pkarr/clock-back found it stuck)."""
    hour_ahead = pkarr.now_us() + 3600 * 1_000_000
    held = asyncio.run(Relays([relay.url]).publish(pkarr.sign(KEY, [HERE], hour_ahead)))
    assert held[0].stored
    moved = Address("192.0.2.2", 1314)
    assert asyncio.run(_discovery(relay, moved).announce((moved,)))
    assert [status for _, status in relay.puts[-2:]] == [409, 204]
    found = asyncio.run(Relays([relay.url]).resolve(KEY.public))
    assert found is not None
    assert found[1].addresses == (moved,) and found[1].timestamp == hour_ahead + 1


def test_a_record_nothing_took_is_published_again_soon_not_in_five_minutes(
    relay: PkarrRelayStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 (Retry-After 1 s) on the first publish: the record is tried again once the wait
    is over, not at the next 5-minute republish (soak pkarr/limited found it stale)."""
    monkeypatch.setattr(resolve, "RETRY_S", 0.5)
    relay.limit, relay.retry_after = 0, "1"

    async def main() -> list[tuple[str, int]]:
        task = asyncio.create_task(_discovery(relay, HERE).run())
        try:
            for _ in range(200):  # 10 s at most
                await asyncio.sleep(0.05)
                if relay.puts and relay.puts[0][1] == 429:
                    relay.limit = None  # the relay takes records again
                if relay.puts and relay.puts[-1][1] == 204:
                    break
        finally:
            task.cancel()
        return list(relay.puts)

    puts = asyncio.run(main())
    assert [status for _, status in puts] == [429, 204]  # no PUT inside the Retry-After
    found = asyncio.run(Relays([relay.url]).resolve(KEY.public))
    assert found is not None and found[1].addresses == (HERE,)


def test_a_relay_streaming_an_endless_body_is_cut_off() -> None:
    """A hostile relay answers a lookup with a chunked body that never ends: the client stops
    reading past a record's largest size, instead of buffering what it is sent."""
    sent = [0]

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"\0" * 4096
        try:
            while sent[0] < 64 << 20:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                sent[0] += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def main() -> object:
        server = await asyncio.start_server(endless, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await Relays([f"http://127.0.0.1:{port}"]).resolve(KEY.public)
        finally:
            server.close()

    assert asyncio.run(main()) is None
    assert sent[0] < 64 << 20  # the client hung up long before the relay was done
