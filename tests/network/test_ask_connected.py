"""Resolution by asking the peers this node is connected to now (docs/spec/discovery.md
section 5): with no seed, no relay and nothing on the LAN, a node that a connected peer knows
is found through that peer (``nodes.find``), by real agents on loopback."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from polykey.crypto.signing import SigningKey
from polykey.ids import NodeId, encode_node_id
from tests.support import pk_env, run_pk


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_node_a_connected_peer_knows_is_found_through_it(tmp_path: Path) -> None:
    def node(name: str) -> tuple[dict[str, str], str]:
        env = pk_env(tmp_path / f"{name}.pk", PK_PASSWORD=name, PK_RUNTIME_DIR=str(tmp_path / name))
        assert run_pk("bootstrap", env=env).returncode == 0
        shown = run_pk("keys", "public", "--format", "json", env=env).stdout
        return env, json.loads(shown)["node_id"]

    def ok(env: dict[str, str], *args: str) -> dict[str, Any]:
        done = run_pk(*args, "--format", "json", env=env)
        assert done.returncode == 0, (args, done.stderr.decode())
        return json.loads(done.stdout) if done.stdout.strip() else {}

    (peer, peer_id), (me, me_id) = node("p"), node("m")
    far = encode_node_id(NodeId(SigningKey(os.urandom(32)).public))  # known to the peer only
    peer_port = _port()
    ok(peer, "vaults", "create", "work")
    ok(peer, "vaults", "share", "work", me_id)  # the peer answers nodes it deals with
    ok(peer, "nodes", "add", far, "127.0.0.1:4321")
    ok(me, "nodes", "add", peer_id, f"127.0.0.1:{peer_port}")
    quiet = ("--no-lan", "--no-publish")
    started = []
    try:
        ok(peer, "agent", "start", "-b", "--port", str(peer_port), *quiet)
        started.append(peer)
        ok(me, "agent", "start", "-b", *quiet)
        started.append(me)
        nowhere = run_pk("nodes", "find", far, env=me)  # no connection yet: nothing to ask
        assert nowhere.returncode == 52 and b"Traceback" not in nowhere.stderr
        ok(me, "vaults", "scan", peer_id)  # the agent now holds a connection to the peer
        found = ok(me, "nodes", "find", far)
        assert found["addresses"] == ["127.0.0.1:4321"]
        assert (found["how"], found["source"]) == ("peer", peer_id)
    finally:
        for env in started:
            run_pk("agent", "stop", env=env)
