"""One vault's signed commits: each built on the head read inside its transaction.

:class:`VaultWriter` adds to :class:`~polykey.vaults.reader.VaultReader` the one way a vault
changes: :meth:`VaultWriter.commit` applies path operations to the tree of the first parent,
keeps the tag file true to what still exists, signs the commit with the node key (git's SSH
signature format, namespace ``git``) and moves the branch, all in one node-file transaction,
so concurrent writers never lose each other's work (a merge names its parents itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from dulwich.objects import Commit, ObjectID, Tree

from polykey.crypto import sshsig
from polykey.ids import encode_node_id
from polykey.store.nodefile import Transaction
from polykey.vaults import tree as trees
from polykey.vaults.errors import BadTagFile, ReadOnlyClone
from polykey.vaults.objects import VaultObjects
from polykey.vaults.reader import BRANCH, GIT_NAMESPACE, VaultReader, entry_at
from polykey.vaults.tags import read_tags, write_tags


class VaultWriter(VaultReader):
    """A vault of one node, bound to the node's key for signing commits; :class:`Vault` adds
    the changes a user makes and merges."""

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
        path: t for path, t in tags.items() if entry_at(objects, new_tree, tuple(path.split("/")))
    }
