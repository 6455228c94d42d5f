"""`pk nodes find`, `pk nodes relays`, and a clone by NodeId alone (docs/spec/discovery.md),
with real agents on loopback and a Pkarr relay stand-in.

`pk nodes find` and `pk nodes relays` live in cli/nodes.py; until cli/peers.py adds them to
the `pk nodes` group, ``pk`` below adds them before running the real entry point.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polykey.ids import decode_node_id
from tests.network.standins.pkarr_relay import PkarrRelayStandIn
from tests.support import pk_env


def pk(
    env: dict[str, str], *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "polykey", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def ok(env: dict[str, str], *args: str, stdin: bytes | None = None) -> str:
    r = pk(env, *args, stdin=stdin)
    assert r.returncode == 0, (args, r.stderr.decode())
    return r.stdout.decode()


def as_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(ok(env, *args, "--format", "json"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def relay() -> Iterator[PkarrRelayStandIn]:
    standin = PkarrRelayStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def people(tmp_path: Path, relay: PkarrRelayStandIn) -> Iterator[dict[str, dict[str, str]]]:
    envs: dict[str, dict[str, str]] = {}
    try:
        for name in ("alice", "bob", "carol"):
            env = pk_env(
                tmp_path / f"{name}.pk",
                PK_PASSWORD=f"{name} pw",
                PK_RUNTIME_DIR=str(tmp_path / "run"),
                PK_PKARR_RELAYS=relay.url,
            )
            ok(env, "bootstrap")
            env["ID"] = ok(env, "keys", "public").split()[0]
            envs[name] = env
        yield envs
    finally:
        for env in envs.values():
            pk(env, "agent", "stop")


def wait_for_record(relay: PkarrRelayStandIn, node_id: str) -> None:
    key = bytes(decode_node_id(node_id))
    deadline = time.monotonic() + 30
    while key not in relay.records and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key in relay.records


def test_a_vault_is_cloned_by_nodeid_alone_and_find_says_how(
    people: dict[str, dict[str, str]], relay: PkarrRelayStandIn
) -> None:
    alice, bob = people["alice"], people["bob"]
    ok(alice, "vaults", "create", "work")
    ok(alice, "secrets", "write", "work:db", stdin=b"found by key")
    ok(alice, "vaults", "share", "work", bob["ID"])
    port = free_port()
    here = f"127.0.0.1:{port}"
    ok(alice, "agent", "start", "-b", "--port", str(port), "--public-address", here)
    wait_for_record(relay, alice["ID"])
    status = as_json(alice, "agent", "status")
    assert status["discovery"]["addresses"] == [here]
    assert status["discovery"]["published"] == [{"relay": relay.url, "result": "stored"}]
    assert "published to 1 relay(s) (stored)" in ok(alice, "agent", "status")

    # bob: no agent, no `nodes add`: the relay is his node's own setting
    assert as_json(bob, "nodes", "relays", relay.url)["relays"] == [relay.url]
    ok(bob, "vaults", "clone", alice["ID"], "work")
    assert ok(bob, "secrets", "cat", "work:db") == "found by key"
    cached = as_json(bob, "nodes", "find", alice["ID"])
    assert (cached["how"], cached["source"], cached["addresses"]) == ("cache", "relay", [here])
    assert "found through a Pkarr relay" in ok(bob, "nodes", "find", alice["ID"])

    # bob's agent (PK_PKARR_RELAYS) asks the relay afresh
    ok(bob, "agent", "start", "-b")
    fresh = as_json(bob, "nodes", "find", "--fresh", alice["ID"])
    assert (fresh["how"], fresh["source"], fresh["addresses"]) == ("relay", relay.url, [here])


def test_no_publish_keeps_a_node_off_the_relays(
    people: dict[str, dict[str, str]], relay: PkarrRelayStandIn
) -> None:
    carol, bob = people["carol"], people["bob"]
    port = free_port()
    ok(
        carol,
        "agent",
        "start",
        "-b",
        "--port",
        str(port),
        "--public-address",
        f"127.0.0.1:{port}",
        "--no-publish",
    )
    assert "not published" in ok(carol, "agent", "status")
    ok(bob, "nodes", "relays", relay.url)
    r = pk(bob, "nodes", "find", carol["ID"])
    assert r.returncode == 52, r.stderr.decode()
    assert b"pk: error:" in r.stderr and b"Traceback" not in r.stderr
    assert relay.puts == []


def test_relays_are_set_shown_and_cleared(people: dict[str, dict[str, str]]) -> None:
    bob = people["bob"]
    assert "publishes nothing" in ok(bob, "nodes", "relays")
    as_json(bob, "nodes", "relays", "https://relay.example.org/", "http://127.0.0.1:9")
    assert as_json(bob, "nodes", "relays")["relays"] == [
        "https://relay.example.org",
        "http://127.0.0.1:9",
    ]
    assert as_json(bob, "nodes", "relays", "--clear")["relays"] == []
    bad = pk(bob, "nodes", "relays", "relay.example.org")
    assert bad.returncode == 3 and b"not a relay URL" in bad.stderr
