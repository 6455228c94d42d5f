"""Checks on what another node sends, before any of it lands: a fetch reply's shape, each
object's id computed here from its content, types, names, signatures, depth and size.

Everything a peer sends is untrusted: trees may hold only secrets and directories with valid
names; every new commit must be signed (git's SSH signature, namespace "git") by a node allowed
to write. Only then do the objects and the ref land (``land``), in one transaction; a refused
update leaves the local vault exactly as it was. The client (sync/client.py) and the server
(sync/server.py, and the git server) use the same checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, overload

from dulwich.objects import Blob, Commit, Tree

from polykey.crypto import sshsig
from polykey.errors import NodeDamaged, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.store.nodefile import Transaction
from polykey.sync.intake import (
    DIR_MODE,
    FILE_MODE,
    MAX_OBJECT_BYTES,
    TYPES,
    Intake,
    Parsed,
    Received,
    ReceivedCommit,
    ReceivedTree,
    UpdateRefused,
    folded,
    parse_object,
)
from polykey.vaults.errors import BadTagFile, BrokenHistory
from polykey.vaults.objects import VaultObjects, objects_ns, refs_ns
from polykey.vaults.tags import (
    MAX_TAGS_BYTES,
    TAGS_FILE,
    TOO_LARGE,
    parse_tags,
    tag_blob_problem,
)
from polykey.vaults.tree import DIR_MARKER
from polykey.vaults.vault import BRANCH, GIT_NAMESPACE

__all__ = [  # with what sync/intake.py holds, named here as before
    "MAX_DEPTH",
    "MAX_OBJECT_BYTES",
    "MAX_PATHS",
    "TYPES",
    "Intake",
    "ReceivedTree",
    "TreeStats",
    "UpdateRefused",
    "fetch_reply",
    "land",
    "land_objects",
    "local_tree_stats",
    "parse_object",
    "validate",
    "writer_ids",
    "writers",
]

MAX_DEPTH = 64

MAX_PATHS = 1_000_000  # secrets and folders one commit's tree may expand to
_HEX40 = re.compile(rb"[0-9a-f]{40}")


def fetch_reply(reply: Any, wanted: str) -> tuple[dict[str, str], bytes, list[bytes]]:
    """The vault, head and objects of a fetch reply, after checking their shapes and that the
    reply is for the vault asked for (by id or name): anything else is refused."""
    if not isinstance(reply, dict):
        raise UpdateRefused("the other node sent a malformed reply")
    vault, head, objects = reply.get("vault"), reply.get("head"), reply.get("objects")
    if not (
        isinstance(vault, dict)
        and isinstance(vault.get("id"), str)
        and isinstance(vault.get("name"), str)
    ):
        raise UpdateRefused("the other node's reply names no vault")
    if wanted not in (vault["id"], vault["name"]):
        raise UpdateRefused(
            f"asked for vault {wanted[:80]!r}, the other node answered with another vault"
        )
    if not re.fullmatch(r"v[0-9a-v]{26}", vault["id"]):
        raise UpdateRefused("the other node's reply names a vault id of the wrong form")
    if not isinstance(head, str) or not _HEX40.fullmatch(head.encode()):
        raise UpdateRefused("the other node's reply has no valid head commit id")
    if not isinstance(objects, list) or not all(isinstance(o, bytes) for o in objects):
        raise UpdateRefused("the other node's reply carries malformed objects")
    if not isinstance(reply.get("writers", []), list):
        raise UpdateRefused("the other node's reply has a malformed list of writers")
    return {"id": vault["id"], "name": vault["name"]}, head.encode(), objects


def writer_ids(reply: dict[str, Any]) -> str:
    """The writers the origin named, as NodeIds separated by spaces, kept with the clone (to
    verify its history later, as `pk export git` does)."""
    return " ".join(sorted(encode_node_id(NodeId(w)) for w in writers(reply)))


def writers(reply: dict[str, Any]) -> set[bytes]:
    """The nodes the origin says may write its vault (itself and those it granted push)."""
    out = set()
    for text in reply.get("writers", []):
        try:
            out.add(bytes(decode_node_id(str(text))))
        except PolykeyError:
            continue
    return out


def land(tx: Transaction, vault_id: str, objects: Mapping[bytes, bytes], head: bytes) -> None:
    """Write checked objects and the new head, inside the caller's transaction."""
    land_objects(tx, vault_id, objects)
    tx.put(refs_ns(vault_id), BRANCH, head)


def land_objects(tx: Transaction, vault_id: str, objects: Mapping[bytes, bytes]) -> None:
    """Write checked objects (no ref moves: a merge decides the head after). Spooled ones are
    read back one at a time; the transaction writes them as they come (store/transaction.py),
    so landing holds a few objects, not all."""
    ns = objects_ns(vault_id)
    for sha in objects:
        tx.put(ns, bytes.fromhex(sha.decode()), objects[sha])


TreeStats = Callable[[bytes], tuple[int, int]]  # a local tree's id -> (height, paths)


@overload
def validate(
    received: list[Any],
    head: bytes,
    known: Callable[[bytes], bool],
    signers: set[bytes],
    local_stats: TreeStats | None = None,
    *,
    local: VaultObjects | None = None,
    retired: Mapping[bytes, int] | None = None,
) -> dict[bytes, bytes]: ...


@overload
def validate(
    received: Intake,
    head: bytes,
    known: Callable[[bytes], bool],
    signers: set[bytes],
    local_stats: TreeStats | None = None,
    *,
    local: VaultObjects | None = None,
    retired: Mapping[bytes, int] | None = None,
) -> Received: ...


def validate(
    received: list[Any] | Intake,
    head: bytes,
    known: Callable[[bytes], bool],
    signers: set[bytes],
    local_stats: TreeStats | None = None,
    *,
    local: VaultObjects | None = None,
    retired: Mapping[bytes, int] | None = None,
) -> dict[bytes, bytes] | Received:
    """Check a peer's objects (a list, or an ``Intake`` they were fed to as they came); return
    those the new head reaches, by id (hex), or raise UpdateRefused (for an Intake: as
    ``Received``, large blobs read back from its spool when asked for).

    Every object a received one names must be present (received, or held: ``known``) and of
    the type its place says (a commit's tree a tree, its parents commits, a file a blob, a
    folder a tree), whether it was received or the vault holds it: ``local`` is the vault's
    objects, asked the type of those it holds (without it, a received object may not name a
    held one). ``local_stats`` measures trees the vault already holds that new trees name
    (see :func:`local_tree_stats`; by default, those of ``local``). Reserved files are
    checked too: `.polykey-tags` only at a commit's root, a file of valid tags (vaults/tags.py);
    `.polykey-dir` an empty file. ``retired``: keys renewed away from (trust/rotation.py)
    and the last second whose commits by them are taken."""
    if isinstance(received, Intake):
        intake = received
    else:
        intake = Intake()
        try:
            for raw in received:
                intake._add(raw)  # the first problem is raised at once
        except UpdateRefused:
            intake.close()
            raise
    intake.finish()  # every signature verified
    if intake.problem is not None:
        raise intake.problem
    objects, parsed, signed = intake.objects, intake.parsed, intake.signed

    def kind(sha: bytes) -> int | None:
        """The type of a received or held object; None when it is neither."""
        found = objects.kind(sha)
        if found is not None:
            return found
        if not known(sha):
            return None
        if local is None:
            raise UpdateRefused(
                f"object {sha.decode()} is held here, but its type cannot be checked"
            )
        return _held_kind(local, sha)

    head_kind = kind(head)
    if head_kind is None:
        raise UpdateRefused("the new head is missing")
    if head_kind != Commit.type_num:
        raise UpdateRefused(f"the new head {head.decode()} is a {_name(head_kind)}, not a commit")
    subtrees: dict[bytes, list[bytes]] = {}
    entries_ok: set[tuple[bytes, int, bytes]] = set()  # entries already checked in other trees
    for sha, obj in parsed.items():
        if isinstance(obj, ReceivedCommit):
            _check_commit(sha, obj, kind, signers, signed, retired or {})
        else:
            subtrees[sha] = _check_tree(sha, obj, kind, parsed, local, entries_ok)
    reached = _reached(head, objects, parsed)
    commits = [o for sha, o in parsed.items() if sha in reached and isinstance(o, ReceivedCommit)]
    roots = [c.tree for c in commits if c.tree in subtrees]
    sizes = {sha: len(o) for sha, o in parsed.items() if isinstance(o, ReceivedTree)}
    if local_stats is None and local is not None:
        local_stats = local_tree_stats(local)
    _check_depth(subtrees, roots, sizes, local_stats or (lambda _sha: (0, 0)))
    _check_tag_files(commits, objects, parsed, local)
    kept = objects if len(reached) == len(objects) else objects.only(reached)
    return kept if isinstance(received, Intake) else dict(kept.items())


def _commit_time(payload: bytes) -> float:
    """The committer's time of a commit's bytes (infinite when it has none to read)."""
    for line in payload.split(b"\n\n", 1)[0].split(b"\n"):
        if line.startswith(b"committer "):
            parts = line.rsplit(b" ", 2)
            if len(parts) == 3 and parts[1].isdigit():
                return int(parts[1])
    return float("inf")


_UNCHECKED = b""  # a commit whose signature an Intake did not verify
_NAMES = {Commit.type_num: "commit", Tree.type_num: "tree", Blob.type_num: "blob"}
EMPTY_BLOB = Blob.from_string(b"").id


def _name(kind: int) -> str:
    return _NAMES.get(kind, "object of an unknown type")


class _Memo:
    """What the checks learnt of one node's held objects, kept with the node's object cache
    (so two nodes in one process share nothing): the type of held objects by (vault id, object
    id), and (height, paths) of held trees by id. Objects never change, so entries never go
    stale; each map is bounded and simply cleared when full."""

    KINDS_MAX = 200_000
    STATS_MAX = 500_000

    def __init__(self) -> None:
        self.kinds: dict[tuple[str, bytes], int] = {}
        self.stats: dict[bytes, tuple[int, int]] = {}


def _memo(objects: VaultObjects) -> _Memo:
    return objects.cache.memo("sync checks", _Memo)


def _held_kind(local: VaultObjects, sha: bytes) -> int | None:
    kinds = _memo(local).kinds
    key = (local.vault_id, sha)
    found = kinds.get(key)
    if found is None:
        found = local.kind(sha)
        if found is None:
            return None
        if len(kinds) > _Memo.KINDS_MAX:
            kinds.clear()
        kinds[key] = found
    return found


def _reached(head: bytes, objects: Received, parsed: dict[bytes, Parsed]) -> set[bytes]:
    """The received objects the new head reaches (the rest are not kept). The ids a tree
    names are taken in a set at once; only the commits and trees among them are visited."""
    named = {head}  # every id reached, received or not
    todo = [head]
    while todo:
        obj = parsed.get(todo.pop())
        if isinstance(obj, ReceivedCommit):
            fresh = {obj.tree, *obj.parents}.difference(named)
        elif obj is not None:
            fresh = set(obj.items).difference(named)
        else:
            continue
        named |= fresh
        todo.extend(fresh)
    return {sha for sha in named if sha in objects}


def _check_tree(
    sha: bytes,
    tree: ReceivedTree,
    kind: Callable[[bytes], int | None],
    parsed: dict[bytes, Parsed],
    local: VaultObjects | None,
    entries_ok: set[tuple[bytes, int, bytes]],
) -> list[bytes]:
    """Check one received tree's entries; return the ids of its folders. An entry (name, mode,
    id) checked in another tree of this update is not checked again, but for this tree's own
    rule: no two names equal once folded (nor one name twice). The names were judged as the
    tree came (``ReceivedTree.names_ok``); a tree with a bad one is checked entry by entry,
    for the first problem."""
    entries = tree.entries
    if not tree.names_ok:
        return _check_tree_in_order(sha, tree, kind, parsed, local, entries_ok)
    # (its names are distinct: so are its entries) in the tree's own order
    for entry in [e for e in entries if e not in entries_ok]:
        _check_entry(sha, entry, kind, parsed, local)
        entries_ok.add(entry)
    return tree.dirs


def _check_tree_in_order(
    sha: bytes,
    tree: ReceivedTree,
    kind: Callable[[bytes], int | None],
    parsed: dict[bytes, Parsed],
    local: VaultObjects | None,
    entries_ok: set[tuple[bytes, int, bytes]],
) -> list[bytes]:
    """``_check_tree``, one entry after the other (its names and then its object)."""
    seen: set[str] = set()
    dirs: list[bytes] = []
    for entry in tree.entries:  # the tree's own order: no sorting needed
        path, mode, item = entry
        key = folded(path, mode)
        if key is None:
            _refuse_entry(sha, mode)
        if key in seen:
            if sum(1 for e in tree.entries if e[0] == path) > 1:
                raise UpdateRefused(f"tree {sha.decode()} holds one name twice")
            raise UpdateRefused(f"tree {sha.decode()} holds names that differ by case only")
        seen.add(key)
        if mode == DIR_MODE:
            dirs.append(item)
        if entry in entries_ok:
            continue
        _check_entry(sha, entry, kind, parsed, local)
        entries_ok.add(entry)
    return dirs


def _check_entry(
    sha: bytes,
    entry: tuple[bytes, int, bytes],
    kind: Callable[[bytes], int | None],
    parsed: dict[bytes, Parsed],
    local: VaultObjects | None,
) -> None:
    """The object one entry (of valid name and mode) of the tree ``sha`` names: present, of
    the type its mode says, and no reserved file where it may not be."""
    path, mode, item = entry
    is_dir = mode == DIR_MODE
    found = kind(item)
    if found is None:
        raise UpdateRefused(f"tree {sha.decode()} names a missing object")
    if found != _KIND[mode]:
        raise UpdateRefused(
            f"tree {sha.decode()} names {item.decode()} as the "
            f"{'folder' if is_dir else 'file'} {path.decode()[:80]!r}, "
            f"but that object is a {_name(found)}"
        )
    if path == TAGS_FILE and is_dir:
        raise UpdateRefused(f"tree {sha.decode()}: its .polykey-tags is a folder")
    if path == DIR_MARKER and (is_dir or item != EMPTY_BLOB):
        raise UpdateRefused(f"tree {sha.decode()}: its .polykey-dir is not an empty file")
    if is_dir:
        folder: Parsed | Tree | None = parsed.get(item)
        if folder is None and local is not None:
            folder = _held_tree(local, item)
        if (
            folder.tags is not None
            if isinstance(folder, ReceivedTree)
            else isinstance(folder, Tree) and TAGS_FILE in folder
        ):
            raise UpdateRefused(
                f"tree {sha.decode()}: its folder {path.decode()[:80]!r} holds a "
                ".polykey-tags, which is kept only at the root"
            )


def _held_tree(local: VaultObjects, sha: bytes) -> Tree:
    try:
        return local.get_tree(sha)
    except (NodeDamaged, BrokenHistory):
        raise UpdateRefused(f"a folder names {sha.decode()}, which is no tree here") from None


def _check_tag_files(
    commits: list[ReceivedCommit],
    objects: Received,
    parsed: dict[bytes, Parsed],
    local: VaultObjects | None,
) -> None:
    """The tag file at the root of each new commit, received or held, must be a valid one."""
    done: set[bytes] = set()  # roots looked at
    checked: set[bytes] = set()  # tag files checked
    for commit in commits:
        if commit.tree in done:
            continue
        done.add(commit.tree)
        root: Parsed | Tree | None = parsed.get(commit.tree)
        if root is None and local is not None:
            root = _held_tree(local, commit.tree)
        if isinstance(root, ReceivedTree) and root.tags is not None:
            mode, sha = root.tags
        elif isinstance(root, Tree) and TAGS_FILE in root:
            mode, sha = root[TAGS_FILE]
        else:
            continue
        where = f"commit {commit.id.decode()}: its .polykey-tags"
        if mode != FILE_MODE:
            raise UpdateRefused(f"{where} is a folder")
        if sha in checked:
            continue
        checked.add(sha)
        try:
            found = objects.kind(sha)
            if found is not None:
                if found != Blob.type_num:
                    raise UpdateRefused(f"{where} is a {_name(found)}, not a file")
                if objects.size(sha) - 1 > MAX_TAGS_BYTES:
                    raise BadTagFile(TOO_LARGE)
                parse_tags(objects[sha][1:])
            elif local is not None:
                problem = tag_blob_problem(local, sha)
                if problem is not None:
                    raise BadTagFile(problem)
        except BadTagFile as exc:
            raise UpdateRefused(f"{where} {exc.detail}") from None
        except (NodeDamaged, BrokenHistory):
            raise UpdateRefused(f"{where} is not a file held here") from None


_KIND = {FILE_MODE: Blob.type_num, DIR_MODE: Tree.type_num}  # what a tree entry's mode names


def _refuse_entry(tree: bytes, mode: int) -> NoReturn:
    if mode not in (FILE_MODE, DIR_MODE):
        raise UpdateRefused(f"tree {tree.decode()} holds a link, submodule or odd mode")
    raise UpdateRefused(f"tree {tree.decode()} holds a forbidden name")


def _check_depth(
    subtrees: dict[bytes, list[bytes]],
    roots: list[bytes],
    sizes: dict[bytes, int],
    local_stats: TreeStats,
) -> None:
    """Refuse folders nested deeper than MAX_DEPTH below a commit's tree, and trees that expand
    to more than MAX_PATHS paths (a tree bomb: one folder named many times), visiting each
    received tree once. A tree held locally counts as what it holds (``local_stats``), so that
    new trees naming a large local tree many times are measured too."""
    height: dict[bytes, int] = {}
    paths: dict[bytes, int] = {}
    for root in roots:
        stack: list[tuple[bytes, bool]] = [(root, False)]
        while stack:
            tree_id, children_done = stack.pop()
            if tree_id in height:
                continue
            kids = subtrees.get(tree_id)
            if kids is None:  # held locally
                height[tree_id], paths[tree_id] = local_stats(tree_id)
            elif children_done:
                height[tree_id] = h = 1 + max((height[k] for k in kids), default=-1)
                if h > MAX_DEPTH:
                    raise UpdateRefused("a tree is nested too deep")
                paths[tree_id] = n = sizes[tree_id] + sum(paths[k] for k in kids)
                if n > MAX_PATHS:
                    raise UpdateRefused(f"a tree expands to more than {MAX_PATHS:,} paths")
            else:
                stack.append((tree_id, True))
                stack.extend((k, False) for k in kids if k not in height)


def local_tree_stats(objects: VaultObjects) -> TreeStats:
    """Measure trees a vault holds (height, paths), reading each distinct tree once per node (a
    tree's content fixes both, so the figures are shared by the node's vaults)."""
    memo = _memo(objects).stats

    def stats(root: bytes) -> tuple[int, int]:
        known = memo.get(root)
        if known is not None:
            return known
        done: dict[bytes, tuple[int, int]] = {}  # this call's own results: safe from a clear
        stack: list[tuple[bytes, bool]] = [(root, False)]
        kids_of: dict[bytes, list[bytes]] = {}
        size_of: dict[bytes, int] = {}
        while stack:
            tree_id, children_done = stack.pop()
            if tree_id in done:
                continue
            if children_done:  # each kid is in `done` by now: measured, or copied below
                kids = [done[k] for k in kids_of.pop(tree_id)]
                height = 1 + max((k[0] for k in kids), default=-1)
                count = size_of.pop(tree_id) + sum(k[1] for k in kids)
                done[tree_id] = (height, min(count, MAX_PATHS + 1))
                continue
            tree = _held_tree(objects, tree_id)  # a held tree naming a blob as a folder
            kids_ids = [bytes(i.sha) for i in tree.iteritems() if i.mode == DIR_MODE]
            kids_of[tree_id], size_of[tree_id] = kids_ids, len(tree)
            stack.append((tree_id, True))
            for k in kids_ids:
                cached = done.get(k) or memo.get(k)
                if cached is None:
                    stack.append((k, False))
                else:
                    done[k] = cached  # kept here: another thread may clear the cache
        if len(memo) > _Memo.STATS_MAX:
            memo.clear()
        memo.update(done)
        return done[root]

    return stats


def _check_commit(
    sha: bytes,
    commit: ReceivedCommit,
    kind: Callable[[bytes], int | None],
    signers: set[bytes],
    signed: dict[bytes, bytes | None],
    retired: Mapping[bytes, int],
) -> None:
    """Check one received commit; ``signed``: the valid signers of commits already verified
    (an Intake's)."""
    if not _HEX40.fullmatch(commit.tree) or not all(_HEX40.fullmatch(p) for p in commit.parents):
        raise UpdateRefused(f"commit {sha.decode()} names objects by ids not in lowercase hex")
    tree_kind = kind(commit.tree)
    parent_kinds = [(p, kind(p)) for p in commit.parents]
    if tree_kind is None or any(k is None for _, k in parent_kinds):
        raise UpdateRefused(f"commit {sha.decode()} refers to missing objects")
    if tree_kind != Tree.type_num:
        raise UpdateRefused(
            f"commit {sha.decode()} names {commit.tree.decode()} as its tree, "
            f"but that object is a {_name(tree_kind)}"
        )
    for parent, parent_kind in parent_kinds:
        if parent_kind != Commit.type_num:
            raise UpdateRefused(
                f"commit {sha.decode()} names {parent.decode()} as a parent, "
                f"but that object is a {_name(parent_kind or 0)}"
            )
    if commit.gpgsig is None:
        raise UpdateRefused(f"commit {sha.decode()} is not signed")
    signer = signed.get(sha, _UNCHECKED)
    if signer is _UNCHECKED:
        try:
            signer = sshsig.signer_of(commit.gpgsig, commit.raw_without_sig(), GIT_NAMESPACE)
        except sshsig.MalformedSignature:
            signer = None
    if signer is None or signer not in signers:
        raise UpdateRefused(f"commit {sha.decode()} is not signed by a node allowed to write")
    if signer in retired and _commit_time(commit.raw_without_sig()) > retired[signer]:
        raise UpdateRefused(
            f"commit {sha.decode()} is signed by a key renewed away from (or revoked) "
            "before the commit's time"
        )
