"""A write transaction's repr never shows what it holds (values are secrets)."""

from __future__ import annotations

from pathlib import Path

from polykey.node import FAST_INSECURE_KDF, Node
from polykey.store.records import Namespace


def test_the_repr_of_a_transaction_holds_no_value(tmp_path: Path) -> None:
    node, _ = Node.bootstrap(tmp_path / "n.pk", b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node, node.store.write() as tx:
        tx.put(Namespace("test/repr"), b"k", b"canary-value-8f3a")
        assert b"canary-value-8f3a".decode() not in repr(tx)
