"""DNS: a proof is a TXT record at ``_polykey.<domain>`` that the domain's owner adds by hand;
Polykey only reads it, through the system's resolver or a configured nameserver (dnspython)
(docs/spec/identities.md, "DNS").
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from polykey.trust.providers.base import (
    BadProviderConfig,
    InvalidIdentity,
    Proof,
    ProofInvalid,
    ProofNotFound,
    ProofRef,
    ProviderBadReply,
    ProviderUnreachable,
    Published,
    ReplyTooBig,
    name_of,
)

NAME = "dns"
LABEL = "_polykey"
PREFIX = b"polykey-proof="
MAX_RECORDS = 64  # polykey-proof records at one name
MAX_RECORD = 12 * 1024  # bytes of one record, its strings joined
TXT_STRING = 255  # bytes of one character-string (RFC 1035 3.3.14)
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_PRINTABLE = bytes(range(0x21, 0x7F))


@dataclass(frozen=True)
class DnsConfig:
    nameserver: str | None = None  # an IP address; None: the system's resolvers
    port: int = 53
    timeout: float = 2.0  # one query
    lifetime: float = 6.0  # all the tries of one lookup, UDP then TCP included


def check_domain(domain: str) -> str:
    """A domain of an identity: lowercase ASCII labels (IDNs in their xn-- form), two or more,
    no trailing dot, at most 253 characters."""
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise InvalidIdentity(
            f"dns:{domain[:80]!r}", hint="A domain is written in lowercase, e.g. dns:example.org."
        )
    return domain


def txt_strings(value: str) -> builtins.list[bytes]:
    """A record's value cut into character-strings of at most 255 bytes, as a TXT record
    longer than one string is written (readers join them back)."""
    raw = value.encode("ascii")
    return [raw[i : i + TXT_STRING] for i in range(0, len(raw), TXT_STRING)] or [b""]


def zone_line(name: str, value: str) -> str:
    strings = " ".join(f'"{s.decode("ascii")}"' for s in txt_strings(value))
    return f"{name}. 3600 IN TXT {strings}"


class Dns:
    name = NAME

    def __init__(self, config: DnsConfig | None = None) -> None:
        self.config = config = config or DnsConfig()
        if not 0 < config.port < 65536:
            raise BadProviderConfig(f"DNS port {config.port}")
        self.resolver = dns.resolver.Resolver(configure=config.nameserver is None)
        if config.nameserver is not None:
            try:
                self.resolver.nameservers = [config.nameserver]
            except ValueError:
                raise BadProviderConfig(f"nameserver {config.nameserver!r}") from None
            self.resolver.port = config.port
        self.resolver.timeout = config.timeout
        self.resolver.lifetime = config.lifetime
        self.resolver.cache = None

    def publish(self, identity: str, make_text: Callable[[ProofRef], str]) -> Published:
        """Nothing is written: the text is returned with instructions for the domain's owner."""
        domain = check_domain(name_of(identity, NAME))
        ref = ProofRef(NAME, domain)
        value = make_text(ref)
        if not value.encode("ascii", "replace").startswith(PREFIX) or not all(
            0x21 <= ord(c) < 0x7F for c in value
        ):
            raise ProofInvalid("a DNS proof is one polykey-proof= line of printable ASCII")
        name = f"{LABEL}.{domain}"
        instructions = (
            f"Add this TXT record to {name} (keep any others there):\n"
            f"  {value}\n"
            f"In a zone file, as strings of at most 255 characters:\n"
            f"  {zone_line(name, value)}"
        )
        return Published(ref, value, instructions)

    def fetch(self, ref: ProofRef) -> Proof:
        """The polykey-proof records at ``_polykey.<domain>``, one a line (sorted); others
        there are ignored. No such name, or no such record: :class:`ProofNotFound`."""
        if ref.provider != NAME:
            raise ProofNotFound(f"{ref.provider}:{ref.ref[:80]!r} is not a domain")
        domain = check_domain(ref.ref)
        records = self._records(domain)
        if not records:
            raise ProofNotFound(f"no polykey-proof TXT record at {LABEL}.{domain}")
        return Proof(ref, domain, "\n".join(records))

    def list(self, identity: str) -> builtins.list[ProofRef]:
        domain = check_domain(name_of(identity, NAME))
        return [ProofRef(NAME, domain)] if self._records(domain) else []

    def _records(self, domain: str) -> builtins.list[str]:
        qname = dns.name.from_text(f"{LABEL}.{domain}.")
        try:
            answer = self.resolver.resolve(
                qname, dns.rdatatype.TXT, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.Timeout:
            raise ProviderUnreachable(f"DNS: no answer for {qname} in time") from None
        except dns.resolver.NoNameservers:
            raise ProviderUnreachable(f"DNS: no nameserver answered for {qname}") from None
        except dns.exception.DNSException as e:
            raise ProviderBadReply(f"DNS: {type(e).__name__} for {qname}") from None
        if answer.rrset is None:
            return []
        found: builtins.list[str] = []
        for rdata in answer.rrset:
            raw = b"".join(rdata.strings)
            if not raw.startswith(PREFIX):
                continue
            if len(raw) > MAX_RECORD:
                raise ReplyTooBig(f"a TXT record of {len(raw)} bytes at {qname}, over {MAX_RECORD}")
            found.append("".join(chr(b) if b in _PRINTABLE else "?" for b in raw))
            if len(found) > MAX_RECORDS:
                raise ReplyTooBig(f"over {MAX_RECORDS} polykey-proof records at {qname}")
        return sorted(found)
