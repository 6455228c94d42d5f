"""Per-vault permissions granted to other nodes: scan, clone, pull, push.

Kept in the mutable namespace ``acl/vaults``: vault id -> JSON {NodeId: [permissions]}. The
Node owns the one ``Acl``; callers ask it questions (``permits``, ``writers``, ``nodes``) and
never read its records. A node linked to this one (trust/links.py: one of the same owner's
nodes) holds every permission on every vault, with no grant; unlinking takes that away at once.

A grant may name an identity (``github:bob``, ``dns:example.org``) instead of a NodeId: then
every node of that identity's gestalt holds it (trust/gestalts.py), checked when the node asks,
including a node seen for the first time (its presented sigchain links it into the gestalt).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from polykey.errors import InvalidInput, NodeDamaged
from polykey.ids import NodeId, encode_node_id
from polykey.store.nodefile import NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.trust.links import Links

if TYPE_CHECKING:
    from polykey.trust.gestalts import Gestalts

ACL = Namespace("acl/vaults")
FORMER = Namespace("acl/former-writers")
"""vault id -> JSON [NodeIds] that held `push` once and no longer do: their commits stay in the
history, so a peer fetching it is told they were writers (it checks every signature by them)."""
PERMISSIONS = ("scan", "clone", "pull", "push")
DEFAULT = ("scan", "clone", "pull")


def check_permissions(perms: list[str]) -> list[str]:
    unknown = [p for p in perms if p not in PERMISSIONS]
    if unknown:
        raise InvalidInput(
            f"unknown permission {unknown[0]!r}", hint=f"Use {', '.join(PERMISSIONS)}."
        )
    return sorted(set(perms))


class Acl:
    def __init__(self, store: NodeFile, links: Links) -> None:
        self.store = store
        self.links = links
        self.gestalts: Gestalts | None = None  # set by the Node: grants to identities

    def grants(self, vault_id: str) -> dict[str, list[str]]:
        raw = self.store.get(ACL, vault_id.encode())
        if raw is None:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError:
            raise NodeDamaged(f"the permissions of vault {vault_id} are malformed") from None
        return {str(k): [str(p) for p in v] for k, v in doc.items()}

    def nodes(self, permission: str | None = None) -> set[str]:
        """Every NodeId holding a grant on some vault (with ``permission``: holding that one),
        and every linked node (it holds them all)."""
        out = {encode_node_id(n) for n in self.links.mine()}
        for vault_id, _ in self.store.items(ACL):
            for node, perms in self.grants(vault_id.decode()).items():
                if permission is None or permission in perms:
                    out.add(node)
        return out

    def shares_with_identities(self) -> bool:
        """Whether some vault is granted to an identity (its gestalt: nodes not named)."""
        return any(
            ":" in who
            for vault_id, _ in self.store.items(ACL)
            for who in self.grants(vault_id.decode())
        )

    def knows(self, node_id: NodeId) -> bool:
        """Whether ``node_id`` holds a grant on any vault, or is linked."""
        return encode_node_id(node_id) in self.nodes()

    def permits(self, vault_id: str, node_id: NodeId, permission: str) -> bool:
        return permission in self.permissions(vault_id, node_id)

    def permissions(self, vault_id: str, node_id: NodeId) -> list[str]:
        """What ``node_id`` may do with the vault (empty: nothing, not even know of it); a
        linked node, everything."""
        if self.links.is_mine(node_id):
            return sorted(PERMISSIONS)
        grants = self.grants(vault_id)
        perms = set(grants.get(encode_node_id(node_id), []))
        for who, granted in grants.items():
            if ":" in who and not set(granted) <= perms and self._admits(who, node_id):
                perms |= set(granted)
        return sorted(perms)

    def _admits(self, identity: str, node_id: NodeId) -> bool:
        return self.gestalts is not None and self.gestalts.admits(identity, node_id)

    def writers(self, vault_id: str) -> list[str]:
        """The NodeIds granted `push` on the vault and the linked nodes, sorted (the owner is
        not among them)."""
        granted = self._writers_of(self.grants(vault_id))
        return sorted(granted | {encode_node_id(n) for n in self.links.mine()})

    def _writers_of(self, grants: dict[str, list[str]]) -> set[str]:
        """The NodeIds ``grants`` let push: named, or in the gestalt of a trusted identity."""
        out: set[str] = set()
        for who, perms in grants.items():
            if "push" not in perms:
                continue
            if ":" not in who:
                out.add(who)
            elif self.gestalts is not None and self.gestalts.trusted(who):
                out |= self.gestalts.gestalt(who).nodes
        return out

    def grant(self, vault_id: str, node_id: NodeId | str, perms: list[str]) -> list[str]:
        """Add ``perms`` for a node, or for an identity (``github:bob``: its gestalt). Push
        brings pull with it: a writer must read the vault to build on it, and a node that
        could write but not read could probe which objects it holds."""
        perms = check_permissions(perms)
        if "push" in perms:
            perms = [*perms, "pull"]
        with self.store.write() as tx:
            current = self.grants(vault_id)
            key = _who(node_id)
            current[key] = sorted(set(current.get(key, [])) | set(perms))
            tx.put(ACL, vault_id.encode(), json.dumps(current, sort_keys=True).encode())
        return current[key]

    def revoke(self, vault_id: str, node_id: NodeId | str) -> bool:
        with self.store.write() as tx:
            current = self.grants(vault_id)
            before = self._writers_of(current)
            removed = current.pop(_who(node_id), None)
            if removed is not None and "push" in removed:
                self._remember(tx, vault_id, before - self._writers_of(current))
            tx.put(ACL, vault_id.encode(), json.dumps(current, sort_keys=True).encode())
        return removed is not None

    def former_writers(self, vault_id: str) -> list[str]:
        """The NodeIds that held `push` on the vault, or were linked, and no longer do."""
        raw = self.store.get(FORMER, vault_id.encode())
        try:
            named = {str(n) for n in json.loads(raw)} if raw is not None else set()
        except ValueError:
            raise NodeDamaged(f"the former writers of vault {vault_id} are malformed") from None
        named |= {e.node_id for e in self.links.entries() if e.state == "unlinked"}
        return sorted(named - set(self.writers(vault_id)))

    def _remember(self, tx: Transaction, vault_id: str, nodes: set[str]) -> None:
        raw = tx.get(FORMER, vault_id.encode())
        known = set(json.loads(raw)) if raw is not None else set()
        if not nodes <= known:
            tx.put(FORMER, vault_id.encode(), json.dumps(sorted(known | nodes)).encode())

    def replace(self, tx: Transaction, vault_id: str, grants: dict[str, list[str]]) -> None:
        """Set every grant of the vault at once, inside the caller's transaction (a backup
        mirrored, a restore): permissions this version does not know are left out, push brings
        pull, a node left with none is dropped."""
        clean: dict[str, list[str]] = {}
        for node, perms in grants.items():
            known = {p for p in perms if p in PERMISSIONS}
            if "push" in known:
                known.add("pull")
            if known:
                clean[node] = sorted(known)
        before = {n for n, perms in self.grants(vault_id).items() if "push" in perms}
        after = {n for n, perms in clean.items() if "push" in perms}
        if before - after:
            self._remember(tx, vault_id, before - after)
        tx.put(ACL, vault_id.encode(), json.dumps(clean, sort_keys=True).encode())

    def drop(self, vault_id: str) -> None:
        with self.store.write() as tx:
            tx.delete(ACL, vault_id.encode())


def _who(node_id: NodeId | str) -> str:
    """The key of a grant: a NodeId's text, or an identity id as it is."""
    return node_id if isinstance(node_id, str) else encode_node_id(node_id)
