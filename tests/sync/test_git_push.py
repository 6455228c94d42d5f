"""Stock `git push ssh://` into a node's agent: the rules of `pk vaults push`, nothing else.

Real agents, real ssh, real git: bob exports his node key (`pk keys ssh-key`), clones alice's
vault with stock git, signs commits with that key (`gpg.format=ssh`) and pushes them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from polykey.node import Node
from polykey.sync.checks import UpdateRefused
from polykey.sync.packin import MAX_INFLATED_BYTES, read_pack
from polykey.vaults.objects import objects_ns
from tests.support import run_pk
from tests.sync.test_share import Pair, pair  # noqa: F401 - the two-node fixture

needs_git = pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("ssh") is None or not shutil.which("ssh-keygen"),
    reason="git, ssh and ssh-keygen are needed",
)


class Git:
    """Stock git in an isolated HOME, talking to alice's agent with one key."""

    def __init__(self, p: Pair, key: Path) -> None:
        self.p = p
        self.key = key
        self.home = p.tmp / "home"
        self.home.mkdir(exist_ok=True)
        self.work = p.tmp / "clone"
        ssh = (
            f"ssh -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
        )
        self.env = {
            "GIT_SSH_COMMAND": ssh,
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
        }

    def url(self, vault: str) -> str:
        return f"ssh://pk@127.0.0.1:{self.p.port}/{vault}"

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        cwd = self.work if self.work.exists() else self.p.tmp
        r = self.raw(*args, cwd=cwd, stdin=stdin)
        if check:
            assert r.returncode == 0, r.stderr
        return r.stdout

    def raw(
        self, *args: str, cwd: Path | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args],
            cwd=cwd or self.work,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def clone(self, vault: str = "work") -> None:
        r = self.raw("clone", self.url(vault), str(self.work), cwd=self.p.tmp)
        assert r.returncode == 0, r.stderr
        for name, value in [
            ("user.name", "bob"),
            ("user.email", "bob@example.org"),
            ("gpg.format", "ssh"),
            ("user.signingKey", str(self.key)),
            ("commit.gpgsign", "true"),
        ]:
            self.run("config", name, value)

    def commit(self, path: str, content: bytes, message: str, *extra: str) -> str:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        self.run("add", path)
        self.run("commit", "-q", "-m", message, *extra)
        return self.run("rev-parse", "HEAD").strip()

    def push(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.raw("push", "origin", *(args or ("main",)))


def bob_key(p: Pair) -> Path:
    key = p.tmp / "bob.key"
    p.b("keys", "ssh-key", "-o", str(key), "--yes")
    return key


def alice_state(p: Pair) -> tuple[str, str, int]:
    """What a refused push must leave exactly as it was: history, secrets, stored objects."""
    with Node.open(p.tmp / "alice.pk", b"alice pw", allow_weak=True) as node:  # beside the agent
        count = len(node.store.keys(objects_ns(node.vaults.info("work").id)))
    return p.a("vaults", "log", "work", "--format", "json"), p.a("secrets", "ls", "work"), count


@pytest.fixture
def git(pair: Pair) -> Git:  # noqa: F811
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    g = Git(pair, bob_key(pair))
    g.clone()
    return g


# --- accepted ---------------------------------------------------------------------------------


def restart_alice_with_tmpdir(p: Pair) -> Path:
    """Alice's agent again, with a temp directory of its own that the test can watch."""
    tmp = p.tmp / "agent-tmp"
    tmp.mkdir()
    run_pk("agent", "stop", env=p.alice)
    env = {**p.alice, "TMPDIR": str(tmp)}
    started = run_pk("agent", "start", "--background", "--port", str(p.port), env=env)
    assert started.returncode == 0, started.stderr
    return tmp


@needs_git
def test_a_signed_git_push_lands_in_the_vault(pair: Pair, git: Git) -> None:  # noqa: F811
    secret = b"pushed-with-stock-git-7f3a9c"
    head = git.commit("db/host", secret, "Add the database host.")
    result = git.push()
    assert result.returncode == 0, result.stderr
    assert pair.a("secrets", "cat", "work:db/host").encode() == secret
    log = json.loads(pair.a("vaults", "log", "work", "--format", "json"))
    assert log["commits"][0]["id"] == head
    assert "Add the database host." in pair.a("vaults", "log", "work")
    assert "whole" in pair.a("node", "check")
    for f in pair.tmp.glob("alice.pk*"):  # sealed when written
        assert secret not in f.read_bytes()
    # a second push on top (a thin pack whose deltas rest on the vault's objects) lands too
    bigger = secret + b"-and-more-" + secret
    git.commit("db/host", bigger, "Change the database host.")
    assert git.push().returncode == 0
    assert pair.a("secrets", "cat", "work:db/host").encode() == bigger
    # a node that clones with pk gets git's commits like any others, checked on the way
    pair.b("vaults", "clone", pair.alice_id, "work", "mine")
    assert pair.b("secrets", "cat", "mine:db/host").encode() == bigger


def watch_files(pid: int, stop: threading.Event, seen: set[str]) -> None:
    """Every file the process holds open, polled until ``stop`` (O_TMPFILE files have no name
    in their directory, so only the process's descriptors show them)."""
    fds = Path(f"/proc/{pid}/fd")
    while not stop.is_set():
        try:
            names = list(fds.iterdir())
        except PermissionError:
            seen.add("unreadable")
            return
        for fd in names:
            with contextlib.suppress(OSError):
                seen.add(os.readlink(fd))
        time.sleep(0.002)


@needs_git
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_pack_larger_than_dulwichs_spool_limit_never_touches_the_disk(
    pair: Pair,  # noqa: F811
    git: Git,
) -> None:
    tmp = restart_alice_with_tmpdir(pair)
    pid = json.loads(pair.a("agent", "status", "--format", "json"))["pid"]
    secret = os.urandom(17 * 1024 * 1024)  # incompressible: the pack is over 16 MiB
    git.commit("big", secret, "Add a big secret.")
    stop, seen = threading.Event(), set[str]()
    watcher = threading.Thread(target=watch_files, args=(pid, stop, seen))
    watcher.start()
    try:
        result = git.push()
    finally:
        stop.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    if "unreadable" in seen:
        pytest.skip("the agent's open files cannot be watched here")
    assert seen, "the watcher saw nothing"
    assert not [f for f in seen if "agent-tmp" in f or "(deleted)" in f], seen
    assert list(tmp.iterdir()) == []
    assert run_pk("secrets", "cat", "work:big", env=pair.alice).stdout == secret


# --- refused: the vault stays exactly as it was -----------------------------------------------


@needs_git
def test_an_unsigned_commit_is_refused_and_the_vault_is_unchanged(
    pair: Pair,  # noqa: F811
    git: Git,
) -> None:
    before = alice_state(pair)
    git.commit("db/host", b"unsigned", "Unsigned.", "--no-gpg-sign")
    result = git.push()
    assert result.returncode != 0
    assert "is not signed" in result.stderr
    assert alice_state(pair) == before
    assert run_pk("secrets", "cat", "work:db/host", env=pair.alice).returncode != 0


@needs_git
def test_a_commit_signed_by_a_key_that_may_not_write_is_refused(
    pair: Pair,  # noqa: F811
    git: Git,
) -> None:
    other = pair.tmp / "other.key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )
    git.run("config", "user.signingKey", str(other))
    before = alice_state(pair)
    git.commit("db/host", b"x", "Signed by a stranger.")
    result = git.push()
    assert result.returncode != 0
    assert "not signed by a node allowed to write" in result.stderr
    assert alice_state(pair) == before


@needs_git
def test_a_key_without_the_push_grant_sees_no_repository(pair: Pair) -> None:  # noqa: F811
    g = Git(pair, bob_key(pair))  # bob holds scan, clone, pull: not push
    g.clone()
    g.run("config", "user.signingKey", str(g.key))
    before = alice_state(pair)
    g.commit("db/host", b"x", "Add a host.")
    refused = g.push()
    g.run("remote", "add", "missing", g.url("no-such-vault"))
    missing = g.raw("push", "missing", "main")
    assert refused.returncode != 0 and missing.returncode != 0
    assert "repository not found" in refused.stderr
    assert refused.stderr.replace("work", "V") == missing.stderr.replace("no-such-vault", "V")
    assert alice_state(pair) == before


@needs_git
def test_a_force_push_that_rewrites_history_is_refused(pair: Pair, git: Git) -> None:  # noqa: F811
    git.commit("db/host", b"one", "Add a host.")
    assert git.push().returncode == 0
    before = alice_state(pair)
    (git.work / "db" / "host").write_bytes(b"rewritten")
    git.run("commit", "-q", "-a", "--amend", "-m", "Rewritten.")
    result = git.push("--force", "main")
    assert result.returncode != 0
    assert "does not fast-forward" in result.stderr
    assert alice_state(pair) == before
    assert pair.a("secrets", "cat", "work:db/host") == "one"


@needs_git
def test_a_push_over_a_head_that_moved_is_refused(pair: Pair, git: Git) -> None:  # noqa: F811
    pair.a("secrets", "write", "work:db/password", stdin=b"alice moved on")
    before = alice_state(pair)
    git.commit("db/host", b"x", "Add a host.")
    result = git.push("--force", "main")  # git would refuse without --force
    assert result.returncode != 0
    assert "does not fast-forward" in result.stderr
    assert alice_state(pair) == before


@needs_git
def test_a_symlink_in_a_pushed_commit_is_refused(pair: Pair, git: Git) -> None:  # noqa: F811
    before = alice_state(pair)
    (git.work / "link").symlink_to("/etc/passwd")
    git.run("add", "link")
    git.run("commit", "-q", "-m", "Add a link.")
    result = git.push()
    assert result.returncode != 0
    assert "holds a link" in result.stderr
    assert alice_state(pair) == before


@needs_git
@pytest.mark.parametrize("name", [".git", ".GIT", ".."])
def test_a_git_special_name_in_a_pushed_tree_is_refused(
    pair: Pair,  # noqa: F811
    git: Git,
    name: str,
) -> None:
    before = alice_state(pair)
    blob = git.run("hash-object", "-w", "--stdin", stdin="[core]\n").strip()
    head_tree = git.run("rev-parse", "HEAD^{tree}").strip()
    listing = git.run("ls-tree", head_tree) + f"100644 blob {blob}\t{name}\n"
    tree = git.run("mktree", "--missing", stdin=listing).strip()
    commit = git.run("commit-tree", "-S", tree, "-p", "HEAD", "-m", "Add a git name.").strip()
    git.run("update-ref", "refs/heads/main", commit)
    result = git.push()
    assert result.returncode != 0
    assert "forbidden name" in result.stderr
    assert alice_state(pair) == before


@needs_git
@pytest.mark.parametrize(
    ("refspec", "reason"),
    [
        ("main:refs/heads/other", "only refs/heads/main"),
        ("main:refs/notes/x", "only refs/heads/main"),
        ("v1", "tags are not accepted"),
        (":main", "cannot be deleted"),
    ],
)
def test_any_ref_but_main_and_deletes_are_refused(
    pair: Pair,  # noqa: F811
    git: Git,
    refspec: str,
    reason: str,
) -> None:
    git.commit("db/host", b"x", "Add a host.")
    git.run("tag", "v1")
    before = alice_state(pair)
    result = git.push(refspec)
    assert result.returncode != 0
    assert reason in result.stderr
    assert alice_state(pair) == before
    both = git.push("main", "main:refs/heads/other")  # main with another ref: neither lands
    assert both.returncode != 0
    assert "not applied" in both.stderr
    assert alice_state(pair) == before
    assert git.push().returncode == 0  # the agent keeps serving, and the good push lands
    assert pair.a("secrets", "cat", "work:db/host") == "x"


@needs_git
@pytest.mark.parametrize(
    ("path", "content", "reason"),
    [
        (".polykey-tags", b"not json\n", "is not JSON"),
        (".polykey-tags", b"[" * 100_000 + b"]" * 100_000, "is not an object"),
        (".polykey-tags", b'{"db/password": "prod"}\n', "is not an object"),
        (".polykey-tags", b'{"db/password": ["no spaces"]}\n', "invalid tag"),
        (".polykey-tags/x", b'{"db/password": ["prod"]}\n', "is a folder"),
        ("db/.polykey-tags", b'{"db/password": ["prod"]}\n', "only at the root"),
        ("db/.polykey-dir", b"not empty", "not an empty file"),
    ],
    ids=["not-json", "nested-100000", "wrong-shape", "invalid-tag", "folder", "below-root", "dir"],
)
def test_a_bad_reserved_file_in_a_git_push_is_refused_and_writes_go_on(
    pair: Pair,  # noqa: F811
    git: Git,
    path: str,
    content: bytes,
    reason: str,
) -> None:
    before = alice_state(pair)
    git.commit(path, content, "Add a reserved file.")
    result = git.push()
    assert result.returncode != 0
    assert reason in result.stderr, result.stderr
    assert alice_state(pair) == before
    pair.a("secrets", "write", "work:after", stdin=b"local writes go on")
    pair.a("tags", "add", "work:after", "t")
    assert "t\t1 secrets" in pair.a("tags", "list")


@needs_git
def test_a_good_tag_file_in_a_git_push_lands_and_reads(pair: Pair, git: Git) -> None:  # noqa: F811
    git.commit(".polykey-tags", b'{"db/password": ["from-git", "prod"]}\n', "Tag a secret.")
    result = git.push()
    assert result.returncode == 0, result.stderr
    assert "work:db/password" in pair.a("secrets", "ls", "--tag", "from-git")


# --- the pack reader, with real git packs and hostile ones ------------------------------------


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=env, input=stdin, capture_output=True, check=True
    ).stdout


def _reader(data: bytes) -> tuple[list[int], Callable[[int], bytes]]:
    pos = [0]

    def read_some(n: int) -> bytes:
        chunk = data[pos[0] : pos[0] + min(n, 7)]  # small reads: objects span chunk borders
        pos[0] += len(chunk)
        return chunk

    return pos, read_some


@needs_git
def test_a_thin_pack_from_git_is_read_with_its_deltas_resolved(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    _git(tmp_path, "init", "-q", str(repo))
    _git(repo, "config", "user.name", "t")
    _git(repo, "config", "user.email", "t@t")
    body = b"".join(b"line %d of a long secret file\n" % i for i in range(400))
    (repo / "a").write_bytes(body)
    _git(repo, "add", "a")
    _git(repo, "commit", "-q", "-m", "one")
    (repo / "a").write_bytes(body + b"one more line\n")
    _git(repo, "commit", "-q", "-am", "two")
    pack = _git(repo, "pack-objects", "--stdout", "--thin", "--revs", stdin=b"HEAD\n^HEAD~1\n")
    listed = _git(repo, "rev-list", "--objects", "HEAD~1..HEAD").splitlines()
    wanted = {line.split()[0] for line in listed}
    assert _git(repo, "rev-parse", "HEAD:a").strip() in wanted

    asked: list[bytes] = []

    def base(sha: bytes) -> tuple[int, bytes] | None:
        asked.append(sha)
        kind = _git(repo, "cat-file", "-t", sha.decode()).strip()
        types = {b"commit": 1, b"tree": 2, b"blob": 3}
        return types[kind], _git(repo, "cat-file", kind.decode(), sha.decode())

    pos, read_some = _reader(pack + b"trailing data git never sends")
    objects = read_pack(read_some, base)
    assert pos[0] >= len(pack)
    ids = set()
    for raw in objects:
        kind = {1: b"commit", 2: b"tree", 3: b"blob"}[raw[0]]
        ids.add(hashlib.sha1(b"%s %d\x00" % (kind, len(raw) - 1) + raw[1:]).hexdigest().encode())
    assert ids == wanted
    assert asked == [_git(repo, "rev-parse", "HEAD~1:a").strip()]  # the new blob is a delta on it


def _pack(*entries: bytes) -> bytes:
    body = b"PACK" + (2).to_bytes(4, "big") + len(entries).to_bytes(4, "big") + b"".join(entries)
    return body + hashlib.sha1(body).digest()


def _header(kind: int, size: int) -> bytes:
    out = bytearray([(kind << 4) | (size & 0x0F)])
    size >>= 4
    while size:
        out[-1] |= 0x80
        out.append(size & 0x7F)
        size >>= 7
    return bytes(out)


def _size(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _ofs_delta(back: int, delta: bytes) -> bytes:
    assert back < 0x80
    return _header(6, len(delta)) + bytes([back]) + zlib.compress(delta)


BASE = _header(3, 1) + zlib.compress(b"x")


def _no_base(_sha: bytes) -> None:
    return None


def test_a_delta_on_an_earlier_entry_is_applied() -> None:
    delta = _size(1) + _size(4) + b"\x90\x01" + b"\x03abc"  # copy 1 byte at 0, insert "abc"
    _, read_some = _reader(_pack(BASE, _ofs_delta(len(BASE), delta)))
    assert sorted(read_pack(read_some, _no_base)) == [b"\x03x", b"\x03xabc"]


@pytest.mark.parametrize(
    ("pack", "reason"),
    [
        # a zlib bomb: a small stream that inflates past what its header says
        (_pack(_header(3, 10) + zlib.compress(b"\0" * 10_000_000)), "larger than its header"),
        # a header that announces more than an object may be
        (_pack(_header(3, 1 << 40) + zlib.compress(b"x")), "too large"),
        # a delta bomb: a tiny delta whose declared result is beyond the budget
        (
            _pack(BASE, _ofs_delta(len(BASE), _size(1) + _size(MAX_INFLATED_BYTES) + b"\x01x")),
            "too",
        ),
        (_pack(_header(7, 4) + b"\x11" * 20 + zlib.compress(b"abcd")), "not there"),
        (_pack(_header(3, 1) + zlib.compress(b"x"))[:-1] + b"\x00", "checksum"),
        (b"NOPE" + b"\x00" * 30, "not a git pack"),
        (_pack(_header(3, 1) + zlib.compress(b"x"))[:15], "ended early"),
    ],
)
def test_hostile_packs_are_refused_before_they_are_expanded(pack: bytes, reason: str) -> None:
    _, read_some = _reader(pack)
    with pytest.raises(UpdateRefused, match=reason):
        read_pack(read_some, _no_base)


# --- a vault whose history was broken before receiving checked types ------------------------


def _break_alice(p: Pair, how: str) -> None:
    """Give alice's `work` a head commit naming objects of the wrong type, written straight to
    its records while her agent is stopped (as an unchecked push once could)."""
    from polykey.vaults.objects import encode, refs_ns
    from polykey.vaults.vault import BRANCH

    run_pk("agent", "stop", env=p.alice)
    with Node.open(p.tmp / "alice.pk", b"alice pw", allow_weak=True) as node:
        vault = node.vaults.open("work")
        head = vault.head()
        assert head is not None
        tree = vault.objects().get_commit(head).tree
        entry = vault.lookup(("db", "password"))
        assert entry is not None
        if how == "tree-is-a-blob":
            bad = vault._new_commit(entry[1], [head], "Broken.")
        else:
            bad = vault._new_commit(tree, [tree], "Broken.")
        with node.store.write() as tx:
            tx.put(objects_ns(vault.id), bytes.fromhex(bad.id.decode()), encode(bad))
            tx.put(refs_ns(vault.id), BRANCH, bad.id)
    p.start_alice()


@needs_git
@pytest.mark.parametrize("how", ["tree-is-a-blob", "parent-is-a-tree"])
def test_cloning_a_vault_whose_history_is_broken_fails_clearly(
    pair: Pair,  # noqa: F811
    how: str,
) -> None:
    _break_alice(pair, how)
    pair.a("vaults", "share", "work", pair.bob_id, "--perm", "push")
    g = Git(pair, bob_key(pair))
    cloned = g.raw("clone", g.url("work"), str(g.work), cwd=pair.tmp)
    assert cloned.returncode != 0
    assert "remote error" in cloned.stderr or "is a tree, not a blob" in cloned.stderr
    assert "hung up" not in cloned.stderr, cloned.stderr
    by_pk = run_pk("vaults", "clone", pair.alice_id, "work", env=pair.bob)
    assert by_pk.returncode in (51, 53), by_pk.stderr
    assert b"wrong type" in by_pk.stderr or b"but that object is a" in by_pk.stderr
    assert b"Internal" not in by_pk.stderr
    assert "work" in pair.b("vaults", "scan", pair.alice_id)  # the agent keeps serving
