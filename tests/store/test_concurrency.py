"""Several writers on one node file: processes and threads serialise, nothing is lost or locked.

Every write below is its own transaction into one shared namespace, so each one rewrites the same
manifest and root: a stale cache or a lost update would drop records or break the version chain.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from polykey.node import Node
from polykey.store.nodefile import Damage, NodeFile
from polykey.store.records import Namespace
from tests.conftest import NodeFixture

WRITERS = 4
PER_WRITER = 150
SHARED = Namespace("concurrency/shared")
ONCE = Namespace("concurrency/once", immutable=True)

# argv: node path, writer number, barrier file. The password comes on stdin.
WRITER = r"""
import sys, time
from pathlib import Path
from polykey.node import Node
from polykey.store.records import Namespace

shared = Namespace("concurrency/shared")
once = Namespace("concurrency/once", immutable=True)
path, me, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
count = int(sys.argv[4])
password = sys.stdin.readline().rstrip("\n").encode()
node = Node.open(path, password, allow_weak=True)
print("ready", flush=True)
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("the barrier never opened")
    time.sleep(0.001)
epochs = []
for i in range(count):
    key = f"w{me}-{i:03d}".encode()
    with node.store.write() as tx:
        epochs.append(node.store.epoch + 1)  # the epoch this transaction commits
        tx.put(shared, key, b"value of " + key)
        if i % 10 == 0:
            tx.put(once, key, b"object of " + key)
    got = node.store.get(shared, key)
    if got != b"value of " + key:
        sys.exit(f"read back {got!r} for {key!r}")
    if node.store.count(shared) < i + 1:
        sys.exit("the shared namespace shrank")
    time.sleep(0.001 * (i % 2))  # let the others in between, so caches go stale often
node.close()
print("done", *epochs, flush=True)
"""


def _value(key: bytes) -> bytes:
    return b"value of " + key


def _expected_keys() -> list[bytes]:
    return sorted(f"w{w}-{i:03d}".encode() for w in range(WRITERS) for i in range(PER_WRITER))


def _assert_all_written(node: Node, start_epoch: int) -> None:
    items = node.store.items(SHARED)
    assert [k for k, _ in items] == _expected_keys()
    assert all(v == _value(k) for k, v in items)
    assert node.store.count(ONCE) == WRITERS * len(range(0, PER_WRITER, 10))
    # One epoch per transaction: none was merged into another or lost.
    assert node.store.epoch == start_epoch + WRITERS * PER_WRITER
    assert node.check() == []


def test_four_processes_writing_at_once_all_succeed_and_lose_nothing(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    start_epoch = fresh_node.node.store.epoch
    fresh_node.node.close()
    go = tmp_path / "go"
    logs = [tmp_path / f"writer-{w}.stderr" for w in range(WRITERS)]
    children = []
    for w, log in enumerate(logs):
        with log.open("wb") as stderr:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", WRITER, *map(str, (fresh_node.path, w, go, PER_WRITER))],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            )
    outputs: list[bytes] = []
    try:
        for child in children:
            assert child.stdin is not None
            child.stdin.write(fresh_node.password.encode() + b"\n")
            child.stdin.close()
        for child in children:  # every writer has the node open before any of them writes
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
        go.touch()
        for child in children:
            assert child.stdout is not None
            outputs.append(child.stdout.read())
            child.wait(timeout=120)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()
    owner: dict[int, int] = {}
    for w, (child, out, log) in enumerate(zip(children, outputs, logs, strict=True)):
        err = log.read_bytes()
        assert child.returncode == 0, err.decode()
        done, *epochs = out.split()
        assert done == b"done"
        owner.update((int(e), w) for e in epochs)
        assert b"locked" not in err.lower() and b"busy" not in err.lower(), err.decode()
        assert b"Traceback" not in err, err.decode()
    # Each transaction committed exactly one epoch of its own, in one gap-free sequence.
    total = WRITERS * PER_WRITER
    assert sorted(owner) == list(range(start_epoch + 1, start_epoch + total + 1))
    switches = sum(owner[e] != owner[e + 1] for e in range(start_epoch + 1, start_epoch + total))
    print(f"{switches} switches between writers in {total} commits")
    with Node.open(fresh_node.path, fresh_node.password.encode(), allow_weak=True) as node:
        _assert_all_written(node, start_epoch)


def test_four_threads_sharing_one_handle_write_and_read_without_loss(
    fresh_node: NodeFixture,
) -> None:
    store = fresh_node.node.store
    start_epoch = store.epoch
    barrier = threading.Barrier(WRITERS + 1)
    errors: list[str] = []
    damage_seen: list[Damage] = []
    writers_done = threading.Event()

    def writer(me: int) -> None:
        rng = random.Random(me)
        try:
            barrier.wait(timeout=30)
            for i in range(PER_WRITER):
                key = f"w{me}-{i:03d}".encode()
                with store.write() as tx:
                    tx.put(SHARED, key, _value(key))
                    if i % 10 == 0:
                        tx.put(ONCE, key, b"object of " + key)
                if store.get(SHARED, key) != _value(key):
                    errors.append(f"{key!r} did not read back")
                other = f"w{rng.randrange(WRITERS)}-{rng.randrange(PER_WRITER):03d}".encode()
                got = store.get(SHARED, other)
                if got is not None and got != _value(other):
                    errors.append(f"{other!r} read {got!r}")
                if i % 25 == 0:
                    store.keys(SHARED)
                    store.items(ONCE)
        except Exception as exc:
            errors.append(f"writer {me}: {exc!r}")

    def checker() -> None:
        try:
            barrier.wait(timeout=30)
            while not writers_done.is_set():
                damage_seen.extend(store.check())
                time.sleep(0.01)
        except Exception as exc:
            errors.append(f"checker: {exc!r}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    check_thread = threading.Thread(target=checker)
    for thread in [*threads, check_thread]:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    writers_done.set()
    check_thread.join(timeout=30)
    assert not any(t.is_alive() for t in [*threads, check_thread]), "a thread hung"
    assert errors == []
    assert damage_seen == []
    _assert_all_written(fresh_node.node, start_epoch)


def test_threads_on_one_handle_and_another_process_handle_interleave(
    fresh_node: NodeFixture,
) -> None:
    """Two handles in one process, each shared by two threads: both caches stay coherent."""
    first = fresh_node.node.store
    start_epoch = first.epoch
    second = NodeFile.open(fresh_node.path, fresh_node.password.encode(), allow_weak=True)
    errors: list[str] = []

    def writer(me: int, store: NodeFile) -> None:
        try:
            for i in range(PER_WRITER):
                key = f"w{me}-{i:03d}".encode()
                with store.write() as tx:
                    tx.put(SHARED, key, _value(key))
                    if i % 10 == 0:
                        tx.put(ONCE, key, b"object of " + key)
                if store.get(SHARED, key) != _value(key):
                    errors.append(f"{key!r} did not read back")
        except Exception as exc:
            errors.append(f"writer {me}: {exc!r}")

    try:
        threads = [
            threading.Thread(target=writer, args=(w, first if w % 2 else second))
            for w in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        assert second.items(SHARED) == first.items(SHARED)
    finally:
        second.close()
    _assert_all_written(fresh_node.node, start_epoch)
