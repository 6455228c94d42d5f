"""A node caught signing two histories of its sigchain (a fork) is refused through gestalts.

In process: the proof of a fork (another entry at a place held, or the next entry naming
another entry before it) is kept in the chain's mark; what is not a proof is refused as before
and marks nothing; a forked node's later pages are refused; gestalts leave it out; forgetting
takes its next chain afresh.

End to end (real agents on loopback, the GitHub stand-in): Alice shares a vault with github:bob
and Bob's node clones it. Then Bob's node file is copied (the same key) and each copy appends its
own entries; Bob presents his, the copy presents its own: Alice catches the fork. Both are told
there is no such vault through the grant to github:bob (a grant naming the NodeId still holds);
`pk sigchain show` shows both entries and `pk sigchain verify` fails. After `pk sigchain forget
BOB --yes`, Bob's node presenting again is served again, and the copy is caught again.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polykey.ids import encode_node_id
from polykey.keys.root import RootKey
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.trust import jws
from polykey.trust.sigchain import (
    BadChain,
    Entry,
    Forked,
    ForkedChain,
    PeerChains,
    prove_fork,
    verify_chain,
)
from polykey.trust.sigchain_entry import sign_claim
from tests.support import pk_env
from tests.sync.test_share import free_port
from tests.sync.test_three_agents import Peer
from tests.trust.standins.github import GitHubStandIn

OWNER = RootKey.from_seed(bytes([9]) * 32)


def _claim(key: RootKey, seq: int, prev: Entry | None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"typ": "x-note", "iss": encode_node_id(key.node_id), "seq": seq}
    out |= {"iat": 1_700_000_000, "jti": jws.new_claim_id()}
    out |= {"prevClaimId": prev.jti if prev else None, "prevDigest": prev.digest if prev else None}
    return out | fields


def _notes(key: RootKey, count: int, start: list[dict[str, Any]] | None = None) -> list[Any]:
    """A valid chain of ``count`` entries (continuing ``start``, a chain's documents)."""
    docs = list(start or [])
    entries = verify_chain(key.node_id, docs) if docs else []
    for _ in range(count):
        prev = entries[-1] if entries else None
        docs.append(sign_claim(key, _claim(key, len(docs) + 1, prev, n=jws.new_claim_id())))
        entries = verify_chain(key.node_id, docs)
    return docs


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Node]:
    node, _ = Node.bootstrap(tmp_path / "a.pk", b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        yield node


def test_another_entry_at_a_place_held_is_a_proven_fork_kept_in_the_mark(held: Node) -> None:
    docs = _notes(OWNER, 3)
    other = _notes(OWNER, 1, docs[:2])  # entry 3 signed again, differently
    chains = PeerChains(held.store, now=lambda: 1_700_000_500)
    chains.accept(OWNER.node_id, docs, from_seq=1)
    with pytest.raises(Forked, match="another entry 3 than the one seen before") as caught:
        chains.accept(OWNER.node_id, other[2:], from_seq=3)
    assert caught.value.exit_code == 59
    fork = PeerChains(held.store).fork(OWNER.node_id)
    assert fork is not None and (fork.seq, fork.at) == (3, 1_700_000_500)
    assert (fork.held, fork.served) == (docs[2], other[2])
    assert prove_fork(OWNER.node_id, fork.held, fork.served) == 3
    assert chains.head(OWNER.node_id).seq == 3  # type: ignore[union-attr]  # the copy kept
    assert chains.check() == []
    with pytest.raises(Forked, match="two different entries 3 before"):  # even a good page
        chains.accept(OWNER.node_id, _notes(OWNER, 1, docs)[3:], from_seq=4)
    assert list(chains.forks()) == [encode_node_id(OWNER.node_id)]


def test_a_next_entry_naming_another_entry_before_it_is_a_proven_fork(held: Node) -> None:
    """What a node presenting or serving its chain sends: only the entries after those held."""
    docs = _notes(OWNER, 2)
    theirs = _notes(OWNER, 2, _notes(OWNER, 1, docs[:1]))  # 2' and 3' after another entry 2
    chains = PeerChains(held.store)
    chains.accept(OWNER.node_id, docs, from_seq=1)
    with pytest.raises(Forked, match="its entry 3 names another entry 2"):
        chains.accept(OWNER.node_id, theirs[2:], from_seq=3)
    fork = chains.fork(OWNER.node_id)
    assert fork is not None and (fork.seq, fork.held, fork.served) == (2, docs[1], theirs[2])


def test_what_proves_no_fork_marks_nothing(held: Node) -> None:
    docs = _notes(OWNER, 3)
    stranger = RootKey.from_seed(bytes([8]) * 32)
    chains = PeerChains(held.store)
    chains.accept(OWNER.node_id, docs, from_seq=1)
    with pytest.raises(ForkedChain) as shorter:  # a shorter chain: no signature proves it
        chains.accept(OWNER.node_id, docs[:1], from_seq=1, length=1)
    assert not isinstance(shorter.value, Forked)
    with pytest.raises(BadChain, match="issued by another node"):  # not the node's signature
        chains.accept(OWNER.node_id, _notes(stranger, 4)[3:], from_seq=4)
    tampered = dict(_notes(OWNER, 1, docs)[3], payload=docs[0]["payload"])
    with pytest.raises(BadChain):
        chains.accept(OWNER.node_id, [tampered], from_seq=4)
    assert chains.fork(OWNER.node_id) is None and chains.forks() == {}
    chains.accept(OWNER.node_id, _notes(OWNER, 1, docs)[3:], from_seq=4)


def test_prove_fork_refuses_two_entries_of_one_chain_or_of_two_nodes() -> None:
    docs = _notes(OWNER, 3)
    stranger = _notes(RootKey.from_seed(bytes([8]) * 32), 1)
    for held, served, text in [
        (docs[1], docs[1], "do not show two histories"),
        (docs[1], docs[2], "do not show two histories"),
        (docs[0], docs[2], "do not show two histories"),
        (docs[0], stranger[0], "issued by the node"),
    ]:
        with pytest.raises(BadChain, match=text):
            prove_fork(OWNER.node_id, held, served)


def test_a_forked_node_is_left_out_of_gestalts_until_forgotten(held: Node) -> None:
    docs = _notes(OWNER, 2)
    held.chains.accept(OWNER.node_id, docs, from_seq=1)
    node = encode_node_id(OWNER.node_id)
    held.gestalts.trust("github:bob")
    with pytest.raises(Forked):
        held.chains.accept(OWNER.node_id, _notes(OWNER, 1, docs[:1])[1:], from_seq=2)
    g = held.gestalts.gestalt(node)
    assert g.nodes == frozenset() and g.forked == {node}
    assert g.as_json()["forked"] == [node]
    assert not held.gestalts.admits("github:bob", OWNER.node_id)
    held.chains.forget(OWNER.node_id)
    assert held.chains.fork(OWNER.node_id) is None and held.chains.head(OWNER.node_id) is None
    held.chains.accept(OWNER.node_id, docs, from_seq=1)  # taken afresh
    assert held.gestalts.gestalt(node).nodes == {node}
    assert "forked" not in held.gestalts.gestalt(node).as_json()


# --- end to end ----------------------------------------------------------------------------------


@dataclass
class World:
    tmp: Path
    gh: GitHubStandIn
    peers: list[Peer]

    def node(self, name: str, node_file: str | None = None, password: str = "") -> Peer:
        path = self.tmp / f"{node_file or name}.pk"
        env = pk_env(path, PK_PASSWORD=password or f"{name} pw")
        p = Peer(name, env, free_port())
        p.env["PK_RUNTIME_DIR"] = str(self.tmp / f"run-{name}")
        if node_file is None:
            p("bootstrap")
        p.node_id = p("keys", "public").split()[0]
        self.peers.append(p)
        return p


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    gh = GitHubStandIn().start()
    w = World(tmp_path_factory.mktemp("fork"), gh, [])
    try:
        yield w
    finally:
        stops = [threading.Thread(target=p.stop) for p in w.peers if p.started]
        for t in stops:
            t.start()
        for t in stops:
            t.join()
        gh.stop()


def _json(p: Peer, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(p(*args, "--format", "json"))
    return doc


def _append(p: Peer, note: str) -> None:
    """An entry of the node's own, added to its chain with its agent stopped."""
    with Node.open(Path(p.env["PK_NODE"]), p.env["PK_PASSWORD"].encode(), allow_weak=True) as n:
        n.sigchain.append("x-note", {"note": note})


def test_a_node_that_forks_its_sigchain_is_told_no_such_vault_until_forgotten(
    world: World,
) -> None:
    gh = world.gh
    alice, bob = world.node("alice"), world.node("bob")
    for p in (alice, bob):
        p.start()
        p(
            "identities", "provider", "github", "--api-url", gh.url, "--login-url", gh.url,
            "--client-id", gh.client_id,
        )  # fmt: skip
    alice("nodes", "add", bob.node_id, f"127.0.0.1:{bob.port}")
    bob("nodes", "add", alice.node_id, f"127.0.0.1:{alice.port}")
    alice("vaults", "create", "work")
    alice("secrets", "write", "work:db/password", stdin=b"s3cret")
    alice("vaults", "create", "direct")
    gh.add_user("bob")
    gh.grant("bob", [], interval=1)
    bob("identities", "authenticate", "github")
    assert _json(bob, "identities", "claim", "github:bob")["verified"]
    assert bob.node_id in _json(alice, "identities", "discover", "github:bob")["nodes"]
    alice("vaults", "share", "work", "github:bob")
    alice("vaults", "share", "direct", bob.node_id)  # a grant naming the NodeId itself
    bob("vaults", "clone", alice.node_id, "work")

    # the node file copied (the same key); each copy goes on with entries of its own
    bob.stop()
    shutil.copy(bob.env["PK_NODE"], world.tmp / "copy.pk")
    copy = world.node("copy", node_file="copy", password=bob.env["PK_PASSWORD"])
    assert copy.node_id == bob.node_id
    _append(bob, "bob's own")
    _append(copy, "the copy's")
    _append(copy, "the copy's, after it")
    bob.start()
    copy.start()
    bob("vaults", "pull", "work")  # Bob presents his entry first: Alice holds it
    refused = copy.fails("vaults", "pull", "work")  # the copy presents its own: the fork
    assert refused.returncode == 51 and b"no such vault" in refused.stderr
    refused = bob.fails("vaults", "pull", "work")
    assert refused.returncode == 51 and b"no such vault" in refused.stderr
    bob("vaults", "clone", alice.node_id, "direct")  # named by NodeId: the owner's choice

    shown = alice.fails("sigchain", "verify", bob.node_id)
    assert shown.returncode == 59 and b"signed two different entries" in shown.stderr
    forked = _json(alice, "sigchain", "show", bob.node_id)
    fork = forked["fork"]
    assert fork["held_entry"]["seq"] == fork["served_entry"]["seq"] - 1 == forked["length"]
    assert fork["held_entry"]["jti"] == forked["entries"][-1]["jti"]
    text = alice("sigchain", "show", bob.node_id)
    assert text.startswith(f"FORKED: {bob.node_id} signed two different histories")
    assert _json(alice, "gestalts", "get", "github:bob")["forked"] == [bob.node_id]
    assert "FORKED" in alice("gestalts", "get", "github:bob")

    assert alice.fails("sigchain", "forget", bob.node_id).returncode == 2  # no --yes
    gone = _json(alice, "sigchain", "forget", bob.node_id, "--yes")
    assert gone["forked"] and gone["held"] == forked["length"]
    bob("vaults", "pull", "work")  # refused at first: presented again, and taken
    assert bob("secrets", "cat", "work:db/password") == "s3cret"
    assert "fork" not in _json(alice, "sigchain", "show", bob.node_id)
    refused = copy.fails("vaults", "pull", "work")  # the copy, presenting again: caught again
    assert refused.returncode == 51
    assert _json(alice, "gestalts", "get", "github:bob")["forked"] == [bob.node_id]
