"""Pkarr records (docs/spec/discovery.md): names, signing, the vectors of the spec page
(pkarr's own and BEP 44's among them), and every failure vector refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from polykey.crypto.signing import SigningKey, verify
from polykey.errors import InvalidInput
from polykey.network import pkarr, zbase32
from polykey.network.graph import Address

SPEC = Path(__file__).parents[2] / "docs" / "spec" / "discovery.md"


def vectors() -> Any:
    block = re.search(r"```json\n(.*?)```", SPEC.read_text(), re.S)
    assert block is not None
    return json.loads(block.group(1))


V = vectors()


@pytest.mark.parametrize("case", V["z_base_32"], ids=lambda c: c["source"])
def test_a_key_and_its_name_convert_both_ways(case: dict[str, str]) -> None:
    assert zbase32.encode(bytes.fromhex(case["key"])) == case["name"]
    assert zbase32.decode_key(case["name"]) == bytes.fromhex(case["key"])


@pytest.mark.parametrize("case", V["names_refused"], ids=lambda c: c["why"])
def test_a_name_that_is_not_one_key_is_refused(case: dict[str, str]) -> None:
    with pytest.raises(zbase32.NotZBase32):
        zbase32.decode_key(case["name"])


def test_every_key_has_one_name_that_round_trips() -> None:
    for seed in range(40):
        public = SigningKey(bytes([seed]) * 32).public
        name = zbase32.encode(public)
        assert len(name) == 52 and zbase32.decode_key(name) == public


def test_the_signed_bytes_are_bep44s_and_its_vector_verifies() -> None:
    b = V["bep44"]
    assert pkarr.signable(b["seq"], b["v"].encode()) == b["signable"].encode()
    public, signature = bytes.fromhex(b["public"]), bytes.fromhex(b["signature"])
    assert verify(public, b["signable"].encode(), signature)
    assert not verify(public, pkarr.signable(2, b["v"].encode()), signature)


def test_the_record_vector_is_made_exactly_and_reads_back() -> None:
    r = V["record"]
    key = SigningKey(bytes.fromhex(r["seed"]))
    addresses = [parse(a) for a in r["addresses"]]
    record = pkarr.sign(key, addresses, r["timestamp"])
    assert record.dns.hex() == r["dns"]
    assert record.to_bytes().hex() == r["signed_packet"]
    back = pkarr.from_bytes(bytes.fromhex(r["signed_packet"]))
    assert back == record
    assert back.addresses == tuple(addresses)
    assert back.timestamp == r["timestamp"]
    again = pkarr.from_relay_payload(key.public, record.relay_payload())
    assert again == record


@pytest.mark.parametrize("case", V["failures"], ids=lambda c: c["why"])
def test_a_failure_vector_is_refused(case: dict[str, Any]) -> None:
    if "zeros_after_key" in case:
        data = bytes.fromhex(case["key"]) + bytes(case["zeros_after_key"])
    else:
        data = bytes.fromhex(case["signed_packet"])
    with pytest.raises(pkarr.BadRecord):
        pkarr.from_bytes(data)
    with pytest.raises(pkarr.BadRecord):
        pkarr.from_relay_payload(data[:32], data[32:])


def test_an_empty_record_is_never_made() -> None:
    with pytest.raises(pkarr.EmptyRecord):
        pkarr.sign(SigningKey(bytes(32)), [])


def test_more_than_five_addresses_are_refused_and_duplicates_kept_once() -> None:
    key = SigningKey(bytes(32))
    with pytest.raises(InvalidInput):
        pkarr.sign(key, [Address("192.0.2.1", p) for p in range(1, 7)])
    twice = pkarr.sign(key, [Address("192.0.2.1", 1)] * 3 + [Address("192.0.2.2", 1)])
    assert twice.addresses == (Address("192.0.2.1", 1), Address("192.0.2.2", 1))


def test_a_record_of_five_long_addresses_fits_in_the_dns_limit() -> None:
    host = "2001:db8:1111:2222:3333:4444:5555:6666"
    record = pkarr.sign(SigningKey(bytes(32)), [Address(host, 60000 + i) for i in range(5)])
    assert len(record.dns) <= pkarr.MAX_DNS_BYTES
    assert len(record.relay_payload()) <= pkarr.MAX_PAYLOAD_BYTES
    assert pkarr.from_bytes(record.to_bytes()).addresses == record.addresses


def test_a_later_record_is_newer_and_a_tie_goes_to_the_greater_packet() -> None:
    key = SigningKey(bytes(32))
    early = pkarr.sign(key, [Address("192.0.2.1", 1)], 10)
    late = pkarr.sign(key, [Address("192.0.2.1", 1)], 11)
    assert late.newer_than(early) and not early.newer_than(late)
    a = pkarr.sign(key, [Address("192.0.2.1", 1)], 10)
    b = pkarr.sign(key, [Address("192.0.2.2", 1)], 10)
    assert a.newer_than(b) != b.newer_than(a)
    assert not a.newer_than(a)


def parse(text: str) -> Address:
    from polykey.network.graph import parse_address

    return parse_address(text)
