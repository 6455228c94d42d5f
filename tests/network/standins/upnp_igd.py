"""A UPnP Internet gateway device for the port-mapping tests: an SSDP responder, the device
description over HTTP and a WANIPConnection:1 SOAP control URL, in this process or as a
process in the router's network namespace:

    python -m tests.network.standins.upnp_igd HOST PUBLIC_IP [--wan IFACE] [--mode MODE]

In this process it answers searches sent to its own SSDP port (``ssdp_port``); as a process it
joins 239.255.255.250 on HOST's interface and answers on port 1900. Given ``--wan`` each
AddPortMapping is made real, a nftables DNAT rule (tests/network/standins/natpmp.py), removed
by DeletePortMapping. As a process it prints ``ready``, then one JSON line per mapping made or
deleted, and stops when its stdin closes. MODE plays a bad device: ``wrong-source`` (the search
reply from 127.0.0.2), ``elsewhere`` (a LOCATION on 127.0.0.2), ``huge`` (a description of
100 KiB), ``malformed`` (a description that is not XML), ``entities`` (a description with a
DTD of nested entities), ``fault`` (AddPortMapping answered by a SOAP fault, 718).
"""

from __future__ import annotations

import argparse
import socket
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.network.standins import serve_events_until_stdin_closes
from tests.network.standins.natpmp import add_dnat, nat_table, remove_dnat

GROUP = "239.255.255.250"
IGD = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
SERVICE = "urn:schemas-upnp-org:service:WANIPConnection:1"
DESCRIPTION = f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
 <specVersion><major>1</major><minor>0</minor></specVersion>
 <device><deviceType>{IGD}</deviceType><friendlyName>stand-in</friendlyName>
  <deviceList><device>
   <deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
   <deviceList><device>
    <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
    <serviceList><service>
     <serviceType>{SERVICE}</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
     <controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt</eventSubURL><SCPDURL>/x.xml</SCPDURL>
    </service></serviceList>
   </device></deviceList>
  </device></deviceList>
 </device>
</root>
"""
ENTITIES = (
    '<?xml version="1.0"?><!DOCTYPE root [<!ENTITY a "aaaaaaaaaa">'
    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
    "]><root><URLBase>&c;</URLBase></root>"
)
ENVELOPE = (
    '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    "<s:Body>{}</s:Body></s:Envelope>"
)
FAULT = (
    "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
    '<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>{}</errorCode>'
    "<errorDescription>{}</errorDescription></UPnPError></detail></s:Fault>"
)


class UpnpStandIn:
    def __init__(
        self,
        host: str,
        public: str,
        *,
        mode: str = "ok",
        wan: str | None = None,
        multicast: bool = False,
    ) -> None:
        self.host, self.public, self.mode, self.wan = host, public, mode, wan
        self.ssdp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if multicast:
            self.ssdp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.ssdp.bind(("0.0.0.0", 1900))
            join = socket.inet_aton(GROUP) + socket.inet_aton(host)
            self.ssdp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, join)
        else:
            self.ssdp.bind((host, 0))
        self.ssdp_port = self.ssdp.getsockname()[1]
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind(("127.0.0.2" if host == "127.0.0.1" else host, 0))
        self.http = ThreadingHTTPServer((host, 0), _handler(self))
        self.http_port = self.http.server_address[1]
        self.rules: dict[int, tuple[str, int, str]] = {}  # external -> (client, internal, rule)
        self.events: list[dict[str, Any]] = []
        self.on_event: Any = None
        self.lock = threading.Lock()
        if wan is not None:
            nat_table()

    def start(self) -> UpnpStandIn:
        threading.Thread(target=self._serve_ssdp, daemon=True).start()
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.ssdp.close()
        self.other.close()
        self.http.shutdown()
        self.http.server_close()

    def _serve_ssdp(self) -> None:
        while True:
            try:
                data, addr = self.ssdp.recvfrom(2048)
            except OSError:
                return
            text = data.decode("ascii", "replace")
            if not text.startswith("M-SEARCH") or f"ST: {IGD}" not in text:
                continue
            at = "127.0.0.2" if self.mode == "elsewhere" else self.host
            reply = (
                f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: {IGD}\r\n"
                f"USN: uuid:0000-standin::{IGD}\r\nEXT:\r\nSERVER: Linux UPnP/1.0 stand-in/1\r\n"
                f"LOCATION: http://{at}:{self.http_port}/desc.xml\r\n\r\n"
            ).encode()
            (self.other if self.mode == "wrong-source" else self.ssdp).sendto(reply, addr)

    def description(self) -> bytes:
        if self.mode == "huge":
            return DESCRIPTION.replace("stand-in", "x" * 100_000).encode()
        if self.mode == "malformed":
            return DESCRIPTION[:300].encode()
        if self.mode == "entities":
            return ENTITIES.encode()
        return DESCRIPTION.encode()

    def control(self, action: str, args: dict[str, str], client: str) -> tuple[int, str]:
        """(HTTP status, the SOAP body's content) for ``action``."""
        if action == "GetExternalIPAddress":
            inner = f"<NewExternalIPAddress>{self.public}</NewExternalIPAddress>"
            return 200, f'<u:{action}Response xmlns:u="{SERVICE}">{inner}</u:{action}Response>'
        if action == "AddPortMapping":
            if self.mode == "fault":
                return 500, FAULT.format(718, "ConflictInMappingEntry")
            if args.get("NewInternalClient") != client or args.get("NewProtocol") != "TCP":
                return 500, FAULT.format(606, "Action not authorized")
            external, internal = int(args["NewExternalPort"]), int(args["NewInternalPort"])
            with self.lock:
                if external not in self.rules:
                    rule = add_dnat(self.wan, external, client, internal) if self.wan else ""
                    self.rules[external] = (client, internal, rule)
            life = int(args.get("NewLeaseDuration", "0"))
            self._event("map", client, internal, external, life)
        elif action == "DeletePortMapping":
            with self.lock:
                held = self.rules.pop(int(args.get("NewExternalPort", "0")), None)
            if held is None:
                return 500, FAULT.format(714, "NoSuchEntryInArray")
            if self.wan is not None:
                remove_dnat(held[2])
            self._event("delete", held[0], held[1], int(args["NewExternalPort"]), 0)
        else:
            return 500, FAULT.format(401, "Invalid Action")
        return 200, f'<u:{action}Response xmlns:u="{SERVICE}"/>'

    def _event(self, event: str, client: str, internal: int, external: int, life: int) -> None:
        doc = {"event": event, "how": "UPnP IGD", "client": client, "internal": internal}
        doc |= {"external": external, "lifetime": life}
        self.events.append(doc)
        if self.on_event is not None:
            self.on_event(doc)


def _handler(igd: UpnpStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", 'text/xml; charset="utf-8"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/desc.xml":
                self._send(200, igd.description())
            else:
                self._send(404, b"")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            action = self.headers.get("SOAPAction", "").strip('"').rpartition("#")[2]
            if self.path != "/ctl/IPConn" or not self.headers.get("SOAPAction", "").startswith(
                f'"{SERVICE}#'
            ):
                self._send(404, b"")
                return
            args: dict[str, str] = {}
            for element in ET.fromstring(body).iter():
                if element.tag.rpartition("}")[2] == action:
                    args = {child.tag: child.text or "" for child in element}
            status, inner = igd.control(action, args, self.client_address[0])
            self._send(status, ENVELOPE.format(inner).encode())

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("public")
    parser.add_argument("--wan")
    parser.add_argument("--mode", default="ok")
    args = parser.parse_args()
    igd = UpnpStandIn(args.host, args.public, mode=args.mode, wan=args.wan, multicast=True)
    serve_events_until_stdin_closes(igd)


if __name__ == "__main__":
    main()
