"""The judges of the relay/* and pkarr/* soak scenarios (issue #16) notice a broken outcome.

The scenarios themselves run only in the full soak (`scripts/soak --scenario relay --scenario
pkarr`): here each judge is shown what a broken product would leave, and must say so.
"""

from __future__ import annotations

import random
from pathlib import Path

from bench.soak.core import Context, Stats
from bench.soak.scenarios.publishing import Held, Publishing, Put, judge_puts, judge_record
from bench.soak.scenarios.relaying import RelayView, judge

from polykey.crypto.signing import SigningKey
from polykey.network import pkarr
from polykey.network.graph import Address


def test_the_relay_judge_takes_one_registration_and_a_clone_by_node_id() -> None:
    fine = RelayView(node_registered=True, registrations=1, relayed=0)
    assert fine.settled and judge(fine) == []


def test_the_relay_judge_notices_a_stale_registration_a_lost_one_and_a_leaked_count() -> None:
    stale = judge(RelayView(True, 2, 0))
    assert stale == ["the relay holds 2 registrations for its one node"]
    gone = judge(RelayView(True, 0, 0))
    assert gone == ["the relay holds 0 registrations for its one node"]
    assert judge(RelayView(False, 1, 0)) == ["the node's agent is not registered with the relay"]
    assert "relayed connection" in judge(RelayView(True, 1, 3))[0]
    assert judge(RelayView(True, None, None)) == ["the relay's agent did not answer"]
    failed = judge(RelayView(True, 1, 0, clone="exit 50: not registered with this relay"))
    assert failed and "clone by NodeId alone failed" in failed[0]
    assert not RelayView(True, 2, 0).settled and not RelayView(False, 1, 0).settled


def test_the_record_judge_notices_an_empty_older_or_stale_record() -> None:
    old = Held(100, ("127.0.0.1:2000",))
    new = Held(200, ("127.0.0.1:3000",))
    assert judge_record(None, None, None) == []  # nothing published yet, nothing asked
    assert judge_record(old, new, "127.0.0.1:3000") == []
    assert judge_record(new, old, None) == ["its sequence went back from 200 to 100"]
    assert judge_record(old, None, None) == ["the relay holds no record any more"]
    assert judge_record(None, None, "127.0.0.1:3000") == ["the relay holds no record"]
    assert judge_record(old, Held(300, ()), None) == ["the record names nothing"]
    stale = judge_record(old, old, "127.0.0.1:3000")
    assert stale == ["it names 127.0.0.1:2000, not 127.0.0.1:3000"]
    both = Held(300, ("127.0.0.1:3000", "127.0.0.1:2000"))
    assert judge_record(old, both, "127.0.0.1:3000") != []  # the old address must go


def test_the_put_judge_notices_a_put_inside_retry_after_and_counts_restarts_apart() -> None:
    patient = [Put(0.0, 1, 429, 2.0), Put(2.1, 1, 204)]
    assert judge_puts(patient) == ([], 0)
    rude, _ = judge_puts([Put(0.0, 1, 429, 2.0), Put(0.5, 1, 429, 2.0)])
    assert rude and "before the 429's Retry-After ended" in rude[0]
    # a restarted agent cannot know the 429 its previous life was given: counted, not judged
    assert judge_puts([Put(0.0, 1, 429, 2.0), Put(0.5, 2, 204)]) == ([], 1)


def test_the_pkarr_scenario_notices_a_relay_record_gone_back_or_naming_another_address(
    tmp_path: Path,
) -> None:
    """A real agent publishing to the stand-in; then the stand-in's record is replaced behind the
    soak's back by one with an older sequence, and by one naming an address the agent left."""
    sc = Publishing(Context(tmp_path, 1, random.Random(1), Stats()), "kill-agent")
    try:
        sc.setup()
        assert not sc.stats.bad and sc.last is not None, sc.stats.incidents
        from polykey.node import Node

        password = sc.node.env["PK_PASSWORD"].encode()
        with Node.open(sc.node.path, password, allow_weak=True) as node:
            key: SigningKey = node.key.signing
        public, stored = next(iter(sc.standin.records.items()))
        older = pkarr.sign(key, [Address("127.0.0.1", 9)], sc.last.timestamp - 1)
        stored.payload, stored.timestamp = older.relay_payload(), older.timestamp
        assert any("went back" in p for p in sc.look("tampered"))
        elsewhere = pkarr.sign(key, [Address("127.0.0.1", 9)], sc.last.timestamp + 1)
        stored.payload, stored.timestamp = elsewhere.relay_payload(), elsewhere.timestamp
        sc.node.stop_agent()  # it would publish the right address again
        sc.settle_s = 0.3
        sc.settle("tampered")
        assert sc.stats.diverged == 1 and "not 127.0.0.1:" in sc.stats.incidents[-1]
        assert public == key.public
    finally:
        sc.teardown()
