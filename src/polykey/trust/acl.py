"""Per-vault permissions granted to other nodes: scan, clone, pull, push.

Kept in the mutable namespace ``acl/vaults``: vault id -> JSON {NodeId: [permissions]}. The
Node owns the one ``Acl``; callers ask it questions (``permits``, ``writers``, ``nodes``) and
never read its records. A node linked to this one (trust/links.py: one of the same owner's
nodes) holds every permission on every vault, with no grant; unlinking takes that away at once.

A grant may name an identity (``github:bob``, ``dns:example.org``) instead of a NodeId: then
every node of that identity's gestalt holds it (trust/gestalts.py), checked when the node asks,
including a node seen for the first time (its presented sigchain links it into the gestalt).

A grant may reach one folder of the vault (``pk vaults share V:prod/db NODEID``): it holds
``folder:prod/db`` among its permissions, and scan, clone or pull, never push. ``permissions``
answers for the whole vault (a folder grant adds only its scan there), ``folder``/``scope``
for the folder; the serving side sends such a node the vault derived to that folder alone
(vaults/derive.py, docs/spec/derived.md). Code that knows nothing of folders thus refuses them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polykey.errors import InvalidInput, NodeDamaged
from polykey.ids import NodeId, encode_node_id
from polykey.store.nodefile import NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.trust.links import Links

if TYPE_CHECKING:
    from polykey.trust.delegation import Delegations
    from polykey.trust.gestalts import Gestalts

ACL = Namespace("acl/vaults")
FORMER = Namespace("acl/former-writers")
"""vault id -> JSON [NodeIds] that held `push` once and no longer do: their commits stay in the
history, so a peer fetching it is told they were writers (it checks every signature by them)."""
PERMISSIONS = ("scan", "clone", "pull", "push")
DEFAULT = ("scan", "clone", "pull")
READS = frozenset({"clone", "pull"})
FOLDER = "folder:"
"""A grant holding ``folder:PATH`` among its permissions reaches only that folder (or secret)
of the vault: its clone and pull are served as the vault derived to PATH (vaults/derive.py,
docs/spec/derived.md); it never holds push."""


@dataclass(frozen=True)
class Folder:
    """What a folder grant lets a node do: read ``path`` of the vault, by ``permissions``."""

    path: str
    permissions: tuple[str, ...]


class FolderGrantRefused(InvalidInput):
    """A folder of a vault cannot be shared that way."""

    hint = "A folder is shared for scan, clone and pull only: `pk vaults share V:PATH NODEID`."


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
        self.delegations: Delegations | None = None  # set by the Node: child nodes

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
        if self.delegations is not None and permission is None:  # child nodes
            out |= self.delegations.subjects()
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
        """What ``node_id`` may do with the whole vault (empty: nothing, not even know of it);
        a linked node, everything. A folder grant adds only its `scan` here: what it lets the
        node read is ``folder`` (served as a vault derived to that folder)."""
        if self.links.is_mine(node_id):
            return sorted(PERMISSIONS)
        return sorted(self._held(vault_id, node_id)[0])

    def folder(self, vault_id: str, node_id: NodeId) -> Folder | None:
        """The folder of the vault that ``node_id`` may read, and how, when folder grants are
        all that let it read the vault; None when it may read the whole vault (or nothing).
        Of several folders granted to it (itself, its identities, delegations) the first by
        name is served."""
        if self.links.is_mine(node_id):
            return None
        whole, folders = self._held(vault_id, node_id)
        if whole & READS or not folders:
            return None
        path = min(folders)
        return Folder(path, tuple(sorted(folders[path] | (whole & {"scan"}))))

    def scope(self, vault_id: str, node_id: NodeId) -> str | None:
        """The path ``node_id`` may read of the vault; None: the whole vault (or nothing)."""
        found = self.folder(vault_id, node_id)
        return found.path if found is not None else None

    def _held(self, vault_id: str, node_id: NodeId) -> tuple[set[str], dict[str, set[str]]]:
        """(whole-vault permissions, folder -> the read permissions on it) of every grant
        reaching ``node_id``: its own, its identities' (gestalts), its delegations."""
        grants = self.grants(vault_id)
        whole: set[str] = set()
        folders: dict[str, set[str]] = {}

        def take(granted: Iterable[str]) -> None:
            perms = set(granted)
            folder = folder_of(perms)
            known = perms & set(PERMISSIONS)
            if folder is None:
                whole.update(known)
            else:  # reads of the folder alone, never a push
                whole.update(known - READS - {"push"})
                folders.setdefault(folder, set()).update(known & READS)

        take(grants.get(encode_node_id(node_id), []))
        for who, granted in grants.items():
            new = folder_of(granted) is not None or not set(granted) <= whole
            if ":" in who and new and self._admits(who, node_id):
                take(granted)
        if self.delegations is not None:  # a child node: the delegations walked
            for right in self.delegations.effective(vault_id, node_id):  # a folder as a grant's
                folder = [] if right.path is None else [FOLDER + right.path]
                take([*right.actions, *folder])
        return whole, folders

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

    def grant(
        self, vault_id: str, node_id: NodeId | str, perms: list[str], folder: str | None = None
    ) -> list[str]:
        """Add ``perms`` for a node, or for an identity (``github:bob``: its gestalt). Push
        brings pull with it: a writer must read the vault to build on it, and a node that
        could write but not read could probe which objects it holds.

        ``folder``: the grant reaches only that folder (or secret) of the vault, kept as
        ``folder:PATH`` among the permissions; it may hold scan, clone and pull, never push
        (FolderGrantRefused), one folder per node and vault. Granting reads of the whole
        vault to a node holding a folder grant widens it to the whole vault."""
        perms = check_permissions(perms)
        if folder is not None:
            folder = check_folder(folder)
            if "push" in perms:
                raise FolderGrantRefused(
                    "push: a node that may read only a folder of a vault cannot write to it"
                )
        elif "push" in perms:
            perms = [*perms, "pull"]
        with self.store.write() as tx:
            current = self.grants(vault_id)
            key = _who(node_id)
            held = set(current.get(key, []))
            had = folder_of(held)
            if folder is not None and had is None and held & READS:
                raise FolderGrantRefused(
                    f"{key} may read the whole vault already",
                    hint="Unshare the vault from it first (`pk vaults unshare`).",
                )
            if folder is not None and had not in (None, folder):
                raise FolderGrantRefused(
                    f"{key} holds folder {had} of this vault",
                    hint="A node holds one folder of a vault: unshare it first.",
                )
            if had is not None and folder is None and set(perms) & (READS | {"push"}):
                held -= {FOLDER + had}  # the whole vault now
            if folder is not None:
                held.add(FOLDER + folder)
            current[key] = sorted(held | set(perms))
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

    def rename(
        self, tx: Transaction, vault_ids: list[str], old: str, new: str, *, writer: bool = False
    ) -> None:
        """A key renewal (trust/rotation.py), inside the caller's transaction: ``old``'s grants
        move to ``new``, and ``old`` is kept as a former writer where it could push (with
        ``writer``: everywhere, this node's own old key), so the history it signed verifies."""
        for vault_id in vault_ids:
            grants = self.grants(vault_id)
            moved = grants.pop(old, None)
            if moved is not None:
                grants[new] = sorted(set(grants.get(new, [])) | set(moved))
                tx.put(ACL, vault_id.encode(), json.dumps(grants, sort_keys=True).encode())
            if writer or (moved is not None and "push" in moved):
                self._remember(tx, vault_id, {old})

    def replace(self, tx: Transaction, vault_id: str, grants: dict[str, list[str]]) -> None:
        """Set every grant of the vault at once, inside the caller's transaction (a backup
        mirrored, a restore): permissions this version does not know are left out, push brings
        pull, a node left with none is dropped."""
        clean: dict[str, list[str]] = {}
        for node, perms in grants.items():
            known = {p for p in perms if p in PERMISSIONS}
            folder = _valid_folder(perms)
            if folder:  # a folder grant: its reads, never a push
                known = (known - {"push"}) | {FOLDER + folder}
            elif folder == "":  # a folder this version cannot read: no reads at all
                known -= READS | {"push"}
            elif "push" in known:
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


def folder_of(perms: Iterable[str]) -> str | None:
    """The folder a grant reaches (its ``folder:PATH`` entry); None: the whole vault."""
    return next((p[len(FOLDER) :] for p in sorted(perms) if p.startswith(FOLDER)), None)


def check_folder(path: str) -> str:
    """A folder path as grants keep it (InvalidSecretPath when it breaks a path rule)."""
    from polykey.vaults.paths import join, split_path

    return join(split_path(path))


def _valid_folder(perms: list[str]) -> str | None:
    """The folder of a grant from elsewhere (a backup mirrored): None when there is none, ""
    when there are several or one that is not a valid path."""
    named = [p[len(FOLDER) :] for p in perms if p.startswith(FOLDER)]
    if not named:
        return None
    try:
        return check_folder(named[0]) if len(named) == 1 else ""
    except InvalidInput:
        return ""


def _who(node_id: NodeId | str) -> str:
    """The key of a grant: a NodeId's text, or an identity id as it is."""
    return node_id if isinstance(node_id, str) else encode_node_id(node_id)
