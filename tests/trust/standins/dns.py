"""A DNS server on loopback, over UDP and TCP on one port, written with dnspython's message
and wire code: TXT answers from a dict, NXDOMAIN for other names, and on request a silent name
(the client times out) or SERVFAIL. A UDP answer bigger than the client may take (512 bytes, or
its EDNS payload size) is sent truncated (TC, no answers), as a real server does, so the client
must ask again over TCP.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset


class DnsStandIn:
    def __init__(self) -> None:
        self.txt: dict[str, list[list[bytes]]] = {}  # name (no trailing dot) -> records
        self.silent: set[str] = set()
        self.servfail: set[str] = set()
        self.log: list[tuple[str, str]] = []  # transport, name
        self.stopping = threading.Event()
        self.udp, self.tcp = _bind_pair()
        self.port = self.udp.getsockname()[1]
        self.threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]

    def start(self) -> DnsStandIn:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=5)
        self.udp.close()
        self.tcp.close()

    def add(self, name: str, *records: bytes | list[bytes]) -> None:
        """TXT records at ``name``; a record given as bytes is cut into 255-byte strings."""
        for record in records:
            strings = (
                [record[i : i + 255] for i in range(0, len(record), 255)]
                if isinstance(record, bytes)
                else record
            )
            self.txt.setdefault(name.lower(), []).append(strings)

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.log.append((transport, name))
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.txt:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, dns.rdatatype.TXT)
            for strings in self.txt[name]:
                rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)
                rrset.add(rdata, 300)
            response.answer.append(rrset)
        out = response.to_wire(max_size=65535)
        limit = max(512, query.payload) if query.edns >= 0 else 512
        if transport == "udp" and len(out) > limit:
            cut = dns.message.make_response(query)
            cut.flags |= dns.flags.TC
            out = cut.to_wire()
        return out

    def _serve_udp(self) -> None:
        while not self.stopping.is_set():
            try:
                wire, peer = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            out = self.answer(wire, "udp")
            if out is not None:
                with contextlib.suppress(OSError):
                    self.udp.sendto(out, peer)

    def _serve_tcp(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn: socket.socket) -> None:
        with conn:
            while not self.stopping.is_set():
                head = _read(conn, 2)
                if head is None:
                    return
                wire = _read(conn, struct.unpack("!H", head)[0])
                if wire is None:
                    return
                out = self.answer(wire, "tcp")
                if out is None:
                    self.stopping.wait(10)
                    return
                conn.sendall(struct.pack("!H", len(out)) + out)


def _read(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = conn.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same free loopback port."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        udp.settimeout(0.05)  # the serving loops look at the stop flag this often
        tcp.settimeout(0.05)
        return udp, tcp
    raise OSError("no free port for both UDP and TCP")
