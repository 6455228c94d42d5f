"""Every vault and secret command behaves the same with and without an agent.

One scenario runs twice on copies of one node: with PK_NO_AGENT=1 (the CLI opens the node file
itself, with the password) and through an agent (no password in the environment, so a command
that did not go through the agent would fail). Outputs are compared after replacing what differs
by nature (vault and commit ids, times, the node file's path).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.agent.runtime import pid_alive
from polykey.ids import encode_node_id
from polykey.node import FAST_INSECURE_KDF, Node
from tests.support import PASSWORD, pk_env, run_pk

MODES = ["no-agent", "agent"]


@dataclass(frozen=True)
class Step:
    args: tuple[str, ...]
    stdin: bytes | None
    code: int
    out: str | None  # the expected standard output after normalise(), when given


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def step(*args: str, stdin: bytes | None = None, code: int = 0, out: str | None = None) -> Step:
    return Step(args, stdin, code, out)


ADD_PASSWORD = "<C12>  <TIME>  <WHO>  Add secret db/password."
LOG_WORK = """\
<C12>  <TIME>  <WHO>  Tag db/password with prod, db.
<C12>  <TIME>  <WHO>  Move api/token to vault home.
<C12>  <TIME>  <WHO>  Move db/user to db/login.
<C12>  <TIME>  <WHO>  Add secret api/token.
<C12>  <TIME>  <WHO>  Add secret db/user.
<C12>  <TIME>  <WHO>  Add secret db/password.
<C12>  <TIME>  <WHO>  Create vault work.
"""
STAT = """\
Path      work:db/password
Size      7 bytes
Created   <TIME>
Modified  <TIME>
Commit    <COMMIT>
Tags      -
"""
TAGS = """\
db\t1 secrets\t0 vaults
personal\t0 secrets\t1 vaults
prod\t2 secrets\t0 vaults
"""

SCENARIO: list[Step] = [
    step("vaults", "create", "work", out="Created vault work (<VAULT-ID>).\n"),
    step("vaults", "create", "home", "--tag", "personal", out="Created vault home (<VAULT-ID>).\n"),
    step("vaults", "list", out="home\t<VAULT-ID>\tpersonal\nwork\t<VAULT-ID>\n"),
    step("secrets", "write", "work:db/password", stdin=b"s3cr3t\n", out=""),
    step("secrets", "write", "work:db/user", stdin=b"admin", out=""),
    step("secrets", "write", "work:api/token", stdin="t\u00f6ken \u6f22".encode(), out=""),
    step("secrets", "write", "home:wifi", stdin=b"\x00\xffbinary", out=""),
    step("secrets", "cat", "work:db/password", out="s3cr3t\n"),
    step(
        "secrets",
        "cat",
        "work:db/user",
        "work:api/token",
        "home:wifi",
        out="admin\nt\u00f6ken \u6f22\n\x00\\xffbinary",
    ),
    step("secrets", "ls", "work", "-R", out="api/\napi/token\ndb/\ndb/password\ndb/user\n"),
    step("secrets", "ls", "work:db", out="db/password\ndb/user\n"),
    step("secrets", "mv", "work:db/user", "work:db/login", out=""),
    step("secrets", "mv", "work:api/token", "home:token", out=""),
    step("secrets", "ls", "work", "-R", out="db/\ndb/login\ndb/password\n"),
    step("secrets", "rm", "home:wifi", out=""),
    step("secrets", "ls", "home", "-R", out="token\n"),
    step("secrets", "stat", "work:db/password", out=STAT),
    step("secrets", "history", "work:db/password", out=f"{ADD_PASSWORD}\n"),
    step("tags", "add", "work:db/password", "prod", "db", out=""),
    step("tags", "add", "home:token", "prod", out=""),
    step("secrets", "ls", "--tag", "prod", out="home:token\nwork:db/password\n"),
    step("secrets", "ls", "--tag", "nothing", out=""),
    step("vaults", "log", "work", out=LOG_WORK),
    step("vaults", "log", "home"),
    step("keys", "public"),
    step("keys", "sign", "-", stdin=b"a document to sign\n"),
    step("node", "info"),
    step("node", "check", out="The node file is whole: every record authenticated.\n"),
    step("vaults", "list", "--format", "json"),
    step(
        "secrets",
        "cat",
        "work:db/login",
        "--format",
        "json",
        out='{"secrets": [{"address": "work:db/login", "value": "admin"}]}\n',
    ),
    step("secrets", "stat", "work:db/password", "--format", "json"),
    step("secrets", "find", "login", out="work:db/login\n"),
    step("secrets", "grep", "admin", out="work:db/login: admin\n"),
    step("tags", "list", out=TAGS),
    step(
        "secrets",
        "env",
        "work:db",
        "--format",
        "json",
        out='{\n  "login": "admin",\n  "password": "s3cr3t"\n}\n',
    ),
    # errors: the same code, message and hint in both modes
    step("vaults", "log", "nosuch", code=31),
    step("secrets", "cat", "nosuch:x", code=31),
    step("secrets", "ls", "nosuch", code=31),
    step("secrets", "write", "nosuch:x", stdin=b"x", code=31),
    step("secrets", "cat", "work:nosuch", code=33),
    step("secrets", "cat", "work:db/password", "work:nosuch", code=33),
    step("secrets", "history", "work:nosuch", code=33),
    step("secrets", "stat", "work:nosuch", code=33),
    step("secrets", "mv", "work:nosuch", "work:else", code=33),
    step("secrets", "rm", "work:nosuch", code=33),
    step("tags", "add", "work:nosuch", "t", code=33),
    step("secrets", "write", "work:../escape", stdin=b"x", code=3),
    step("secrets", "write", "work:/abs", stdin=b"x", code=3),
    step("secrets", "cat", "work:a/../b", code=3),
    step("vaults", "create", "work", code=32),
    step("vaults", "create", "bad/name", code=3),
    step("secrets", "cat", "work:db", out="s3cr3t\nlogin: admin\n"),  # an entry, as pass shows it
    step("secrets", "cat", "work:db/password", "--format", "json", "--rev", "nosuch", code=37),
    step("vaults", "log", "work", out=LOG_WORK),  # the failed commands changed nothing
]


@dataclass
class Run:
    node_id: str
    outcomes: list[Outcome]
    agent_log: str


def normalise(text: str, node: Path) -> str:
    text = text.replace(str(node), "<NODE>")
    text = re.sub(r"\bv[0-9a-v]{26}\b", "<VAULT-ID>", text)
    text = re.sub(r"\b[0-9a-f]{40}\b", "<COMMIT>", text)
    text = re.sub(r"\b[0-9a-f]{12}\b", "<C12>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "<TIME>", text)
    text = re.sub(r"(<TIME>  )v[0-9a-v]{10}  ", r"\1<WHO>  ", text)  # a commit's author
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", "<ISOTIME>", text)
    return re.sub(r'"(time|created|modified)": \d+', r'"\1": <T>', text)


def bootstrap(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    node, _ = Node.bootstrap(path, PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True)
    node_id = encode_node_id(node.node_id)
    node.close()
    return node_id


def run_scenario(mode: str, node: Path, base: Path) -> list[Outcome]:
    if mode == "agent":
        env = pk_env(node, PK_RUNTIME_DIR=str(base))
        started = run_pk("agent", "start", "--background", env={**env, "PK_PASSWORD": PASSWORD})
        assert started.returncode == 0, started.stderr
    else:
        env = pk_env(node, PK_PASSWORD=PASSWORD, PK_NO_AGENT="1", PK_RUNTIME_DIR=str(base))
    outcomes = []
    for s in SCENARIO:
        r = run_pk(*s.args, env=env, input=s.stdin if s.stdin is not None else b"")
        outcomes.append(
            Outcome(
                r.returncode,
                normalise(r.stdout.decode("utf-8", "backslashreplace"), node),
                normalise(r.stderr.decode("utf-8", "backslashreplace"), node),
            )
        )
    return outcomes


def stop_agent(node: Path, base: Path) -> str:
    """Stop the agent of ``node``; its log."""
    env = pk_env(node, PK_RUNTIME_DIR=str(base))
    logs = list(base.glob("*/agent.log"))
    log = logs[0].read_text() if logs else ""
    statuses = list(base.glob("*/status.json"))
    pid = json.loads(statuses[0].read_text())["pid"] if statuses else None
    run_pk("agent", "stop", env=env)
    if isinstance(pid, int) and pid_alive(pid):
        subprocess.run(["kill", "-9", str(pid)], check=False)
    return log


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    template = tmp_path_factory.mktemp("template") / "node.pk"
    node_id = bootstrap(template)
    result: dict[str, Run] = {}
    bases: list[Path] = []
    try:
        for mode in MODES:
            node = tmp_path_factory.mktemp(mode) / "node.pk"
            shutil.copyfile(template, node)
            base = Path(tempfile.mkdtemp(prefix="pkr-", dir="/tmp"))
            bases.append(base)
            try:
                outcomes = run_scenario(mode, node, base)
            finally:
                log = stop_agent(node, base) if mode == "agent" else ""
            result[mode] = Run(node_id, outcomes, log)
        yield result
    finally:
        for base in bases:
            shutil.rmtree(base, ignore_errors=True)


def outcome(run: Run, *args: str) -> Outcome:
    """The outcome of the first step with these arguments."""
    index = next(i for i, s in enumerate(SCENARIO) if s.args == args)
    return run.outcomes[index]


@pytest.mark.parametrize("mode", MODES)
def test_the_scenario_gives_the_expected_exit_codes_and_output(
    runs: dict[str, Run], mode: str
) -> None:
    run = runs[mode]
    for s, got in zip(SCENARIO, run.outcomes, strict=True):
        assert got.code == s.code, (s.args, got)
        assert "Traceback" not in got.stderr, (s.args, got)
        if s.out is not None:
            assert got.stdout == s.out, (s.args, got)
        if s.code == 0:
            assert got.stderr == "", (s.args, got)
            continue
        assert got.stdout == "", (s.args, got)
        if "json" in s.args:
            assert json.loads(got.stderr)["error"]["exit_code"] == s.code
        else:
            lines = got.stderr.splitlines()
            assert len(lines) == 2, (s.args, got)
            assert lines[0].startswith("pk: error: ") and lines[1].startswith("pk: hint: ")


@pytest.mark.parametrize("mode", MODES)
def test_keys_and_node_info_show_the_node_id(runs: dict[str, Run], mode: str) -> None:
    run = runs[mode]
    public = outcome(run, "keys", "public").stdout.splitlines()
    assert public[0] == run.node_id
    assert public[1].startswith("ssh-ed25519 ") and public[1].endswith(" " + run.node_id)
    info = outcome(run, "node", "info").stdout
    assert f"NodeId     {run.node_id}\n" in info
    assert "Node file  <NODE>\n" in info and "Vaults     2\n" in info
    signature = outcome(run, "keys", "sign", "-").stdout
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----\n")
    assert signature.endswith("-----END SSH SIGNATURE-----\n")


@pytest.mark.parametrize("index", range(len(SCENARIO)), ids=[" ".join(s.args) for s in SCENARIO])
def test_both_modes_give_the_same_output_and_exit_code(runs: dict[str, Run], index: int) -> None:
    assert runs["agent"].outcomes[index] == runs["no-agent"].outcomes[index]


def test_the_agent_mode_really_went_through_the_agent(runs: dict[str, Run]) -> None:
    log = runs["agent"].agent_log
    for method in (
        "vaults.create",
        "vaults.list",
        "vaults.log",
        "secrets.write",
        "secrets.cat",
        "secrets.ls",
        "secrets.move",
        "secrets.rm",
        "secrets.stat",
        "secrets.history",
        "secrets.find",
        "secrets.grep",
        "secrets.env",
        "tags.list",
        "tags.set",
        "keys.public",
        "keys.sign",
        "node.info",
        "node.check",
    ):
        assert f" {method} ok in " in log, method
    assert " vaults.log failed: VaultNotFound" in log
    assert " secrets.cat failed: SecretNotFound" in log
    assert runs["no-agent"].agent_log == ""
