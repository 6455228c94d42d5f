"""Resolution (docs/spec/discovery.md section 5): strategies raced, and a node reached by its
NodeId alone through its relay record, with real agents on loopback and a relay stand-in.
The SSH pin stays the authentication: a wrong address only fails."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.ids import NodeId, decode_node_id
from polykey.network import pkarr
from polykey.network.graph import Address, UnknownNode
from polykey.network.relays import Relays
from polykey.network.resolve import Found, Resolver
from polykey.node import Node
from tests.conftest import NodeFixture
from tests.network.standins.pkarr_relay import PkarrRelayStandIn
from tests.support import pk_env, run_pk

NODE = NodeId(bytes(32))
HERE = Address("192.0.2.1", 1)


@dataclass
class Answers:
    how: str
    delay: float
    addresses: tuple[Address, ...] = (HERE,)
    fail: bool = False
    cancelled: bool = False

    async def find(self, node_id: NodeId) -> Found | None:
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail:
            raise OSError("down")
        return Found(node_id, self.addresses, self.how) if self.addresses else None


def test_the_first_answer_wins_and_the_others_are_cancelled() -> None:
    slow, fast = Answers("relay", 30), Answers("lan", 0.01)
    found = asyncio.run(Resolver([slow, fast]).find(NODE))
    assert found is not None and found.how == "lan"
    assert slow.cancelled


def test_a_failing_or_empty_strategy_counts_as_no_answer() -> None:
    broken, empty, late = (
        Answers("lan", 0, fail=True),
        Answers("peer", 0, ()),
        Answers("relay", 0.05),
    )
    found = asyncio.run(Resolver([broken, empty, late]).find(NODE))
    assert found is not None and found.how == "relay"


def test_nothing_answering_in_time_is_none() -> None:
    assert asyncio.run(Resolver([Answers("relay", 30)], timeout=0.2).find(NODE)) is None
    assert asyncio.run(Resolver([]).find(NODE)) is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Agent:
    env: dict[str, str]
    node_id: str
    port: int

    @property
    def id(self) -> NodeId:
        return decode_node_id(self.node_id)

    def record(self, *ports: int, timestamp: int | None = None) -> pkarr.SignedRecord:
        """Its own record naming loopback ``ports`` (signed with its key: the file opened)."""
        with Node.open(Path(self.env["PK_NODE"]), b"pw", allow_weak=True) as node:
            addresses = [Address("127.0.0.1", p) for p in ports]
            return pkarr.sign(node.key.signing, addresses, timestamp)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[Agent, Agent]]:
    """Alice and Carol, each an agent serving peers on loopback."""
    made: list[Agent] = []
    try:
        for name in ("alice", "carol"):
            env = pk_env(tmp_path / f"{name}.pk", PK_PASSWORD="pw", PK_RUNTIME_DIR=str(tmp_path))
            assert run_pk("bootstrap", env=env).returncode == 0
            node_id = run_pk("keys", "public", env=env).stdout.decode().split()[0]
            agent = Agent(env, node_id, free_port())
            started = run_pk("agent", "start", "-b", "--port", str(agent.port), env=env)
            assert started.returncode == 0, started.stderr.decode()
            made.append(agent)
        yield made[0], made[1]
    finally:
        for agent in made:
            run_pk("agent", "stop", env=agent.env)


@pytest.fixture
def relay() -> Iterator[PkarrRelayStandIn]:
    standin = PkarrRelayStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


def publish(relay: PkarrRelayStandIn, record: pkarr.SignedRecord) -> None:
    assert asyncio.run(Relays([relay.url]).publish(record))[0].stored


def test_a_node_with_no_address_is_reached_through_its_relay_record(
    agents: tuple[Agent, Agent], relay: PkarrRelayStandIn, fresh_node: NodeFixture
) -> None:
    alice, _ = agents
    bob = fresh_node.node
    bob.graph.set_relays([relay.url])
    publish(relay, alice.record(alice.port))
    assert bob.peers.hello(alice.id)["node_id"] == alice.node_id
    entry = bob.graph.entry(alice.id)
    assert (entry.address, entry.how) == (Address("127.0.0.1", alice.port), "relay")
    found = bob.peers.find(alice.id)
    assert (found.how, found.source) == ("cache", "relay")


def test_a_wrong_address_in_a_record_fails_and_the_next_one_is_tried(
    agents: tuple[Agent, Agent], relay: PkarrRelayStandIn, fresh_node: NodeFixture
) -> None:
    alice, carol = agents
    bob = fresh_node.node
    bob.graph.set_relays([relay.url])
    publish(relay, alice.record(carol.port, alice.port))  # carol answers first, with her key
    assert bob.peers.hello(alice.id)["node_id"] == alice.node_id
    assert bob.graph.get(alice.id) == Address("127.0.0.1", alice.port)


def test_a_record_naming_only_another_node_cannot_reach_it(
    agents: tuple[Agent, Agent], relay: PkarrRelayStandIn, fresh_node: NodeFixture
) -> None:
    from polykey.network.ssh import PeerUnreachable

    alice, carol = agents
    bob = fresh_node.node
    bob.graph.set_relays([relay.url])
    publish(relay, alice.record(carol.port))
    with pytest.raises(PeerUnreachable):
        bob.peers.hello(alice.id)
    assert not bob.graph.knows(alice.id)


def test_a_record_signed_by_another_key_is_ignored(
    agents: tuple[Agent, Agent], relay: PkarrRelayStandIn, fresh_node: NodeFixture
) -> None:
    from tests.network.standins.pkarr_relay import Stored

    alice, carol = agents
    bob = fresh_node.node
    bob.graph.set_relays([relay.url])
    forged = carol.record(carol.port)  # carol's own, valid record, served under alice's name
    relay.records[bytes(alice.id)] = Stored(forged.relay_payload(), forged.timestamp, b"", 0.0)
    with pytest.raises(UnknownNode):
        bob.peers.hello(alice.id)


def test_a_found_address_that_went_stale_is_looked_up_again(
    agents: tuple[Agent, Agent], relay: PkarrRelayStandIn, fresh_node: NodeFixture
) -> None:
    alice, _ = agents
    bob = fresh_node.node
    bob.graph.set_relays([relay.url])
    bob.graph.add(alice.id, Address("127.0.0.1", free_port()), "relay")  # where she was
    publish(relay, alice.record(alice.port))
    assert bob.peers.hello(alice.id)["node_id"] == alice.node_id
    assert bob.graph.get(alice.id).port == alice.port


def test_a_hand_added_address_is_never_replaced(
    agents: tuple[Agent, Agent], relay: PkarrRelayStandIn, fresh_node: NodeFixture
) -> None:
    from polykey.network.ssh import PeerUnreachable

    alice, _ = agents
    bob = fresh_node.node
    bob.graph.set_relays([relay.url])
    wrong = Address("127.0.0.1", free_port())
    bob.graph.add(alice.id, wrong)
    publish(relay, alice.record(alice.port))
    with pytest.raises(PeerUnreachable):
        bob.peers.hello(alice.id)
    assert bob.graph.entry(alice.id).address == wrong


def test_with_no_relay_and_no_address_the_node_is_unknown(fresh_node: NodeFixture) -> None:
    with pytest.raises(UnknownNode):
        fresh_node.node.peers.hello(NODE)
