"""One vault: read secrets at any revision, change them in signed commits, walk the history.

Every change is one commit in one node-file transaction: the blobs, trees, the commit (signed with
the node key in git's SSH signature format) and the branch ref land together or not at all, and
the commit is built on the head read inside that transaction, so concurrent writers never lose
each other's work (a merge names its parents itself). History is read through dulwich over the
vault's sealed objects (vaults/store.py, vaults/graph.py).

Here :class:`Vault`: merges and the changes a user makes (write, remove, mkdir, move, tags,
revert, undo), each one commit through :class:`~polykey.vaults.writer.VaultWriter`; and
:func:`transfer` between two vaults. Reading is vaults/reader.py.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polykey.errors import NodeDamaged
from polykey.store.nodefile import Transaction
from polykey.vaults import tree as trees
from polykey.vaults.errors import (
    NotADirectory,
    ReadOnlyClone,
    SecretExists,
    SecretNotFound,
)
from polykey.vaults.history import diff_trees
from polykey.vaults.objects import VaultObjects
from polykey.vaults.paths import join, split_path
from polykey.vaults.reader import BRANCH, GIT_NAMESPACE, entry_at
from polykey.vaults.tags import check_tag, try_read_tags
from polykey.vaults.writer import VaultWriter

if TYPE_CHECKING:
    from polykey.vaults.merge import Conflict

__all__ = ["BRANCH", "GIT_NAMESPACE", "MergeOutcome", "Vault", "transfer"]


@dataclass(frozen=True)
class MergeOutcome:
    kind: str  # "up-to-date", "fast-forward" or "merged"
    head: bytes
    conflicts: tuple[Conflict, ...] = ()


class Vault(VaultWriter):
    """A vault of one node: what a user and a peer change in it."""

    # --- merging ----------------------------------------------------------------------------

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

    # --- changes -----------------------------------------------------------------------------

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
            entry = entry_at(objects, tree_id, sparts)
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
                now = entry_at(objects, tree_id, parts)
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


# --- helpers ----------------------------------------------------------------------------------


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
    existing = entry_at(objects, tree_id, goal)
    if existing is not None and stat.S_ISDIR(existing[0]):
        goal = (*dparts, sparts[-1])
        existing = entry_at(objects, tree_id, goal)
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
        entry = entry_at(sobjects, sobjects.get_commit(shead).tree, sparts)
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
