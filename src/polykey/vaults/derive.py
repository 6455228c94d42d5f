"""A vault derived to one folder: what a node that may read only ``V:PATH`` is served.

A folder grant (trust/acl.py) must not leak the rest of the vault, in any object or commit. So
such a node is never served the vault's own history: it is served a *view*, a history of its
own derived from the vault's, that holds PATH (a folder or one secret) at the same place and
nothing else (docs/spec/derived.md):

- each commit of the vault maps to a derived commit, or to none while nothing is at PATH yet;
- the derived tree holds only the entries on the way to PATH, PATH's own objects, and a tag
  file holding only the tags of secrets under PATH;
- a commit whose derived tree is that of its one derived parent maps to that parent: writes to
  other paths make no derived commit. Otherwise it maps to a new commit, on the derived
  parents (those another one descends from are left out), with the original author time, a
  message made from the change under PATH (never the original message, which may name other
  paths), signed by this node (a deterministic Ed25519 signature).

The same history of the vault always gives the same derived commits, so a node pulling again
gets only the new ones. The mapping is kept write-once in ``vaults/derived`` and the view's
objects and head under a vault id of its own (``d`` and 32 hex digits), in the node file like a
vault's; bringing a view up to date derives only the commits not mapped yet.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import stat
from typing import cast

from dulwich.objects import Commit, ObjectID, Tree

from polykey.crypto import sshsig
from polykey.ids import encode_node_id
from polykey.store.nodefile import Transaction
from polykey.store.records import Namespace
from polykey.vaults.history import diff_trees
from polykey.vaults.objects import VaultObjects
from polykey.vaults.paths import join, refs_ns, split_path
from polykey.vaults.tags import try_read_tags, write_tags
from polykey.vaults.vault import BRANCH, GIT_NAMESPACE, Vault

DERIVED = Namespace("vaults/derived", immutable=True)
"""view key (16 bytes) ‖ source commit id (20 bytes) -> derived commit id (20 bytes), or empty
when that commit has nothing at the view's path. Write-once: a mapping never changes."""
LABEL = b"polykey derived view v1\x00"
VIEW_KEY_BYTES = 16
_NODE_IDENT = re.compile(rb"(v[0-9a-v]{52}) <\1>")
DIR_MODE = stat.S_IFDIR
MANY = 3  # a change of more secrets than this is summed up in its message


def view_id(vault_id: str, path: str) -> str:
    """The id under which the view of ``vault_id`` to ``path`` keeps its objects and head in
    the node file (not a vault id: those start with ``v``). It does not name the node's key:
    after a key renewal the view goes on, its new commits signed by the new key."""
    digest = hashlib.sha256(LABEL + vault_id.encode() + b"\x00" + path.encode()).digest()
    return "d" + digest[:VIEW_KEY_BYTES].hex()


def view_ids(keys: list[bytes]) -> set[str]:
    """The views that records of ``vaults/derived`` (by their keys) belong to (salvage)."""
    return {"d" + k[:VIEW_KEY_BYTES].hex() for k in keys if len(k) == VIEW_KEY_BYTES + 20}


def derive(vault: Vault, path: str) -> Vault:
    """The view of ``vault`` to ``path``, brought up to the vault's head: a read-only Vault of
    the view's objects (its head None while nothing has been at ``path``). Only commits not
    derived before are derived, in one write transaction; none when the view is current."""
    parts = split_path(path)
    vid = view_id(vault.id, join(parts))
    view = Vault(vault.store, vid, vault.name, vault.key, vault.cache)
    view.read_only = f"{vault.name} as served to a node that may read only {join(parts)}"
    head = vault.head()
    if head is None or _current(view, head):
        return view
    with vault.store.write() as tx:
        head = vault.head(tx)
        if head is not None:
            _Deriver(vault, view, parts, tx).run(head)
    return view


def _current(view: Vault, head: bytes) -> bool:
    """Whether the view is derived up to the source commit ``head`` already."""
    raw = view.store.get(DERIVED, _key(view.id, head))
    if raw is None:
        return False
    mapped = binascii.hexlify(raw) if raw else None
    return view.head() == mapped and (mapped is None or view.objects().has(mapped))


def _key(vid: str, sha: bytes) -> bytes:
    return bytes.fromhex(vid[1:]) + binascii.unhexlify(sha)


class _Deriver:
    """Derives the commits of a vault's history not mapped yet, parents first, in ``tx``."""

    def __init__(self, vault: Vault, view: Vault, parts: tuple[str, ...], tx: Transaction):
        self.source = vault.objects(tx)
        self.objects: VaultObjects = view.objects(tx)
        self.view = view
        self.parts = parts
        self.path = join(parts)
        self.tx = tx
        self.mapped: dict[bytes, bytes | None] = {}
        self.trees: dict[bytes, bytes | None] = {}  # source tree -> derived tree (this run)
        ident = encode_node_id(view.key.node_id).encode()
        self.ident = ident + b" <" + ident + b">"

    def run(self, head: bytes) -> None:
        for sha in self._unmapped(head):
            self._derive(sha)
        derived = self.mapped[head]
        if derived is None:
            self.tx.delete(refs_ns(self.view.id), BRANCH)
        else:
            self.tx.put(refs_ns(self.view.id), BRANCH, derived)

    def _known(self, sha: bytes) -> bool:
        """Whether ``sha`` is mapped (to a derived commit the view holds, or to none)."""
        raw = self.tx.get(DERIVED, _key(self.view.id, sha))
        if raw is None:
            return False
        mapped = binascii.hexlify(raw) if raw else None
        if mapped is not None and not self._held(mapped):
            return False  # the view lost it (a salvage): derived again, to the same id
        self.mapped[sha] = mapped
        return True

    def _unmapped(self, head: bytes) -> list[bytes]:
        """The commits ``head`` reaches that are not mapped, parents before children."""
        out: list[bytes] = []
        seen: set[bytes] = set()
        stack: list[tuple[bytes, bool]] = [(head, False)]
        while stack:
            sha, parents_done = stack.pop()
            if parents_done:
                out.append(sha)
                continue
            if sha in seen:
                continue
            seen.add(sha)
            if self._known(sha):
                continue
            stack.append((sha, True))
            stack.extend((p, False) for p in self.source.get_commit(sha).parents if p not in seen)
        return out

    def _derive(self, sha: bytes) -> None:
        commit = self.source.get_commit(sha)
        parents: list[bytes] = []
        for parent in commit.parents:
            mapped = self.mapped[parent]
            if mapped is not None and mapped not in parents:
                parents.append(mapped)
        if len(parents) > 1:
            parents = self._reduced(parents)
        tree = self._tree(commit.tree)
        result: bytes | None
        if len(parents) == 1 and self.objects.get_commit(parents[0]).tree == tree:
            result = parents[0]  # nothing changed at the path
        elif not parents and tree is None:
            result = None  # nothing at the path yet
        else:
            result = self._commit(commit, tree, parents)
        self.mapped[sha] = result
        value = binascii.unhexlify(result) if result is not None else b""
        self.tx.put(DERIVED, _key(self.view.id, sha), value)

    def _reduced(self, parents: list[bytes]) -> list[bytes]:
        """The derived parents without those another one descends from (in their order)."""
        from polykey.vaults.graph import is_ancestor
        from polykey.vaults.store import SealedObjectStore

        store = SealedObjectStore(self.objects, shared=True)
        return [p for p in parents if not any(q != p and is_ancestor(store, p, q) for q in parents)]

    def _tree(self, source_tree: bytes) -> bytes | None:
        """The derived tree of a source tree: the way to the path, what is there, and the tags
        of what is there; None when nothing is at the path."""
        if source_tree in self.trees:
            return self.trees[source_tree]
        entry = _lookup(self.source, source_tree, self.parts)
        root: bytes | None = None
        if entry is not None:
            mode, sha = entry
            self._copy(mode, sha)
            for name in reversed(self.parts):
                wrapper = Tree()
                wrapper.add(name.encode("utf-8"), mode, cast(ObjectID, sha))
                sha, mode = self.objects.add(wrapper), DIR_MODE
            root = sha
            tags = try_read_tags(self.source, source_tree) or {}  # a bad tag file: no tags
            prefix = self.path + "/"
            mine = {p: t for p, t in tags.items() if p == self.path or p.startswith(prefix)}
            if mine:
                root = write_tags(self.objects, root, mine)
        self.trees[source_tree] = root
        return root

    def _held(self, sha: bytes) -> bool:
        """Whether the view holds ``sha``: added in this transaction, or in the node file
        (asked without opening the record)."""
        if sha in self.objects.added:
            return True
        return self.view.store.contains(self.objects.ns, binascii.unhexlify(sha))

    def _copy(self, mode: int, sha: bytes) -> None:
        """Copy the object ``sha`` and all it holds from the vault into the view."""
        if self._held(sha):
            return  # a tree there holds all it names already: they landed with it
        if not stat.S_ISDIR(mode):
            self.objects.add_blob(self.source.get_blob_data(sha))
            return
        tree = self.source.get_tree(sha)
        for item in tree.iteritems():
            self._copy(item.mode, item.sha)
        self.objects.add(tree)

    def _commit(self, source: Commit, tree: bytes | None, parents: list[bytes]) -> bytes:
        if tree is None:
            tree = self.objects.add(Tree())
        commit = Commit()
        commit.tree = cast(ObjectID, tree)
        commit.parents = [cast(ObjectID, p) for p in parents]
        # the author's text is free for a writer to fill: kept only when it is a NodeId
        author = source.author if _NODE_IDENT.fullmatch(source.author) else self.ident
        commit.author, commit.committer = author, self.ident
        commit.author_time, commit.commit_time = source.author_time, source.commit_time
        commit.author_timezone = commit.commit_timezone = 0
        commit.encoding = b"UTF-8"
        commit.message = self._message(tree, parents).encode("utf-8") + b"\n"
        signing = self.view.key.signing
        commit.gpgsig = sshsig.sign(signing, commit.raw_without_sig(), GIT_NAMESPACE).encode()
        return self.objects.add(commit)

    def _message(self, tree: bytes, parents: list[bytes]) -> str:
        """What changed under the path, from the derived trees alone."""
        if len(parents) > 1:
            return f"Merge changes to {self.path}."
        old = self.objects.get_commit(parents[0]).tree if parents else None
        changes = sorted(diff_trees(self.objects, old, tree), key=lambda c: c.path)
        if not changes:
            return f"Change tags in {self.path}."
        if len(changes) > MANY:
            return f"Change {len(changes)} secrets in {self.path}."
        verbs = {"add": "add", "delete": "remove"}
        text = "; ".join(f"{verbs.get(c.kind, 'update')} secret {c.path}" for c in changes)
        return text[0].upper() + text[1:] + "."


def _lookup(
    objects: VaultObjects, tree_id: bytes, parts: tuple[str, ...]
) -> tuple[int, bytes] | None:
    mode, sha = DIR_MODE, tree_id
    for part in parts:
        if not stat.S_ISDIR(mode):
            return None
        try:
            mode, sha = objects.get_tree(sha)[part.encode("utf-8")]
        except KeyError:
            return None
    return mode, sha
