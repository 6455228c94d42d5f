"""UPnP IGD (docs/spec/discovery.md section 11): the third way to ask the router for a port.

An SSDP search (M-SEARCH for InternetGatewayDevice:1 and :2, multicast out of the interface
facing the gateway only), the device description fetched over HTTP from the LOCATION it names,
then SOAP to the WANIPConnection (or WANPPPConnection) control URL: GetExternalIPAddress,
AddPortMapping (renewed by adding it again), DeletePortMapping. Only the gateway is believed:
a search reply from another address, or a LOCATION or control URL on another host, is refused.
Every reply is bounded in size (SSDP 2 KiB, description 64 KiB, SOAP 16 KiB) and parsed by
defusedxml with DTDs refused (no entities, no external references); HTTP goes with no proxy
from the environment, no redirects and no compression.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # the types only: parsing is defusedxml's
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

import defusedxml
import defusedxml.ElementTree
import httpx

from polykey.network.gateway import (
    BadReply,
    Mapping,
    NoMapping,
    exchange,
    source_address,
    usable_external,
)
from polykey.network.graph import Address
from polykey.network.httpbody import BodyRefused, fetch

SSDP = ("239.255.255.250", 1900)
MX_S = 1  # the devices' reply is spread over this many seconds
DEVICES = tuple(f"urn:schemas-upnp-org:device:InternetGatewayDevice:{v}" for v in (1, 2))
SERVICES = tuple(
    f"urn:schemas-upnp-org:service:{s}"
    for s in ("WANIPConnection:2", "WANIPConnection:1", "WANPPPConnection:1")
)
MAX_SSDP, MAX_DESCRIPTION, MAX_SOAP = 2048, 64 * 1024, 16 * 1024
DESCRIPTION = "polykey"
ONLY_PERMANENT = "725"  # OnlyPermanentLeasesSupported: asked again with lease 0
ENVELOPE = (
    '<?xml version="1.0"?>\r\n'
    '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"'
    ' s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
    '<u:{action} xmlns:u="{service}">{args}</u:{action}></s:Body></s:Envelope>\r\n'
)


def search_request(device: str) -> bytes:
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {SSDP[0]}:{SSDP[1]}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {MX_S}\r\n"
        f"ST: {device}\r\n\r\n"
    ).encode("ascii")


def on_gateway(url: str, gateway: str) -> str:
    """``url`` if it is plain HTTP to the gateway's address; BadReply otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadReply("a URL that does not parse") from None
    if parts.scheme != "http" or parts.hostname != gateway or parts.username or port == 0:
        raise BadReply("a URL that is not on the gateway")
    return url


def parse_search_reply(data: bytes, gateway: str) -> str:
    """The LOCATION of an Internet gateway device from an SSDP search reply."""
    try:
        lines = data.decode("ascii").split("\r\n")
    except UnicodeDecodeError:
        raise BadReply("a search reply that is not ASCII") from None
    if not re.fullmatch(r"HTTP/1\.[01] 200( .*)?", lines[0]):
        raise BadReply("not a search reply")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if headers.get("st") not in DEVICES:
        raise BadReply("a search reply about another device")
    return on_gateway(headers.get("location", ""), gateway)


def _xml(body: bytes) -> ET.Element:
    try:
        root: ET.Element = defusedxml.ElementTree.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, defusedxml.DefusedXmlException) as exc:
        raise NoMapping(f"the router sent XML that is refused ({type(exc).__name__})") from None
    return root


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(element: ET.Element, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def parse_description(body: bytes, location: str, gateway: str) -> tuple[str, str]:
    """(control URL, service type) of the device's WAN connection service."""
    root = _xml(body)
    found = {
        _text(e, "serviceType"): _text(e, "controlURL")
        for e in root.iter()
        if _local(e.tag) == "service"
    }
    for service in SERVICES:
        if found.get(service):
            base = _text(root, "URLBase") or location
            try:
                return on_gateway(urljoin(base, found[service]), gateway), service
            except BadReply as exc:
                raise NoMapping(f"the control URL is refused: {exc}") from None
    raise NoMapping("the router's device has no WAN connection service")


def soap_request(service: str, action: str, args: dict[str, str]) -> bytes:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in args.items())
    return ENVELOPE.format(action=action, service=service, args=inner).encode()


def _shown(text: str) -> str:
    return "".join(c for c in text if c.isprintable())[:80]


def parse_soap_reply(status: int, body: bytes, action: str) -> dict[str, str]:
    """The out-arguments of ``action``; NoMapping for a SOAP fault or anything else."""
    root = _xml(body) if body else None
    if status == 200 and root is not None:
        for e in root.iter():
            if _local(e.tag) == f"{action}Response":
                return {_local(c.tag): (c.text or "").strip() for c in e}
        raise NoMapping(f"the router's answer to {action} is not one")
    for e in root.iter() if root is not None else ():
        if _local(e.tag) == "UPnPError":
            code, text = _text(e, "errorCode"), _shown(_text(e, "errorDescription"))
            raise NoMapping(f"the router refused {action}: {_shown(code)} {text}".rstrip())
    raise NoMapping(f"the router answered {action} with HTTP {status}")


async def _fetch(
    client: httpx.AsyncClient,
    url: str,
    limit: int,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """(status, body) of one GET (or POST of ``content``) to the router, bounded."""
    try:
        return await fetch(client, url, limit, content, headers)
    except BodyRefused as exc:
        raise NoMapping(f"{exc} from the router") from None


class UpnpClient:
    """UPnP IGD on ``gateway``: found by SSDP (``ssdp``: where the search goes)."""

    name = "UPnP IGD"

    def __init__(self, gateway: str, *, local: str, ssdp: tuple[str, int], timeout: float) -> None:
        self.gateway, self.local, self.ssdp, self.timeout = gateway, local, ssdp, timeout
        self.control: tuple[str, str] | None = None  # control URL, service type

    async def _discover(self, client: httpx.AsyncClient) -> tuple[str, str]:
        location = await exchange(
            [search_request(d) for d in DEVICES],
            lambda d: parse_search_reply(d, self.gateway),
            gateway=self.gateway,
            port=self.ssdp[1],
            local=self.local,
            timeout=self.timeout + MX_S,
            max_size=MAX_SSDP,
            to=self.ssdp,
            any_port=True,
        )
        status, body = await _fetch(client, location, MAX_DESCRIPTION)
        if status != 200:
            raise NoMapping(f"the device description answered HTTP {status}")
        return parse_description(body, location, self.gateway)

    async def _call(self, client: httpx.AsyncClient, action: str, **args: str) -> dict[str, str]:
        assert self.control is not None
        url, service = self.control
        headers = {
            "Content-Type": 'text/xml; charset="utf-8"',
            "SOAPAction": f'"{service}#{action}"',
        }
        content = soap_request(service, action, args)
        status, body = await _fetch(client, url, MAX_SOAP, content, headers)
        return parse_soap_reply(status, body, action)

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            timeout=self.timeout,
            headers={"Accept-Encoding": "identity", "User-Agent": "polykey"},
        )

    async def map(self, internal: int, external: int, lifetime: int) -> Mapping:
        try:
            async with self._http() as client:
                if self.control is None:
                    self.control = await self._discover(client)
                got = await self._call(client, "GetExternalIPAddress")
                host = usable_external(got.get("NewExternalIPAddress", ""))
                args = {
                    "NewRemoteHost": "",
                    "NewExternalPort": str(external),
                    "NewProtocol": "TCP",
                    "NewInternalPort": str(internal),
                    "NewInternalClient": source_address(self.gateway, self.local),
                    "NewEnabled": "1",
                    "NewPortMappingDescription": DESCRIPTION,
                    "NewLeaseDuration": str(lifetime),
                }
                try:
                    await self._call(client, "AddPortMapping", **args)
                except NoMapping as exc:
                    if f": {ONLY_PERMANENT} " not in f"{exc} ":
                        raise
                    args["NewLeaseDuration"], lifetime = "0", 0
                    await self._call(client, "AddPortMapping", **args)
        except httpx.HTTPError as exc:
            self.control = None
            raise NoMapping(f"the router's HTTP server failed ({type(exc).__name__})") from None
        except NoMapping:
            self.control = None
            raise
        return Mapping(Address(host, external), internal, lifetime, self.gateway, self.name)

    async def unmap(self, mapping: Mapping) -> None:
        if self.control is None:
            raise NoMapping("no control URL")
        port = str(mapping.external.port)
        try:
            async with self._http() as client:
                await self._call(
                    client, "DeletePortMapping", NewRemoteHost="", NewExternalPort=port,
                    NewProtocol="TCP",
                )  # fmt: skip
        except httpx.HTTPError as exc:
            raise NoMapping(f"the router's HTTP server failed ({type(exc).__name__})") from None
