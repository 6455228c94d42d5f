"""PCP (RFC 6887, docs/spec/discovery.md section 11) against the stand-in router on loopback:
the MAP request's bytes, strict replies, a mapping made, renewed and deleted, the fall-back to
NAT-PMP when the router answers "unsupported version", and hostile replies refused (wrong
nonce, wrong sizes, another sender, a refusal) with the reason in the error."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from polykey.network import pcp
from polykey.network.graph import Address
from polykey.network.portmap import BadReply, Mapping, NoMapping, PortMapper
from tests.network.mapping import map_renew_close
from tests.network.standins.natpmp import NatPmpStandIn

PUBLIC_IP = "198.51.100.7"
NONCE = bytes(range(12))
V4 = "00000000000000000000ffff"
REQUEST = (  # MAP, lifetime 7200, from 192.168.1.2, TCP 4242 -> 4242, no address preferred
    f"02 01 0000 00001c20 {V4} c0a80102  000102030405060708090a0b 06 000000 1092 1092 {V4} 00000000"
)
REPLY = (  # success, lifetime 3600, epoch 5; TCP 4242 mapped to 203.0.113.9:8080
    f"02 81 00 00 00000e10 00000005 {'00' * 12}"
    f" 000102030405060708090a0b 06 000000 1092 1f90 {V4} cb007109"
)


def test_the_map_request_is_the_bytes_of_rfc_6887() -> None:
    request = pcp.map_request(NONCE, "192.168.1.2", 4242, 4242, 7200)
    assert request == bytes.fromhex(REQUEST)
    assert len(pcp.map_request(NONCE, "192.168.1.2", 4242, 0, 0)) == 60
    with pytest.raises(ValueError, match="96 bits"):
        pcp.map_request(NONCE[:8], "192.168.1.2", 4242, 0, 0)


def _with(reply: bytes, offset: int, value: bytes) -> bytes:
    return reply[:offset] + value + reply[offset + len(value) :]


def test_replies_are_read_strictly() -> None:
    ok = bytes.fromhex(REPLY)
    assert pcp.parse_map_reply(ok, NONCE, 4242) == ("203.0.113.9", 8080, 3600)
    refused = {
        "wrong nonce": _with(ok, 24, bytes(12)),
        "another mapping": _with(ok, 40, b"\x10\x93"),  # about another port
        "60": ok + bytes(4),  # options were not asked for
        "not 60": ok[:-1],
        "PCP version 3": _with(ok, 0, b"\x03"),
        "not a reply to MAP": _with(ok, 1, b"\x01"),  # a request, not a response
        "too short": ok[:12],
    }
    for reason, bad in refused.items():
        with pytest.raises(BadReply, match=reason):
            pcp.parse_map_reply(bad, NONCE, 4242)
    with pytest.raises(BadReply, match="not 60"):  # a success needs the MAP part
        pcp.parse_map_reply(ok[:24], NONCE, 4242)
    with pytest.raises(NoMapping, match="not authorised"):
        pcp.parse_map_reply(_with(ok, 3, b"\x02"), NONCE, 4242)
    with pytest.raises(NoMapping, match="address mismatch"):
        pcp.parse_map_reply(_with(ok, 3, b"\x0c")[:24], NONCE, 4242)  # header only
    with pytest.raises(NoMapping, match="IPv6"):
        pcp.parse_map_reply(_with(ok, 44, bytes.fromhex("20010db8")), NONCE, 4242)
    natpmp_says_unsupported = struct.pack("!BBHI", 0, 129, 1, 5)
    for older in (natpmp_says_unsupported, _with(_with(ok, 0, b"\x01"), 3, b"\x01")):
        with pytest.raises(pcp.OlderRouter):
            pcp.parse_map_reply(older, NONCE, 4242)


def _router(mode: str = "ok", **kw: Any) -> NatPmpStandIn:
    return NatPmpStandIn("127.0.0.1", PUBLIC_IP, mode=mode, **kw).start()


def _mapper(router: NatPmpStandIn, **kw: Any) -> PortMapper:
    at = {"gateway": "127.0.0.1", "server_port": router.port, "protocols": ("PCP", "NAT-PMP")}
    return PortMapper(4242, **(at | kw))


def test_a_port_is_mapped_by_pcp_renewed_and_deleted_on_close() -> None:
    router = _router(pcp=True, max_lifetime=60)
    try:
        run = map_renew_close(lambda: _mapper(router))
    finally:
        router.close()
    changes, mapper = run.changes, run.mapper
    assert run.renewed == changes[0]  # renewed: the same, by the same nonce
    assert run.status["how"] == "PCP"
    assert changes == [Mapping(Address(PUBLIC_IP, 4242), 4242, 60, "127.0.0.1", "PCP")]
    assert [(e["event"], e["how"]) for e in router.events] == [
        ("map", "PCP"),
        ("map", "PCP"),
        ("delete", "PCP"),
    ]
    assert mapper.mapping is None


def test_a_router_that_speaks_only_nat_pmp_is_asked_by_nat_pmp() -> None:
    router = _router(pcp=False)
    try:
        mapping = asyncio.run(_mapper(router).map_once())
    finally:
        router.close()
    assert mapping.how == "NAT-PMP" and mapping.external == Address(PUBLIC_IP, 4242)
    assert [e["how"] for e in router.events] == ["NAT-PMP"]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("wrong-nonce", "PCP: refused the router's reply: wrong nonce"),
        ("oversized", "PCP: refused the router's reply: a reply of 108 bytes, not 60"),
        ("malformed", "PCP: refused the router's reply: a reply of 59 bytes, not 60"),
        ("wrong-source", "PCP: refused the router's reply: a reply from 127.0.0.2:"),
        ("refuse", "PCP: the router refused: not authorised"),
    ],
)
def test_a_hostile_pcp_reply_is_refused_and_the_mapper_goes_on_unmapped(
    mode: str, reason: str
) -> None:
    router = _router(mode, pcp=True)

    async def scenario() -> PortMapper:
        mapper = _mapper(router, timeout=0.3, protocols=("PCP",))
        told: list[Mapping | None] = []

        async def changed(mapping: Mapping | None) -> None:
            told.append(mapping)

        task = asyncio.create_task(mapper.run(changed))
        while not mapper.error:
            await asyncio.sleep(0.01)
        assert not task.done()  # it waits to ask again
        task.cancel()
        await mapper.close()
        assert told == []
        return mapper

    try:
        mapper = asyncio.run(scenario())
    finally:
        router.close()
    assert mapper.mapping is None and reason in mapper.status()["error"]
    assert mapper.status()["how"] is None
    assert [e for e in router.events if e["event"] == "delete"] == []
