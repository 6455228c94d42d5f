"""Merging between real agents on separate hosts: network namespaces on a bridge (root only).

1. Three nodes of one person, linked pairwise with `pk nodes link`, each its own agent serving
   peers on its own host. One creates the vaults and `pk vaults sync` spreads them; then the
   three edit at the same time with no sync between (different secrets, the same secret on two
   and on three nodes, an edit against a delete, a rename against an edit of the old path, tags
   added on two nodes), and sync in a fixed order until quiet. Every node ends with the same
   history, the same secrets and contents; no value written is lost (it is at its path or in a
   conflict copy named after the node that wrote it); a further sync finds nothing to do. A
   second round (a `pk vaults resolve`, a tag removed and one added, a delete, a rename, a
   conflict in the other vault) is synced by all three at the same moment, then in order: the
   same end, and no merge ping-pong.
2. The opening scenario of issue 13 with two people (not linked): a clone holding only `pull`
   refuses local changes (exit 38); once `push` is granted, both edit, `pk vaults pull` merges
   (conflict shown), `pk vaults push` goes through, and a push whose origin moved on merges
   first (an edit against a delete keeps the edit); `resolve --keep theirs` is pushed too.
   Both histories end equal. A pull that brings no commit still takes the origin's new grant
   of `push` (as the spec and the hint say).

The namespaces come from tests/sync/test_netns.py; docs/spec/merge.md, own.md and links.md say
what is expected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import pk_env, run_pk
from tests.sync.test_netns import hosts, three_hosts  # noqa: F401 (fixtures)
from tests.sync.test_three_agents import stop_agent

PORT = "14191"


@dataclass(eq=False)
class Host:
    """One node, its commands run inside its host's network namespace."""

    name: str
    ns: str
    ip: str
    env: dict[str, str]
    node_id: str = ""
    started: bool = False

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "polykey", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            check=False,
            timeout=120,
        )

    def __call__(self, *args: str, stdin: bytes | None = None) -> str:
        r = self.run(*args, stdin=stdin)
        assert r.returncode == 0, (self.name, args, r.stderr.decode())
        return r.stdout.decode()

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--format", "json"))

    def start(self) -> None:
        self("agent", "start", "--background", "--host", self.ip, "--port", PORT)
        self.started = True


def make_hosts(tmp_path: Path, spaces: tuple[str, ...], ips: tuple[str, ...]) -> list[Host]:
    names = "abc"[: len(spaces)]
    made = [
        Host(
            n,
            ns,
            ip,
            pk_env(tmp_path / f"{n}.pk", PK_PASSWORD=f"{n} pw", PK_RUNTIME_DIR=str(tmp_path / n)),
        )
        for n, ns, ip in zip(names, spaces, ips, strict=True)
    ]
    for h in made:
        assert run_pk("bootstrap", env=h.env).returncode == 0
        h.node_id = run_pk("keys", "public", env=h.env).stdout.split()[0].decode()
    return made


def stop_all(made: list[Host]) -> None:
    stops = [threading.Thread(target=stop_agent, args=(h.env,)) for h in made if h.started]
    for t in stops:
        t.start()
    for t in stops:
        t.join()


def at_once(work: dict[Host, list[tuple[tuple[str, ...], bytes | None]]]) -> None:
    """Each host runs its commands in order; the hosts run side by side, with no sync between."""

    def one(h: Host) -> None:
        for args, stdin in work[h]:
            h(*args, stdin=stdin)

    with ThreadPoolExecutor(len(work)) as pool:
        for f in [pool.submit(one, h) for h in work]:
            f.result()


def at_once_out(calls: list[tuple[Host, tuple[str, ...]]]) -> list[str]:
    """Run the commands side by side; each must succeed."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(h, *args) for h, args in calls]]


def snapshot(h: Host, vault: str) -> tuple[str, str, dict[str, str]]:
    """The history, the listing and every secret's content of ``vault`` on ``h``."""
    listed = h("secrets", "ls", "-R", vault)
    paths = [p for p in listed.splitlines() if p and not p.endswith("/")]
    return (
        h("vaults", "log", vault),
        listed,
        {p: h("secrets", "cat", f"{vault}:{p}") for p in paths},
    )


@pytest.fixture
def own_three(three_hosts: tuple[str, str, str], tmp_path: Path) -> Iterator[list[Host]]:  # noqa: F811
    """Three nodes of one person on three hosts, agents up, addresses known, linked pairwise."""
    made = make_hosts(tmp_path, three_hosts, ("10.231.1.1", "10.231.1.2", "10.231.1.3"))
    try:
        for h in made:
            h.start()
        for h in made:
            for other in made:
                if other is not h:
                    h("nodes", "add", other.node_id, f"{other.ip}:{PORT}")
        for i, h in enumerate(made):
            for other in made[i + 1 :]:
                h("nodes", "link", other.node_id)
                assert "Linked" in other("nodes", "link", h.node_id)
        yield made
    finally:
        stop_all(made)


def test_three_own_nodes_edit_at_once_and_converge(own_three: list[Host]) -> None:
    a, b, c = own_three
    start = {
        "work": {
            "db/password": "p0",
            "api/key": "k0",
            "a.txt": "a0",
            "b.txt": "b0",
            "c.txt": "c0",
            "cert.pem": "cert0",
            "old/name": "moved0",
            "ssh/key": "ssh0",
        },
        "home": {"wifi": "w0"},
    }
    for vault, secrets in start.items():
        a("vaults", "create", vault)
        for path, value in secrets.items():
            a("secrets", "write", f"{vault}:{path}", stdin=value.encode())
    spread = a("vaults", "sync")
    assert spread.count("work: sent this node's changes") == 2, spread
    assert spread.count("home: sent this node's changes") == 2, spread
    ids = {v["name"]: v["id"] for v in a.json("vaults", "list")["vaults"]}
    for h in (b, c):
        assert {v["name"]: v["id"] for v in h.json("vaults", "list")["vaults"]} == ids
        assert h("secrets", "cat", "work:db/password") == "p0"

    # every value written, with the node that wrote it
    written: dict[tuple[str, str], dict[str, Host]] = {}

    def write(h: Host, target: str, value: str) -> tuple[tuple[str, ...], bytes]:
        vault, _, path = target.partition(":")
        written.setdefault((vault, path), {})[value] = h
        return ("secrets", "write", target), value.encode()

    work: dict[Host, list[tuple[tuple[str, ...], bytes | None]]] = {
        a: [
            write(a, "work:a.txt", "a1"),
            write(a, "work:db/password", "pw from a"),
            write(a, "work:api/key", "key from a"),
            write(a, "work:cert.pem", "cert renewed by a"),
            (("tags", "add", "work:ssh/key", "alpha"), None),
            write(a, "work:from-a", "new on a"),
        ],
        b: [
            write(b, "work:b.txt", "b1"),
            write(b, "work:db/password", "pw from b"),
            write(b, "work:api/key", "key from b"),
            (("secrets", "mv", "work:old/name", "work:new/name"), None),
            (("tags", "add", "work:ssh/key", "beta"), None),
            write(b, "home:tv", "tv on b"),
        ],
        c: [
            write(c, "work:c.txt", "c1"),
            write(c, "work:db/password", "pw from c"),
            (("secrets", "rm", "work:cert.pem"), None),
            write(c, "work:old/name", "old edited on c"),
            write(c, "home:wifi", "w1 from c"),
        ],
    }
    at_once(work)
    before = {h: h("vaults", "log", "work") for h in own_three}
    assert len(set(before.values())) == 3  # three histories apart

    for h in (c, a, b, a):
        out = h("vaults", "sync")
        assert "refused" not in out and "unreachable" not in out, (h.name, out)

    # one history, one tree, the same contents on every node
    for vault in start:
        seen = [snapshot(h, vault) for h in own_three]
        assert seen[0] == seen[1] == seen[2], vault
    _, listed, contents = snapshot(a, "work")
    _, _, home = snapshot(a, "home")
    # different secrets: each edit is there
    assert (contents["a.txt"], contents["b.txt"], contents["c.txt"]) == ("a1", "b1", "c1")
    assert (contents["from-a"], home["tv"], home["wifi"]) == ("new on a", "tv on b", "w1 from c")
    # an edit beats a delete; a rename against an edit keeps both
    assert contents["cert.pem"] == "cert renewed by a"
    assert contents["new/name"] == "moved0"
    assert contents["old/name"] == "old edited on c"
    # both tags are on the secret, on every node
    for h in own_three:
        assert sorted(h.json("secrets", "stat", "work:ssh/key")["tags"]) == ["alpha", "beta"]
        assert "work:ssh/key" in h("secrets", "ls", "--tag", "alpha")
        assert "work:ssh/key" in h("secrets", "ls", "--tag", "beta")

    # the conflicts: the same list on every node; each copy holds another value than its path
    listings = [h.json("vaults", "conflicts") for h in own_three]
    assert listings[0] == listings[1] == listings[2]
    conflicts: list[dict[str, str]] = listings[0]["conflicts"]
    by_path: dict[str, list[dict[str, str]]] = {}
    for item in conflicts:
        assert item["vault"] == "work"
        by_path.setdefault(item["path"], []).append(item)
    assert sorted((p, len(v)) for p, v in by_path.items()) == [("api/key", 1), ("db/password", 2)]
    for path, copies in by_path.items():
        at_path = contents[path]
        values = {contents[item["copy"]] for item in copies}
        assert at_path not in values and len(values) == len(copies)
        assert {at_path, *values} == set(written[("work", path)])  # no value lost
        for item in copies:
            maker = written[("work", path)][contents[item["copy"]]]
            assert item["copy"].startswith(f"{path}.conflict-{maker.node_id[1:9]}-"), item
            assert item["node"] == maker.node_id[1:9]
    # every value written is at its path or in a conflict copy of it
    for (vault, path), wrote in written.items():
        if vault == "home":
            assert home[path] in wrote and len(wrote) == 1, (path, wrote)
            continue
        kept = [contents.get(path)] + [contents[i["copy"]] for i in by_path.get(path, [])]
        assert set(wrote) <= set(kept), (path, wrote, kept)
    assert ".conflict-" in listed

    quiet(own_three)

    # round 2: a resolves a conflict while the others edit, then all three sync at the same time
    at_once(
        {
            a: [
                (("vaults", "resolve", "work:api/key", "--keep", "mine"), None),
                (("tags", "rm", "work:ssh/key", "alpha"), None),
                write(a, "home:wifi", "w2 from a"),
            ],
            b: [
                (("secrets", "rm", "work:a.txt"), None),
                write(b, "work:db/password", "pw2 from b"),
            ],
            c: [
                (("secrets", "mv", "work:c.txt", "work:moved/c.txt"), None),
                (("tags", "add", "work:ssh/key", "gamma"), None),
                write(c, "home:wifi", "w2 from c"),
            ],
        }
    )
    for out in at_once_out([(h, ("vaults", "sync")) for h in own_three]):
        # under contention a vault may be left for the next sync ("kept moving on"), but a
        # linked node is never unreachable and a twin merge is never taken for a rewrite
        assert "unreachable" not in out and "older or rewritten" not in out, out
    for h in (c, a, b, a):
        out = h("vaults", "sync")
        assert "refused" not in out and "unreachable" not in out, (h.name, out)
    for vault in start:
        seen = [snapshot(h, vault) for h in own_three]
        assert seen[0] == seen[1] == seen[2], vault
    _, listed, contents = snapshot(a, "work")
    _, _, home = snapshot(a, "home")
    assert contents["api/key"] == "key from a" and "api/key.conflict-" not in listed
    assert "a.txt" not in contents and contents["moved/c.txt"] == "c1" and "c.txt" not in contents
    assert contents["db/password"] == "pw2 from b"
    for h in own_three:
        assert sorted(h.json("secrets", "stat", "work:ssh/key")["tags"]) == ["beta", "gamma"]
    listings = [h.json("vaults", "conflicts") for h in own_three]
    assert listings[0] == listings[1] == listings[2]
    paths = sorted((i["vault"], i["path"]) for i in listings[0]["conflicts"])
    assert paths == [("home", "wifi"), ("work", "db/password"), ("work", "db/password")]
    (wifi,) = [i for i in listings[0]["conflicts"] if i["vault"] == "home"]
    assert {home["wifi"], home[wifi["copy"]]} == {"w2 from a", "w2 from c"}
    assert wifi["node"] == written[("home", "wifi")][home[wifi["copy"]]].node_id[1:9]
    logs = [h("vaults", "log", "work") for h in own_three]
    quiet(own_three)
    assert [h("vaults", "log", "work") for h in own_three] == logs  # no new merge commit
    for h in own_three:
        assert "whole" in h("node", "check")


def quiet(nodes: list[Host]) -> None:
    """A further sync on every node has nothing to do."""
    for h in nodes:
        doc = h.json("vaults", "sync")
        hows = {(v["vault"], v["how"]) for n in doc["nodes"] for v in n["vaults"]}
        assert hows == {("work", "up-to-date"), ("home", "up-to-date")}, (h.name, doc)


@pytest.fixture
def two_people(hosts: tuple[str, str], tmp_path: Path) -> Iterator[tuple[Host, Host]]:  # noqa: F811
    """Alice and Bob, each on a host of their own, not linked; Alice's agent serves her vaults."""
    alice, bob = make_hosts(tmp_path, hosts, ("10.231.0.1", "10.231.0.2"))
    try:
        alice.start()
        bob("nodes", "add", alice.node_id, f"{alice.ip}:{PORT}")
        yield alice, bob
    finally:
        stop_all([alice, bob])


def test_two_people_pull_only_then_push_merge_both_ways(two_people: tuple[Host, Host]) -> None:
    alice, bob = two_people
    alice("vaults", "create", "team")
    for path, value in {"db/password": "p0", "api/key": "k0", "notes": "n0"}.items():
        alice("secrets", "write", f"team:{path}", stdin=value.encode())
    shared = alice.json("vaults", "share", "team", bob.node_id, "--perm", "clone,pull")
    assert sorted(shared["permissions"]) == ["clone", "pull"]
    assert "Cloned" in bob("vaults", "clone", alice.node_id, "team")
    log = bob("vaults", "log", "team")
    assert log == alice("vaults", "log", "team")

    # pull only: a local change is refused at once, and nothing is committed
    for args, stdin in [
        (("secrets", "write", "team:db/password"), b"bob's own"),
        (("secrets", "rm", "team:notes"), None),
        (("tags", "add", "team:api/key", "prod"), None),
    ]:
        refused = bob.run(*args, stdin=stdin)
        assert refused.returncode == 38, (args, refused.stderr)
        assert b"takes no changes from this node" in refused.stderr
        assert b"Traceback" not in refused.stderr
    assert bob("vaults", "log", "team") == log
    assert bob("secrets", "cat", "team:db/password") == "p0"

    # push granted as the refusal's hint says: the next pull (here bringing Alice's next edit)
    # tells Bob's clone that it may write
    shared = alice.json("vaults", "share", "team", bob.node_id, "--perm", "push")
    assert sorted(shared["permissions"]) == ["clone", "pull", "push"]
    alice("secrets", "write", "team:api/key", stdin=b"k1")
    assert "team: updated to" in bob("vaults", "pull", "team")
    at_once(
        {
            alice: [
                (("secrets", "write", "team:db/password"), b"from alice"),
                (("secrets", "write", "team:notes"), b"alice's notes"),
            ],
            bob: [
                (("secrets", "write", "team:db/password"), b"from bob"),
                (("secrets", "write", "team:bob-only"), b"bob's secret"),
            ],
        }
    )
    pulled = bob("vaults", "pull", "team")
    assert "team: merged" in pulled and "conflict: team:db/password" in pulled, pulled
    assert "Pushed team" in bob("vaults", "push", "team")
    assert alice("vaults", "log", "team") == bob("vaults", "log", "team")
    same(alice, bob, "team")
    assert alice("secrets", "cat", "team:notes") == "alice's notes"
    assert alice("secrets", "cat", "team:bob-only") == "bob's secret"
    (copy,) = alice.json("vaults", "conflicts", "team")["conflicts"]
    assert copy["path"] == "db/password"
    kept = {
        alice("secrets", "cat", "team:db/password"),
        alice("secrets", "cat", f"team:{copy['copy']}"),
    }
    assert kept == {"from alice", "from bob"}
    maker = alice if alice("secrets", "cat", f"team:{copy['copy']}") == "from alice" else bob
    assert copy["node"] == maker.node_id[1:9]

    # the origin moved on again: Bob's push pulls and merges first, then goes through
    at_once(
        {
            alice: [
                (("secrets", "write", "team:api/key"), b"key from alice"),
                (("secrets", "write", "team:notes"), b"alice's notes, again"),
            ],
            bob: [
                (("secrets", "write", "team:api/key"), b"key from bob"),
                (("secrets", "rm", "team:notes"), None),  # against Alice's edit: hers stays
            ],
        }
    )
    pushed = bob("vaults", "push", "team")
    assert "merged first" in pushed and "conflict: team:api/key" in pushed, pushed
    assert alice("vaults", "log", "team") == bob("vaults", "log", "team")
    same(alice, bob, "team")
    assert alice("secrets", "cat", "team:notes") == "alice's notes, again"

    # Bob keeps Alice's value; the resolve reaches her with the next push
    bob("vaults", "resolve", "team:api/key", "--keep", "theirs")
    assert bob("secrets", "cat", "team:api/key") == "key from alice"
    assert "Pushed team" in bob("vaults", "push", "team")
    assert alice("secrets", "cat", "team:api/key") == "key from alice"
    listed = alice.json("vaults", "conflicts", "team")["conflicts"]
    assert [c["path"] for c in listed] == ["db/password"]
    assert alice("vaults", "log", "team") == bob("vaults", "log", "team")
    assert "up to date" in bob("vaults", "pull", "team")
    for h in two_people:
        assert "whole" in h("node", "check")


def test_a_grant_of_push_reaches_the_clone_with_a_pull_that_brings_nothing(
    two_people: tuple[Host, Host],
) -> None:
    alice, bob = two_people
    alice("vaults", "create", "team")
    alice("secrets", "write", "team:k", stdin=b"p0")
    alice("vaults", "share", "team", bob.node_id, "--perm", "clone,pull")
    bob("vaults", "clone", alice.node_id, "team")
    assert bob.run("secrets", "write", "team:k", stdin=b"x").returncode == 38
    alice("vaults", "share", "team", bob.node_id, "--perm", "push")
    assert "up to date" in bob("vaults", "pull", "team")
    # docs/spec/merge.md: "`pk vaults pull` after the origin grants `push` makes the clone
    # writable", as the hint of the refusal says
    assert bob.run("secrets", "write", "team:k", stdin=b"x").returncode == 0


def same(x: Host, y: Host, vault: str) -> None:
    """The same history, listing and contents of ``vault`` on both nodes."""
    assert snapshot(x, vault) == snapshot(y, vault)
