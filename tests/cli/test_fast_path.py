"""`pk secrets cat` and `pk secrets write` with an agent take the hot path (cli/fast.py): a real
`pk` process, run with Python's import profiler, imports neither click nor cryptography (nor
json, nor sqlite3), and the agent answers it. Without an agent the same command works through
the full CLI, on the node file. The JSON the hot path writes by hand (polykey.frames) is what
json writes, and polykey.frames imports nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey import codec, frames
from tests.agent.test_agent_process import AgentHandle, make_node, start_agent
from tests.support import PASSWORD, pk_env

VALUE = b"hunter2 \xc3\xa9\x00\xff"
HEAVY = ("click", "cryptography", "json", "sqlite3", "polykey.crypto", "polykey.agent")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHandle]:
    node = tmp_path_factory.mktemp("fast") / "node.pk"
    make_node(node)
    base = Path(tempfile.mkdtemp(prefix="pkf-", dir="/tmp"))
    handle = start_agent(node, base)
    try:
        assert handle.pk("secrets", "write", "v:db/password", stdin=VALUE).returncode == 0
        yield handle
    finally:
        handle.stop()
        shutil.rmtree(base, ignore_errors=True)


def pk_profiled(
    *args: str, env: dict[str, str], stdin: bytes = b""
) -> tuple[subprocess.CompletedProcess[bytes], set[str]]:
    """Run the installed `pk` (as a user does) with PYTHONPROFILEIMPORTTIME; the process and
    every module it imported."""
    script = Path(sys.executable).with_name("pk")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "polykey"]
    result = subprocess.run(
        [*argv, *args],
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    modules, other = set(), []
    for line in result.stderr.decode().splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name != "imported package":
                modules.add(name)
        else:
            other.append(line)
    assert modules, "the import profiler printed nothing"
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout, "\n".join(other).encode()
    ), modules


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)}


def answered(agent: AgentHandle, method: str) -> int:
    return (agent.folder / "agent.log").read_text().count(f"{method} ok in ")


def test_secrets_cat_with_an_agent_imports_neither_click_nor_cryptography(
    agent: AgentHandle,
) -> None:
    before = answered(agent, "secrets.cat")
    result, modules = pk_profiled("secrets", "cat", "v:db/password", env=agent.env)
    assert (result.returncode, result.stdout) == (0, VALUE), result.stderr
    assert result.stderr == b""
    assert "polykey.cli.fast" in modules and "polykey.frames" in modules
    assert heavy(modules) == set()
    assert answered(agent, "secrets.cat") == before + 1  # the agent answered it


def test_secrets_write_with_an_agent_imports_neither_click_nor_cryptography(
    agent: AgentHandle,
) -> None:
    before = answered(agent, "secrets.write")
    value = b'a "quoted" value\n'
    result, modules = pk_profiled(
        "secrets", "write", "v:caf\u00e9/k\u00e9y", env=agent.env, stdin=value
    )
    assert result.returncode == 0, result.stderr
    assert heavy(modules) == set()
    assert answered(agent, "secrets.write") == before + 1
    cat, modules = pk_profiled("secrets", "cat", "v:caf\u00e9/k\u00e9y", env=agent.env)
    assert (cat.returncode, cat.stdout) == (0, value) and heavy(modules) == set()


def test_without_an_agent_secrets_cat_works_through_the_full_cli(
    agent: AgentHandle, tmp_path: Path
) -> None:
    """The same node and command, but no agent for it (another runtime folder): the full CLI
    opens the node file with the password."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = pk_env(agent.node, PK_RUNTIME_DIR=str(runtime), PK_PASSWORD=PASSWORD)
    before = answered(agent, "secrets.cat")
    result, modules = pk_profiled("secrets", "cat", "v:db/password", env=env)
    assert (result.returncode, result.stdout) == (0, VALUE), result.stderr
    assert "click" in modules and "polykey.store.nodefile" in modules
    assert answered(agent, "secrets.cat") == before  # the agent was not asked
    no_password = {k: v for k, v in env.items() if k != "PK_PASSWORD"}
    refused, _ = pk_profiled("secrets", "cat", "v:db/password", env=no_password)
    assert refused.returncode != 0 and refused.stdout == b""  # no agent: the password is needed


def test_an_option_takes_the_full_cli_through_the_agent(agent: AgentHandle) -> None:
    """Anything the hot path does not know (here an option) goes to the full CLI, which asks
    the same agent."""
    before = answered(agent, "secrets.cat")
    result, modules = pk_profiled(
        "secrets", "cat", "--format", "json", "v:db/password", env=agent.env
    )
    assert result.returncode == 0, result.stderr
    assert "click" in modules
    assert answered(agent, "secrets.cat") == before + 1


# --- the hot path's JSON is json's ----------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT | st.binary(max_size=64),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_json_text_writes_text_as_json_dumps_does(text: str) -> None:
    assert frames.json_text(text) == json.dumps(text)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_json_value_writes_a_message_as_codec_encode_does(doc: Any) -> None:
    assert frames.json_value({"x": doc}).encode("ascii") == codec.encode({"x": doc})


@pytest.mark.parametrize("text", ["\ud800", "a\udcff", "\ude00\ud83d"])
def test_json_text_refuses_text_no_utf_8_can_carry(text: str) -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        frames.json_text(text)


def test_frames_imports_nothing() -> None:
    """The hot path imports it: a fresh interpreter importing it loads no other module (but
    __future__, which every module of polykey imports)."""
    code = (
        "import sys; before = set(sys.modules); import polykey.frames; "
        "print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "['__future__', 'polykey', 'polykey.frames']"


def test_a_clone_is_handed_to_the_agent_and_a_refused_one_gets_the_full_clis_error(
    agent: AgentHandle,
) -> None:
    """`pk vaults clone NODEID VAULT` goes to the agent without click; when the agent refuses
    it (here: no address is known for that node), the full CLI runs it and gives the error."""
    stranger = "v" + "a" * 52
    before = answered(agent, "vaults.clone")
    result, modules = pk_profiled("vaults", "clone", stranger, "v", "copy", env=agent.env)
    assert result.returncode != 0 and result.stdout == b""
    assert result.stderr.startswith(b"pk: error: ") and b"Traceback" not in result.stderr
    assert "polykey.cli.fast" in modules and "click" in modules  # tried, then the full CLI
    assert agent.pk("vaults", "list").stdout.count(b"copy") == 0
    assert (agent.folder / "agent.log").read_text().count("vaults.clone") >= before + 1
