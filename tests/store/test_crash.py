"""kill -9 during writes leaves the last committed state: every acknowledged write, nothing torn.

A child process writes records in a loop and prints each key only after its ``with
store.write()`` block has returned (the commit is done). The parent kills it with SIGKILL at
seeded random moments, again and again, then checks that every printed key is there with its
exact value, that each transaction landed whole or not at all, and that check() is empty.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from polykey.node import Node
from polykey.store.records import Namespace
from tests.conftest import NodeFixture

SEED = 20261128
KILLS = 60
MIN_KILLS = 50
BUDGET_S = 45.0

RECORDS = Namespace("crash/records")
MIRROR = Namespace("crash/mirror")
OBJECTS = Namespace("crash/objects", immutable=True)
LAST = b"last"

# The child reads the password from stdin (never argv), then writes forever.
CHILD = r"""
import hashlib, sys
from pathlib import Path
from polykey.node import Node
from polykey.store.records import Namespace

records = Namespace("crash/records")
mirror = Namespace("crash/mirror")
objects = Namespace("crash/objects", immutable=True)
path, tag = Path(sys.argv[1]), sys.argv[2]
password = sys.stdin.readline().rstrip("\n").encode()
node = Node.open(path, password, allow_weak=True)
sys.stdout.write("ready\n")
sys.stdout.flush()
n = 0
while True:
    key = f"{tag}-{n:05d}".encode()
    digest = hashlib.sha256(key).hexdigest().encode()
    with node.store.write() as tx:
        tx.put(records, key, digest * (1 + n % 7))
        tx.put(mirror, key, b"mirror of " + key)
        tx.put(objects, key, b"object " + digest)
        tx.put(records, b"last", key)
    sys.stdout.write(key.decode() + "\n")
    sys.stdout.flush()
    n += 1
"""


def _record_value(key: bytes) -> bytes:
    n = int(key.split(b"-")[1])
    return hashlib.sha256(key).hexdigest().encode() * (1 + n % 7)


def _run_and_kill(path: Path, password: str, tag: str, rng: random.Random) -> list[str]:
    """Start one writer, SIGKILL it at a random moment, return the keys it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), tag],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        child.stdin.write(password.encode() + b"\n")
        child.stdin.close()
        if rng.random() < 0.2:
            # Sometimes kill during start-up: interpreter, open, WAL recovery of the last kill.
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            ready = child.stdout.readline().decode().strip()
            assert ready == "ready", f"writer {tag} did not start: {child.stderr.read()!r}"
            time.sleep(rng.uniform(0.0, 0.1))
        child.send_signal(signal.SIGKILL)
        out = child.stdout.read().decode()
        child.wait(timeout=30)
        err = child.stderr.read().decode()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, f"writer {tag} ended by itself: {err}"
    return [line for line in out.splitlines() if line and line != "ready"]


def test_kill_9_during_writes_keeps_every_acknowledged_write_and_tears_none(
    fresh_node: NodeFixture,
) -> None:
    path, password = fresh_node.path, fresh_node.password
    fresh_node.node.close()
    rng = random.Random(SEED)
    started = time.monotonic()
    acknowledged: dict[str, list[str]] = {}
    kills = 0
    while kills < KILLS and time.monotonic() - started < BUDGET_S:
        tag = f"{kills:03d}"
        acknowledged[tag] = _run_and_kill(path, password, tag, rng)
        kills += 1
        if kills % 10 == 0:  # the state between kills is whole too
            with Node.open(path, password.encode(), allow_weak=True) as node:
                assert node.check() == [], f"after {kills} kills (seed {SEED})"
    elapsed = time.monotonic() - started
    written = sum(len(keys) for keys in acknowledged.values())
    print(f"{kills} kills, {written} acknowledged writes, {elapsed:.1f} s, seed {SEED}")
    assert kills >= MIN_KILLS, f"only {kills} kills in {BUDGET_S} s"
    assert written > 0, "no writer ever committed: the kills all came too early"

    with Node.open(path, password.encode(), allow_weak=True) as node:
        assert node.check() == []
        stored = dict(node.store.items(RECORDS))
        last = stored.pop(LAST)
        mirrors = dict(node.store.items(MIRROR))
        objects = dict(node.store.items(OBJECTS))

    # Every acknowledged write is there, with its exact values.
    for keys in acknowledged.values():
        for text in keys:
            key = text.encode()
            assert stored.get(key) == _record_value(key), f"lost or wrong: {text}"
    # Each transaction landed whole: the three namespaces hold the same keys, right values.
    assert set(mirrors) == set(stored) == set(objects)
    for key, value in stored.items():
        assert value == _record_value(key)
        assert mirrors[key] == b"mirror of " + key
        assert objects[key] == b"object " + hashlib.sha256(key).hexdigest().encode()
    # Per writer: a gap-free prefix, at most one commit beyond the last acknowledged one
    # (committed, then killed before it printed).
    unacknowledged = 0
    for tag, keys in acknowledged.items():
        present = sorted(k.decode() for k in stored if k.decode().startswith(tag + "-"))
        assert present == [f"{tag}-{n:05d}" for n in range(len(present))], f"gap in {tag}"
        assert len(keys) <= len(present) <= len(keys) + 1, f"writer {tag}: {keys[-3:]}"
        unacknowledged += len(present) - len(keys)
    print(f"{unacknowledged} commits landed but were killed before acknowledging")
    # The overwritten record names the newest commit.
    assert last == max(stored)
