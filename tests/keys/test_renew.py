"""Key renewal on the node file: the new key and recovery code, the chain handed over, the old key
kept sealed until revoked, and what a peer does with a rotation it is told (trust/rotation.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from polykey.errors import InvalidInput, WrongRecoveryCode
from polykey.ids import decode_node_id, encode_node_id
from polykey.keys.root import RootKey
from polykey.network.graph import Address
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.trust import rotation
from polykey.trust.sigchain import BadChain, ForkedChain
from tests.support import PASSWORD

PW = PASSWORD.encode()


def _node(path: Path) -> Node:
    return Node.bootstrap(path, PW, kdf=FAST_INSECURE_KDF, allow_weak=True)[0]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    a, b = _node(tmp_path / "a.pk"), _node(tmp_path / "b.pk")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _follow(b: Node, teller: Node, closing: object, chain: Sequence[object]) -> dict[str, Any]:
    return rotation.follow(
        b.store,
        teller.node_id,
        closing,
        chain,
        chains=b.chains,
        acl=b.acl,
        vaults=b.vaults,
        graph=b.graph,
    )


def test_renewal_makes_a_new_key_whose_new_code_recovers_it_and_keeps_the_old_sealed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.pk"
    a, old_code = Node.bootstrap(path, PW, kdf=FAST_INSECURE_KDF, allow_weak=True)
    old = a.key
    a.vaults.create("v").write("s", b"one")
    a.sigchain.append("x-note", {"sub": "before"})
    code, done = a.renew()
    new = a.node_id
    assert new != old.node_id and RootKey.from_recovery_code(code).node_id == new
    assert done.old == encode_node_id(old.node_id) and done.new == encode_node_id(new)
    first = a.sigchain.entries()
    assert len(first) == 1 and first[0].starts_rotated
    assert first[0].payload["from"] == done.old
    held = a.chains.entries(old.node_id)  # the old chain, kept as another node's, closed
    assert [e.typ for e in held] == ["x-note", "rotate-key"] and held[-1].sub == done.new
    assert rotation.former_key(a.store, done.old) is not None
    assert done.old in a.acl.former_writers(a.vaults.info("v").id)  # its history verifies
    a.vaults.open("v").write("s", b"two")  # signed by the new key
    assert a.check() == []
    a.close()
    with Node.open(path, PW, allow_weak=True) as again:
        assert again.node_id == new
    with pytest.raises(WrongRecoveryCode):  # the old code no longer unlocks the node
        Node.recover(path, old_code, b"x", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with Node.recover(path, code, b"new pw", kdf=FAST_INSECURE_KDF, allow_weak=True) as n:
        assert n.node_id == new


def test_a_peer_told_moves_grants_address_and_origins_and_refuses_forgeries(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    old = encode_node_id(a.node_id)
    vault = b.vaults.create("shared")
    vault.write("k", b"v")
    vault_id = b.vaults.info("shared").id
    b.acl.grant(vault_id, a.node_id, ["pull", "push"])
    b.graph.add(a.node_id, Address("127.0.0.1", 4000))
    _, done = a.renew()
    chain = a.sigchain.docs()
    stranger = Node.bootstrap(
        Path(str(b.store.path) + "-c"), PW, kdf=FAST_INSECURE_KDF, allow_weak=True
    )[0]
    with stranger:
        with pytest.raises(BadChain):  # told by a node that is not the new key
            _follow(b, stranger, done.closing, chain)
        assert _follow(stranger, a, done.closing, chain) == {"followed": False}
    forged = {**done.closing, "signatures": done.closing["signatures"][:1]}
    with pytest.raises(BadChain):  # the new key's signature missing
        _follow(b, a, forged, chain)
    assert b.acl.grants(vault_id) == {old: ["pull", "push"]}  # nothing moved
    out = _follow(b, a, done.closing, chain)
    assert out["followed"] is True and out["old"] == old
    assert b.acl.grants(vault_id) == {encode_node_id(a.node_id): ["pull", "push"]}
    assert old in b.acl.former_writers(vault_id)
    assert b.graph.get(a.node_id) == Address("127.0.0.1", 4000)
    assert not b.graph.knows(decode_node_id(old))
    assert encode_node_id(a.node_id) in b.gestalts.gestalt(old).nodes
    assert rotation.retired(b.store) == {bytes(decode_node_id(old)): done.at}
    assert _follow(b, a, done.closing, chain)["followed"] is True  # told again: the same


def test_a_second_rotation_of_one_old_key_is_a_fork(pair: tuple[Node, Node]) -> None:
    a, b = pair
    b.graph.add(a.node_id, Address("127.0.0.1", 4000))
    twin = RootKey.from_seed(a.key.signing.seed())  # a thief with the same old key
    _, done = a.renew()
    _follow(b, a, done.closing, a.sigchain.docs())
    other = Node.bootstrap(
        Path(str(b.store.path) + "-t2"), PW, kdf=FAST_INSECURE_KDF, allow_weak=True
    )[0]
    with other:
        from polykey.trust.sigchain import Sigchain

        theirs = Sigchain(other.store, twin)  # a fresh chain of the old key
        _, closing, opening = theirs.rotation(other.key)
        with pytest.raises(ForkedChain):
            _follow(b, other, closing.doc(), [opening.doc()])
        assert b.chains.head(other.node_id) is None  # nothing of the thief's was kept


def test_revoking_the_old_key_as_compromised_drops_it_and_tells_the_time(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    b.graph.add(a.node_id, Address("127.0.0.1", 4000))
    _, done = a.renew()
    after = done.at - 100
    record = rotation.compromise(a.store, a.sigchain, done.old, after)
    assert record.until == after and rotation.former_key(a.store, done.old) is None
    _follow(b, a, done.closing, a.sigchain.docs())
    assert rotation.rotations(b.store)[done.old].until == after
    with pytest.raises(InvalidInput):
        rotation.compromise(a.store, a.sigchain, encode_node_id(b.node_id), after)
