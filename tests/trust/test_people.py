"""Sharing with a person, end to end: real agents on loopback, the real GitHub and DNS client
code against local stand-ins speaking those APIs.

Bob has two nodes, linked; he signs in to GitHub with the device flow and claims github:bob
from one of them, and dns:bob.example through a TXT record. Alice discovers github:bob, sees
both his nodes in one gestalt, and shares a vault with github:bob. Either of Bob's nodes may
clone it; a node Bob links later may too, with no new grant (its presented sigchain joins it to
the gestalt); a node that only claims to be Bob (its proof is in someone else's gist) is told
there is no such vault, and so is Bob's later node once he unlinks it and Alice rediscovers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.errors import PolykeyError
from tests.support import pk_env
from tests.sync.test_share import free_port
from tests.sync.test_three_agents import Peer
from tests.trust.standins.dns import DnsStandIn
from tests.trust.standins.github import GitHubStandIn


@dataclass
class World:
    gh: GitHubStandIn
    dns: DnsStandIn
    tmp: Path
    peers: list[Peer]

    def node(self, name: str) -> Peer:
        p = Peer(name, pk_env(self.tmp / f"{name}.pk", PK_PASSWORD=f"{name} pw"), free_port())
        p.env["PK_RUNTIME_DIR"] = str(self.tmp / f"run-{name}")
        p("bootstrap")
        p.node_id = p("keys", "public").split()[0]
        p.start()
        self.peers.append(p)
        p(
            "identities", "provider", "github", "--api-url", self.gh.url, "--login-url",
            self.gh.url, "--client-id", self.gh.client_id,
        )  # fmt: skip
        p("identities", "provider", "dns", "--nameserver", f"127.0.0.1:{self.dns.port}")
        return p


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    gh = GitHubStandIn().start()
    dns = DnsStandIn().start()
    w = World(gh, dns, tmp_path, [])
    try:
        yield w
    finally:
        stops = [threading.Thread(target=p.stop) for p in w.peers if p.started]
        for t in stops:
            t.start()
        for t in stops:
            t.join()
        gh.stop()
        dns.stop()


def knows(a: Peer, *others: Peer) -> None:
    for o in others:
        a("nodes", "add", o.node_id, f"127.0.0.1:{o.port}")
        o("nodes", "add", a.node_id, f"127.0.0.1:{a.port}")


def link(a: Peer, b: Peer) -> None:
    a("nodes", "link", b.node_id)
    out = json.loads(b("nodes", "link", a.node_id, "--format", "json"))
    assert out["state"] == "linked" and out["sigchain"] == "recorded"


def forge_claim(p: Peer, gh: GitHubStandIn, identity: str) -> None:
    """What a node can do without the provider's help: claim ``identity`` in its own chain,
    with its proof in a gist of its owner's (not the identity's)."""
    from polykey.node import Node
    from polykey.trust.proofs import render
    from polykey.trust.providers.base import ProofRef

    p.stop()
    with Node.open(Path(p.env["PK_NODE"]), p.env["PK_PASSWORD"].encode(), allow_weak=True) as n:
        gist = gh.add_gist(p.name, {"polykey-proof.md": "pending"})
        entry = n.sigchain.append(
            "link-identity", {"sub": identity, "proof": {"provider": "github", "ref": gist}}
        )
        gh.gists[gist].files["polykey-proof.md"] = render(identity, p.node_id, entry.raw.decode())
        assert ProofRef("github", gist).ref == gist
    p.start()


def as_json(p: Peer, *args: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(p(*args, "--format", "json"))
    return doc


def test_a_vault_shared_with_a_person_reaches_their_nodes_and_no_one_else(world: World) -> None:
    gh = world.gh
    alice, bob1, bob2 = world.node("alice"), world.node("bob1"), world.node("bob2")
    knows(alice, bob1, bob2)
    knows(bob1, bob2)
    link(bob1, bob2)
    alice("vaults", "create", "work")
    alice("secrets", "write", "work:db/password", stdin=b"s3cret")

    # Bob signs in with the device flow and claims github:bob: a gist whose id is in the claim
    gh.add_user("bob")
    gh.grant("bob", ["authorization_pending"], interval=1)
    signed_in = as_json(bob1, "identities", "authenticate", "github")
    assert signed_in["login"] == "bob"
    claimed = as_json(bob1, "identities", "claim", "github:bob")
    assert claimed["verified"] and claimed["ref"] in gh.gists
    gist = gh.gists[str(claimed["ref"])]
    assert gist.owner == "bob" and "I hereby claim" in next(iter(gist.files.values()))
    again = as_json(bob1, "identities", "claim", "github:bob")
    assert again["jti"] == claimed["jti"]  # run again: the same claim, not a second one

    # and dns:bob.example: the record to publish, verified once it is there
    dns_claim = as_json(bob1, "identities", "claim", "dns:bob.example")
    assert not dns_claim["verified"] and "polykey-proof=v1:" in str(dns_claim["instructions"])
    record = next(
        w for w in str(dns_claim["instructions"]).split() if w.startswith("polykey-proof=")
    )
    world.dns.add("_polykey.bob.example", record.encode())
    assert as_json(bob1, "identities", "claim", "dns:bob.example")["verified"]

    # Alice finds Bob by name: both his nodes, one person
    found = as_json(alice, "identities", "discover", "github:bob")
    assert sorted(found["nodes"]) == sorted([bob1.node_id, bob2.node_id])  # type: ignore[call-overload]
    assert set(found["identities"]) == {"github:bob", "dns:bob.example"}  # type: ignore[call-overload]
    shared = as_json(alice, "vaults", "share", "work", "github:bob")
    assert shared["permissions"] == ["clone", "pull", "scan"]
    assert as_json(alice, "identities", "get", "github:bob")["trusted"]

    bob2("vaults", "clone", alice.node_id, "work")
    assert bob2("secrets", "cat", "work:db/password") == "s3cret"

    # a node Bob links later clones with no new grant
    bob4 = world.node("bob4")
    knows(bob4, alice, bob1)
    link(bob1, bob4)
    bob4("vaults", "clone", alice.node_id, "work")
    assert bob4("secrets", "cat", "work:db/password") == "s3cret"

    # a node that only claims to be Bob: its proof sits in Mallory's gist
    mallory = world.node("mallory")
    knows(mallory, alice)
    gh.add_user("mallory")
    gh.grant("mallory", [], interval=1)
    mallory("identities", "authenticate", "github")
    assert mallory.fails("identities", "claim", "github:bob").returncode == 82  # not her login
    forge_claim(mallory, gh, "github:bob")  # by hand: the claim in her chain, a gist of hers
    refused = mallory.fails("vaults", "clone", alice.node_id, "work")
    assert refused.returncode == 51 and b"work" in refused.stderr
    assert mallory.node_id not in as_json(alice, "gestalts", "get", "github:bob")["nodes"]  # type: ignore[operator]

    # Bob unlinks his later node; once Alice rediscovers, it is refused like a stranger
    bob1("nodes", "unlink", bob4.node_id)
    as_json(alice, "identities", "discover", "github:bob")
    bob4("vaults", "rm", "work", "--yes")
    refused = bob4.fails("vaults", "clone", alice.node_id, "work")
    assert refused.returncode == 51
    assert bob2("vaults", "pull", "work")  # Bob's other node keeps pulling


def test_an_untrusted_identity_is_served_nothing(world: World) -> None:
    gh = world.gh
    alice, bob = world.node("alice"), world.node("bob")
    knows(alice, bob)
    alice("vaults", "create", "work")
    gh.add_user("bob")
    gh.grant("bob", [], interval=1)
    bob("identities", "authenticate", "github")
    assert as_json(bob, "identities", "claim", "github:bob")["verified"]
    unknown = alice.fails("vaults", "share", "work", "github:bob")
    assert b"discover" in unknown.stderr  # found first, then shared
    as_json(alice, "identities", "discover", "github:bob")
    alice("vaults", "share", "work", "github:bob")
    bob("vaults", "clone", alice.node_id, "work")
    alice("identities", "untrust", "github:bob")
    bob("vaults", "rm", "work", "--yes")
    assert bob.fails("vaults", "clone", alice.node_id, "work").returncode == 51


def test_rediscovery_refreshes_only_trusted_identities_gone_stale(world: World) -> None:
    """The agent's hourly job (people.rediscover), run in-process on Alice's node file."""
    from polykey.node import Node
    from polykey.people import rediscover

    gh = world.gh
    alice, bob = world.node("alice"), world.node("bob")
    knows(alice, bob)
    gh.add_user("bob")
    gh.grant("bob", [], interval=1)
    bob("identities", "authenticate", "github")
    bob("identities", "claim", "github:bob")
    as_json(alice, "identities", "discover", "github:bob")
    alice("identities", "trust", "github:bob")
    alice.stop()
    path, password = Path(alice.env["PK_NODE"]), alice.env["PK_PASSWORD"].encode()
    with Node.open(path, password, allow_weak=True) as node:
        found = {i["id"]: i for i in node.gestalts.identities()}
        now = float(found["github:bob"]["discovered"])
        assert rediscover(node, now + 60) == []  # fresh: left alone
        assert rediscover(node, now + 3601) == ["github:bob"]
        node.gestalts.trust("github:bob", False)
        assert rediscover(node, now + 7200) == []  # untrusted: never looked up


def test_a_stranger_cannot_make_a_node_keep_its_chain_unless_it_shares_with_identities(
    world: World,
) -> None:
    """sigchain.present from a node never met: nothing kept until some vault is shared with an
    identity; a page too large for a stranger's request is refused, not buffered."""
    from polykey.node import FAST_INSECURE_KDF, Node
    from polykey.sync.server import PeerService

    alice = world.node("alice")
    alice.stop()
    path, password = Path(alice.env["PK_NODE"]), alice.env["PK_PASSWORD"].encode()
    stranger = Node.bootstrap(world.tmp / "s.pk", b"s", allow_weak=True, kdf=FAST_INSECURE_KDF)[0]
    with stranger, Node.open(path, password, allow_weak=True) as node:
        for i in range(3):
            stranger.sigchain.append("x-note", {"n": i})
        service = PeerService(node.vaults, node.acl, node.node_id, node.notifications)
        docs = stranger.sigchain.docs(1)
        r = service.handle(stranger.node_id, "sigchain.present", {"entries": docs, "since": 1})
        assert r == {"held": 0, "kept": False} and node.chains.head(stranger.node_id) is None
        vault = node.vaults.create("work")
        node.gestalts.trust("github:bob")
        node.acl.grant(vault.id, "github:bob", ["pull"])
        r = service.handle(stranger.node_id, "sigchain.present", {"entries": docs, "since": 1})
        assert r == {"held": 3, "kept": True}
        with pytest.raises(PolykeyError):  # a forged page: refused, the copy kept
            bad = [dict(docs[0])]
            service.handle(stranger.node_id, "sigchain.present", {"entries": bad, "since": 2})
        assert node.chains.head(stranger.node_id).seq == 3  # type: ignore[union-attr]
