"""A DNS server on loopback for seeds: SRV, TXT and A records from dicts (the trust stand-in's
sockets and transports; its TXT-only answers extended)."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.SRV
import dns.rrset

from tests.trust.standins.dns import DnsStandIn


class SrvStandIn(DnsStandIn):
    def __init__(self) -> None:
        super().__init__()
        self.srv: dict[
            str, list[tuple[int, int, int, str]]
        ] = {}  # name -> (prio, weight, port, target)
        self.a: dict[str, list[str]] = {}

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.log.append((transport, name))
        response = dns.message.make_response(query)
        rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, question.rdtype)
        if question.rdtype == dns.rdatatype.SRV:
            for prio, weight, port, target in self.srv.get(name, []):
                srv = dns.rdtypes.IN.SRV.SRV(  # type: ignore[no-untyped-call]
                    dns.rdataclass.IN,
                    dns.rdatatype.SRV,
                    prio,
                    weight,
                    port,
                    dns.name.from_text(target),
                )
                rrset.add(srv, 300)
        elif question.rdtype == dns.rdatatype.A:
            for address in self.a.get(name, []):
                a = dns.rdtypes.IN.A.A(dns.rdataclass.IN, dns.rdatatype.A, address)  # type: ignore[no-untyped-call]
                rrset.add(a, 300)
        elif question.rdtype == dns.rdatatype.TXT:
            for strings in self.txt.get(name, []):
                rrset.add(
                    dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings), 300
                )
        if len(rrset):
            response.answer.append(rrset)
        elif name not in self.srv and name not in self.a and name not in self.txt:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire(max_size=65535)
