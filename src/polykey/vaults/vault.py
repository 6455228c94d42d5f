"""One vault: read secrets at any revision, change them in signed commits, walk the history.

Every change is one commit in one node-file transaction: the blobs, trees, the commit (signed with
the node key in git's SSH signature format) and the branch ref land together or not at all, and
the commit is built on the head read inside that transaction, so concurrent writers never lose
each other's work (a merge names its parents itself). History is read through dulwich over the
vault's sealed objects (vaults/store.py, vaults/graph.py).
"""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from dulwich.objects import Commit, ObjectID, Tree

from polykey.crypto import sshsig
from polykey.errors import NodeDamaged
from polykey.ids import encode_node_id
from polykey.keys.root import RootKey
from polykey.store.nodefile import NodeFile, Transaction
from polykey.vaults import tree as trees
from polykey.vaults.errors import (
    BadTagFile,
    IsADirectory,
    NotADirectory,
    ReadOnlyClone,
    RevisionNotFound,
    SecretExists,
    SecretNotFound,
)
from polykey.vaults.history import Change, diff_trees
from polykey.vaults.objects import ObjectCache, RecordSource, VaultObjects, refs_ns
from polykey.vaults.paths import join, split_path
from polykey.vaults.tags import check_tag, read_tags, try_read_tags, write_tags

if TYPE_CHECKING:
    from polykey.vaults.merge import Conflict
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


@dataclass(frozen=True)
class MergeOutcome:
    kind: str  # "up-to-date", "fast-forward" or "merged"
    head: bytes
    conflicts: tuple[Conflict, ...] = ()


@dataclass
class SecretStat:
    path: str
    size: int
    created: int
    modified: int
    last_commit: str
    tags: list[str] = field(default_factory=list)


class Vault:
    """A vault of one node, bound to the node's key for signing commits."""

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
        return _lookup(objects, tree_id, parts)

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
            entry = _lookup(objects, tree_id, parts)
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

    # --- writing ------------------------------------------------------------------------------

    def commit(
        self,
        build: Callable[[VaultObjects, bytes], list[tuple[tuple[str, ...], trees.Op]]],
        message: str,
        *,
        tags: Callable[[dict[str, list[str]]], dict[str, list[str]]] | None = None,
        tx: Transaction | None = None,
        replace_bad_tags: bool = False,
        parents: list[bytes] | None = None,
    ) -> bytes:
        """One signed commit; ``build`` adds blobs and returns the path operations.

        ``tags`` maps the tags before the change to those after it. A tag file that is not
        valid (a peer sent it) is kept as it is, so no change loses what it holds; a change that
        would add tags to it fails (BadTagFile), unless ``replace_bad_tags`` (an explicit tag
        change): then ``tags({})`` replaces it, and the old file stays in the history.

        ``parents``: the commit's parents in order, held by the vault (a merge names two: by
        git's convention this vault's head first); ``build`` changes the first one's tree.
        The head, when there is one, must be among them: a commit leaves no history behind.
        None: the head read inside the transaction."""
        if tx is not None:
            return self._commit_in(tx, build, message, tags, replace_bad_tags, parents)
        with self.store.write() as own:
            return self._commit_in(own, build, message, tags, replace_bad_tags, parents)

    def _commit_in(
        self,
        tx: Transaction,
        build: Callable[[VaultObjects, bytes], list[tuple[tuple[str, ...], trees.Op]]],
        message: str,
        tags: Callable[[dict[str, list[str]]], dict[str, list[str]]] | None,
        replace_bad_tags: bool = False,
        parents: list[bytes] | None = None,
    ) -> bytes:
        if self.read_only:
            raise ReadOnlyClone(self.read_only)
        objects = self.objects(tx)
        head = self.head(tx)
        if parents is None:
            parents = [head] if head else []
        elif (head is not None and head not in parents) or len(set(parents)) != len(parents):
            raise ValueError("a commit's parents are distinct and include the vault's head")
        bases = [objects.get_commit(p) for p in parents]  # commits the vault holds
        base_tree = bases[0].tree if bases else objects.add(Tree())
        ops = build(objects, base_tree)
        new_tree = trees.apply(objects, base_tree, trees.plan(ops)) if ops else base_tree
        try:
            old_tags = read_tags(objects, base_tree)
        except BadTagFile as bad:  # kept as it is, unless this change is to the tags
            wanted = tags({}) if tags is not None else {}
            if replace_bad_tags:
                new_tree = write_tags(objects, new_tree, wanted)
            elif wanted:  # tags would land in a file that cannot take them: nothing is lost
                raise BadTagFile(
                    bad.detail, hint="Tag any secret of that vault first: that replaces the file."
                ) from None
        else:
            new_tags = tags(old_tags) if tags is not None else old_tags
            new_tags = _carry_tags(new_tags, ops, objects, new_tree)
            if new_tags != old_tags:
                new_tree = write_tags(objects, new_tree, new_tags)
        commit_id = objects.add(self._new_commit(new_tree, parents, message))
        tx.put(self.refs, BRANCH, commit_id)
        return commit_id

    def merge(self, tx: Transaction, theirs: bytes, source: str) -> MergeOutcome:
        """Bring the commit ``theirs`` (its objects already in the vault) into the head, in
        ``tx``: nothing when the head has it, a fast-forward when the head is behind it, else
        a merge commit with both parents (vaults/merge.py settles the conflicts). ``source``
        names where ``theirs`` came from, for the message."""
        from polykey.vaults.merge import merge_trees, supersedes

        ours = self.head(tx)
        store = self.object_store(tx)
        if ours == theirs:
            return MergeOutcome("up-to-date", theirs)
        if ours is None or supersedes(store, theirs, ours):  # (or a twin merge gives way)
            tx.put(self.refs, BRANCH, theirs)
            return MergeOutcome("fast-forward", theirs)
        if supersedes(store, ours, theirs):
            return MergeOutcome("up-to-date", ours)
        objects = self.objects(tx)
        merged = merge_trees(objects, store, ours, theirs)
        lines = [f"Merge {theirs[:8].decode()} from {source}."]
        if merged.conflicts:
            lines.append("")
            lines.extend(c.trailer() for c in merged.conflicts)
        commit_id = objects.add(self._new_commit(merged.tree, [ours, theirs], "\n".join(lines)))
        tx.put(self.refs, BRANCH, commit_id)
        return MergeOutcome("merged", commit_id, tuple(merged.conflicts))

    def _new_commit(self, tree_id: bytes, parents: list[bytes], message: str) -> Commit:
        ident = encode_node_id(self.key.node_id).encode()
        commit = Commit()
        commit.tree = cast(ObjectID, tree_id)
        commit.parents = [cast(ObjectID, p) for p in parents]
        commit.author = commit.committer = ident + b" <" + ident + b">"
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.encoding = b"UTF-8"
        commit.message = message.encode("utf-8") + b"\n"
        signature = sshsig.sign(self.key.signing, commit.raw_without_sig(), GIT_NAMESPACE)
        commit.gpgsig = signature.encode("ascii")
        return commit

    def write(self, path: str, data: bytes, message: str | None = None) -> bytes:
        parts = split_path(path)
        verb = "Update" if self.kind(path) == "secret" else "Add"

        def build(objects: VaultObjects, _: bytes) -> list[tuple[tuple[str, ...], trees.Op]]:
            return [(parts, trees.Put(objects.add_blob(data)))]

        return self.commit(build, message or f"{verb} secret {join(parts)}.")

    def write_many(self, items: list[tuple[str, bytes]], message: str) -> bytes:
        split = [(split_path(p), data) for p, data in items]

        def build(objects: VaultObjects, _: bytes) -> list[tuple[tuple[str, ...], trees.Op]]:
            return [(parts, trees.Put(objects.add_blob(data))) for parts, data in split]

        return self.commit(build, message)

    def remove(
        self, paths: list[str], *, recursive: bool = False, tx: Transaction | None = None
    ) -> bytes:
        split = [split_path(p) for p in paths]
        names = ", ".join(join(p) for p in split)

        def build(objects: VaultObjects, _: bytes) -> list[tuple[tuple[str, ...], trees.Op]]:
            return [(parts, trees.Delete(recursive)) for parts in split]

        noun = "secret" if len(split) == 1 else "secrets"
        return self.commit(build, f"Remove {noun} {names}.", tx=tx)

    def mkdir(self, path: str, *, parents: bool = False) -> bytes:
        parts = split_path(path)
        if not parents and len(parts) > 1 and self.kind(join(parts[:-1])) != "dir":
            raise SecretNotFound(f"{self.name}:{join(parts[:-1])} (use -p to create parents)")
        if self.kind(path) == "dir":
            raise SecretExists(f"{self.name}:{join(parts)}", hint="The directory exists already.")

        def build(objects: VaultObjects, _: bytes) -> list[tuple[tuple[str, ...], trees.Op]]:
            return [(parts, trees.MkDir(parents))]

        return self.commit(build, f"Make directory {join(parts)}.")

    def move_within(self, src: str, dst: str, *, force: bool = False, copy: bool = False) -> bytes:
        """Move or copy a secret or directory inside this vault, in one commit."""
        sparts, dparts = split_path(src), split_path(dst, allow_root=True)
        if dparts[: len(sparts)] == sparts:
            raise NotADirectory(f"cannot move {join(sparts)} into itself")
        moved: list[tuple[str, ...]] = []

        def retag(current: dict[str, list[str]]) -> dict[str, list[str]]:
            return _retagged(current, current, sparts, moved[0])

        def build(objects: VaultObjects, tree_id: bytes) -> list[tuple[tuple[str, ...], trees.Op]]:
            entry = _lookup(objects, tree_id, sparts)
            if entry is None:
                raise SecretNotFound(f"{self.name}:{join(sparts)}")
            target, ops = _destination(objects, tree_id, sparts, dparts, force, self.name)
            moved.append(target)
            ops.extend(_copy_ops(objects, entry, target))
            if not copy:
                ops.append((sparts, trees.Delete(recursive=True)))
            return ops

        verb = "Copy" if copy else "Move"
        where = join(dparts) or "the vault root"
        return self.commit(build, f"{verb} {join(sparts)} to {where}.", tags=retag)

    def set_tags(self, path: str, add: list[str], remove: list[str]) -> bytes:
        parts = split_path(path)
        for t in add + remove:
            check_tag(t)
        if self.kind(path) is None:
            raise SecretNotFound(f"{self.name}:{join(parts)}")
        key = join(parts)

        def retag(current: dict[str, list[str]]) -> dict[str, list[str]]:
            tags = set(current.get(key, [])) | set(add)
            tags -= set(remove)
            out = dict(current)
            if tags:
                out[key] = sorted(tags)
            else:
                out.pop(key, None)
            return out

        words = []
        if add:
            words.append(f"Tag {key} with {', '.join(add)}")
        if remove:
            words.append(f"remove tag {', '.join(remove)} from {key}")
        message = "; ".join(words)
        return self.commit(
            lambda *_: [],
            message[0].upper() + message[1:] + ".",
            tags=retag,
            replace_bad_tags=True,
        )

    def revert(self, rev: str) -> bytes:
        """A new commit whose content is that of ``rev``; history is never rewritten."""
        target = self.resolve(rev)
        if self.read_only:
            raise ReadOnlyClone(self.read_only)
        with self.store.write() as tx:
            objects = self.objects(tx)
            head = self.head(tx)
            old_tree = objects.get_tree(objects.get_commit(target).tree).id
            message = f"Revert to {target[:8].decode()}."
            commit_id = objects.add(self._new_commit(old_tree, [head] if head else [], message))
            tx.put(self.refs, BRANCH, commit_id)
            return commit_id

    def undo(self, rev: str) -> bytes:
        """A new commit that takes back the changes of the commit ``rev`` alone (what git calls
        a revert): each secret it added goes, each it changed or removed comes back as it was
        before. Refused (UndoConflict), changing nothing, when a later commit changed one of
        those secrets again: undoing would lose that later change."""
        from polykey.vaults.errors import UndoConflict

        target = self.resolve(rev)
        commit = self.objects().get_commit(target)
        if len(commit.parents) > 1:
            raise UndoConflict(
                f"{target[:8].decode()} is a merge",
                hint="Undo the commits it brought in one by one, or revert the vault to a "
                "revision before it (`pk vaults revert`).",
            )
        parent_tree = self._tree_of(commit.parents[0]) if commit.parents else None
        changes = diff_trees(self.objects(), parent_tree, commit.tree, "")
        if not changes:
            raise UndoConflict(f"{target[:8].decode()} changed no secret", hint=None)
        short = target[:8].decode()
        first_line = commit.message.decode("utf-8", "replace").strip().splitlines()[0:1]

        def build(objects: VaultObjects, tree_id: bytes) -> list[tuple[tuple[str, ...], trees.Op]]:
            ops: list[tuple[tuple[str, ...], trees.Op]] = []
            later = []
            for change in changes:
                parts = split_path(change.path)
                now = _lookup(objects, tree_id, parts)
                if (now[1] if now else None) != change.new:
                    later.append(change.path)
                    continue
                ops.append((parts, trees.Put(change.old) if change.old else trees.Delete()))
            if later:
                raise UndoConflict(
                    f"a later commit changed {', '.join(later[:3])}"
                    + (f" and {len(later) - 3} more" if len(later) > 3 else ""),
                    hint="Look with `pk vaults log` and `pk secrets history`; edit those by "
                    "hand, or revert the whole vault with `pk vaults revert`.",
                )
            return ops

        what = f": {first_line[0]}" if first_line else ""
        return self.commit(build, f"Undo {short}{what}")

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


def _lookup(
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


def _destination(
    objects: VaultObjects,
    tree_id: bytes,
    sparts: tuple[str, ...],
    dparts: tuple[str, ...],
    force: bool,
    vault_name: str,
) -> tuple[tuple[str, ...], list[tuple[tuple[str, ...], trees.Op]]]:
    """Where a moved or copied entry lands (inside DST when DST is a directory), and the
    operation that clears an existing entry there when --force allows it."""
    goal = dparts
    existing = _lookup(objects, tree_id, goal)
    if existing is not None and stat.S_ISDIR(existing[0]):
        goal = (*dparts, sparts[-1])
        existing = _lookup(objects, tree_id, goal)
    if existing is not None and not force:
        raise SecretExists(f"{vault_name}:{join(goal)}")
    return goal, [(goal, trees.Delete(recursive=True))] if existing is not None else []


def _retagged(
    source: dict[str, list[str]],
    current: dict[str, list[str]],
    sparts: tuple[str, ...],
    target: tuple[str, ...],
) -> dict[str, list[str]]:
    """``current`` without the tags of what was at ``target`` (it is replaced), plus the tags
    of everything under ``sparts`` in ``source``, moved to ``target``."""
    old_prefix, new_prefix = join(sparts), join(target)

    def under(path: str, prefix: str) -> bool:
        return path == prefix or path.startswith(prefix + "/")

    out = {path: tags for path, tags in current.items() if not under(path, new_prefix)}
    for path, tags in source.items():
        if path == old_prefix or path.startswith(old_prefix + "/"):
            out[new_prefix + path[len(old_prefix) :]] = tags
    return out


def _copy_ops(
    objects: VaultObjects, entry: tuple[int, bytes], target: tuple[str, ...]
) -> list[tuple[tuple[str, ...], trees.Op]]:
    if not stat.S_ISDIR(entry[0]):
        return [(target, trees.Put(entry[1]))]
    ops: list[tuple[tuple[str, ...], trees.Op]] = []
    tree = objects.get_tree(entry[1])
    for item in tree.iteritems():
        name = item.path.decode("utf-8")
        if name == trees.DIR_MARKER.decode():
            ops.append((target, trees.MkDir()))
            continue
        ops.extend(_copy_ops(objects, (item.mode, item.sha), (*target, name)))
    return ops


def _touches(objects: VaultObjects, commit: Commit, parts: tuple[str, ...]) -> bool:
    mine = _lookup(objects, commit.tree, parts)
    if not commit.parents:
        return mine is not None
    return any(_lookup(objects, objects.get_commit(p).tree, parts) != mine for p in commit.parents)


def _info(commit_id: bytes, commit: Commit) -> CommitInfo:
    return CommitInfo(
        id=commit_id.decode(),
        author=commit.author.decode("utf-8", "replace"),
        time=commit.commit_time,
        message=commit.message.decode("utf-8", "replace").strip(),
        parents=tuple(p.decode() for p in commit.parents),
        signed=commit.gpgsig is not None,
    )


def _carry_tags(
    tags: dict[str, list[str]],
    ops: list[tuple[tuple[str, ...], trees.Op]],
    objects: VaultObjects,
    new_tree: bytes,
) -> dict[str, list[str]]:
    """Drop the tags of secrets that no longer exist after a commit."""
    if not tags or not any(isinstance(op, trees.Delete) for _, op in ops):
        return tags
    return {
        path: t for path, t in tags.items() if _lookup(objects, new_tree, tuple(path.split("/")))
    }


def transfer(
    src: Vault, src_path: str, dst: Vault, dst_path: str, *, force: bool = False, copy: bool = False
) -> None:
    """Copy or move a secret or directory to another vault: one commit in each, one transaction."""
    sparts, dparts = split_path(src_path), split_path(dst_path, allow_root=True)
    with src.store.write() as tx:
        sobjects = src.objects(tx)
        shead, dhead = src.head(tx), dst.head(tx)
        if shead is None or dhead is None:
            raise NodeDamaged("a vault has no head commit")
        entry = _lookup(sobjects, sobjects.get_commit(shead).tree, sparts)
        if entry is None:
            raise SecretNotFound(f"{src.name}:{join(sparts)}")
        src_tags = try_read_tags(sobjects, sobjects.get_commit(shead).tree) or {}
        target: list[tuple[str, ...]] = []

        def build(objects: VaultObjects, tree_id: bytes) -> list[tuple[tuple[str, ...], trees.Op]]:
            goal, ops = _destination(objects, tree_id, sparts, dparts, force, dst.name)
            target.append(goal)
            for parts, op in _copy_ops(sobjects, entry, goal):
                if isinstance(op, trees.Put):  # blobs are per vault: copy the content across
                    op = trees.Put(objects.add_blob(sobjects.get_blob_data(op.blob)))  # noqa: PLW2901
                ops.append((parts, op))
            return ops

        def carry(current: dict[str, list[str]]) -> dict[str, list[str]]:
            return _retagged(src_tags, current, sparts, target[0])

        verb = "Copy" if copy else "Move"
        where = join(dparts) or "the vault root"
        dst.commit(build, f"{verb} {src.name}:{join(sparts)} to {where}.", tags=carry, tx=tx)
        if not copy:
            src.commit(
                lambda *_: [(sparts, trees.Delete(recursive=True))],
                f"Move {join(sparts)} to vault {dst.name}.",
                tx=tx,
            )
