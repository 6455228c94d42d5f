"""The DNS provider (dnspython) against a DNS server on loopback, over UDP and TCP."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from polykey.trust import proofs
from polykey.trust.providers import (
    BadProviderConfig,
    Dns,
    DnsConfig,
    InvalidIdentity,
    ProofInvalid,
    ProofNotFound,
    ProofRef,
    ProviderUnreachable,
    ReplyTooBig,
)
from polykey.trust.providers.dns import txt_strings, zone_line
from tests.trust.standins.dns import DnsStandIn

NODE = "v" + "0" * 52
# about the size of a signed link-identity entry's stored form
CLAIM = '{"payload":"' + "e" * 480 + '","signatures":[{"protected":"' + "p" * 110 + '"}]}'
NAME = "_polykey.example.org"


@pytest.fixture
def server() -> Iterator[DnsStandIn]:
    standin = DnsStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


def make(server: DnsStandIn, timeout: float = 2.0, lifetime: float = 4.0) -> Dns:
    return Dns(DnsConfig("127.0.0.1", server.port, timeout=timeout, lifetime=lifetime))


def test_publish_writes_nothing_and_says_what_record_to_add(server: DnsStandIn) -> None:
    published = make(server).publish("dns:example.org", lambda ref: proofs.render_line(CLAIM))
    assert published.ref == ProofRef("dns", "example.org")
    assert published.text.startswith("polykey-proof=v1:")
    assert published.instructions is not None
    assert f"Add this TXT record to {NAME}" in published.instructions
    assert zone_line(NAME, published.text) in published.instructions
    assert server.log == []


def test_a_long_record_is_found_over_tcp_after_a_truncated_udp_answer(server: DnsStandIn) -> None:
    line = proofs.render_line(CLAIM)
    assert len(line) > 512  # more than a UDP answer without EDNS may carry
    server.add(NAME, line.encode(), b"v=spf1 -all")
    proof = make(server).fetch(ProofRef("dns", "example.org"))
    assert (proof.owner, proof.text) == ("example.org", line)
    assert proofs.extract_lines(proof.text) == [CLAIM]
    assert [t for t, _ in server.log] == ["udp", "tcp"]


def test_several_proofs_at_one_name_come_sorted_one_a_line(server: DnsStandIn) -> None:
    a, b = proofs.render_line('{"a":1}'), proofs.render_line('{"b":2}')
    server.add(NAME, b.encode(), a.encode())
    proof = make(server).fetch(ProofRef("dns", "example.org"))
    assert proof.text.split("\n") == sorted([a, b])
    assert make(server).list("dns:example.org") == [ProofRef("dns", "example.org")]


def test_record_strings_are_joined_as_one_value(server: DnsStandIn) -> None:
    line = proofs.render_line(CLAIM)
    cuts = [0, 10, 250, 505, 760, len(line)]  # strings of any sizes up to 255
    server.add(NAME, [line[a:b].encode() for a, b in itertools.pairwise(cuts)])
    assert make(server).fetch(ProofRef("dns", "example.org")).text == line


def test_a_missing_name_or_record_is_not_found(server: DnsStandIn) -> None:
    with pytest.raises(ProofNotFound):
        make(server).fetch(ProofRef("dns", "example.org"))  # NXDOMAIN
    assert make(server).list("dns:example.org") == []
    server.add(NAME, b"some other record")
    with pytest.raises(ProofNotFound, match="no polykey-proof TXT record"):
        make(server).fetch(ProofRef("dns", "example.org"))


def test_a_silent_server_is_unreachable(server: DnsStandIn) -> None:
    server.silent.add(NAME)
    with pytest.raises(ProviderUnreachable):
        make(server, timeout=0.2, lifetime=0.5).fetch(ProofRef("dns", "example.org"))


def test_a_failing_server_is_unreachable(server: DnsStandIn) -> None:
    server.servfail.add(NAME)
    with pytest.raises(ProviderUnreachable):
        make(server).fetch(ProofRef("dns", "example.org"))


def test_a_huge_record_is_refused(server: DnsStandIn) -> None:
    server.add(NAME, b"polykey-proof=v1:" + b"A" * 20_000)
    with pytest.raises(ReplyTooBig):
        make(server).fetch(ProofRef("dns", "example.org"))


def test_too_many_records_are_refused(server: DnsStandIn) -> None:
    server.add(NAME, *[proofs.render_line(f'{{"n":{n}}}').encode() for n in range(70)])
    with pytest.raises(ReplyTooBig):
        make(server).fetch(ProofRef("dns", "example.org"))


def test_a_mangled_record_is_found_and_then_refused_by_the_proof_reader(
    server: DnsStandIn,
) -> None:
    server.add(NAME, b"polykey-proof=v1:\x00\n\xffnot base64")
    text = make(server).fetch(ProofRef("dns", "example.org")).text
    assert "\n" not in text
    with pytest.raises(ProofInvalid):
        proofs.extract_lines(text)


@pytest.mark.parametrize(
    "identity",
    [
        "dns:Example.org",
        "dns:example.org.",
        "dns:localhost",
        "dns:-x.org",
        "dns:a..org",
        "github:x",
    ],
)
def test_identities_that_are_not_lowercase_domains_are_refused(
    server: DnsStandIn, identity: str
) -> None:
    with pytest.raises(InvalidIdentity):
        make(server).list(identity)


def test_txt_strings_are_at_most_255_bytes() -> None:
    value = "x" * 600
    assert [len(s) for s in txt_strings(value)] == [255, 255, 90]
    assert b"".join(txt_strings(value)) == value.encode()


def test_a_bad_nameserver_setting_is_refused() -> None:
    with pytest.raises(BadProviderConfig):
        Dns(DnsConfig("not an address"))
    with pytest.raises(BadProviderConfig):
        Dns(DnsConfig("127.0.0.1", 0))


def test_publish_refuses_a_text_that_is_not_a_proof_line(server: DnsStandIn) -> None:
    with pytest.raises(ProofInvalid):
        make(server).publish("dns:example.org", lambda ref: "hello world")
