"""Secret tags, kept inside the vault as `.polykey-tags` (JSON: path -> sorted tags)."""

from __future__ import annotations

import json
import re
from typing import cast

from dulwich.objects import ObjectID, Tree

from polykey.errors import NodeDamaged
from polykey.vaults import tree as trees
from polykey.vaults.errors import InvalidTag
from polykey.vaults.objects import VaultObjects

TAGS_FILE = b".polykey-tags"
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise InvalidTag(repr(tag[:80]))
    return tag


def read_tags(objects: VaultObjects, tree_id: bytes) -> dict[str, list[str]]:
    tree = objects.get_tree(tree_id)
    try:
        _, sha = tree[TAGS_FILE]
    except KeyError:
        return {}
    try:
        doc = json.loads(objects.get_blob_data(sha))
    except ValueError:
        raise NodeDamaged("the vault's tag file is not JSON") from None
    if not isinstance(doc, dict):
        raise NodeDamaged("the vault's tag file is malformed")
    return {str(k): [str(t) for t in v] for k, v in doc.items() if isinstance(v, list)}


def write_tags(objects: VaultObjects, tree_id: bytes, tags: dict[str, list[str]]) -> bytes:
    tree = objects.get_tree(tree_id)
    new = Tree()
    for item in tree.iteritems():
        if item.path != TAGS_FILE:
            new.add(item.path, item.mode, item.sha)
    if tags:
        body = json.dumps(tags, sort_keys=True, indent=1).encode() + b"\n"
        new.add(TAGS_FILE, trees.FILE_MODE, cast(ObjectID, objects.add_blob(body)))
    return objects.add(new)
