"""The audit log on a real node file: records chain, and a record removed, altered or
reordered (in the SQLite file itself, or re-sealed with the key) is named by verify."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults.audit import (
    GENESIS,
    LOG,
    AuditUnavailable,
    Event,
    decode,
    encode,
    seq_key,
)
from tests.support import PASSWORD, pk_env, run_pk

VECTORS = Path(__file__).parents[2] / "docs" / "spec" / "audit-vectors.json"


def _node(path: Path, records: int) -> Node:
    node, _ = Node.bootstrap(path, PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True)
    for i in range(records):
        node.audit.append([Event("local", "secrets.cat", "work", f"s{i}", "ab" * 20)], now=i)
    return node


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit") / "node.pk"
    _node(path, 10).close()
    return path


def _copy(original: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy.pk"
    shutil.copy(original, target)
    return target


def _problems(path: Path) -> list[str]:
    with Node.open(path, PASSWORD.encode(), allow_weak=True) as node:
        return [str(p) for p in node.audit.verify().problems]


def _row(path: Path, seq: int) -> tuple[bytes, bytes]:
    """The (ns, name) columns of record ``seq`` of the log, by the node's own keys."""
    with Node.open(path, PASSWORD.encode(), allow_weak=True) as node:
        keys = node.store._keys
        ns = keys.ns_id(LOG.name)
        return ns, keys.rec_id(ns, seq_key(seq))


def test_records_chain_and_verify(original: Path) -> None:
    with Node.open(original, PASSWORD.encode(), allow_weak=True) as node:
        records = list(node.audit.records())
        verdict = node.audit.verify()
        assert node.audit.mac("s3") == records[3].path
    assert [r.seq for r in records] == list(range(1, 11))
    assert records[0].prev == GENESIS
    assert all(b.prev == a.digest for a, b in itertools.pairwise(records))
    assert verdict.problems == () and verdict.count == 10 and verdict.digest == records[-1].digest


def test_a_record_holds_no_path_in_clear(original: Path) -> None:
    with Node.open(original, PASSWORD.encode(), allow_weak=True) as node:
        raw = node.store.get(LOG, seq_key(4))
    assert raw is not None and b"s3" not in raw


def test_a_deleted_record_is_named(original: Path, tmp_path: Path) -> None:
    path = _copy(original, tmp_path)
    ns, name = _row(path, 4)
    with sqlite3.connect(path) as db:
        assert db.execute("DELETE FROM record WHERE ns = ? AND name = ?", (ns, name)).rowcount
    assert _problems(path) == ["record 4: is missing (removed)"]


def test_an_altered_record_is_named(original: Path, tmp_path: Path) -> None:
    path = _copy(original, tmp_path)
    ns, name = _row(path, 7)
    with sqlite3.connect(path) as db:
        (sealed,) = db.execute(
            "SELECT sealed FROM record WHERE ns=? AND name=?", (ns, name)
        ).fetchone()
        flipped = sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:]
        db.execute("UPDATE record SET sealed=? WHERE ns=? AND name=?", (flipped, ns, name))
    assert _problems(path) == ["record 7: fails authentication (altered, or moved here)"]


def test_two_records_swapped_in_the_file_are_both_named(original: Path, tmp_path: Path) -> None:
    path = _copy(original, tmp_path)
    (ns, five), (_, six) = _row(path, 5), _row(path, 6)
    with sqlite3.connect(path) as db:
        get = "SELECT sealed FROM record WHERE ns=? AND name=?"
        a, b = (db.execute(get, (ns, n)).fetchone()[0] for n in (five, six))
        db.execute("UPDATE record SET sealed=? WHERE ns=? AND name=?", (b, ns, five))
        db.execute("UPDATE record SET sealed=? WHERE ns=? AND name=?", (a, ns, six))
    assert _problems(path) == [
        "record 5: fails authentication (altered, or moved here)",
        "record 6: fails authentication (altered, or moved here)",
    ]


def test_records_reordered_with_the_key_are_named(original: Path, tmp_path: Path) -> None:
    """Someone holding the key re-seals record 6 in place 5 and 5 in place 6: the chain."""
    path = _copy(original, tmp_path)
    with Node.open(path, PASSWORD.encode(), allow_weak=True) as node:
        five, six = (node.store.get(LOG, seq_key(n)) for n in (5, 6))
        assert five is not None and six is not None
        with node.store.write() as tx:
            tx.delete(LOG, seq_key(5))
            tx.delete(LOG, seq_key(6))
        with node.store.write() as tx:
            tx.put(LOG, seq_key(5), six)
            tx.put(LOG, seq_key(6), five)
        problems = [str(p) for p in node.audit.verify().problems]
    assert problems == [
        "record 5: holds record 6 (reordered)",
        "record 6: holds record 5 (reordered)",
    ]


def test_a_log_rewritten_shorter_fails_its_signed_checkpoint(tmp_path: Path) -> None:
    from polykey.agent.methods.audit import checkpoint, checkpoints
    from polykey.vaults.audit import HEAD

    with _node(tmp_path / "n.pk", 6) as node:
        assert checkpoint(node) == {"seq": 1, "count": 6, "head": node.audit.head().digest}
        assert checkpoint(node) is None  # nothing new
        with node.store.write() as tx:  # the key holder drops the log and writes 4 records
            tx.drop_namespace(LOG)
            tx.drop_namespace(HEAD)
        for i in range(4):
            node.audit.append([Event("local", "secrets.cat", "work", f"s{i}")])
        problems = [str(p) for p in node.audit.verify(checkpoints(node)).problems]
    assert problems == [
        "a signed checkpoint counts 6 records; the log holds 4 (records were cut from the end)"
    ]


def test_a_write_that_cannot_land_is_audit_unavailable(tmp_path: Path) -> None:
    with _node(tmp_path / "n.pk", 1) as node:
        node.store._conn.execute("PRAGMA query_only = ON")  # SQLite refuses every write
        with pytest.raises(AuditUnavailable):
            node.audit.append([Event("local", "secrets.cat")])
        node.store._conn.execute("PRAGMA query_only = OFF")
        assert node.audit.head().count == 1


def test_pk_audit_verify_names_the_record_and_exits_89(original: Path, tmp_path: Path) -> None:
    path = _copy(original, tmp_path)
    ns, name = _row(path, 2)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM record WHERE ns = ? AND name = ?", (ns, name))
    r = run_pk("audit", "verify", env=pk_env(path, PK_PASSWORD=PASSWORD))
    assert r.returncode == 89, r.stderr
    assert r.stdout.decode().splitlines() == ["record 2: is missing (removed)"]
    assert b"does not verify" in r.stderr


def test_vectors() -> None:
    """docs/spec/audit-vectors.json: stored forms, digests, and forms decode refuses."""
    doc = json.loads(VECTORS.read_text())
    prev = GENESIS
    for v in doc["records"]:
        e = v["event"]
        raw = encode(
            v["seq"], prev, v["at"], Event(**{k: e[k] for k in e if k != "path_mac"}), e["path_mac"]
        )
        assert raw.decode() == v["stored"]
        assert hashlib.sha256(raw).hexdigest() == v["digest"] == decode(raw).digest
        prev = v["digest"]
    for bad in doc["refused"]:
        with pytest.raises(ValueError):
            decode(bad["stored"].encode())
