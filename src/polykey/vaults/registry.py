"""The vaults of a node: names, stable ids, vault tags, creation and removal.

``vaults/registry`` maps a vault id to its metadata (name, created, tags); ``vaults/names`` maps a
name to its id, so names are unique per node and a rename keeps the id. Both, and the vault's
objects and refs, change together in one transaction.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from polykey.errors import NodeDamaged
from polykey.keys.root import RootKey
from polykey.store.nodefile import Damage, NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.vaults.errors import VaultExists, VaultNotFound
from polykey.vaults.paths import check_vault_name, objects_ns, refs_ns

if TYPE_CHECKING:
    from polykey.vaults.objects import ObjectCache
    from polykey.vaults.vault import Vault

REGISTRY = Namespace("vaults/registry")
NAMES = Namespace("vaults/names")


@dataclass
class VaultInfo:
    id: str
    name: str
    created: str
    tags: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)  # for a clone: node, vault, high water

    def encode(self) -> bytes:
        doc: dict[str, object] = {
            "name": self.name,
            "created": self.created,
            "tags": sorted(self.tags),
        }
        if self.origin:
            doc["origin"] = self.origin
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def decode(cls, vault_id: str, raw: bytes) -> VaultInfo:
        try:
            doc = json.loads(raw)
            origin = doc.get("origin") or {}
            return cls(
                vault_id,
                str(doc["name"]),
                str(doc["created"]),
                list(doc.get("tags", [])),
                {str(k): str(v) for k, v in origin.items()},
            )
        except (ValueError, KeyError, TypeError):
            raise NodeDamaged(f"the registry entry of vault {vault_id} is malformed") from None


def read_only(info: VaultInfo, key: RootKey) -> str | None:
    """Why this node may not commit to the vault: a clone whose origin named the writers it
    takes, this node not among them (None: it may)."""
    from polykey.ids import encode_node_id

    if not info.origin or "writers" not in info.origin:
        return None
    writers = info.origin["writers"].split()
    me = encode_node_id(key.node_id)
    if me in writers:
        return None
    origin = info.origin.get("node_id", "")
    return f"{info.name} is a clone of {origin[:12]}… that takes no changes from this node"


_VAULT_ID = re.compile(r"v[0-9a-v]{26}")


def new_vault_id() -> str:
    return "v" + base64.b32hexencode(os.urandom(16)).decode().rstrip("=").lower()


class Vaults:
    """The vault registry of one unlocked node."""

    def __init__(self, store: NodeFile, key: RootKey) -> None:
        self.store = store
        self.key = key
        self._cache: ObjectCache | None = None

    @property
    def cache(self) -> ObjectCache:
        """Parsed trees and commits, shared by this node's vaults (git code loads on first use)."""
        if self._cache is None:
            from polykey.vaults.objects import ObjectCache

            self._cache = ObjectCache()
        return self._cache

    def all(self, tag: str | None = None) -> list[VaultInfo]:
        infos = [VaultInfo.decode(k.decode(), v) for k, v in self.store.items(REGISTRY)]
        if tag is not None:
            infos = [i for i in infos if tag in i.tags]
        return sorted(infos, key=lambda i: i.name)

    def count(self) -> int:
        return self.store.count(REGISTRY)

    def info(self, name: str, source: NodeFile | Transaction | None = None) -> VaultInfo:
        src = source if source is not None else self.store
        vault_id = src.get(NAMES, name.encode())
        if vault_id is None:
            raise VaultNotFound(name)
        raw = src.get(REGISTRY, vault_id)
        if raw is None:
            raise NodeDamaged(f"vault {name} is named but not registered")
        return VaultInfo.decode(vault_id.decode(), raw)

    def open(self, name: str) -> Vault:
        from polykey.vaults.vault import Vault

        info = self.info(name)
        vault = Vault(self.store, info.id, info.name, self.key, self.cache)
        vault.read_only = read_only(info, self.key)
        return vault

    def create(self, name: str, tags: list[str] | None = None) -> Vault:
        from polykey.vaults.tags import check_tag
        from polykey.vaults.vault import Vault

        check_vault_name(name)
        tags = sorted({check_tag(t) for t in tags or []})
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        info = VaultInfo(new_vault_id(), name, created, tags)
        with self.store.write() as tx:
            if tx.get(NAMES, name.encode()) is not None:
                raise VaultExists(name)
            tx.put(NAMES, name.encode(), info.id.encode())
            tx.put(REGISTRY, info.id.encode(), info.encode())
            vault = Vault(self.store, info.id, name, self.key, self.cache)
            vault.commit(lambda *_: [], f"Create vault {name}.", tx=tx)  # the empty tree
        return vault

    def register(
        self,
        name: str,
        origin: dict[str, str],
        tx: Transaction,
        *,
        vault_id: str | None = None,
        tags: list[str] | None = None,
    ) -> VaultInfo:
        """Register a vault with no commits, inside the caller's transaction (a clone; or, with
        ``vault_id``, the copy of a vault of one of this person's own nodes, which keeps its id)."""
        from polykey.vaults.tags import check_tag

        check_vault_name(name)
        if vault_id is not None and not _VAULT_ID.fullmatch(vault_id):
            raise VaultNotFound(vault_id[:80], hint="A vault id is 'v' and 26 base32hex letters.")
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        tags = sorted({check_tag(t) for t in tags or []})
        info = VaultInfo(vault_id or new_vault_id(), name, created, tags, origin)
        if tx.get(NAMES, name.encode()) is not None:
            raise VaultExists(name)
        if tx.get(REGISTRY, info.id.encode()) is not None:
            raise VaultExists(info.id)
        tx.put(NAMES, name.encode(), info.id.encode())
        tx.put(REGISTRY, info.id.encode(), info.encode())
        return info

    def set_origin(self, name: str, origin: dict[str, str], tx: Transaction) -> None:
        info = self.info(name, tx)
        info.origin = origin
        tx.put(REGISTRY, info.id.encode(), info.encode())

    def rename(self, old: str, new: str) -> None:
        with self.store.write() as tx:
            self.rename_in(tx, old, new)

    def rename_in(self, tx: Transaction, old: str, new: str) -> None:
        check_vault_name(new)
        info = self.info(old, tx)
        if old == new:
            return
        if tx.get(NAMES, new.encode()) is not None:
            raise VaultExists(new)
        tx.delete(NAMES, old.encode())
        tx.put(NAMES, new.encode(), info.id.encode())
        info.name = new
        tx.put(REGISTRY, info.id.encode(), info.encode())

    def set_meta(
        self, tx: Transaction, name: str, *, tags: list[str], origin: dict[str, str]
    ) -> None:
        """Set a vault's tags and origin (a backup mirroring its node)."""
        from polykey.vaults.tags import check_tag

        info = self.info(name, tx)
        info.tags = sorted({check_tag(t) for t in tags})
        info.origin = origin
        tx.put(REGISTRY, info.id.encode(), info.encode())

    def remove(self, name: str) -> str:
        """Delete a vault and all its history; returns its id."""
        with self.store.write() as tx:
            info = self.info(name, tx)
            tx.delete(NAMES, name.encode())
            tx.delete(REGISTRY, info.id.encode())
            tx.drop_namespace(objects_ns(info.id))
            tx.drop_namespace(refs_ns(info.id))
        return info.id

    def check(self) -> list[Damage]:
        """Re-hash every git object of every vault and follow every ref; report what is wrong."""
        from polykey.vaults.check import check_vault

        damage: list[Damage] = []
        for info in self.all():
            damage.extend(check_vault(self.store, info.id, info.name))
        return damage

    def retag(self, name: str, add: list[str], remove: list[str]) -> VaultInfo:
        from polykey.vaults.tags import check_tag

        for t in add + remove:
            check_tag(t)
        with self.store.write() as tx:
            info = self.info(name, tx)
            info.tags = sorted((set(info.tags) | set(add)) - set(remove))
            tx.put(REGISTRY, info.id.encode(), info.encode())
        return info
