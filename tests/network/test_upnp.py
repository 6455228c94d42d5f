"""UPnP IGD (docs/spec/discovery.md section 11) against the stand-in device on loopback: the
search and SOAP bytes, strict parsing, a mapping found by SSDP, made, renewed and deleted (also
after PCP and NAT-PMP found no answer), and hostile devices refused with the reason in the
error: a search reply from another address, a description elsewhere, oversized, malformed or
with entities, and a SOAP fault."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from polykey.network import upnp
from polykey.network.graph import Address
from polykey.network.portmap import BadReply, Mapping, NoMapping, PortMapper
from tests.network.mapping import map_renew_close
from tests.network.standins.upnp_igd import DESCRIPTION, ENTITIES, FAULT, UpnpStandIn

PUBLIC_IP = "198.51.100.8"
IP_CONNECTION = "urn:schemas-upnp-org:service:WANIPConnection:1"


def test_the_search_and_a_soap_request_are_the_bytes_the_spec_shows() -> None:
    assert upnp.search_request(upnp.DEVICES[1]) == (
        b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\n'
        b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n\r\n"
    )
    args = {"NewRemoteHost": "", "NewExternalPort": "4242", "NewProtocol": "TCP"}
    assert upnp.soap_request(IP_CONNECTION, "DeletePortMapping", args) == (
        b'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"'
        b' s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        b'<u:DeletePortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
        b"<NewRemoteHost></NewRemoteHost><NewExternalPort>4242</NewExternalPort>"
        b"<NewProtocol>TCP</NewProtocol></u:DeletePortMapping></s:Body></s:Envelope>\r\n"
    )


def test_search_replies_descriptions_and_soap_answers_are_read_strictly() -> None:
    st = f"ST: {upnp.DEVICES[0]}"
    good = f"HTTP/1.1 200 OK\r\n{st}\r\nLocation: http://10.0.0.1:5000/d.xml\r\n\r\n"
    assert upnp.parse_search_reply(good.encode(), "10.0.0.1") == "http://10.0.0.1:5000/d.xml"
    for bad, reason in (
        (good.replace("10.0.0.1:", "10.0.0.9:"), "not on the gateway"),
        (good.replace("http:", "https:"), "not on the gateway"),
        (good.replace("http://", "http://u@"), "not on the gateway"),
        (good.replace("200 OK", "404 Not Found"), "not a search reply"),
        (good.replace(st, "ST: upnp:rootdevice"), "another device"),
        (good.replace("OK", "\u00e9"), "not ASCII"),
    ):
        with pytest.raises(BadReply, match=reason):
            upnp.parse_search_reply(bad.encode(), "10.0.0.1")
    at = "http://10.0.0.1:5000/d.xml"
    found = upnp.parse_description(DESCRIPTION.encode(), at, "10.0.0.1")
    assert found == ("http://10.0.0.1:5000/ctl/IPConn", IP_CONNECTION)
    elsewhere = DESCRIPTION.replace("/ctl/IPConn", "http://10.0.0.9/ctl")
    for bad, reason in (
        (elsewhere, "control URL is refused"),
        (DESCRIPTION.replace("WANIPConnection", "WANXConnection"), "no WAN connection"),
        (ENTITIES, "refused \\(DTDForbidden\\)"),
        (DESCRIPTION[:300], "refused \\(ParseError\\)"),
    ):
        with pytest.raises(NoMapping, match=reason):
            upnp.parse_description(bad.encode(), at, "10.0.0.1")
    envelope = '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>{}'
    envelope += "</s:Body></s:Envelope>"
    fault = envelope.format(FAULT.format(718, "ConflictInMappingEntry")).encode()
    with pytest.raises(NoMapping, match="refused AddPortMapping: 718 ConflictInMappingEntry"):
        upnp.parse_soap_reply(500, fault, "AddPortMapping")
    with pytest.raises(NoMapping, match="with HTTP 503"):
        upnp.parse_soap_reply(503, b"", "AddPortMapping")
    inner = "<NewExternalIPAddress>203.0.113.5</NewExternalIPAddress>"
    answer = envelope.format(
        f"<u:GetExternalIPAddressResponse xmlns:u='x'>{inner}</u:GetExternalIPAddressResponse>"
    )
    got = upnp.parse_soap_reply(200, answer.encode(), "GetExternalIPAddress")
    assert got == {"NewExternalIPAddress": "203.0.113.5"}
    with pytest.raises(NoMapping, match="is not one"):
        upnp.parse_soap_reply(200, answer.encode(), "AddPortMapping")


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mapper(igd: UpnpStandIn, **kw: Any) -> PortMapper:
    at: dict[str, Any] = {"gateway": "127.0.0.1", "ssdp": ("127.0.0.1", igd.ssdp_port)}
    at["timeout"] = 0.3
    return PortMapper(4242, **(at | kw))


def test_a_port_is_mapped_by_upnp_after_pcp_and_nat_pmp_find_no_answer() -> None:
    igd = UpnpStandIn("127.0.0.1", PUBLIC_IP).start()
    try:
        run = map_renew_close(lambda: _mapper(igd, server_port=_closed_udp_port()))
    finally:
        igd.close()
    changes, mapper = run.changes, run.mapper
    assert run.renewed == changes[0]  # renewed: added again, by UPnP only
    assert run.status["how"] == "UPnP IGD"
    assert changes == [Mapping(Address(PUBLIC_IP, 4242), 4242, 7200, "127.0.0.1", "UPnP IGD")]
    assert [(e["event"], e["lifetime"]) for e in igd.events] == [
        ("map", 7200),
        ("map", 7200),
        ("delete", 0),
    ]
    assert igd.rules == {} and mapper.mapping is None


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("wrong-source", "refused the router's reply: a reply from 127.0.0.2:"),
        ("elsewhere", "refused the router's reply: a URL that is not on the gateway"),
        ("huge", "more than 65536"),
        ("malformed", "the router sent XML that is refused (ParseError)"),
        ("entities", "the router sent XML that is refused (DTDForbidden)"),
        ("fault", "the router refused AddPortMapping: 718 ConflictInMappingEntry"),
    ],
)
def test_a_hostile_device_is_refused_and_the_mapper_goes_on_unmapped(
    mode: str, reason: str
) -> None:
    igd = UpnpStandIn("127.0.0.1", PUBLIC_IP, mode=mode).start()

    async def scenario() -> PortMapper:
        mapper = _mapper(igd, protocols=("UPnP IGD",))
        task = asyncio.create_task(mapper.run(_ignore))
        while not mapper.error:
            await asyncio.sleep(0.01)
        assert not task.done()
        task.cancel()
        await mapper.close()
        return mapper

    try:
        mapper = asyncio.run(scenario())
    finally:
        igd.close()
    assert mapper.status()["error"].startswith("UPnP IGD: ")
    assert reason in mapper.status()["error"]
    assert mapper.mapping is None and igd.rules == {}


async def _ignore(mapping: Mapping | None) -> None:
    raise AssertionError(f"told of {mapping}")
