"""Write-once records written while their transaction is still open (``Transaction.stream``):
read back, deleted, dropped and listed as if they had waited, invisible to other connections
until the commit, and gone with a rollback."""

from __future__ import annotations

import pytest

from polykey.store import transaction
from polykey.store.nodefile import NodeFile
from polykey.store.records import Namespace
from tests.conftest import NodeFixture
from tests.support import PASSWORD

ONCE = Namespace("test/streamed", immutable=True)
MUTABLE = Namespace("test/streamed-mutable")


@pytest.fixture
def store(fresh_node: NodeFixture) -> NodeFile:
    return fresh_node.node.store


def test_records_streamed_early_read_back_and_land_with_the_commit(
    store: NodeFile, fresh_node: NodeFixture
) -> None:
    other = NodeFile.open(fresh_node.path, PASSWORD.encode(), allow_weak=True)
    try:
        with store.write() as tx:
            tx.put(ONCE, b"a", b"first")
            tx.put(MUTABLE, b"m", b"waits")
            tx.stream()
            tx.put(ONCE, b"b", b"second")
            assert tx.get(ONCE, b"a") == b"first"
            assert other.get(ONCE, b"a") is None  # not visible before the commit
        assert store.get(ONCE, b"a") == b"first"
        assert store.get(ONCE, b"b") == b"second"
        assert store.get(MUTABLE, b"m") == b"waits"
        assert other.get(ONCE, b"a") == b"first"
        assert store.check() == []
    finally:
        other.close()


def test_a_large_transaction_streams_by_itself_and_a_rollback_leaves_nothing(
    store: NodeFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transaction, "STREAM_BYTES", 1000)
    with pytest.raises(RuntimeError), store.write() as tx:
        for i in range(20):
            tx.put(ONCE, b"k%d" % i, bytes(200))
        assert tx._written  # streamed already
        raise RuntimeError("stop")
    assert store.count(ONCE) == 0
    assert store.check() == []
    with store.write() as tx:
        for i in range(20):
            tx.put(ONCE, b"k%d" % i, b"v%d" % i)
    assert [store.get(ONCE, b"k%d" % i) for i in range(20)] == [b"v%d" % i for i in range(20)]
    assert store.check() == []


def test_streamed_records_deleted_or_dropped_in_the_same_transaction_are_gone(
    store: NodeFile,
) -> None:
    gone = Namespace("test/streamed-dropped", immutable=True)
    with store.write() as tx:
        tx.put(ONCE, b"kept", b"1")
        tx.put(ONCE, b"deleted", b"2")
        tx.put(gone, b"x", b"3")
        tx.stream()
        tx.delete(ONCE, b"deleted")
        tx.drop_namespace(gone)
        assert tx.get(ONCE, b"deleted") is None
    assert store.keys(ONCE) == [b"kept"]
    assert store.count(gone) == 0
    assert store.check() == []
