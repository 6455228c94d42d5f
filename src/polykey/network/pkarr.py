"""Pkarr records: a node's addresses, signed by its own key, as the Pkarr spec defines them.

The node's Ed25519 public key is the name (z-base-32, 52 characters). A signed packet is::

    public key (32) || signature (64) || timestamp (8, big-endian microseconds) || DNS packet

the DNS packet (at most 1000 bytes) a reply whose answers are TXT records at
``_polykey.<name>``, one per address: ``"v=1" "addr=HOST:PORT"``, then one per relay the node
is registered with: ``"v=1" "relay=NODEID@HOST:PORT"``. The signature is BEP 44's, over the
bencoded ``3:seqi<timestamp>e1:v<length>:<DNS packet>``, so the same bytes can be a mutable
item on the Mainline DHT. A record names at least one address or relay (an empty record is
never made), at most MAX_ADDRESSES addresses and MAX_RELAYS relays. docs/spec/discovery.md has
the format and its vectors.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT

from polykey.crypto.signing import PUBLIC_BYTES, SIGNATURE_BYTES, SigningKey, verify
from polykey.errors import InvalidInput, InvalidNodeId, PolykeyError
from polykey.ids import decode_node_id, encode_node_id
from polykey.network import zbase32
from polykey.network.graph import Address, parse_address

MAX_DNS_BYTES = 1000
TIMESTAMP_BYTES = 8
HEADER_BYTES = PUBLIC_BYTES + SIGNATURE_BYTES + TIMESTAMP_BYTES  # 104
MAX_PAYLOAD_BYTES = SIGNATURE_BYTES + TIMESTAMP_BYTES + MAX_DNS_BYTES  # 1072: a relay's limit
MAX_ADDRESSES = 5  # as Polykey keeps per node
MAX_RELAYS = 3  # relays a record names (as many as a node keeps for another)
RECORD_TTL = 30  # seconds, as Iroh's records
LABEL = "_polykey"
VERSION = b"v=1"


class BadRecord(PolykeyError):
    """A discovery record is not valid."""

    exit_code = 54
    hint = "It is ignored; the node may publish a good one later."


class EmptyRecord(InvalidInput):
    """A discovery record needs at least one address or relay."""

    hint = "Serve peers on an address others can reach (`pk agent start --host ... --port ...`)."


@dataclass(frozen=True)
class SignedRecord:
    """A verified record: who signed it, when, the addresses it names and the relays it is
    registered with (``NODEID@HOST:PORT``, each checked to parse)."""

    public: bytes
    signature: bytes
    timestamp: int  # microseconds since the epoch: the record's sequence number
    dns: bytes
    addresses: tuple[Address, ...]
    relays: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return zbase32.encode(self.public)

    def to_bytes(self) -> bytes:
        """The canonical signed packet (what the Mainline DHT stores, with the key)."""
        return self.public + self.relay_payload()

    def relay_payload(self) -> bytes:
        """What a relay takes and gives: the signed packet without the public key."""
        return self.signature + self.timestamp.to_bytes(TIMESTAMP_BYTES, "big") + self.dns

    def newer_than(self, other: SignedRecord) -> bool:
        """Pkarr's order: the later timestamp; on a tie, the greater DNS packet."""
        if self.timestamp == other.timestamp:
            return self.dns > other.dns
        return self.timestamp > other.timestamp


def signable(timestamp: int, dns_packet: bytes) -> bytes:
    """The bytes signed: BEP 44's bencoded ``seq`` and ``v``."""
    return b"3:seqi%de1:v%d:" % (timestamp, len(dns_packet)) + dns_packet


def now_us() -> int:
    return time.time_ns() // 1000


def owner(public: bytes) -> dns.name.Name:
    return dns.name.from_text(f"{LABEL}.{zbase32.encode(public)}.")


def dns_packet(
    public: bytes,
    addresses: Iterable[Address],
    ttl: int = RECORD_TTL,
    relays: Iterable[str] = (),
) -> bytes:
    """The DNS reply naming ``addresses``, then ``relays`` (compressed, id 0, QR set), in the
    order given (dnspython shuffles the records of a set unless told not to)."""
    chosen = list(dict.fromkeys(addresses))
    via = [check_relay(r) for r in dict.fromkeys(relays)]
    if not chosen and not via:
        raise EmptyRecord()
    if len(chosen) > MAX_ADDRESSES:
        raise InvalidInput(f"a record names at most {MAX_ADDRESSES} addresses")
    if len(via) > MAX_RELAYS:
        raise InvalidInput(f"a record names at most {MAX_RELAYS} relays")
    message = dns.message.Message(id=0)
    message.flags = dns.flags.QR
    rrset = message.find_rrset(
        message.answer, owner(public), dns.rdataclass.IN, dns.rdatatype.TXT, create=True
    )
    for text in [f"addr={a}" for a in chosen] + [f"relay={r}" for r in via]:
        strings = (VERSION, text.encode())
        rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings), ttl)
    wire = message.to_wire(want_shuffle=False)  # the order given, so one record has one form
    if len(wire) > MAX_DNS_BYTES:
        raise InvalidInput(f"the record's DNS packet is {len(wire)} bytes (at most 1000)")
    return wire


def sign(
    key: SigningKey,
    addresses: Iterable[Address],
    timestamp: int | None = None,
    relays: Iterable[str] = (),
) -> SignedRecord:
    """This node's record naming ``addresses`` and ``relays``, at ``timestamp`` (now unless
    given)."""
    listed = tuple(dict.fromkeys(addresses))
    via = tuple(check_relay(r) for r in dict.fromkeys(relays))
    packet = dns_packet(key.public, listed, relays=via)
    stamp = now_us() if timestamp is None else timestamp
    signature = key.sign(signable(stamp, packet))
    return SignedRecord(key.public, signature, stamp, packet, listed, via)


def check_relay(text: str) -> str:
    """``NODEID@HOST:PORT`` in its one written form; InvalidInput if it is not one."""
    node_text, sep, where = text.partition("@")
    if not sep:
        raise InvalidInput(f"not a relay: {text[:80]!r}")
    try:
        node_id = decode_node_id(node_text)
    except InvalidNodeId:
        raise InvalidInput(f"not a relay: {text[:80]!r}") from None
    return f"{encode_node_id(node_id)}@{parse_address(where)}"


def from_bytes(data: bytes) -> SignedRecord:
    """A canonical signed packet, verified; BadRecord if anything is wrong."""
    if len(data) < HEADER_BYTES:
        raise BadRecord(f"{len(data)} bytes, fewer than the {HEADER_BYTES} of its header")
    return from_relay_payload(data[:PUBLIC_BYTES], data[PUBLIC_BYTES:])


def from_relay_payload(public: bytes, payload: bytes) -> SignedRecord:
    """A relay's payload for the key ``public``, verified; BadRecord if anything is wrong."""
    timestamp, packet, signature = open_payload(public, payload)
    addresses, relays = read_record(public, packet)
    return SignedRecord(public, signature, timestamp, packet, addresses, relays)


def open_payload(public: bytes, payload: bytes) -> tuple[int, bytes, bytes]:
    """(timestamp, DNS packet, signature) of a relay payload whose size and signature are
    right (what a relay checks before the DNS packet itself); BadRecord otherwise."""
    if len(public) != PUBLIC_BYTES:
        raise BadRecord("the public key is not 32 bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadRecord(f"{len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
    if len(payload) < SIGNATURE_BYTES + TIMESTAMP_BYTES:
        raise BadRecord(f"{len(payload)} bytes, too short for a signature and timestamp")
    signature = payload[:SIGNATURE_BYTES]
    timestamp = int.from_bytes(payload[SIGNATURE_BYTES : SIGNATURE_BYTES + TIMESTAMP_BYTES], "big")
    packet = payload[SIGNATURE_BYTES + TIMESTAMP_BYTES :]
    if not verify(public, signable(timestamp, packet), signature):
        raise BadRecord("the signature does not verify for its key")
    return timestamp, packet, signature


def read_addresses(public: bytes, packet: bytes) -> tuple[Address, ...]:
    """The addresses a DNS packet names for ``public`` (see read_record)."""
    return read_record(public, packet)[0]


def read_record(public: bytes, packet: bytes) -> tuple[tuple[Address, ...], tuple[str, ...]]:
    """The addresses and relays a DNS packet names for ``public``: TXT answers at
    ``_polykey.<name>`` whose first string is ``v=1`` and second ``addr=`` or ``relay=``.
    Other names, types and versions, and values that do not parse, are skipped (a record may
    carry more than ours); a packet that does not parse, or names neither, is BadRecord."""
    try:
        message = dns.message.from_wire(packet)
    except (dns.exception.DNSException, ValueError, IndexError) as exc:
        raise BadRecord(f"the DNS packet does not parse ({type(exc).__name__})") from None
    name = owner(public)
    found: list[Address] = []
    via: list[str] = []
    for rrset in message.answer:
        if rrset.name != name or rrset.rdtype != dns.rdatatype.TXT:
            continue
        for rdata in rrset:
            strings = list(rdata.strings)
            if len(strings) != 2 or strings[0] != VERSION:
                continue
            kind, _, value = strings[1].partition(b"=")
            try:
                text = value.decode("ascii")
                if kind == b"addr":
                    address = parse_address(text)
                    if address not in found:
                        found.append(address)
                elif kind == b"relay":
                    relay = check_relay(text)
                    if relay not in via:
                        via.append(relay)
            except (UnicodeDecodeError, InvalidInput):
                continue
    if not found and not via:
        raise BadRecord("it names no address and no relay")
    return tuple(found[:MAX_ADDRESSES]), tuple(via[:MAX_RELAYS])
