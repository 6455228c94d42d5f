"""Many peers at once (#16, scaled down for the suite; `./scripts/bench scale` runs 100 peers and
1,000 vaults): each peer its own `pk` process and SSH connection, all started together against
one agent; every vault's new commit arrives and nothing is refused."""

from __future__ import annotations

from bench.scale import measure


def test_twelve_peers_at_once_pull_all_their_vaults_from_one_agent() -> None:
    got = measure(12, 48)
    assert not got.refusals, got.refusals
    assert got.pulled == 48
    assert len(got.latencies) == 12
    assert got.agent_rss_kib > 0  # the agent was the one serving (its status named its pid)
