"""`pk nodes dht-bootstrap` (docs/spec/discovery.md section 7a): the Mainline DHT's bootstrap
list kept in the node, set, shown and cleared with and without an agent; a bad entry refused
in one line with a hint; and `pk agent status` says whether the DHT is on and where its list
came from (the setting, PK_DHT_BOOTSTRAP overriding it, or none). The agents listen on
loopback and their DHT sessions start from a loopback port nobody answers: nothing leaves
this machine."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import CliNode, assert_error, assert_ok, json_stdout, text
from tests.support import run_pk


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ok(env: dict[str, str], *args: str) -> str:
    result = run_pk(*args, env=env)
    assert_ok(result)
    return text(result.stdout)


def as_json(env: dict[str, str], *args: str) -> Any:
    result = run_pk(*args, "--format", "json", env=env)
    assert_ok(result)
    return json_stdout(result)


@pytest.fixture
def env(cli_node: CliNode, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The node's environment, with its own runtime folder; any agent started is stopped."""
    environment = cli_node.env(PK_RUNTIME_DIR=str(tmp_path / "run"))
    try:
        yield environment
    finally:
        run_pk("agent", "stop", env=environment)


def test_the_list_is_set_shown_and_cleared_in_the_node(env: dict[str, str]) -> None:
    assert ok(env, "nodes", "dht-bootstrap") == "No DHT bootstrap list: the DHT is off.\n"
    shown = ok(env, "nodes", "dht-bootstrap", "127.0.0.1:6881,mainline", "127.0.0.1:6881")
    assert shown.splitlines() == [
        "127.0.0.1:6881",
        "mainline",
        "Used from the next `pk agent start`.",
    ]
    assert as_json(env, "nodes", "dht-bootstrap") == {"bootstrap": ["127.0.0.1:6881", "mainline"]}
    overridden = ok({**env, "PK_DHT_BOOTSTRAP": "127.0.0.1:7"}, "nodes", "dht-bootstrap")
    assert "PK_DHT_BOOTSTRAP is set here: an agent started with it uses that instead." in overridden
    assert as_json(env, "nodes", "dht-bootstrap", "--clear") == {"bootstrap": []}
    assert ok(env, "nodes", "dht-bootstrap").startswith("No DHT bootstrap list")


@pytest.mark.parametrize("entry", ["nowhere", "127.0.0.1:0", "host:port", ","])
def test_a_bad_entry_is_refused_in_one_line_with_a_hint(env: dict[str, str], entry: str) -> None:
    ok(env, "nodes", "dht-bootstrap", "127.0.0.1:6881")
    message = assert_error(run_pk("nodes", "dht-bootstrap", entry, env=env), 3)
    assert "DHT bootstrap" in message
    assert as_json(env, "nodes", "dht-bootstrap") == {"bootstrap": ["127.0.0.1:6881"]}  # kept
    both = run_pk("nodes", "dht-bootstrap", "--clear", "127.0.0.1:1", env=env)
    assert "not both" in assert_error(both, 2)


def dht_of(env: dict[str, str]) -> dict[str, Any]:
    status = as_json(env, "agent", "status")
    assert isinstance(status["dht_bootstrap"], dict)
    return dict(status["dht_bootstrap"])


def test_agent_status_shows_the_dht_and_where_its_list_came_from(env: dict[str, str]) -> None:
    pytest.importorskip("libtorrent")
    silent = f"127.0.0.1:{free_port()}"  # a DHT node nobody answers at: loopback only
    ok(env, "nodes", "dht-bootstrap", silent)
    port = ["--host", "127.0.0.1", "--port", str(free_port()), "--no-publish"]
    ok(env, "agent", "start", "-b", *port)
    assert dht_of(env) == {"on": True, "from": "setting", "in_use": [silent]}
    status = ok(env, "agent", "status")
    assert "dht       on, bootstrap list from the setting (`pk nodes dht-bootstrap`)" in status
    assert "relays    no Pkarr relay from the setting (`pk nodes relays`)" in status

    # set through the agent: kept in the node, used from its next start
    changed = ok(env, "nodes", "dht-bootstrap", "mainline")
    assert f"The running agent uses the list it started with: {silent}." in changed
    assert dht_of(env)["in_use"] == [silent]
    ok(env, "agent", "stop")

    # PK_DHT_BOOTSTRAP overrides the setting
    overriding = {**env, "PK_DHT_BOOTSTRAP": silent, "PK_PKARR_RELAYS": "http://127.0.0.1:9"}
    ok(overriding, "agent", "start", "-b", *port)
    assert dht_of(env) == {"on": True, "from": "PK_DHT_BOOTSTRAP", "in_use": [silent]}
    status = ok(env, "agent", "status")
    assert "dht       on, bootstrap list from PK_DHT_BOOTSTRAP" in status
    assert "relays    1 Pkarr relay(s) from PK_PKARR_RELAYS" in status
    assert json.loads(ok(env, "nodes", "dht-bootstrap", "--format", "json"))["from"] == (
        "PK_DHT_BOOTSTRAP"
    )
    ok(env, "agent", "stop")

    # no list at all: the DHT is off
    ok(env, "nodes", "dht-bootstrap", "--clear")
    ok(env, "agent", "start", "-b")
    assert dht_of(env) == {"on": False, "from": "off", "in_use": []}
    assert "dht       off: no bootstrap list" in ok(env, "agent", "status")
