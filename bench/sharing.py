"""Sharing figures: clone of a 1,000-commit, 1,000-secret vault over loopback SSH, by a `pk`
process working on the node file itself and by one that hands the clone to the cloning node's
agent (as daily use does), and a pull of one new commit (each through a fresh `pk` process and
SSH connection)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Row, median_ms, two_nodes
from polykey.ids import encode_node_id
from polykey.node import FAST_INSECURE_KDF, Node


def section(quick: bool) -> list[Row]:
    tmp, pk, alice, bob, port = two_nodes("pk-bench-share-")
    try:
        a, _ = Node.bootstrap(tmp / "a.pk", b"a", kdf=FAST_INSECURE_KDF, allow_weak=True)
        b, _ = Node.bootstrap(tmp / "b.pk", b"b", kdf=FAST_INSECURE_KDF, allow_weak=True)
        aid, bid = encode_node_id(a.node_id), encode_node_id(b.node_id)
        vault = a.vaults.create("big")
        for i in range(1000):
            vault.write(f"team{i % 20:02d}/s{i:04d}", os.urandom(24).hex().encode())
        a.close()
        b.close()

        def run(env: dict[str, str], *args: str, stdin: bytes | None = None) -> None:
            subprocess.run([pk, *args], env=env, check=True, capture_output=True, input=stdin)

        run(alice, "vaults", "share", "big", bid)
        run(alice, "agent", "start", "--background", "--port", str(port))
        run(bob, "nodes", "add", aid, f"127.0.0.1:{port}")
        run(bob, "agent", "start", "--background")  # bob's own agent: no --port needed
        # the same node file, from a runtime folder where no agent runs: the `pk` process works
        # on the file itself
        bob_alone = {**bob, "PK_RUNTIME_DIR": str(tmp / "run-alone")}
        clones: list[float] = []
        with_agent: list[float] = []
        made = [0]

        def timed_clone(env: dict[str, str], into: list[float]) -> float:
            made[0] += 1
            t = time.perf_counter()
            run(env, "vaults", "clone", aid, "big", f"big{made[0]}")
            into.append(time.perf_counter() - t)
            return into[-1]

        git_rows, floor, ratios = _stock_git(
            tmp,
            bob,
            port,
            5 if quick else 9,
            [lambda: timed_clone(bob_alone, clones), lambda: timed_clone(bob, with_agent)],
        )
        pulls = []
        for i in range(5 if quick else 15):
            run(alice, "secrets", "write", f"big:team00/new{i}", stdin=b"new value")
            t = time.perf_counter()
            run(bob_alone, "vaults", "pull", "big1")
            pulls.append(time.perf_counter() - t)
        from polykey.sync.client import pull

        node = Node.open(tmp / "b.pk", b"b", allow_weak=True)
        inproc = []
        for i in range(5 if quick else 15):
            run(alice, "secrets", "write", f"big:team01/new{i}", stdin=b"new value")
            t = time.perf_counter()
            pull(node.vaults, node.peers, "big1")
            inproc.append(time.perf_counter() - t)
        many = _hundred_vaults(tmp, node, aid, bid, quick)
        node.close()
        return [
            *git_rows,
            many,
            (
                "clone 1,000 commits / 1,000 secrets, loopback SSH, no agent here",
                f"{median_ms(clones):.0f} ms",
                "< 2 s",
            ),
            (
                "  the first of those clones (the agent's fetch plan not kept yet)",
                f"{clones[0] * 1000:.0f} ms",
                "",
            ),
            (
                # no target of its own: a `pk` with no agent pays Python's start-up, its imports
                # and, with a real password, the Argon2id unlock (~0.1 s, PK_UNSAFE_FAST_KDF here)
                # before it clones; the daily path, and the target, is the agent's row below
                "  the same clone / the floor (median, range of rounds)",
                _ratio(ratios[0]) if floor else "git or ssh missing",
                "",
            ),
            (
                "pk clone with the cloning node's agent running",
                f"{median_ms(with_agent):.0f} ms",
                "",
            ),
            (
                "  that / the floor (median, range of rounds)",
                _ratio(ratios[1]) if floor else "git or ssh missing",
                "<= 2x",
            ),
            (
                "pull of 1 new commit, in-process (fresh SSH connection)",
                f"{median_ms(inproc):.0f} ms",
                "< 100 ms",
            ),
            ("pull of 1 new commit, whole `pk` process", f"{median_ms(pulls):.0f} ms", ""),
        ]
    finally:
        for env in (alice, bob):
            subprocess.run([pk, "agent", "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _ratio(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f})"


def _hundred_vaults(tmp: Path, bob: Node, aid: str, bid: str, quick: bool) -> tuple[str, str, str]:
    """100 vaults shared with bob, cloned, one new commit in each, then one `pull --all`."""
    from polykey.ids import decode_node_id
    from polykey.sync.client import clone, pull_many

    count = 20 if quick else 100
    alice = Node.open(tmp / "a.pk", b"a", allow_weak=True)
    for i in range(count):
        vault = alice.vaults.create(f"s{i:03d}")
        vault.write("db/password", os.urandom(16).hex().encode())
        alice.acl.grant(vault.id, decode_node_id(bid), ["clone", "pull"])
    for i in range(count):
        clone(bob.vaults, bob.peers, decode_node_id(aid), f"s{i:03d}", None)
    for i in range(count):
        alice.vaults.open(f"s{i:03d}").write("db/password", b"rotated")
    alice.close()
    names = [f"s{i:03d}" for i in range(count)]
    t = time.perf_counter()
    results = pull_many(bob.vaults, bob.peers, names)
    elapsed = time.perf_counter() - t
    assert all(r["updated"] for r in results)
    return (
        f"pull --all of {count} shared vaults, 1 new commit each",
        f"{elapsed * 1000:.0f} ms",
        "< 5 s (100)",
    )


def _stock_git(
    tmp: Path, bob: dict[str, str], port: int, n: int, pk_clones: list[Callable[[], float]]
) -> tuple[list[tuple[str, str, str]], float, list[list[float]]]:
    """``n`` rounds, each the `pk vaults clone`s of ``pk_clones`` and stock `git clone --bare` of
    the same vault (the history only, as pk keeps it): over SSH from the agent, and from a
    plain copy (with and without SSH), one after the other, so that each round's ratios compare
    runs made moments apart (this machine's speed drifts by 2x or more between minutes). The
    rows; the median floor in ms; the rounds' pk / floor ratios, of each of ``pk_clones``."""
    if shutil.which("git") is None or shutil.which("ssh") is None:
        for _ in range(n):
            for pk_clone in pk_clones:
                pk_clone()
        return [("stock git clone", "git or ssh missing", "")], 0.0, [[] for _ in pk_clones]
    key = tmp / "bob.key"
    subprocess.run(
        [
            shutil.which("pk", path=str(Path(sys.executable).parent)) or "pk",
            "keys",
            "ssh-key",
            "-o",
            str(key),
            "--yes",
        ],
        env=bob,
        check=True,
        capture_output=True,
    )
    ssh = (
        f"ssh -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    )
    env = {"GIT_SSH_COMMAND": ssh, "PATH": os.environ.get("PATH", ""), "HOME": str(tmp)}

    def clone(url: str, env: dict[str, str] | None, *extra: str) -> float:
        target = tmp / f"g{time.perf_counter_ns()}"
        t = time.perf_counter()
        # --bare: the history only, as `pk vaults clone` keeps it (nothing checked out)
        argv = ["git", "clone", "-q", "--bare", *extra, url, str(target)]
        subprocess.run(argv, env=env, check=True, capture_output=True)
        took = time.perf_counter() - t
        shutil.rmtree(target, ignore_errors=True)
        return took

    subprocess.run(
        ["git", "clone", "-q", "--bare", f"ssh://pk@127.0.0.1:{port}/big", str(tmp / "plain.git")],
        env=env,
        check=True,
        capture_output=True,
    )
    over_ssh: list[float] = []
    local: list[float] = []
    ssh_floor: list[float] = []
    pk_ratios: list[list[float]] = [[] for _ in pk_clones]
    git_ratios: list[float] = []
    plain_port, stop = _plain_git_over_ssh(tmp)
    try:
        for _ in range(n):
            mine = [pk_clone() for pk_clone in pk_clones]
            ssh_floor.append(clone(f"ssh://git@127.0.0.1:{plain_port}/plain.git", env))
            over_ssh.append(clone(f"ssh://pk@127.0.0.1:{port}/big", env))
            local.append(clone(f"file://{tmp / 'plain.git'}", None, "--no-local"))
            for ratios, took in zip(pk_ratios, mine, strict=True):
                ratios.append(took / ssh_floor[-1])
            git_ratios.append(over_ssh[-1] / ssh_floor[-1])
    finally:
        stop()
    floor = median_ms(ssh_floor)
    return (
        [
            (
                "stock git clone --bare ssh:// of it from the agent",
                f"{median_ms(over_ssh):.0f} ms",
                "",
            ),
            ("  that / the floor (median, range of rounds)", _ratio(git_ratios), "<= 2x"),
            (
                "stock git clone --bare ssh:// of a plain copy (the floor)",
                f"{floor:.0f} ms",
                "floor",
            ),
            ("stock git clone --bare of a plain copy, no SSH", f"{median_ms(local):.0f} ms", ""),
        ],
        floor,
        pk_ratios,
    )


def _plain_git_over_ssh(root: Path) -> tuple[int, Callable[[], None]]:
    """An SSH server on loopback that runs stock git-upload-pack on repositories under root
    (no sshd needed): the floor a clone over SSH can reach."""
    import asyncio
    import shlex
    import threading

    import asyncssh

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: object) -> bool:
            return True

    async def handle(process: Any) -> None:
        argv = shlex.split(process.command or "")
        if len(argv) != 2 or argv[0] != "git-upload-pack":
            process.exit(1)
            return
        local = await asyncio.create_subprocess_exec(
            "git-upload-pack",
            str(root / argv[1].strip("/")),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await process.redirect(stdin=local.stdin, stdout=local.stdout, stderr=local.stderr)
        process.exit(await local.wait())

    async def start() -> Any:
        return await asyncssh.create_server(
            Server,
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            process_factory=handle,
            encoding=None,
        )

    server = asyncio.run_coroutine_threadsafe(start(), loop).result()
    port = server.sockets[0].getsockname()[1]

    def stop() -> None:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)

    return int(port), stop
