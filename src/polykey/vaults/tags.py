"""Secret tags, kept inside the vault as `.polykey-tags` (JSON: path -> sorted tags).

The file travels with the vault, so it comes from peers as much as from this node: every reader
checks it (its place, type, size and shape: an object of secret paths to lists of tags, at most
MAX_TAGS_BYTES) before using it, and a bad one is the vault's problem (BadTagFile), never damage
to the node file. Received vaults are checked with the same rules (sync/checks.py).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict

from dulwich.objects import Blob

from polykey.vaults import tree as trees
from polykey.vaults.errors import BadTagFile, InvalidTag, TagFileFull
from polykey.vaults.objects import TYPE_NAMES, VaultObjects
from polykey.vaults.paths import InvalidSecretPath, join, split_path

TAGS_FILE = b".polykey-tags"
MAX_TAGS_BYTES = 8 << 20
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
SHAPE = "is not an object of secret paths to lists of tags"
TOO_LARGE = f"is larger than {MAX_TAGS_BYTES >> 20} MiB"


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise InvalidTag(repr(tag[:80]))
    return tag


def parse_tags(data: bytes) -> dict[str, list[str]]:
    """The tags a tag file's content holds, each list sorted; BadTagFile (its detail says what
    is wrong) unless the content is a JSON object of valid secret paths to lists of valid tags,
    at most MAX_TAGS_BYTES long. Never nests deeper than the shape allows, so a hostile file
    cannot exhaust the parser's stack."""
    if len(data) > MAX_TAGS_BYTES:
        raise BadTagFile(TOO_LARGE)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTagFile("is not JSON (not UTF-8)") from None
    if _too_deep(data):
        raise BadTagFile(SHAPE)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise BadTagFile("is not JSON") from None
    if not isinstance(doc, dict):
        raise BadTagFile(SHAPE)
    out: dict[str, list[str]] = {}
    for path, tags in doc.items():
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadTagFile(SHAPE)
        try:
            valid = join(split_path(path)) == path
        except InvalidSecretPath:
            valid = False
        if not valid:
            raise BadTagFile(f"names an invalid secret path {path[:80]!r}")
        for tag in tags:
            if not _TAG.fullmatch(tag):
                raise BadTagFile(f"names an invalid tag {tag[:80]!r}")
        if tags:
            out[path] = sorted(set(tags))
    return out


def _too_deep(data: bytes) -> bool:
    """Whether brackets outside strings nest more than two deep (an object of lists), found
    with regular expressions only: no recursion, linear in the length."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data))
    for _ in range(2):
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    return bool(brackets)


# Parsed tag files by blob id (a blob's content never changes), or why one is bad: every commit
# reads the tags of its parent, so a tag file is checked and parsed once, not once per change.
# Files over _CACHED_BYTES are parsed each time (their parsed form would hold too much memory).
_PARSED: OrderedDict[bytes, dict[str, list[str]] | str] = OrderedDict()
_PARSED_MAX = 8
_CACHED_BYTES = 1 << 20
_LOCK = threading.Lock()


def _parsed(objects: VaultObjects, sha: bytes) -> dict[str, list[str]] | str:
    """The tags the tag file blob ``sha`` holds, or why it is not a valid one."""
    with _LOCK:
        found = _PARSED.get(sha)
    if found is None:
        size = objects.blob_size(sha)
        try:
            if size > MAX_TAGS_BYTES:
                raise BadTagFile(TOO_LARGE)
            found = parse_tags(objects.get_blob_data(sha))
        except BadTagFile as exc:
            found = exc.detail
        if isinstance(found, str) or size <= _CACHED_BYTES:
            with _LOCK:
                _PARSED[sha] = found
                if len(_PARSED) > _PARSED_MAX:
                    _PARSED.popitem(last=False)
    return found


def tag_blob_problem(objects: VaultObjects, sha: bytes) -> str | None:
    """Why the blob ``sha`` the vault holds is not a valid tag file (None when it is one)."""
    found = _parsed(objects, sha)
    return found if isinstance(found, str) else None


def read_tags(objects: VaultObjects, tree_id: bytes) -> dict[str, list[str]]:
    """The secret tags of the vault tree ``tree_id``; BadTagFile (naming the vault and the
    file) when its tag file is not a valid one."""
    tree = objects.get_tree(tree_id)
    try:
        mode, sha = tree[TAGS_FILE]
    except KeyError:
        return {}
    where = f"{objects.name}:{TAGS_FILE.decode()}"
    if mode != trees.FILE_MODE:
        raise BadTagFile(f"{where} is a folder" if mode == trees.DIR_MODE else f"{where} is odd")
    kind = objects.kind(sha)
    if kind is not None and kind != Blob.type_num:
        raise BadTagFile(f"{where} names a {TYPE_NAMES.get(kind, 'odd object')}, not a file")
    found = _parsed(objects, sha)
    if isinstance(found, str):
        raise BadTagFile(f"{where} {found}")
    return {path: list(tags) for path, tags in found.items()}


def try_read_tags(objects: VaultObjects, tree_id: bytes) -> dict[str, list[str]] | None:
    """The secret tags of a tree, or None when its tag file is not valid."""
    try:
        return read_tags(objects, tree_id)
    except BadTagFile:
        return None


def write_tags(objects: VaultObjects, tree_id: bytes, tags: dict[str, list[str]]) -> bytes:
    """A tree like ``tree_id`` whose tag file holds ``tags`` (none when there are none). The
    root is edited in place (tree.apply), so a tag change in a flat vault of many secrets costs
    what a write there costs, and the next write finds the root's index kept."""
    tree = objects.get_tree(tree_id)
    name = TAGS_FILE.decode()
    if TAGS_FILE in tree and (not tags or tree[TAGS_FILE][0] != trees.FILE_MODE):
        tree_id = trees.apply(objects, tree_id, {name: trees.Delete(recursive=True)})
    if not tags:
        return tree_id
    body = json.dumps(tags, sort_keys=True, indent=1).encode() + b"\n"
    if len(body) > MAX_TAGS_BYTES:
        raise TagFileFull(f"{objects.name}:{name} would be {len(body):,} bytes")
    return trees.apply(objects, tree_id, {name: trees.Put(objects.add_blob(body))})
