"""The README's stock git recipe, run as written, and the two commands it needs:
`pk keys known-hosts` (ssh's line for a node) and `pk vaults signers` (git's allowed signers).

Real agents, real ssh, real git and ssh-keygen. The README's shell blocks are taken from the
README itself; only the placeholders NODEID, HOST, PORT and VAULT are put in.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from polykey.crypto.signing import openssh_public_line
from polykey.ids import decode_node_id
from tests.support import pk_env, run_pk
from tests.sync.test_share import Pair, pair  # noqa: F401 - the two-node fixture

README = Path(__file__).resolve().parents[2] / "README.md"

needs_git = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("git", "ssh", "ssh-keygen", "bash")),
    reason="git, ssh, ssh-keygen and bash are needed",
)


def recipe_blocks() -> list[str]:
    """The shell blocks of the README's stock git section, as written there."""
    text = README.read_text()
    start = text.index("Stock git can clone a vault")
    section = text[start : text.index("\n## ", start)]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def filled(block: str, values: dict[str, str]) -> str:
    return re.sub(r"\b(NODEID|HOST|PORT|VAULT)\b", lambda m: values[m[1]], block)


def public_line(node_id: str) -> str:
    return openssh_public_line(bytes(decode_node_id(node_id)))


class Shell:
    """Bob at his terminal: his node, his agent-less `pk`, a HOME of his own, stock tools."""

    def __init__(self, p: Pair) -> None:
        self.home = p.tmp / "home"
        self.home.mkdir()
        (self.home / ".gitconfig").write_text("[user]\n\tname = Bob\n\temail = bob@example.org\n")
        bin_dir = p.tmp / "bin"
        bin_dir.mkdir()
        pk = bin_dir / "pk"
        pk.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m polykey "$@"\n')
        pk.chmod(0o755)
        editor = bin_dir / "edit-password"
        editor.write_text('#!/bin/sh\nprintf "changed by bob" > "$1"\n')
        editor.chmod(0o755)
        self.work = p.tmp / "projects"
        self.work.mkdir()
        self.env = {
            **p.bob,
            "HOME": str(self.home),
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "EDITOR": str(editor),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
        }

    def run(self, script: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-e", "-u", "-o", "pipefail", "-c", script],
            cwd=cwd or self.work,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


@needs_git
def test_the_readme_recipe_clones_verifies_commits_and_pushes_as_written(
    pair: Pair,  # noqa: F811
) -> None:
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    blocks = recipe_blocks()
    assert len(blocks) == 2, blocks
    values = {"NODEID": pair.alice_id, "HOST": "127.0.0.1", "PORT": str(pair.port), "VAULT": "work"}
    bob = Shell(pair)

    cloned = bob.run(filled(blocks[0], values))
    assert cloned.returncode == 0, cloned.stderr
    assert f'Good "git" signature for {pair.alice_id}' in cloned.stderr
    known = (bob.home / ".ssh" / "pk_known_hosts").read_text()
    assert known == f"[127.0.0.1]:{pair.port} {public_line(pair.alice_id)} {pair.alice_id}\n"
    clone = bob.work / "work"
    assert (clone / "db" / "password").read_bytes() == b"first"
    signers = (clone / ".git" / "pk_allowed_signers").read_text().splitlines()
    assert signers == [
        f'{n} namespaces="git" {public_line(n)}' for n in sorted([pair.alice_id, pair.bob_id])
    ]

    pushed = bob.run(filled(blocks[1], values))
    assert pushed.returncode == 0, pushed.stderr
    assert pair.a("secrets", "cat", "work:db/password") == "changed by bob"
    verified = bob.run("git verify-commit HEAD && git log --format=%G?", clone)
    assert verified.returncode == 0, verified.stderr
    assert f'Good "git" signature for {pair.bob_id}' in verified.stderr
    assert set(verified.stdout.split()) == {"G"}  # every commit: a good signature by a writer


@needs_git
def test_without_the_known_hosts_line_or_with_another_nodes_ssh_refuses(
    pair: Pair,  # noqa: F811
) -> None:
    """What the README's recipe was missing: ssh checks the host key, and only the NodeId's
    own key passes."""
    bob = Shell(pair)
    key = pair.tmp / "bob.key"
    pair.b("keys", "ssh-key", "-o", str(key), "--yes")
    carol = pk_env(pair.tmp / "carol.pk", PK_PASSWORD="carol pw")
    assert run_pk("bootstrap", env=carol).returncode == 0
    carol_id = run_pk("keys", "public", env=carol).stdout.decode().split()[0]
    hosts = pair.tmp / "known_hosts"
    for name, content in [
        ("none", ""),
        ("wrong", f"[127.0.0.1]:{pair.port} {public_line(carol_id)}\n"),
    ]:
        hosts.write_text(content)
        ssh = f"ssh -i {key} -o IdentitiesOnly=yes -o UserKnownHostsFile={hosts}"
        r = bob.run(f'git clone -c core.sshCommand="{ssh}" ssh://pk@127.0.0.1:{pair.port}/work c')
        assert r.returncode != 0, name
        assert "Host key verification failed" in r.stderr, (name, r.stderr)
    hosts.write_text(pair.b("keys", "known-hosts", pair.alice_id))
    r = bob.run(f'git clone -c core.sshCommand="{ssh}" ssh://pk@127.0.0.1:{pair.port}/work c')
    assert r.returncode == 0, r.stderr


# --- pk keys known-hosts --------------------------------------------------------------------------


def test_known_hosts_from_host_and_port_needs_no_node(tmp_path: Path) -> None:
    node_id = "v" + "0" * 52
    env = pk_env(tmp_path / "no-such-node.pk")
    r = run_pk("keys", "known-hosts", node_id, "--host", "h.example.org", "--port", "1314", env=env)
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout.decode() == f"[h.example.org]:1314 {public_line(node_id)} {node_id}\n"
    r = run_pk("keys", "known-hosts", node_id, "--host", "h", "--port", "22", env=env)
    assert r.stdout.decode() == f"h {public_line(node_id)} {node_id}\n"  # ssh's default port
    r = run_pk("keys", "known-hosts", node_id, "--host", "::1", "--port", "7", env=env)
    assert r.stdout.decode().startswith("[::1]:7 ssh-ed25519 ")
    args = ["known-hosts", node_id, "--host", "h", "--port", "9", "--format", "json"]
    doc = json.loads(run_pk("keys", *args, env=env).stdout)
    assert doc == {"node_id": node_id, "host": "h", "port": 9, "line": doc["line"]}
    assert doc["line"] == f"[h]:9 {public_line(node_id)} {node_id}"


def test_known_hosts_refuses_a_bad_node_id_or_host(tmp_path: Path) -> None:
    env = pk_env(tmp_path / "no-such-node.pk")
    bad = run_pk("keys", "known-hosts", "vnope", "--host", "h", "--port", "1", env=env)
    assert bad.returncode == 3 and b"Not a valid NodeId" in bad.stderr
    node_id = "v" + "0" * 52
    spaced = run_pk("keys", "known-hosts", node_id, "--host", "a b", "--port", "1", env=env)
    assert spaced.returncode == 3 and spaced.stdout == b""


def test_known_hosts_uses_the_stored_address_or_this_nodes_agent(pair: Pair) -> None:  # noqa: F811
    line = pair.b("keys", "known-hosts", pair.alice_id)  # `pk nodes add` stored it
    assert line == f"[127.0.0.1]:{pair.port} {public_line(pair.alice_id)} {pair.alice_id}\n"
    other = pair.b("keys", "known-hosts", pair.alice_id, "--host", "alice.example.org")
    assert other.startswith(f"[alice.example.org]:{pair.port} ")
    own = pair.a("keys", "known-hosts", pair.alice_id)  # alice's own agent serves --port
    assert own == line
    unknown = run_pk("keys", "known-hosts", pair.bob_id, env=pair.alice)
    assert unknown.returncode == 52
    assert b"pk nodes add" in unknown.stderr


# --- pk vaults signers ----------------------------------------------------------------------------


def signer_ids(text: str) -> list[str]:
    lines = text.splitlines()
    for line in lines:
        node_id, namespaces, key = line.split(" ", 2)
        assert namespaces == 'namespaces="git"' and key == public_line(node_id)
    return [line.split(" ", 1)[0] for line in lines]


def test_signers_are_the_owner_and_the_nodes_granted_push(pair: Pair) -> None:  # noqa: F811
    assert signer_ids(pair.a("vaults", "signers", "work")) == [pair.alice_id]  # bob may pull
    carol = pk_env(pair.tmp / "carol.pk", PK_PASSWORD="carol pw")
    assert run_pk("bootstrap", env=carol).returncode == 0
    carol_id = run_pk("keys", "public", env=carol).stdout.decode().split()[0]
    pair.a("vaults", "share", "work", carol_id, "--perm", "push")
    expected = sorted([pair.alice_id, carol_id])
    assert signer_ids(pair.a("vaults", "signers", "work")) == expected
    assert signer_ids(pair.b("vaults", "signers", "work", "--from", pair.alice_id)) == expected
    pair.b("vaults", "clone", pair.alice_id, "work", "mine")  # a clone: the origin's writers
    assert signer_ids(pair.b("vaults", "signers", "mine")) == sorted([*expected, pair.bob_id])
    doc = json.loads(pair.b("vaults", "signers", "mine", "--format", "json"))
    assert doc["vault"] == "mine" and doc["writers"] == sorted([*expected, pair.bob_id])


def test_signers_of_a_vault_not_shared_answer_like_a_missing_one(pair: Pair) -> None:  # noqa: F811
    pair.a("vaults", "create", "private")
    hidden = run_pk("vaults", "signers", "private", "--from", pair.alice_id, env=pair.bob)
    missing = run_pk("vaults", "signers", "nosuch", "--from", pair.alice_id, env=pair.bob)
    local = run_pk("vaults", "signers", "nosuch", env=pair.bob)
    shown = hidden.stderr.replace(b"private", b"nosuch")
    assert (hidden.returncode, shown) == (missing.returncode, missing.stderr)
    assert b"No such vault: nosuch" in missing.stderr and missing.returncode != 0
    assert local.returncode == 31 and b"No such vault: nosuch" in local.stderr
