"""Own nodes between real agents on loopback: `pk nodes link` run on both sides (in either
order, or at once) links them; a linked node scans, clones, pulls and pushes every vault with
no `pk vaults share`; `pk nodes unlink` takes that away at once; a third node cannot forge a
link. The statements themselves are tested in tests/trust/test_links.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.ids import decode_node_id, encode_node_id
from polykey.network.graph import Address
from polykey.network.ssh import PeerError
from polykey.node import Node
from polykey.trust import jws
from polykey.trust import links as L
from tests.support import pk_env
from tests.sync.test_share import free_port
from tests.sync.test_three_agents import Peer, together


@pytest.fixture
def duo(tmp_path: Path) -> Iterator[tuple[Peer, Peer]]:
    """Two nodes, each with its agent serving peers, each knowing the other's address; A holds
    two vaults and shares neither."""
    run = str(tmp_path / "run")
    peers = [
        Peer(n, pk_env(tmp_path / f"{n}.pk", PK_PASSWORD=f"{n} pw", PK_RUNTIME_DIR=run), 0)
        for n in ("a", "b")
    ]
    for p in peers:
        p.port = free_port()
    together(*((p, ("bootstrap",)) for p in peers))
    for p, out in zip(peers, together(*((p, ("keys", "public")) for p in peers)), strict=True):
        p.node_id = out.split()[0]
    a, b = peers
    a("vaults", "create", "work")
    a("secrets", "write", "work:db/password", stdin=b"v1")
    a("vaults", "create", "private")
    try:
        for p in peers:
            p.start()
        together(
            (a, ("nodes", "add", b.node_id, f"127.0.0.1:{b.port}")),
            (b, ("nodes", "add", a.node_id, f"127.0.0.1:{a.port}")),
        )
        yield a, b
    finally:
        stops = [threading.Thread(target=p.stop) for p in peers if p.started]
        for t in stops:
            t.start()
        for t in stops:
            t.join()


def mine(p: Peer) -> dict[str, str]:
    """NodeId -> state, as `pk nodes mine --format json` lists them."""
    doc = json.loads(p("nodes", "mine", "--format", "json"))
    return {n["node_id"]: n["state"] for n in doc["nodes"]}


@pytest.mark.parametrize("first", [0, 1])
def test_both_run_link_in_either_order_and_both_are_linked(
    duo: tuple[Peer, Peer], first: int
) -> None:
    asker, confirmer = duo if first == 0 else duo[::-1]
    assert asker("nodes", "link", confirmer.node_id).strip() == (
        f"Asked {confirmer.node_id}: run `pk nodes link {asker.node_id}` on that node to confirm."
    )
    assert mine(asker) == {confirmer.node_id: "pending"}
    assert mine(confirmer) == {asker.node_id: "offered"}
    assert "asks to be one of your nodes" in confirmer("nodes", "mine")
    assert not json.loads(confirmer("nodes", "mine", "--format", "json"))["mine"]
    assert confirmer("nodes", "link", asker.node_id).strip() == (
        f"Linked: {asker.node_id} is one of your nodes."
    )
    assert mine(asker) == {confirmer.node_id: "linked"}
    assert mine(confirmer) == {asker.node_id: "linked"}
    again = json.loads(asker("nodes", "link", confirmer.node_id, "--format", "json"))
    assert again["state"] == "linked" and again["told"]  # idempotent
    assert asker("nodes", "mine").strip() == f"{confirmer.node_id}\tlinked"


def test_both_run_link_at_once_and_both_are_linked(duo: tuple[Peer, Peer]) -> None:
    a, b = duo
    together((a, ("nodes", "link", b.node_id)), (b, ("nodes", "link", a.node_id)))
    assert mine(a) == {b.node_id: "linked"} and mine(b) == {a.node_id: "linked"}


def test_a_linked_node_uses_every_vault_without_a_grant_until_unlinked(
    duo: tuple[Peer, Peer],
) -> None:
    a, b = duo
    assert "work" not in b("vaults", "scan", a.node_id)
    a("nodes", "link", b.node_id)
    b("nodes", "link", a.node_id)
    scanned = {v["name"]: v["permissions"] for v in _scan(b, a)}
    assert scanned == {
        "work": ["clone", "pull", "push", "scan"],
        "private": ["clone", "pull", "push", "scan"],
    }
    assert "{}" in a("vaults", "permissions", "work", "--format", "json")  # no grant was made

    b("vaults", "clone", a.node_id, "work")
    assert b("secrets", "cat", "work:db/password") == "v1"
    a("secrets", "write", "work:db/password", stdin=b"v2")
    assert "updated" in b("vaults", "pull", "work")
    assert b("secrets", "cat", "work:db/password") == "v2"
    b("secrets", "write", "work:from-b", stdin=b"written on b")
    assert "Pushed" in b("vaults", "push", "work")
    assert a("secrets", "cat", "work:from-b") == "written on b"
    assert a("vaults", "log", "work") == b("vaults", "log", "work")
    # and the other way: A clones B's vault
    b("vaults", "create", "on-b")
    a("vaults", "clone", b.node_id, "on-b")

    # A unlinks B: B's next fetch is refused exactly like a vault that does not exist
    assert a("nodes", "unlink", b.node_id).strip() == (
        f"Unlinked {b.node_id}: it may no longer use this node's vaults. "
        "It was told, and no longer lets this node use its own."
    )
    assert mine(a) == {b.node_id: "unlinked"} and mine(b) == {a.node_id: "unlinked"}
    assert "No linked nodes" in b("nodes", "mine")
    a("secrets", "write", "work:db/password", stdin=b"v3")
    refused = b.fails("vaults", "pull", "work")
    missing = b.fails("vaults", "clone", a.node_id, "no-such-vault")
    assert refused.returncode == missing.returncode == 51
    assert b"No such vault" in refused.stderr and b"No such vault" in missing.stderr
    assert b("secrets", "cat", "work:db/password") == "v2"
    assert _scan(b, a) == []
    assert a.fails("vaults", "pull", "on-b").returncode == 51  # B let go of A too
    assert "whole" in a("node", "check") and "whole" in b("node", "check")


def _scan(p: Peer, other: Peer) -> list[dict[str, object]]:
    vaults: list[dict[str, object]] = json.loads(
        p("vaults", "scan", other.node_id, "--format", "json")
    )["vaults"]
    return vaults


def test_a_request_kept_while_the_other_is_unknown_is_completed_from_there(
    duo: tuple[Peer, Peer],
) -> None:
    a, b = duo
    a("nodes", "rm", b.node_id)  # A no longer knows where B is
    out = a("nodes", "link", b.node_id)
    assert out.startswith(f"Could not ask {b.node_id} (This node has no address")
    assert f"run `pk nodes link {a.node_id}` on that node" in out
    assert mine(a) == {b.node_id: "pending"} and mine(b) == {}
    # B asks A: A's agent completes the link A asked for, and answers with its statement
    assert b("nodes", "link", a.node_id).strip() == f"Linked: {a.node_id} is one of your nodes."
    assert mine(a) == {b.node_id: "linked"} and mine(b) == {a.node_id: "linked"}


def test_an_unlink_the_other_missed_is_caught_up(duo: tuple[Peer, Peer]) -> None:
    a, b = duo
    a("nodes", "link", b.node_id)
    b("nodes", "link", a.node_id)
    b.stop()
    out = a("nodes", "unlink", b.node_id)
    assert "It was not told (" in out and "still lets this node use its vaults" in out
    assert mine(a) == {b.node_id: "unlinked"}
    b.start()
    # B still holds the link; A does not let B in
    assert mine(b) == {a.node_id: "linked"}
    assert b.fails("vaults", "clone", a.node_id, "work").returncode == 51
    # B links again: A no longer holds it, so B's side goes back to a request
    assert b("nodes", "link", a.node_id).startswith(f"Asked {a.node_id}")
    assert mine(b) == {a.node_id: "pending"} and mine(a) == {b.node_id: "offered"}
    # ...which A declines; B's request is dropped
    assert a("nodes", "unlink", b.node_id).strip() == (
        f"Declined the request of {b.node_id} to link. It was told."
    )
    assert mine(a) == {} and mine(b) == {}


def test_a_third_node_cannot_forge_a_link(duo: tuple[Peer, Peer], tmp_path: Path) -> None:
    a, b = duo
    Peer("c", pk_env(tmp_path / "c.pk", PK_PASSWORD="c pw"), 0)("bootstrap")
    a_id = decode_node_id(a.node_id)
    with (
        Node.open(tmp_path / "c.pk", b"c pw", allow_weak=True) as carol,
        Node.open(tmp_path / "b.pk", b"b pw", allow_weak=True) as bob,
    ):
        carol.graph.add(a_id, Address("127.0.0.1", a.port))
        genuine = L.sign(bob.key, L.LINK, a_id).to_json()  # B's real statement, replayed
        in_bobs_name = _signed_by(carol, {"alg": "EdDSA", "kid": b.node_id}, b.node_id, a.node_id)
        for statement, reason in [
            (genuine, "issued by another node than the one it comes from"),
            (in_bobs_name, "signature does not verify"),
        ]:
            with pytest.raises(PeerError, match=reason):
                carol.peers.call(a_id, "nodes.link", {"statement": statement})
        unlink_b = L.sign(bob.key, L.UNLINK, a_id).to_json()
        with pytest.raises(PeerError, match="issued by another node"):
            carol.peers.call(a_id, "nodes.unlink", {"statement": unlink_b})
        assert mine(a) == {}
        # carol's own statement is only an offer: nothing is shared with her
        own = L.sign(carol.key, L.LINK, a_id).to_json()
        assert carol.peers.call(a_id, "nodes.link", {"statement": own}) == {"linked": False}
        assert carol.peers.call(a_id, "vaults.scan", {}) == {"vaults": []}
        with pytest.raises(PeerError, match="No such vault"):
            carol.peers.call(a_id, "vaults.fetch", {"vault": "work", "haves": []})
        assert mine(a) == {encode_node_id(carol.node_id): "offered"}


def _signed_by(node: Node, header: dict[str, str], iss: str, sub: str) -> dict[str, str]:
    """A link statement naming ``iss`` as its issuer, signed by ``node`` whoever it names."""
    claim = {"typ": L.LINK, "iss": iss, "sub": sub, "iat": 1700000000, "jti": "v1"}
    protected, payload = jws.b64url(jws.canonical(header)), jws.b64url(jws.canonical(claim))
    signature = node.key.signing.sign(f"{protected}.{payload}".encode())
    return {"protected": protected, "payload": payload, "signature": jws.b64url(signature)}


def test_refusals_are_one_line_with_a_hint(duo: tuple[Peer, Peer]) -> None:
    a, b = duo
    itself = a.fails("nodes", "link", a.node_id)
    assert itself.returncode == 3 and b"cannot link to itself" in itself.stderr
    bad = a.fails("nodes", "link", "not-a-node-id")
    assert bad.returncode == 3 and b"Not a valid NodeId" in bad.stderr
    unknown = a.fails("nodes", "unlink", b.node_id)
    assert unknown.returncode == 56 and b"pk: hint: " in unknown.stderr
    for r in (itself, bad, unknown):
        assert r.stderr.count(b"pk: error:") == 1
    assert mine(a) == {}


def chain(p: Peer, of: str | None = None) -> dict[str, object]:
    args = ("sigchain", "show", *((of,) if of else ()), "--format", "json")
    doc: dict[str, object] = json.loads(p(*args))
    return doc


def test_a_link_is_a_claim_signed_by_both_in_both_sigchains_until_unlinked(
    duo: tuple[Peer, Peer],
) -> None:
    a, b = duo
    a("nodes", "link", b.node_id)
    out = json.loads(b("nodes", "link", a.node_id, "--format", "json"))
    assert out["state"] == "linked" and out["sigchain"] == "recorded"
    for me, other in ((a, b), (b, a)):
        entries = chain(me)["entries"]
        assert isinstance(entries, list)
        links = [e for e in entries if e["typ"] == "link-node"]
        assert [e["sub"] for e in links] == [other.node_id]
        assert sorted(links[0]["signers"]) == sorted([me.node_id, other.node_id])
        assert not links[0]["revoked"]
    # each fetches the other's chain and sees one person of two nodes
    seen = chain(a, b.node_id)
    assert seen["fetched"] and seen["length"] == 1
    assert json.loads(a("sigchain", "verify", b.node_id, "--format", "json"))["ok"]
    gestalt = json.loads(a("gestalts", "get", a.node_id, "--format", "json"))
    assert sorted(gestalt["nodes"]) == sorted([a.node_id, b.node_id])
    again = json.loads(b("nodes", "link", a.node_id, "--format", "json"))
    assert again["sigchain"] == "recorded" and chain(b)["length"] == 1  # nothing added twice
    a("nodes", "unlink", b.node_id)
    entries = chain(a)["entries"]
    assert isinstance(entries, list)
    assert [e["typ"] for e in entries] == ["link-node", "revoke"] and entries[0]["revoked"]
    gestalt = json.loads(a("gestalts", "get", a.node_id, "--format", "json"))
    assert gestalt["nodes"] == [a.node_id]  # the revocation is newer than b's claim
