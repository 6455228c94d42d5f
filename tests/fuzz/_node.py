"""The one real node the harnesses that need a node share (fast test KDF, in a temporary folder
under /dev/shm when there is one, made on first use, removed at exit).

It holds a vault ``work`` (three commits) granted to ``PEER`` (tests/fuzz/_objects.py) with
every permission, and a vault ``other`` granted to nobody.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from pathlib import Path

from dulwich.objects import ShaFile

from polykey.ids import NodeId
from polykey.keys import recovery
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.sync.server import PeerService, collect
from polykey.vaults.objects import refs_ns
from polykey.vaults.vault import BRANCH
from tests.fuzz._objects import PEER, STRANGER

CODE = " ".join(["abandon"] * 23 + ["art"])  # the BIP39 code of 32 zero bytes: a fixed NodeId


class World:
    """The node, its peer service, and the ids of vault ``work``'s objects by type."""

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.tmp = tempfile.TemporaryDirectory(prefix="pk-fuzz-", dir=where)
        self.node, _ = Node.bootstrap(
            Path(self.tmp.name) / "node.pk",
            b"fuzz",
            kdf=FAST_INSECURE_KDF,
            code=recovery.parse(CODE),
            allow_weak=True,
        )
        vault = self.node.vaults.create("work")
        vault.write("db/password", b"secret")
        vault.write("api/key", b"key")
        self.node.vaults.create("other")
        self.info = self.node.vaults.info("work")
        self.node.acl.grant(self.info.id, NodeId(PEER.public), ["scan", "clone", "pull", "push"])
        node = self.node
        self.service = PeerService(node.vaults, node.acl, node.node_id, node.notifications)
        head = vault.head()
        assert head is not None
        self.head = head
        self.anchors: dict[int, list[bytes]] = {1: [], 2: [], 3: []}
        for raw in reversed(collect(vault, head, set())):  # the head last
            obj = ShaFile.from_raw_string(raw[0], raw[1:])
            self.anchors[obj.type_num].append(bytes(obj.id))
        self.peers = (NodeId(PEER.public), NodeId(STRANGER.public), self.node.node_id)
        atexit.register(self.close)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.node.close()
        self.tmp.cleanup()

    def reset(self) -> None:
        """Put the vault's ref back where it was (a push may have landed)."""
        store = self.node.store
        if store.get(refs_ns(self.info.id), BRANCH) != self.head:
            with store.write() as tx:
                tx.put(refs_ns(self.info.id), BRANCH, self.head)


_WORLD: World | None = None


def world() -> World:
    global _WORLD  # one node per process, made on first use
    if _WORLD is None:
        _WORLD = World()
    return _WORLD
