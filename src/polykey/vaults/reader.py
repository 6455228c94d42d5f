"""One vault, read: revisions, secrets at any revision, listings, tags and the history.

:class:`VaultReader` is everything of a vault that needs no key and writes nothing: it resolves
revisions (HEAD, HEAD~N, an abbreviated id), reads secrets and folders at any of them, and
walks the history through dulwich over the vault's sealed objects (vaults/store.py,
vaults/graph.py). :class:`~polykey.vaults.vault.Vault` builds on it: signed commits.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dulwich.objects import Commit

from polykey.errors import NodeDamaged
from polykey.keys.root import RootKey
from polykey.store.nodefile import NodeFile
from polykey.vaults.errors import IsADirectory, RevisionNotFound, SecretNotFound
from polykey.vaults.history import Change, diff_trees
from polykey.vaults.objects import ObjectCache, RecordSource, VaultObjects, refs_ns
from polykey.vaults.paths import join, split_path
from polykey.vaults.tags import read_tags, try_read_tags

if TYPE_CHECKING:
    from polykey.vaults.repo import VaultRepo
    from polykey.vaults.store import SealedObjectStore


BRANCH = b"refs/heads/main"
GIT_NAMESPACE = "git"
_REV = re.compile(r"(?P<base>HEAD|[0-9a-f]{4,40})(?:~(?P<back>[0-9]{1,6}))?")


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str  # "secret" or "dir"
    blob: bytes | None = None


@dataclass(frozen=True)
class CommitInfo:
    id: str
    author: str
    time: int
    message: str
    parents: tuple[str, ...]
    signed: bool


@dataclass
class SecretStat:
    path: str
    size: int
    created: int
    modified: int
    last_commit: str
    tags: list[str] = field(default_factory=list)


class VaultReader:
    """A vault of one node, read; :class:`VaultWriter` adds its commits."""

    def __init__(
        self, store: NodeFile, vault_id: str, name: str, key: RootKey, cache: ObjectCache
    ) -> None:
        self.store = store
        self.id = vault_id
        self.name = name
        self.key = key
        self.cache = cache
        self.refs = refs_ns(vault_id)
        self.read_only: str | None = None  # why this node may not commit here (Vaults.open)

    def __repr__(self) -> str:
        return f"Vault({self.name!r}, {self.id})"

    def objects(self, source: RecordSource | None = None) -> VaultObjects:
        return VaultObjects(
            source if source is not None else self.store, self.id, self.cache, self.name
        )

    def object_store(
        self, source: RecordSource | None = None, *, shared: bool = False
    ) -> SealedObjectStore:
        """The vault's objects as a dulwich object store (adding needs ``source`` to be a write
        transaction); ``shared``: see SealedObjectStore."""
        from polykey.vaults.store import SealedObjectStore

        return SealedObjectStore(self.objects(source), shared=shared)

    def repo(
        self,
        source: RecordSource | None = None,
        *,
        symbolic_head: bool = True,
        shared: bool = False,
    ) -> VaultRepo:
        """The vault as a dulwich repository: its object store and its one branch."""
        from polykey.vaults.repo import VaultRepo

        return VaultRepo(self.objects(source), symbolic_head=symbolic_head, shared=shared)

    # --- revisions ----------------------------------------------------------------------------

    def head(self, source: RecordSource | None = None) -> bytes | None:
        ref = (source if source is not None else self.store).get(self.refs, BRANCH)
        return ref if ref else None

    def resolve(self, rev: str | None) -> bytes:
        """A commit id from HEAD, HEAD~N, a full or abbreviated id (reachable from HEAD)."""
        head = self.head()
        if head is None:
            raise RevisionNotFound(f"{rev or 'HEAD'} (the vault has no commits)")
        if rev is None:
            return head
        match = _REV.fullmatch(rev.strip())
        if match is None:
            raise RevisionNotFound(repr(rev[:80]))
        base = match["base"]
        commit_id = head
        if base != "HEAD":
            found = [c.id for c in self.walk(head) if c.id.startswith(base.encode())]
            if not found:
                raise RevisionNotFound(rev)
            if len(found) > 1:
                raise RevisionNotFound(f"{rev} is ambiguous; give more characters")
            commit_id = found[0]
        objects = self.objects()
        for _ in range(int(match["back"] or 0)):
            parents = objects.get_commit(commit_id).parents
            if not parents:
                raise RevisionNotFound(f"{rev} goes back past the first commit")
            commit_id = parents[0]
        return commit_id

    def walk(self, head: bytes | None = None) -> Iterator[Commit]:
        """The commits reachable from ``head`` (default: HEAD), newest first."""
        from polykey.vaults.graph import walk

        head = head if head is not None else self.head()
        if head is None:
            return iter(())
        return walk(self.object_store(), head)

    def _tree_of(self, commit_id: bytes, objects: VaultObjects | None = None) -> bytes:
        tree: bytes = (objects or self.objects()).get_commit(commit_id).tree
        return tree

    # --- reading ------------------------------------------------------------------------------

    def lookup(
        self, parts: tuple[str, ...], rev: str | None = None, objects: VaultObjects | None = None
    ) -> tuple[int, bytes] | None:
        """(mode, id) of the entry at ``parts``, or None."""
        objects = objects or self.objects()
        tree_id = self._tree_of(self.resolve(rev), objects)
        return entry_at(objects, tree_id, parts)

    def read(self, path: str, rev: str | None = None) -> bytes:
        return b"".join(self.read_parts(path, rev))

    def read_parts(self, path: str, rev: str | None = None) -> Iterator[bytes]:
        """A secret's content in parts, for streaming large secrets out."""
        parts = split_path(path)
        objects = self.objects()
        entry = self.lookup(parts, rev, objects)
        if entry is None:
            raise SecretNotFound(f"{self.name}:{join(parts)}")
        if stat.S_ISDIR(entry[0]):
            raise IsADirectory(f"{self.name}:{join(parts)}")
        return objects.iter_blob(entry[1])

    def kind(self, path: str, rev: str | None = None) -> str | None:
        """'secret', 'dir', or None when nothing is there."""
        parts = split_path(path, allow_root=True)
        if not parts:
            return "dir"
        entry = self.lookup(parts, rev)
        if entry is None:
            return None
        return "dir" if stat.S_ISDIR(entry[0]) else "secret"

    def ls(self, path: str = "", *, recursive: bool = False, rev: str | None = None) -> list[Entry]:
        parts = split_path(path, allow_root=True)
        objects = self.objects()
        tree_id = self._tree_of(self.resolve(rev), objects)
        if parts:
            entry = entry_at(objects, tree_id, parts)
            if entry is None:
                raise SecretNotFound(f"{self.name}:{join(parts)}")
            if not stat.S_ISDIR(entry[0]):
                return [Entry(join(parts), "secret", entry[1])]
            tree_id = entry[1]
        prefix = join(parts) + "/" if parts else ""
        return list(_list(objects, tree_id, prefix, recursive, top=not parts))

    def tags(self, rev: str | None = None) -> dict[str, list[str]]:
        """Secret path -> tags, as kept in the vault; BadTagFile when its tag file is bad."""
        objects = self.objects()
        return read_tags(objects, self._tree_of(self.resolve(rev), objects))

    # --- history ------------------------------------------------------------------------------

    def log(self, limit: int | None = None, path: str | None = None) -> list[CommitInfo]:
        head = self.head()
        if head is None:
            return []
        parts = split_path(path) if path else None
        objects = self.objects()
        out: list[CommitInfo] = []
        for commit in self.walk(head):
            if parts is not None and not _touches(objects, commit, parts):
                continue
            out.append(_info(commit.id, commit))
            if limit is not None and len(out) >= limit:
                break
        return out

    def stat(self, path: str) -> SecretStat:
        parts = split_path(path)
        objects = self.objects()
        entry = self.lookup(parts, None, objects)
        if entry is None:
            raise SecretNotFound(f"{self.name}:{join(parts)}")
        if stat.S_ISDIR(entry[0]):
            raise IsADirectory(f"{self.name}:{join(parts)}")
        history = self.log(path=path)
        if not history:
            raise NodeDamaged(f"no commit of {self.name} adds {join(parts)}")
        return SecretStat(
            path=join(parts),
            size=objects.blob_size(entry[1]),
            created=history[-1].time,
            modified=history[0].time,
            last_commit=history[0].id,
            tags=(self._tags_or_none() or {}).get(join(parts), []),
        )

    def _tags_or_none(self) -> dict[str, list[str]] | None:
        """The tags at HEAD, or None when the vault's tag file is not valid."""
        objects = self.objects()
        return try_read_tags(objects, self._tree_of(self.resolve(None), objects))

    def diff(self, rev1: str, rev2: str | None = None) -> list[Change]:
        objects = self.objects()
        t1 = self._tree_of(self.resolve(rev1), objects)
        t2 = self._tree_of(self.resolve(rev2), objects)
        return sorted(diff_trees(objects, t1, t2, ""), key=lambda c: c.path)

    def read_blob(self, blob: bytes) -> bytes:
        return self.objects().get_blob_data(blob)


# --- helpers ----------------------------------------------------------------------------------


def entry_at(
    objects: VaultObjects, tree_id: bytes, parts: tuple[str, ...]
) -> tuple[int, bytes] | None:
    mode, sha = stat.S_IFDIR, tree_id
    for part in parts:
        if not stat.S_ISDIR(mode):
            return None
        tree = objects.get_tree(sha)
        try:
            mode, sha = tree[part.encode("utf-8")]
        except KeyError:
            return None
    return mode, sha


def _list(
    objects: VaultObjects, tree_id: bytes, prefix: str, recursive: bool, top: bool
) -> Iterator[Entry]:
    for item in objects.get_tree(tree_id).iteritems():
        name = item.path.decode("utf-8", "replace")
        if name.startswith(".polykey"):
            continue
        path = prefix + name
        if stat.S_ISDIR(item.mode):
            yield Entry(path, "dir")
            if recursive:
                yield from _list(objects, item.sha, path + "/", True, False)
        else:
            yield Entry(path, "secret", item.sha)


def _touches(objects: VaultObjects, commit: Commit, parts: tuple[str, ...]) -> bool:
    mine = entry_at(objects, commit.tree, parts)
    if not commit.parents:
        return mine is not None
    return any(entry_at(objects, objects.get_commit(p).tree, parts) != mine for p in commit.parents)


def _info(commit_id: bytes, commit: Commit) -> CommitInfo:
    return CommitInfo(
        id=commit_id.decode(),
        author=commit.author.decode("utf-8", "replace"),
        time=commit.commit_time,
        message=commit.message.decode("utf-8", "replace").strip(),
        parents=tuple(p.decode() for p in commit.parents),
        signed=commit.gpgsig is not None,
    )
