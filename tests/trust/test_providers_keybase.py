"""The Keybase provider against a stand-in of Keybase's lookup API on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from polykey.trust.providers import (
    Keybase,
    KeybaseConfig,
    ProofNotFound,
    ProofRef,
    ProviderBadReply,
    ReplyTooBig,
)
from tests.trust.standins.keybase import BUNDLE, KeybaseStandIn, KeybaseUser

FPR = "9f1c2e4b6a8d0f1e3c5b7a9d2f4e6c8b0a1d3f5e"


@pytest.fixture
def kb() -> Iterator[KeybaseStandIn]:
    standin = KeybaseStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


def make(kb: KeybaseStandIn) -> Keybase:
    return Keybase(KeybaseConfig(base_url=kb.url))


def test_lookup_gives_the_key_and_the_proofs_keybase_lists(kb: KeybaseStandIn) -> None:
    kb.users["alice"] = KeybaseUser("alice", FPR.upper(), [("github", "alice"), ("dns", "a.org")])
    user = make(kb).lookup("alice")
    assert (user.username, user.fingerprint, user.bundle) == ("alice", FPR, BUNDLE)
    assert [(p.proof_type, p.nametag, p.state) for p in user.proofs] == [
        ("github", "alice", 1),
        ("dns", "a.org", 1),
    ]
    proof = make(kb).fetch(ProofRef("keybase", "alice"))
    assert (proof.owner, proof.text) == ("alice", BUNDLE)
    assert make(kb).list("keybase:alice") == [ProofRef("keybase", "alice")]


def test_publish_writes_nothing_and_asks_for_a_signature(kb: KeybaseStandIn) -> None:
    kb.users["alice"] = KeybaseUser("alice", FPR)
    published = make(kb).publish("keybase:alice", lambda ref: f"claim for {ref.ref}")
    assert published.text == "claim for alice"
    assert published.instructions is not None and FPR in published.instructions


def test_an_unknown_user_is_not_found(kb: KeybaseStandIn) -> None:
    with pytest.raises(ProofNotFound):
        make(kb).lookup("nobody")
    kb.raw["ghost"] = {"status": {"code": 0, "name": "OK"}, "them": [None]}
    with pytest.raises(ProofNotFound):
        make(kb).lookup("ghost")
    assert make(kb).list("keybase:nobody") == []


@pytest.mark.parametrize(
    "body",
    [
        {"status": {"code": 0, "name": "OK"}, "them": []},
        {"status": {"code": 0, "name": "OK"}, "them": [{"basics": {"username": "mallory"}}]},
        {"status": "OK"},
        {"status": {"code": 100, "name": "INPUT_ERROR"}},
    ],
)
def test_replies_that_lie_or_are_malformed_are_refused(kb: KeybaseStandIn, body: object) -> None:
    kb.raw["alice"] = body
    with pytest.raises(ProviderBadReply):
        make(kb).lookup("alice")


def test_a_huge_key_is_refused(kb: KeybaseStandIn) -> None:
    kb.users["alice"] = KeybaseUser("alice", FPR)
    body = kb.user_json(kb.users["alice"])
    body["public_keys"]["primary"]["bundle"] = "x" * 70_000
    kb.raw["alice"] = {"status": {"code": 0, "name": "OK"}, "them": [body]}
    with pytest.raises(ReplyTooBig):
        make(kb).lookup("alice")
