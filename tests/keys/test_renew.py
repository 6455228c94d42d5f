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
        with pytest.raises(BadChain):  # another chain than the new key's
            _follow(b, stranger, done.closing, stranger.sigchain.docs())
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


def _linked(a: Node, b: Node) -> None:
    """Link ``a`` and ``b`` as one owner's nodes (the statements each signs, exchanged)."""
    mine, _ = a.links.link(b.node_id)
    _, theirs = b.links.link(a.node_id)[0], b.links.accept(mine.to_json(), a.node_id)[1]
    assert theirs is not None
    assert a.links.answered(b.node_id, mine, {"linked": True, "statement": theirs.to_json()})
    assert a.links.is_mine(b.node_id) and b.links.is_mine(a.node_id)


def _peer_call(a: Node, b: Node) -> Any:
    """``a`` calling ``b``'s peer methods, as b's agent answers them (in this process)."""
    from polykey.sync.server import PeerService

    service = PeerService(b.vaults, b.acl, b.node_id, b.notifications, b.graph)

    def call(peer: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert peer == b.node_id
        return service.handle(a.node_id, method, params)

    return call


def test_a_renewal_moves_own_node_links_and_queued_notifications_on_both_sides(
    pair: tuple[Node, Node],
) -> None:
    from tests.sync.test_share import free_port

    a, b = pair
    _linked(a, b)
    b.graph.add(a.node_id, Address("127.0.0.1", free_port()))  # nobody listens: queued
    assert b.notifications.send(a.node_id, "hello")["queued"] is True
    old = encode_node_id(a.node_id)
    a.renew()
    waiting = a.links.entry(b.node_id)
    assert waiting is not None and waiting.state == "pending"  # b signs back when told
    assert a.check() == [] and not a.links.is_mine(b.node_id)
    told = rotation.tell(a.store, a.sigchain, a.chains, _peer_call(a, b), [b.node_id], a.links)
    assert told == {encode_node_id(b.node_id): "told"}
    assert a.links.is_mine(b.node_id) and b.links.is_mine(a.node_id)
    assert b.links.entry(decode_node_id(old)) is None and b.check() == []
    assert [n["to"] for n in b.notifications.outbox()] == [encode_node_id(a.node_id)]


def test_a_peers_own_node_sending_commits_of_a_revoked_key_is_refused(tmp_path: Path) -> None:
    """vaults.adopt (a linked node sends a vault) checks renewed keys as pull and push do."""
    from polykey.sync.checks import UpdateRefused
    from polykey.sync.server import collect

    path = tmp_path / "a.pk"
    a, old_code = Node.bootstrap(path, PW, kdf=FAST_INSECURE_KDF, allow_weak=True)
    with a, _node(tmp_path / "c.pk") as c:
        twin = Node.bootstrap(
            tmp_path / "t.pk", PW, kdf=FAST_INSECURE_KDF, code=old_code, allow_weak=True
        )[0]
        with twin:  # the old key, in a thief's hands
            vault = twin.vaults.create("loot")
            vault.write("k", b"planted")
            head = vault.head()
            assert head is not None
            params = {
                "vault": twin.vaults.info("loot").id,
                "head": head.decode(),
                "objects": collect(vault, head, set()),
                "name": "loot",
                "grants": {encode_node_id(twin.node_id): ["pull", "push"]},
            }
        _, done = a.renew()
        rotation.compromise(a.store, a.sigchain, done.old, done.at - 3600)
        _linked(a, c)
        with pytest.raises(UpdateRefused, match="renewed away from"):
            _peer_call(c, a)(a.node_id, "vaults.adopt", params)
        assert [i.name for i in a.vaults.all()] == []


def test_revoking_an_old_key_is_one_transaction(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    _, done = a.renew()
    before, length = a.store.epoch, len(a.sigchain.entries())
    rotation.compromise(a.store, a.sigchain, done.old, done.at)
    assert a.store.epoch == before + 1  # the claim and the record landed together
    assert len(a.sigchain.entries()) == length + 1


_CRASH = """
import os, sys
from pathlib import Path
from polykey.node import Node
node = Node.open(Path(sys.argv[1]), sys.argv[2].encode(), allow_weak=True)
seen = []
def trace(sql):
    seen.append(sql)
    if sql == "COMMIT" and any(s.startswith("UPDATE header") for s in seen):
        os._exit(9)  # a crash: the renewal's records and the new code's wrap written, not committed
node.store._conn.set_trace_callback(trace)
node.renew()
os._exit(0)
"""


def test_a_crash_before_a_renewal_commits_leaves_the_old_key_and_code_whole(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    path = tmp_path / "a.pk"
    a, old_code = Node.bootstrap(path, PW, kdf=FAST_INSECURE_KDF, allow_weak=True)
    old = a.node_id
    a.close()
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH, str(path), PASSWORD], capture_output=True, check=False
    )
    assert crashed.returncode == 9, crashed.stderr.decode()
    with Node.open(path, PW, allow_weak=True) as again:
        assert again.node_id == old and rotation.rotations(again.store) == {}
        assert again.check() == []
    with Node.recover(path, old_code, PW, kdf=FAST_INSECURE_KDF, allow_weak=True) as n:
        assert n.node_id == old  # the old code still unlocks, and derives the key in use
