"""Checking vaults: every git object re-hashed, every ref and every reachable object present."""

from __future__ import annotations

import hashlib
import stat
import struct

from dulwich.objects import Blob, Commit, ShaFile, Tree

from polykey.errors import NodeDamaged
from polykey.store.nodefile import Damage, NodeFile
from polykey.vaults.objects import (
    CHUNK_BYTES,
    CHUNKED_BLOB,
    OBJECT_KEY_BYTES,
    chunk_key,
    objects_ns,
    parse,
    refs_ns,
)

TYPE_NAMES = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}


def check_vault(store: NodeFile, vault_id: str, name: str) -> list[Damage]:
    """Damage in one vault: objects whose content does not hash to their id, missing objects."""
    place = f"vault {name}"
    try:
        records = dict(store.items(objects_ns(vault_id)))
        refs = dict(store.items(refs_ns(vault_id)))
    except NodeDamaged as exc:
        return [Damage(place, exc.detail)]
    damage: list[Damage] = []
    parsed: dict[bytes, ShaFile | None] = {}
    for key, value in records.items():
        if len(key) != OBJECT_KEY_BYTES:
            continue  # a part of a large blob, checked with its blob
        problem = _rehash(key, value, records)
        if problem:
            damage.append(Damage(f"{place}: object {key.hex()}", problem))
            continue
        if value[0] in (1, 2, 4):
            parsed[key] = parse(value, key.hex().encode())
    for ref, target in refs.items():
        try:
            head = bytes.fromhex(target.decode())
        except (UnicodeDecodeError, ValueError):
            damage.append(Damage(f"{place}: ref {ref.decode(errors='replace')}", "is malformed"))
            continue
        damage.extend(_reachable(place, head, records, parsed))
    return damage


def _rehash(key: bytes, value: bytes, records: dict[bytes, bytes]) -> str | None:
    if not value:
        return "is empty"
    if value[0] == CHUNKED_BLOB:
        if len(value) != 13:
            return "has a malformed part list"
        count, total = struct.unpack(">IQ", value[1:])
        if count != (total + CHUNK_BYTES - 1) // CHUNK_BYTES:
            return "has an inconsistent part list"
        digest = hashlib.sha1(b"blob %d\x00" % total)  # noqa: S324 - git's object id
        for index in range(count):
            part = records.get(chunk_key(key, index))
            if part is None:
                return f"is missing part {index}"
            digest.update(part)
        return None if digest.digest() == key else "does not hash to its id"
    type_name = TYPE_NAMES.get(value[0])
    if type_name is None:
        return "has an unknown type"
    body = memoryview(value)[1:]
    digest = hashlib.sha1(b"%s %d\x00" % (type_name, len(body)))  # noqa: S324
    digest.update(body)
    return None if digest.digest() == key else "does not hash to its id"


def _reachable(
    place: str, head: bytes, records: dict[bytes, bytes], parsed: dict[bytes, ShaFile | None]
) -> list[Damage]:
    damage: list[Damage] = []
    todo = [(head, "commit")]
    seen: set[bytes] = set()
    while todo:
        key, want = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        if key not in records:
            damage.append(Damage(f"{place}: {want} {key.hex()}", "is missing"))
            continue
        obj = parsed.get(key)
        if want == "blob":
            if records[key][0] not in (Blob.type_num, CHUNKED_BLOB):
                damage.append(Damage(f"{place}: blob {key.hex()}", "is not a blob"))
            continue
        if want == "commit" and isinstance(obj, Commit):
            todo.append((bytes.fromhex(obj.tree.decode()), "tree"))
            todo.extend((bytes.fromhex(p.decode()), "commit") for p in obj.parents)
        elif want == "tree" and isinstance(obj, Tree):
            for item in obj.iteritems():
                kind = "tree" if stat.S_ISDIR(item.mode) else "blob"
                todo.append((bytes.fromhex(item.sha.decode()), kind))
        else:
            damage.append(Damage(f"{place}: object {key.hex()}", f"is not a {want}"))
    return damage
