"""Own nodes in one process: link statements (JWS over RFC 8785 JSON, EdDSA), what a node
refuses, the states of a link, the bound on offers, damage. The flow between real agents is
tests/sync/test_links.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polykey.errors import InvalidInput, PolykeyError
from polykey.ids import NodeId, encode_node_id
from polykey.keys.root import RootKey
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.sync.server import PeerService
from polykey.trust import jws
from polykey.trust import links as L
from polykey.trust.links import LINKS, BadStatement, NotLinked

SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
# docs/spec/links.md, "Test vector": A's link statement about B, iat 1700000000
VECTOR = {
    "protected": "eyJhbGciOiJFZERTQSIsImtpZCI6InYwZWdnZmZ2anBvOGJzN2JncmtjZWVpdTBqNWp1OWxoZ2plaWdx"
    "bm90cmkzNjg0aWw2NnMwIn0",
    "payload": "eyJpYXQiOjE3MDAwMDAwMDAsImlzcyI6InYwZWdnZmZ2anBvOGJzN2JncmtjZWVpdTBqNWp1OWxoZ2plaW"
    "dxbm90cmkzNjg0aWw2NnMwIiwianRpIjoidjA2aDQzbmxzZG5zMmg5ZzJhY2gwZm45MjZnIiwic3ViIjoidjU2bWJs"
    "b2Exbmo1ZjFjaGUzYWFkNmo4Ym9zcjFza2pkMWZ2MTVpNG5paXU5NjhrbWRuYmciLCJ0eXAiOiJsaW5rLW5vZGUifQ",
    "signature": "Jp0uN0jiUryC21U9lLpEuTTsfQiO8_zHHnEyQk5nqSSQPPJN5TURMW8YMG-BlmqFEC9mDw48SBn2ZEjx"
    "ctk9BA",
}


def _node(path: Path) -> Node:
    node, _ = Node.bootstrap(path, b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    return node


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node, Node]]:
    a, b, c = (_node(tmp_path / f"{n}.pk") for n in "abc")
    with a, b, c:
        yield a, b, c


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _forge(key: RootKey, header: dict[str, Any], claim: dict[str, Any], raw: bool = False) -> Any:
    """A statement signed by ``key`` over whatever header and claim are given (canonical
    unless ``raw``: then as json.dumps writes them)."""
    enc = (lambda d: json.dumps(d).encode()) if raw else jws.canonical
    protected, payload = _b64(enc(header)), _b64(enc(claim))
    signature = key.signing.sign(f"{protected}.{payload}".encode())
    return {"protected": protected, "payload": payload, "signature": _b64(signature)}


def _signed(key: RootKey, header: dict[str, Any], payload: bytes) -> Any:
    protected, body = _b64(jws.canonical(header)), _b64(payload)
    signature = key.signing.sign(f"{protected}.{body}".encode())
    return {"protected": protected, "payload": body, "signature": _b64(signature)}


def _claim(iss: NodeId, sub: NodeId, **over: Any) -> dict[str, Any]:
    claim = {"typ": L.LINK, "iss": encode_node_id(iss), "sub": encode_node_id(sub)}
    return {**claim, "iat": 1700000000, "jti": "v1", **over}


def _link(a: Node, b: Node) -> None:
    """Both sides link, as the peer methods would carry the statements."""
    mine, _ = a.links.link(b.node_id)
    b.links.accept(mine.to_json(), a.node_id)
    theirs, state = b.links.link(a.node_id)
    assert state == L.LINKED
    assert a.links.accept(theirs.to_json(), b.node_id)[0] == L.LINKED


# --- statements --------------------------------------------------------------------------------


def test_the_test_vector_signs_and_verifies() -> None:
    a, b = RootKey.from_seed(SEED_A), RootKey.from_seed(SEED_B)
    made = L.sign(a, L.LINK, b.node_id, now=1700000000, jti="v06h43nlsdns2h9g2ach0fn926g")
    assert made.to_json() == VECTOR  # Ed25519 is deterministic: one claim, one signature
    statement, claim = L.parse(VECTOR)
    assert statement == made
    assert claim == L.Claim(
        L.LINK, encode_node_id(a.node_id), encode_node_id(b.node_id), 1700000000, made_jti(made)
    )
    L.expect(claim, L.LINK, a.node_id, b.node_id)
    assert _unb64(made.protected) == (
        b'{"alg":"EdDSA","kid":"' + encode_node_id(a.node_id).encode() + b'"}'
    )


def made_jti(statement: L.Statement) -> str:
    return str(json.loads(_unb64(statement.payload))["jti"])


def test_canonical_json_is_stable_and_key_order_does_not_matter() -> None:
    one = {"typ": "link-node", "iat": 5, "sub": "é", "iss": "a", "jti": "x"}
    two = dict(reversed(list(one.items())))
    assert jws.canonical(one) == jws.canonical(two)
    assert (
        jws.canonical(one) == '{"iat":5,"iss":"a","jti":"x","sub":"é","typ":"link-node"}'.encode()
    )
    key = RootKey.from_seed(SEED_A)
    for _ in range(3):  # a signed payload is always its own canonical form
        payload = _unb64(L.sign(key, L.LINK, RootKey.from_seed(SEED_B).node_id).payload)
        assert jws.canonical(json.loads(payload)) == payload


def test_claim_ids_are_multibase_and_sort_by_time() -> None:
    early, late = jws.new_claim_id(1_000), jws.new_claim_id(2_000)
    assert early.startswith("v") and len(early) == 27 and early < late


def test_a_changed_payload_does_not_verify() -> None:
    a, b, c = (RootKey.from_seed(bytes([n]) * 32) for n in (1, 2, 3))
    good = L.sign(a, L.LINK, b.node_id).to_json()
    claim = json.loads(_unb64(good["payload"]))
    claim["sub"] = encode_node_id(c.node_id)
    tampered = {**good, "payload": _b64(jws.canonical(claim))}
    with pytest.raises(BadStatement, match="signature does not verify"):
        L.parse(tampered)
    flipped = bytearray(_unb64(good["signature"]))
    flipped[0] ^= 1
    with pytest.raises(BadStatement, match="signature does not verify"):
        L.parse({**good, "signature": _b64(bytes(flipped))})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: {**d, "extra": "x"}, "object of protected, payload and signature"),
        (lambda d: [d], "object of protected, payload and signature"),
        (lambda d: {**d, "payload": 5}, "must be text"),
        (lambda d: {**d, "payload": d["payload"] + "="}, "payload is not base64url"),
        (lambda d: {**d, "signature": d["signature"] + "AAA"}, "signature is not base64url"),
        (lambda d: {**d, "signature": d["signature"][:-1] + "B"}, "signature is not base64url"),
        (lambda d: {**d, "protected": "é"}, "header is not base64url"),
        (lambda d: {**d, "payload": d["payload"] + "x" * 5000}, "longer than 4096"),
        (lambda d: {**d, "signature": _b64(b"short")}, "signature does not verify"),
        (lambda d: {**d, "payload": _b64(b"[1]")}, "payload is not a JSON object"),
        (lambda d: {**d, "payload": _b64(b"{" * 300)}, "payload is not a JSON object"),
    ],
)
def test_malformed_statements_are_refused_in_one_line(change: Any, reason: str) -> None:
    good = L.sign(RootKey.from_seed(SEED_A), L.LINK, RootKey.from_seed(SEED_B).node_id)
    with pytest.raises(BadStatement, match=reason) as caught:
        L.parse(change(good.to_json()))
    assert caught.value.exit_code == 3 and "\n" not in caught.value.message


def test_statements_that_are_signed_but_wrong_are_refused() -> None:
    a, b = RootKey.from_seed(SEED_A), RootKey.from_seed(SEED_B)
    kid = {"alg": "EdDSA", "kid": encode_node_id(a.node_id)}
    claim = _claim(a.node_id, b.node_id)
    as_b = {**claim, "iss": encode_node_id(b.node_id)}  # in b's name, signed by a
    big = jws.canonical({**claim, "iat": 0}).replace(b'"iat":0', b'"iat":1152921504606846976')
    cases = [
        (_forge(a, kid, claim, raw=True), "not canonical JSON"),  # spaces after ':' and ','
        (_forge(a, {**kid, "alg": "none"}, claim), "algorithm EdDSA"),
        (_forge(a, {**kid, "crit": ["x"]}, claim), "nothing critical"),
        (_forge(a, {**kid, "kid": encode_node_id(b.node_id)}, claim), "key id is not its issuer"),
        (_forge(a, {**kid, "kid": encode_node_id(b.node_id)}, as_b), "signature does not"),
        (_forge(a, kid, {**claim, "iss": encode_node_id(b.node_id)}), "key id is not its issuer"),
        (_forge(a, kid, {**claim, "iat": -1}), "iat"),
        (_forge(a, kid, {**claim, "iat": True}), "iat"),
        (_signed(a, kid, big), "not canonical"),  # past JSON's safe integers: no JCS form
        (_forge(a, kid, {**claim, "jti": ""}), "jti"),
        (_forge(a, kid, {**claim, "sub": "bob"}), "must be NodeIds"),
        (_forge(a, kid, {k: v for k, v in claim.items() if k != "typ"}), "typ, iss and sub"),
    ]
    for doc, reason in cases:
        with pytest.raises(BadStatement, match=reason):
            L.parse(doc)
    # a payload may carry fields a later version adds (the sigchain's seq, prevDigest, ...)
    later = _forge(a, kid, {**claim, "seq": 1, "prevDigest": None})
    assert L.parse(later)[1].sub == encode_node_id(b.node_id)


def test_float_iat_is_refused() -> None:
    a, b = RootKey.from_seed(SEED_A), RootKey.from_seed(SEED_B)
    kid = {"alg": "EdDSA", "kid": encode_node_id(a.node_id)}
    doc = _forge(a, kid, {**_claim(a.node_id, b.node_id), "iat": 1.5})  # canonical as "1.5"
    with pytest.raises(BadStatement, match="iat"):
        L.parse(doc)


# --- what a node takes from a peer ---------------------------------------------------------------


def test_a_node_takes_only_the_peers_own_statement_about_itself(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, c = nodes
    from_b, _ = b.links.link(a.node_id)
    with pytest.raises(BadStatement, match="issued by another node"):
        a.links.accept(from_b.to_json(), c.node_id)  # c replays b's genuine statement
    about_c, _ = b.links.link(c.node_id)
    with pytest.raises(BadStatement, match="names another node"):
        a.links.accept(about_c.to_json(), b.node_id)  # b's statement, but about c
    forged = _forge(
        c.key,
        {"alg": "EdDSA", "kid": encode_node_id(b.node_id)},
        _claim(b.node_id, a.node_id),
    )
    with pytest.raises(BadStatement, match="signature does not verify"):
        a.links.accept(forged, b.node_id)  # c signing in b's name
    b.links.link(a.node_id)
    a_unlinks = L.sign(b.key, L.UNLINK, a.node_id)
    with pytest.raises(BadStatement, match="not a link-node statement"):
        a.links.accept(a_unlinks.to_json(), b.node_id)
    assert a.links.states() == []  # nothing refused was kept


def test_linking_to_itself_is_refused(nodes: tuple[Node, Node, Node]) -> None:
    a, _, _ = nodes
    with pytest.raises(InvalidInput, match="cannot link to itself"):
        a.links.link(a.node_id)
    itself = L.sign(a.key, L.LINK, a.node_id).to_json()  # the node's own key, on its own port
    with pytest.raises(InvalidInput, match="cannot link to itself"):
        a.links.accept(itself, a.node_id)
    assert a.links.states() == []


# --- the states of a link ----------------------------------------------------------------------


def test_both_sides_sign_then_each_holds_both_statements(nodes: tuple[Node, Node, Node]) -> None:
    a, b, _ = nodes
    mine, state = a.links.link(b.node_id)
    assert state == L.PENDING and not a.links.is_mine(b.node_id)
    assert a.links.link(b.node_id) == (mine, L.PENDING)  # again: the same statement
    assert b.links.accept(mine.to_json(), a.node_id) == (L.OFFERED, None)
    assert not b.links.is_mine(a.node_id)
    theirs, state = b.links.link(a.node_id)  # b confirms the offer: linked on b's side
    assert state == L.LINKED and b.links.is_mine(a.node_id)
    assert a.links.accept(theirs.to_json(), b.node_id) == (L.LINKED, mine)
    assert a.links.mine() == [b.node_id] and b.links.mine() == [a.node_id]
    entry = a.links.entry(b.node_id)
    assert entry is not None and entry.mine == mine and entry.theirs == theirs
    assert b.links.accept(mine.to_json(), a.node_id) == (L.LINKED, theirs)  # idempotent


def test_the_answer_of_the_other_node_completes_or_takes_back(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, _ = nodes
    mine, _ = a.links.link(b.node_id)
    assert a.links.answered(b.node_id, mine, {"linked": False}) == L.PENDING
    b.links.accept(mine.to_json(), a.node_id)
    theirs, _ = b.links.link(a.node_id)
    answer = {"linked": True, "statement": theirs.to_json()}
    assert a.links.answered(b.node_id, mine, answer) == L.LINKED
    # b lost the link (it unlinked while a was away): a's side goes back to a request
    assert a.links.answered(b.node_id, mine, {"linked": False}) == L.PENDING
    assert not a.links.is_mine(b.node_id)
    with pytest.raises(BadStatement):
        a.links.answered(b.node_id, mine, {"linked": "yes"})
    with pytest.raises(BadStatement):
        a.links.answered(b.node_id, mine, {"linked": True, "statement": mine.to_json()})


def test_an_answer_to_a_withdrawn_request_does_not_bring_it_back(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, _ = nodes
    mine, _ = a.links.link(b.node_id)
    b.links.accept(mine.to_json(), a.node_id)
    theirs, _ = b.links.link(a.node_id)
    a.links.unlink(b.node_id)  # while the call waited
    answer = {"linked": True, "statement": theirs.to_json()}
    assert a.links.answered(b.node_id, mine, answer) == L.UNLINKED
    assert not a.links.is_mine(b.node_id)


def test_unlink_ends_the_link_on_both_sides_and_keeps_the_statement(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, _ = nodes
    _link(a, b)
    was, statement = a.links.unlink(b.node_id)
    assert was == L.LINKED and statement is not None
    assert not a.links.is_mine(b.node_id)
    assert b.links.unlinked_by(statement.to_json(), a.node_id)
    assert not b.links.is_mine(a.node_id)
    assert [e["state"] for e in a.links.states() + b.links.states()] == [L.UNLINKED] * 2
    assert a.links.unlink(b.node_id) == (L.UNLINKED, statement)  # again: told again
    assert b.links.unlink(a.node_id) == (L.UNLINKED, None)  # a ended it: nothing to tell
    assert not b.links.unlinked_by(statement.to_json(), a.node_id)  # nothing left to end
    with pytest.raises(NotLinked) as caught:
        a.links.unlink(nodes[2].node_id)
    assert caught.value.exit_code == 56
    # linking again starts over: a request, then both confirm
    mine, state = a.links.link(b.node_id)
    assert state == L.PENDING
    assert b.links.accept(mine.to_json(), a.node_id)[0] == L.OFFERED


def test_an_unlink_from_a_stranger_changes_nothing(nodes: tuple[Node, Node, Node]) -> None:
    a, b, c = nodes
    _link(a, b)
    from_c = L.sign(c.key, L.UNLINK, a.node_id)
    assert not a.links.unlinked_by(from_c.to_json(), c.node_id)
    with pytest.raises(BadStatement, match="issued by another node"):
        a.links.unlinked_by(from_c.to_json(), b.node_id)
    assert a.links.is_mine(b.node_id)


def test_withdrawn_offers_leave_nothing(nodes: tuple[Node, Node, Node]) -> None:
    a, _, c = nodes
    for _ in range(3):
        offer, _ = c.links.link(a.node_id)
        a.links.accept(offer.to_json(), c.node_id)
        _, withdrawal = c.links.unlink(a.node_id)
        assert withdrawal is not None
        assert a.links.unlinked_by(withdrawal.to_json(), c.node_id)
        assert a.links.states() == []


def test_a_declined_offer_leaves_nothing(nodes: tuple[Node, Node, Node]) -> None:
    a, _, c = nodes
    offer, _ = c.links.link(a.node_id)
    a.links.accept(offer.to_json(), c.node_id)
    was, decline = a.links.unlink(c.node_id)
    assert was == L.OFFERED and decline is not None
    assert a.links.states() == []
    assert c.links.unlinked_by(decline.to_json(), a.node_id)  # c's request is dropped
    assert c.links.states() == []


def test_offers_are_bounded_and_the_oldest_goes(tmp_path: Path) -> None:
    with _node(tmp_path / "a.pk") as a:
        strangers = [RootKey.from_seed(bytes([n]) * 32) for n in range(1, L.MAX_OFFERS + 3)]
        for key in strangers:
            a.links.accept(L.sign(key, L.LINK, a.node_id).to_json(), key.node_id)
        held = {e["node_id"] for e in a.links.states()}
        assert len(held) == L.MAX_OFFERS
        assert held == {encode_node_id(k.node_id) for k in strangers[2:]}
        again = strangers[5]  # an offer sent again replaces itself, dropping nothing
        a.links.accept(L.sign(again, L.LINK, a.node_id).to_json(), again.node_id)
        assert {e["node_id"] for e in a.links.states()} == held


# --- the ACL and damage -------------------------------------------------------------------------


def test_a_linked_node_holds_every_permission_until_unlinked(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, c = nodes
    vault = a.vaults.create("private")
    _link(a, b)
    assert a.acl.permissions(vault.id, b.node_id) == ["clone", "pull", "push", "scan"]
    assert a.acl.writers(vault.id) == [encode_node_id(b.node_id)]
    assert a.acl.knows(b.node_id) and not a.acl.knows(c.node_id)
    assert a.acl.nodes("push") == {encode_node_id(b.node_id)}
    assert a.acl.permissions(vault.id, c.node_id) == []
    a.links.unlink(b.node_id)
    assert a.acl.permissions(vault.id, b.node_id) == []
    assert a.acl.writers(vault.id) == [] and not a.acl.knows(b.node_id)


def _rewrite(node: Node, other: Node, change: Any) -> None:
    """Change a link record as only someone holding the node file's key could."""
    key = encode_node_id(other.node_id).encode()
    raw = node.store.get(LINKS, key)
    assert raw is not None
    with node.store.write() as tx:
        tx.put(LINKS, key, change(raw))


def test_a_statement_that_does_not_verify_unlinks_and_is_named_as_damage(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, c = nodes
    _link(a, b)
    _link(a, c)
    vault = a.vaults.create("v")
    stranger = L.sign(c.key, L.LINK, a.node_id).to_json()

    def swap(raw: bytes) -> bytes:  # b's statement replaced by c's (valid, but c's)
        return json.dumps({**json.loads(raw), "theirs": stranger}).encode()

    _rewrite(a, b, swap)
    assert not a.links.is_mine(b.node_id) and a.links.is_mine(c.node_id)
    assert a.acl.permissions(vault.id, b.node_id) == []
    damage = a.check()
    assert [d.place for d in damage] == [f"trust/links/{encode_node_id(b.node_id)}"]
    assert "statement of the other node" in damage[0].problem
    assert "issued by another node" in damage[0].problem
    [listed] = [e for e in a.links.states() if e["state"] == L.DAMAGED]
    assert listed["node_id"] == encode_node_id(b.node_id)
    # a peer cannot replace a damaged record; the owner can, by linking or unlinking
    theirs, _ = b.links.link(a.node_id)
    assert a.links.accept(theirs.to_json(), b.node_id) == (L.DAMAGED, None)
    assert a.links.unlink(b.node_id)[0] == L.DAMAGED
    assert a.check() == []


def test_a_malformed_record_is_damage_not_a_traceback(nodes: tuple[Node, Node, Node]) -> None:
    a, b, _ = nodes
    _link(a, b)
    _rewrite(a, b, lambda raw: b"not json")
    assert not a.links.is_mine(b.node_id)
    assert [d.problem for d in a.check()] == ["the link record is malformed"]
    _rewrite(a, b, lambda raw: b'{"state": "linked", "at": 1, "mine": null, "theirs": null}')
    assert [d.problem for d in a.check()] == ["the statement of this node is missing"]


# --- the peer methods, as the peer port calls them ---------------------------------------------


def test_the_peer_methods_answer_any_params_with_a_polykey_error_at_worst(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, _ = nodes
    service = PeerService(a.vaults, a.acl, a.node_id, a.notifications)
    good = L.sign(b.key, L.LINK, a.node_id).to_json()
    hostile: list[Any] = [
        {},
        {"statement": None},
        {"statement": "text"},
        {"statement": [good]},
        {"statement": {**good, "payload": None}},
        {"statement": {**good, "payload": "%%%"}},
        {"statement": {k: "a" * 5000 for k in good}},
        {"statement": {**good, "protected": _b64(b"[" * 10_000)}},
        {"statement": {**good, "payload": _b64(b'{"a": NaN}')}},
        {"statement": {**good, "payload": _b64(b'{"a": "\\ud800"}')}},
        {"statement": {**good, "payload": _b64(b"\xff\xfe")}},
    ]
    for params in hostile:
        for method in ("nodes.link", "nodes.unlink"):
            with pytest.raises(PolykeyError):
                service.handle(b.node_id, method, params)
    assert service.handle(b.node_id, "nodes.link", {"statement": good}) == {"linked": False}
    mine, _ = a.links.link(b.node_id)
    reply = service.handle(b.node_id, "nodes.link", {"statement": good, "later": 1})
    assert reply == {"linked": True, "statement": mine.to_json()}
    unlink = L.sign(b.key, L.UNLINK, a.node_id).to_json()
    assert service.handle(b.node_id, "nodes.unlink", {"statement": unlink}) == {"unlinked": True}
    assert not a.links.is_mine(b.node_id)
