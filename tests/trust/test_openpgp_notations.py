"""An OpenPGP key names its nodes, as Keyoxide names accounts: a notation
``proof@ariadne.id=polykey:NODEID`` on its self-signature, added with the very gpg command
`pk identities claim openpgp:FPR` prints (real gpg, a throwaway home). Discovery reads the
notations from the key the keyserver stand-in serves, then counts a named node only when its
own chain's claim of the key verifies: a notation finds nodes, it never proves them."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.trust.providers import OpenPgp, OpenPgpConfig
from polykey.trust.providers.gpg import notations
from polykey.trust.providers.openpgp import notation_command
from tests.support import pk_env
from tests.sync.test_share import free_port
from tests.sync.test_three_agents import Peer
from tests.trust.standins.gnupg import GnuPG
from tests.trust.standins.keyserver import KeyserverStandIn

NODE = "v" + "0" * 52


@pytest.fixture(scope="module")
def g(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnuPG]:
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    gnupg = GnuPG(home)
    try:
        yield gnupg
    finally:
        gnupg.stop()


@pytest.fixture(scope="module")
def ks() -> Iterator[KeyserverStandIn]:
    standin: KeyserverStandIn = KeyserverStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


def _run_printed(g: GnuPG, command: str) -> None:
    """The command as `pk` prints it, run by a shell with the user's gpg home."""
    done = subprocess.run(
        ["sh", "-c", command], env=g.env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()


def test_notations_of_the_newest_self_signature_name_nodes(g: GnuPG, ks: KeyserverStandIn) -> None:
    fpr = g.make("carol")
    assert notations(g.public("carol"), fpr) == []
    _run_printed(g, notation_command(fpr, NODE))
    ks.keys[fpr] = g.public("carol")
    assert ("proof@ariadne.id", f"polykey:{NODE}") in notations(g.public("carol"), fpr)
    provider = OpenPgp(OpenPgpConfig(keyserver=ks.url))
    try:
        assert provider.named_nodes(f"openpgp:{fpr}") == [NODE]
    finally:
        provider.close()
    other = g.make("dave")  # a key that names no node
    ks.keys[other] = g.public("dave")
    provider = OpenPgp(OpenPgpConfig(keyserver=ks.url))
    try:
        assert provider.named_nodes(f"openpgp:{other}") == []
    finally:
        provider.close()


def test_discovery_finds_the_nodes_a_key_names_and_verifies_their_claims(
    g: GnuPG, ks: KeyserverStandIn, tmp_path: Path
) -> None:
    peers: list[Peer] = []

    def node(name: str) -> Peer:
        env = pk_env(tmp_path / f"{name}.pk", PK_PASSWORD=f"{name} pw", GNUPGHOME=str(g.home))
        p = Peer(name, env, free_port())
        p.env["PK_RUNTIME_DIR"] = str(tmp_path / f"run-{name}")
        p("bootstrap")
        p.node_id = p("keys", "public").split()[0]
        p.start()
        p("identities", "provider", "openpgp", "--keyserver", ks.url)
        peers.append(p)
        return p

    try:
        alice, bob = node("alice"), node("bob")
        alice("nodes", "add", bob.node_id, f"127.0.0.1:{bob.port}")
        fpr = g.make("bob")
        ks.keys[fpr] = g.public("bob")
        claimed = json.loads(bob("identities", "claim", f"openpgp:{fpr}", "--format", "json"))
        assert claimed["verified"]
        command = str(claimed["instructions"]).split("`")[1]
        assert command == notation_command(fpr, bob.node_id)
        _run_printed(g, command)
        _run_printed(g, notation_command(fpr, alice.node_id))  # names a node with no claim
        ks.keys[fpr] = g.public("bob")  # published again

        found = json.loads(alice("identities", "discover", f"openpgp:{fpr}", "--format", "json"))
        assert found["nodes"] == [bob.node_id]
        assert alice.node_id in found["unreachable"]  # named, but its chain claims nothing
        assert "holds no live claim" in found["unreachable"][alice.node_id]
    finally:
        stops = [threading.Thread(target=p.stop) for p in peers if p.started]
        for t in stops:
            t.start()
        for t in stops:
            t.join()
