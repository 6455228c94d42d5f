"""Shared fixtures: throwaway nodes with a fast (test-only) KDF."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.keys.recovery import RecoveryCode
from polykey.node import FAST_INSECURE_KDF, Node
from tests.support import PASSWORD


@dataclass
class NodeFixture:
    path: Path
    node: Node
    code: RecoveryCode
    password: str = PASSWORD


@pytest.fixture
def node_path(tmp_path: Path) -> Path:
    return tmp_path / "node" / "node.pk"


@pytest.fixture
def fresh_node(node_path: Path) -> Iterator[NodeFixture]:
    """An unlocked node made with the fast test KDF; closed after the test."""
    node, code = Node.bootstrap(
        node_path, PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True
    )
    try:
        yield NodeFixture(node_path, node, code)
    finally:
        node.close()
