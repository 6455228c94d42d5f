"""The sigchain on real node files: appending and re-opening, the two-party link between two
nodes' keys, revocation, rotation, what verify_chain refuses, the held copies of other nodes'
chains (extended, a shorter or forked chain detected, the copy kept), and the fast canonical
check held to the rfc8785 package."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.errors import InvalidInput
from polykey.ids import NodeId, encode_node_id
from polykey.keys.root import RootKey
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.trust import jws
from polykey.trust.sigchain import (
    MAX_ENTRY,
    MAX_PAGE,
    SIGCHAIN,
    BadChain,
    Entry,
    ForkedChain,
    PeerChains,
    Sigchain,
    StaleDraft,
    check_rotation,
    countersign,
    verify_chain,
)
from polykey.trust.sigchain_entry import add_signature, sign_claim


def _node(path: Path) -> Node:
    node, _ = Node.bootstrap(path, b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    return node


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node, Node]]:
    a, b, c = (_node(tmp_path / f"{n}.pk") for n in "abc")
    with a, b, c:
        yield a, b, c


def _chain(node: Node) -> Sigchain:
    return Sigchain(node.store, node.key, now=lambda: 1_700_000_000)


def _claim(key: RootKey, seq: int, prev: Entry | None, typ: str, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"typ": typ, "iss": encode_node_id(key.node_id), "seq": seq}
    out |= {"iat": 1_700_000_000, "jti": jws.new_claim_id()}
    out |= {"prevClaimId": prev.jti if prev else None, "prevDigest": prev.digest if prev else None}
    return out | fields


def _notes(key: RootKey, count: int) -> list[dict[str, Any]]:
    """A valid chain of ``count`` single-signer entries."""
    docs: list[dict[str, Any]] = []
    prev: Entry | None = None
    for seq in range(1, count + 1):
        docs.append(sign_claim(key, _claim(key, seq, prev, "x-note", n=seq)))
        prev = verify_chain(key.node_id, docs[-1:], earlier=[prev] if prev else [])[0]
    return docs


def _identity(chain: Sigchain, name: str = "github:alice", ref: str = "g1") -> Entry:
    return chain.append("link-identity", {"sub": name, "proof": {"provider": "github", "ref": ref}})


# --- this node's chain ---------------------------------------------------------------------------


def test_appended_entries_survive_reopening_the_node_file(tmp_path: Path) -> None:
    path = tmp_path / "a.pk"
    with _node(path) as a:
        chain = _chain(a)
        first = _identity(chain)
        second = chain.append("x-note", {"text": "kept, not read"})
        assert chain.head() is not None and chain.head().digest == second.digest  # type: ignore[union-attr]
    with Node.open(path, b"pw", allow_weak=True) as again:
        entries = _chain(again).entries()
        assert [e.raw for e in entries] == [first.raw, second.raw]
        assert entries[1].payload["prevDigest"] == first.digest
        assert _chain(again).state().identities["github:alice"].ref == "g1"
        assert _chain(again).check() == []
        raw = again.store.get(SIGCHAIN, (2).to_bytes(8, "big"))
        assert raw == second.raw


def test_entries_docs_and_since_page_the_chain(nodes: tuple[Node, Node, Node]) -> None:
    chain = _chain(nodes[0])
    made = [chain.append("x-note", {"n": i}) for i in range(5)]
    assert [e.seq for e in chain.entries(since=4)] == [4, 5]
    assert chain.docs(since=2, limit=2) == [made[1].doc(), made[2].doc()]
    assert chain.docs(since=1) == chain.docs() == [e.doc() for e in made]
    assert len(chain.docs(max_chars=1)) == 1
    assert verify_chain(nodes[0].node_id, chain.docs()) == made


def test_another_handle_on_the_node_file_sees_appends(tmp_path: Path) -> None:
    path = tmp_path / "a.pk"
    with _node(path) as a, Node.open(path, b"pw", allow_weak=True) as other:
        mine, theirs = _chain(a), _chain(other)
        _identity(mine)
        assert len(theirs.entries()) == 1
        theirs.append("x-note", {})
        assert [e.seq for e in mine.entries()] == [1, 2]
        assert mine.append("x-note", {}).seq == 3


def test_append_refuses_two_party_types_and_reserved_fields(
    nodes: tuple[Node, Node, Node],
) -> None:
    chain = _chain(nodes[0])
    with pytest.raises(InvalidInput, match="signed by two keys"):
        chain.append("link-node", {"sub": encode_node_id(nodes[1].node_id)})
    with pytest.raises(InvalidInput, match="fills in seq"):
        chain.append("x-note", {"seq": 9})
    with pytest.raises(BadChain, match="provider:name"):
        chain.append("link-identity", {"sub": "alice", "proof": {"provider": "x", "ref": "1"}})
    assert chain.entries() == []


def test_two_nodes_link_each_in_its_own_chain(nodes: tuple[Node, Node, Node]) -> None:
    a, b, _ = nodes
    chain_a, chain_b = _chain(a), _chain(b)
    draft = chain_a.prepare_link(b.node_id)
    signed = countersign(draft.doc, b.key, issuer=a.node_id)
    entry = chain_a.append_draft(signed)
    assert entry.signers == (encode_node_id(a.node_id), encode_node_id(b.node_id))
    back = countersign(chain_b.prepare_link(a.node_id).doc, a.key, issuer=b.node_id)
    chain_b.append_draft(back)
    assert set(chain_a.state().nodes) == {encode_node_id(b.node_id)}
    assert set(chain_b.state().nodes) == {encode_node_id(a.node_id)}


def test_countersign_refuses_a_draft_about_another_node(nodes: tuple[Node, Node, Node]) -> None:
    a, b, c = nodes
    draft = _chain(a).prepare_link(b.node_id)
    with pytest.raises(BadChain, match="names another node than this one"):
        countersign(draft.doc, c.key)
    with pytest.raises(BadChain, match="issued by another node"):
        countersign(draft.doc, b.key, issuer=c.node_id)
    with pytest.raises(BadChain, match="not a delegate claim"):
        countersign(draft.doc, b.key, typ="delegate")
    forged = {**draft.doc, "signatures": [dict(draft.doc["signatures"][0], signature="A" * 86)]}
    with pytest.raises(BadChain, match="does not verify"):
        countersign(forged, b.key)


def test_a_draft_the_chain_moved_past_is_stale(nodes: tuple[Node, Node, Node]) -> None:
    a, b, _ = nodes
    chain = _chain(a)
    draft = chain.prepare_link(b.node_id)
    _identity(chain)
    with pytest.raises(StaleDraft, match="drafted as entry 1"):
        chain.append_draft(countersign(draft.doc, b.key))
    with pytest.raises(BadChain, match="issuer, then by the other key"):
        chain.append_draft(draft.doc)  # not countersigned
    assert len(chain.entries()) == 1


def test_delegate_is_countersigned_by_the_child(nodes: tuple[Node, Node, Node]) -> None:
    a, _, c = nodes
    chain = _chain(a)
    draft = chain.prepare("delegate", {"sub": encode_node_id(c.node_id), "grant": {"v": ["ci"]}})
    chain.append_draft(countersign(draft.doc, c.key, typ="delegate"))
    assert chain.state().delegations[encode_node_id(c.node_id)].grant == {"v": ["ci"]}


def test_revoke_ends_a_claim_and_an_older_one_stays_superseded(
    nodes: tuple[Node, Node, Node],
) -> None:
    chain = _chain(nodes[0])
    old = _identity(chain, ref="g1")
    new = _identity(chain, ref="g2")
    assert chain.state().identities["github:alice"].jti == new.jti
    chain.revoke(old.jti)
    assert chain.state().identities["github:alice"].ref == "g2"  # the newer claim still holds
    chain.revoke(new.jti)
    state = chain.state()
    assert "github:alice" not in state.identities
    assert state.revoked == {old.jti, new.jti}
    with pytest.raises(InvalidInput, match="revoked already"):
        chain.revoke(new.jti)
    with pytest.raises(InvalidInput, match="no claim of that jti"):
        chain.revoke("v0nothing")


def test_rotation_closes_the_chain_and_the_new_key_continues_it(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, _ = nodes
    chain = _chain(a)
    _identity(chain)
    closing, first_doc = chain.rotate(b.key)
    assert chain.state().rotated_to == encode_node_id(b.node_id)
    with pytest.raises(BadChain, match="closed by a rotate-key"):
        chain.append("x-note", {})
    new = _chain(b)
    first = new.begin(first_doc)
    check_rotation(closing, first)
    assert new.append("x-note", {}).seq == 2
    assert new.state().rotated_from == encode_node_id(a.node_id)
    assert chain.check() == [] and new.check() == []


def test_check_names_a_chain_whose_entry_was_replaced(nodes: tuple[Node, Node, Node]) -> None:
    a, b, _ = nodes
    chain = _chain(a)
    _identity(chain)
    foreign = _notes(b.key, 1)[0]
    with a.store.write() as tx:  # a record the chain did not write: another node's entry
        tx.put(SIGCHAIN, (2).to_bytes(8, "big"), json.dumps(foreign).encode())
    (damage,) = _chain(a).check()
    assert damage.place == "trust/sigchain"
    assert "entry 2" in damage.problem


# --- verify_chain refusals -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> tuple[RootKey, RootKey, RootKey]:
    a, b, c = (RootKey.from_seed(bytes([n]) * 32) for n in (1, 2, 3))
    return a, b, c


def _refused(owner: NodeId, docs: list[Any], text: str, **kw: Any) -> None:
    with pytest.raises(BadChain) as caught:
        verify_chain(owner, docs, **kw)
    assert text in caught.value.message, caught.value.message


def test_wrong_signature_is_refused(keys: tuple[RootKey, ...]) -> None:
    a, b, _ = keys
    docs = _notes(a, 3)
    docs[1] = {**docs[1], "signatures": sign_claim(b, {"x": 1})["signatures"]}
    _refused(a.node_id, docs, "entry 2: it must be signed by its issuer first")
    docs = _notes(a, 300)  # enough to be verified on threads: still the first failure in order
    for i in (120, 250):
        sig = docs[i]["signatures"][0]
        first = "B" if sig["signature"][0] != "B" else "C"  # always a change
        docs[i] = {**docs[i], "signatures": [dict(sig, signature=first + sig["signature"][1:])]}
    _refused(a.node_id, docs, "entry 121: its signature by")


def test_missing_cosignature_is_refused(keys: tuple[RootKey, ...]) -> None:
    a, b, _ = keys
    doc = sign_claim(a, _claim(a, 1, None, "link-node", sub=encode_node_id(b.node_id)))
    _refused(a.node_id, [doc], "issuer, then by the other key")
    verify_chain(a.node_id, [add_signature(doc, b)])


def test_non_canonical_json_is_refused(keys: tuple[RootKey, ...]) -> None:
    a = keys[0]
    claim = _claim(a, 1, None, "x-note")
    for raw in (json.dumps(claim).encode(), rfc8785.dumps(claim).replace(b"}", b" }")):
        payload = jws.b64url(raw)  # validly signed, but not the claim's one encoding
        _refused(a.node_id, [{"payload": payload, "signatures": [_sig(a, payload)]}], "canonical")


def _sig(key: RootKey, payload: str) -> dict[str, str]:
    protected = jws.b64url(jws.canonical({"alg": "EdDSA", "kid": encode_node_id(key.node_id)}))
    signature = key.signing.sign(f"{protected}.{payload}".encode())
    return {"protected": protected, "signature": jws.b64url(signature)}


def test_seq_gap_and_wrong_prev_digest_are_refused(keys: tuple[RootKey, ...]) -> None:
    a = keys[0]
    docs = _notes(a, 3)
    _refused(a.node_id, [docs[0], docs[2]], "entry 2: its seq is 3, not 2")
    first = verify_chain(a.node_id, docs[:1])[0]
    wrong = sign_claim(a, _claim(a, 2, first, "x-note", prevDigest="sha256:" + "A" * 43))
    _refused(a.node_id, [docs[0], wrong], "entry 2: its prevDigest is not the digest of entry 1")


def test_wrong_iss_is_refused(keys: tuple[RootKey, ...]) -> None:
    a, b, _ = keys
    _refused(b.node_id, _notes(a, 1), "issued by another node than the chain's owner")


def test_an_entry_after_rotate_key_is_refused(keys: tuple[RootKey, ...]) -> None:
    a, b, _ = keys
    docs = _notes(a, 1)
    first = verify_chain(a.node_id, docs)[0]
    rotate = add_signature(
        sign_claim(a, _claim(a, 2, first, "rotate-key", sub=encode_node_id(b.node_id))), b
    )
    closing = verify_chain(a.node_id, [rotate], earlier=[first])[0]
    after = sign_claim(a, _claim(a, 3, closing, "x-note"))
    _refused(a.node_id, [*docs, rotate, after], "entry 3: it follows a rotate-key entry")


def test_revoke_of_an_unknown_jti_is_refused(keys: tuple[RootKey, ...]) -> None:
    a = keys[0]
    revoke = sign_claim(a, _claim(a, 1, None, "revoke", sub="v0unknown"))
    _refused(a.node_id, [revoke], "revokes a claim the chain does not hold before it")


def test_oversized_entry_and_huge_page_are_refused(keys: tuple[RootKey, ...]) -> None:
    a = keys[0]
    big = sign_claim(a, _claim(a, 1, None, "x-note", pad="x" * MAX_ENTRY))
    _refused(a.node_id, [big], f"longer than {MAX_ENTRY} characters")
    _refused(a.node_id, _notes(a, 1) * (MAX_PAGE + 1), f"at most {MAX_PAGE} entries")
    _refused(a.node_id, "not a list", "must be a list")  # type: ignore[arg-type]


def test_malformed_documents_are_refused(keys: tuple[RootKey, ...]) -> None:
    a = keys[0]
    doc = _notes(a, 1)[0]
    for bad, text in [
        ({**doc, "extra": 1}, "object of payload and signatures"),
        ({**doc, "signatures": []}, "1 to 4 signatures"),
        ({**doc, "payload": doc["payload"] + "="}, "payload is not base64url"),
        ({**doc, "signatures": [dict(doc["signatures"][0], signature="x")]}, "not base64url"),
        ({**doc, "signatures": [{"protected": "e30", "signature": "x"}]}, "algorithm EdDSA"),
        (None, "object of payload and signatures"),
    ]:
        _refused(a.node_id, [bad], text)


# --- other nodes' chains -------------------------------------------------------------------------


def test_peer_chain_is_extended_page_by_page_and_kept(tmp_path: Path) -> None:
    owner = RootKey.from_seed(bytes([9]) * 32)
    docs = _notes(owner, 7)
    path = tmp_path / "a.pk"
    with _node(path) as a:
        chains = PeerChains(a.store)
        chains.accept(owner.node_id, docs[:3], from_seq=1)
        chains.accept(owner.node_id, docs[2:5], from_seq=3)  # repeats entry 3: the same one
        chains.accept(owner.node_id, docs[5:], from_seq=6, length=7)
        assert chains.head(owner.node_id).seq == 7  # type: ignore[union-attr]
    with Node.open(path, b"pw", allow_weak=True) as again:
        chains = PeerChains(again.store)
        assert chains.nodes() == [owner.node_id]
        assert [e.doc() for e in chains.entries(owner.node_id)] == docs
        assert chains.docs(owner.node_id, since=6) == docs[5:]
        assert chains.check() == []
        with pytest.raises(BadChain, match="starts at entry 9"):
            chains.accept(owner.node_id, [], from_seq=9)


def test_shorter_chain_and_fork_are_detected_and_the_copy_kept(
    nodes: tuple[Node, Node, Node],
) -> None:
    owner = RootKey.from_seed(bytes([9]) * 32)
    docs = _notes(owner, 4)
    forked = _notes(owner, 4)  # the same owner, other entries: another history
    chains = PeerChains(nodes[0].store)
    chains.accept(owner.node_id, docs, from_seq=1)
    with pytest.raises(ForkedChain, match="a chain of 2 entries; 4 were seen before") as caught:
        chains.accept(owner.node_id, docs[:2], from_seq=1, length=2)
    assert caught.value.exit_code == 59
    with pytest.raises(ForkedChain, match="another entry 3"):
        chains.accept(owner.node_id, [*docs[:2], *forked[2:]], from_seq=1)
    with pytest.raises(ForkedChain, match="two different entries 3 before"):  # proven: kept
        chains.accept(owner.node_id, forked, from_seq=1)
    assert [e.doc() for e in PeerChains(nodes[0].store).entries(owner.node_id)] == docs


def test_peer_page_that_does_not_verify_changes_nothing(nodes: tuple[Node, Node, Node]) -> None:
    owner, other = RootKey.from_seed(bytes([9]) * 32), RootKey.from_seed(bytes([8]) * 32)
    docs = _notes(owner, 3)
    chains = PeerChains(nodes[0].store)
    chains.accept(owner.node_id, docs[:2], from_seq=1)
    with pytest.raises(BadChain, match="issued by another node"):
        chains.accept(owner.node_id, _notes(other, 3)[2:], from_seq=3)
    assert chains.state(owner.node_id).head.seq == 2  # type: ignore[union-attr]
    state = chains.accept(owner.node_id, docs[2:], from_seq=3)
    assert state.head is not None and state.head.seq == 3


# --- the fast canonical check --------------------------------------------------------------------

_text = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=12)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-jws.SAFE_INT, jws.SAFE_INT) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_text, _values, max_size=6))
def test_fast_canonical_check_agrees_with_rfc8785(doc: dict[str, Any]) -> None:
    raw = rfc8785.dumps(doc)
    assert jws.canonical_claim(raw, "payload") == doc
    loose = json.dumps(doc, ensure_ascii=True).encode()
    if loose != raw:
        with pytest.raises(jws.JwsError, match="canonical"):
            jws.canonical_claim(loose, "payload")


@pytest.mark.parametrize(
    "doc",
    [
        {"😀": 1, "\uffff": 2, "a": [1.5, 2e21]},  # outside the BMP, floats: the slow path
        {"é": "\u2028\x7f\x01", "b": -0},
        {"n": jws.SAFE_INT},
    ],
)
def test_canonical_check_takes_what_rfc8785_writes(doc: dict[str, Any]) -> None:
    assert jws.canonical_claim(rfc8785.dumps(doc), "payload") == doc


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":NaN}',
        b'{"a":1.0}',
        b'{"a":9007199254740992}',
        b'{"b":1,"a":2}',
        b'{"a":"\\u00e9"}',
        b'{"a":"\\ud800"}',
        b'{"a":1,"a":1}',
        '{"\uffff":2,"\U0001f600":1}'.encode(),  # sorted by code point, not by UTF-16 units
    ],
)
def test_canonical_check_refuses_other_encodings(raw: bytes) -> None:
    with pytest.raises(jws.JwsError):
        jws.canonical_claim(raw, "payload")


def test_canonical_check_refuses_deep_nesting() -> None:
    deep: Any = 1
    for _ in range(jws.MAX_DEPTH + 1):
        deep = {"a": deep}
    with pytest.raises(jws.JwsError, match="nested more than"):
        jws.canonical_claim(rfc8785.dumps(deep), "payload")
    with pytest.raises(jws.JwsError, match="not a JSON object"):
        jws.canonical_claim(b"[" * 5000 + b"]" * 5000, "payload")
