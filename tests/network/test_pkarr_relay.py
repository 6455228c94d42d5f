"""The Pkarr relay client against a relay stand-in on loopback (real HTTP, the relay's checks)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from polykey.crypto.signing import SigningKey
from polykey.errors import InvalidInput
from polykey.network import pkarr, zbase32
from polykey.network.graph import Address
from polykey.network.relays import Relays, check_relay_url, retry_after
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
