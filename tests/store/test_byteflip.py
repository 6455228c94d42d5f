"""Every single-byte corruption of a small node file is harmless or reported, never misread.

A small node (fast KDF, a few records) is closed so that it is one file; then each byte is flipped
in a copy, and the copy is opened, checked and read in full. A flip must leave the node whole
(check empty, every record its exact value) or be refused with NodeDamaged / NotANode, or be
listed by check(). Another exception type, or a value that differs from the one written, fails.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from polykey.errors import NodeDamaged, NotANode
from polykey.node import FAST_INSECURE_KDF, NODE_KEYS, NODE_META, Node
from polykey.store.records import Namespace
from tests.support import PASSWORD

PW = PASSWORD.encode()
SECRETS = Namespace("flip/secrets")
OBJECTS = Namespace("flip/objects", immutable=True)
REFUSED = (NodeDamaged, NotANode)


@dataclass
class Sample:
    data: bytes
    values: dict[tuple[Namespace, bytes], bytes]


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    path = tmp_path / "node" / "node.pk"
    node, _ = Node.bootstrap(path, PW, kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        with node.store.write() as tx:
            tx.put(SECRETS, b"a", b"alpha secret")
            tx.put(SECRETS, b"b", b"bravo secret " * 4)
            tx.put(OBJECTS, b"o1", b"object one")
        values = {
            (ns, key): value
            for ns in (NODE_KEYS, NODE_META, SECRETS, OBJECTS)
            for key, value in node.store.items(ns)
        }
    assert [p.name for p in path.parent.iterdir()] == ["node.pk"], "WAL not checkpointed"
    data = path.read_bytes()
    assert len(data) <= 8 * 4096, f"{len(data)} bytes: the sweep's time grows with the file"
    return Sample(data, values)


@pytest.fixture
def work_file(tmp_path: Path) -> Iterator[Path]:
    """Where each flipped copy is written: RAM when the system has it, for speed."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="pk-byteflip-", dir=base or tmp_path))
    try:
        yield folder / "node.pk"
    finally:
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)  # a read returned other bytes: never allowed
    unreported: list[str] = field(default_factory=list)  # check() empty, yet a read failed
    foreign: list[tuple[str, type[BaseException]]] = field(default_factory=list)  # other types

    def summary(self) -> str:
        parts = [f"{name}={n}" for name, n in sorted(self.outcomes.items())]
        return f"{sum(self.outcomes.values())} flips: " + ", ".join(parts)


def _try_flip(
    work: Path, data: bytearray, values: dict[tuple[Namespace, bytes], bytes], where: str, t: Tally
) -> None:
    work.write_bytes(data)
    for suffix in ("-wal", "-shm"):
        with_suffix = work.with_name(work.name + suffix)
        if with_suffix.exists():
            with_suffix.unlink()
    stage = "open"
    try:
        node = Node.open(work, PW, allow_weak=True)
    except REFUSED as exc:
        t.outcomes[f"refused on open ({type(exc).__name__})"] += 1
        return
    except Exception as exc:
        t.foreign.append((f"{where} {stage}: {exc!r}"[:300], type(exc)))
        t.outcomes[f"foreign {type(exc).__name__}"] += 1
        return
    try:
        stage = "check"
        damage = node.check()
        failed_reads = 0
        for (ns, key), value in values.items():
            stage = f"get {ns.name}/{key!r}"
            try:
                got = node.store.get(ns, key)
            except NodeDamaged:
                failed_reads += 1
                continue
            if got is None:
                failed_reads += 1
            elif got != value:
                t.wrong.append(f"{where}: {ns.name}/{key!r} read {got[:40]!r}")
        stage = "items"
        try:
            if node.store.items(OBJECTS) != [(b"o1", values[(OBJECTS, b"o1")])]:
                failed_reads += 1
        except NodeDamaged:
            failed_reads += 1
    except Exception as exc:
        t.foreign.append((f"{where} {stage}: {exc!r}"[:300], type(exc)))
        t.outcomes[f"foreign {type(exc).__name__}"] += 1
        return
    finally:
        node.close()
    if damage:
        t.outcomes["reported by check"] += 1
    elif failed_reads:
        t.unreported.append(where)
        t.outcomes["refused on read only"] += 1
    else:
        t.outcomes["harmless"] += 1


def test_every_flipped_byte_is_harmless_or_reported_as_damage(
    sample: Sample, work_file: Path
) -> None:
    started = time.monotonic()
    data = sample.data
    tally = Tally()
    # Pass 1: every offset, all bits flipped.
    for offset in range(len(data)):
        copy = bytearray(data)
        copy[offset] ^= 0xFF
        _try_flip(work_file, copy, sample.values, f"0xFF@{offset}", tally)
    # Pass 2: the low bit (type tags, lengths, counters) of every non-zero byte, and of every
    # 64th zero byte (mostly free space, already covered above with all bits).
    for offset in range(len(data)):
        if data[offset] or offset % 64 == 0:
            copy = bytearray(data)
            copy[offset] ^= 0x01
            _try_flip(work_file, copy, sample.values, f"0x01@{offset}", tally)
    elapsed = time.monotonic() - started
    summary = f"{len(data)} bytes, {tally.summary()}, {elapsed:.1f} s"
    print(summary)

    assert tally.outcomes["harmless"] > 0, summary  # the sweep really opened good copies
    assert tally.outcomes["refused on open (NodeDamaged)"] > 0, summary
    assert tally.wrong == [], f"{summary}; wrong values: {tally.wrong[:10]}"
    assert tally.unreported == [], f"{summary}; check() missed: {tally.unreported[:10]}"
    assert tally.foreign == [], f"{summary}; other exceptions: {tally.foreign[:10]}"


# --- the bugs the sweep finds, one flip each -------------------------------------------------


def _open_flipped(sample: Sample, work: Path, offset: int, mask: int) -> None:
    copy = bytearray(sample.data)
    copy[offset] ^= mask
    work.write_bytes(copy)
    with Node.open(work, PW, allow_weak=True) as node:
        assert node.check() != []


def test_a_non_utf8_byte_in_the_schema_text_is_node_damaged(
    sample: Sample, work_file: Path
) -> None:
    offset = sample.data.index(b"CREATE TABLE record") + 2
    with pytest.raises(NodeDamaged):
        _open_flipped(sample, work_file, offset, 0xFF)  # E -> 0xBA, a lone continuation byte


def test_an_ascii_byte_changed_in_the_schema_text_is_node_damaged(
    sample: Sample, work_file: Path
) -> None:
    offset = sample.data.index(b"CREATE TABLE record") + 1
    with pytest.raises(NodeDamaged):
        _open_flipped(sample, work_file, offset, 0x01)  # R -> S: still UTF-8, a syntax error


def test_a_flipped_byte_of_the_sqlite_magic_is_not_a_node(sample: Sample, work_file: Path) -> None:
    with pytest.raises(NotANode):
        _open_flipped(sample, work_file, 3, 0xFF)


def test_a_flipped_byte_of_the_application_id_is_not_a_node(
    sample: Sample, work_file: Path
) -> None:
    with pytest.raises(NotANode):
        _open_flipped(sample, work_file, 68, 0x01)  # PRAGMA application_id lives at offset 68


def test_a_flipped_byte_of_the_header_json_is_node_damaged(sample: Sample, work_file: Path) -> None:
    offset = sample.data.index(b'"magic":"polykey-node"') + 10
    with pytest.raises(NodeDamaged):
        _open_flipped(sample, work_file, offset, 0x01)
