"""Stock git against a node: `git clone ssh://HOST:PORT/VAULT` served by dulwich's upload-pack.

The vault's objects are read from the node file in memory; a key (NodeId) without clone or pull
permission gets the same "not found" as for a vault that does not exist. Read-only: pushes go
through `pk vaults push`, which checks every commit.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from typing import Any

from dulwich.object_store import MemoryObjectStore
from dulwich.objects import ShaFile
from dulwich.refs import DictRefsContainer, Ref
from dulwich.repo import BaseRepo
from dulwich.server import Backend

from polykey.ids import NodeId, encode_node_id
from polykey.trust.acl import Acl
from polykey.vaults.objects import OBJECT_KEY_BYTES, VaultObjects
from polykey.vaults.registry import Vaults


class VaultStore(MemoryObjectStore):
    """A read-only dulwich object store over one vault's sealed objects."""

    def __init__(self, objects: VaultObjects, keys: list[bytes]) -> None:
        super().__init__()
        self._objects = objects
        self._ids = {binascii.hexlify(k) for k in keys if len(k) == OBJECT_KEY_BYTES}

    def _to_hex(self, sha: bytes) -> bytes:
        return binascii.hexlify(sha) if len(sha) == 20 else sha

    def contains_loose(self, sha: Any) -> bool:
        return self._to_hex(sha) in self._ids

    def __contains__(self, sha: Any) -> bool:
        return self.contains_loose(sha)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._ids)

    def get_raw(self, name: Any) -> tuple[int, bytes]:
        obj = self[name]
        return obj.type_num, obj.as_raw_string()

    def __getitem__(self, name: Any) -> ShaFile:
        sha = self._to_hex(name)
        if sha not in self._ids:
            raise KeyError(name)
        return self._objects.get(sha)


class VaultBackend(Backend):
    """Opens a vault by name or id for a peer allowed to clone or pull it."""

    def __init__(self, vaults: Vaults, peer: NodeId) -> None:
        self.vaults = vaults
        self.peer = peer

    def open_repository(self, path: str) -> BaseRepo:  # type: ignore[override]
        from dulwich.errors import NotGitRepository

        wanted = path.strip().strip("'\"").strip("/").removesuffix(".git")
        acl = Acl(self.vaults.store)
        for info in self.vaults.all():
            grants = acl.grants(info.id).get(encode_node_id(self.peer), [])
            if wanted in (info.id, info.name) and {"clone", "pull"} & set(grants):
                vault = self.vaults.open(info.name)
                head = vault.head()
                if head is None:
                    break
                keys = self.vaults.store.keys(vault.objects().ns)
                store = VaultStore(vault.objects(), keys)
                refs = DictRefsContainer(
                    {Ref(b"refs/heads/main"): head, Ref(b"HEAD"): b"ref: refs/heads/main"}
                )
                return BaseRepo(store, refs)
        raise NotGitRepository("repository not found")  # the same whether it exists or not


def serve_upload_pack(vaults: Vaults, peer: NodeId, path: str, recv: Any, write: Any) -> None:
    """Run git's upload-pack for one peer on a byte stream (blocking; run it in a thread)."""
    from dulwich.errors import NotGitRepository
    from dulwich.protocol import ReceivableProtocol
    from dulwich.server import UploadPackHandler

    proto = ReceivableProtocol(recv, write)
    try:
        handler = UploadPackHandler(VaultBackend(vaults, peer), [path], proto)
    except NotGitRepository:
        proto.write_pkt_line(b"ERR repository not found\n")
        return
    handler.handle()
