"""Checking vaults: every git object re-hashed and parsed; from every ref, the whole history
followed, each object present and of the type its place says (a commit's tree a tree, its
parents commits, a file a blob, a folder a tree)."""

from __future__ import annotations

import binascii
import stat
import struct

from dulwich.objects import Blob, Commit, ShaFile, Tree

from polykey.errors import NodeDamaged
from polykey.store.nodefile import Damage, NodeFile
from polykey.vaults.objects import (
    CHUNK_BYTES,
    CHUNKED_BLOB,
    OBJECT_KEY_BYTES,
    TYPE_NAMES,
    chunk_key,
    object_id,
    objects_ns,
    parse,
    refs_ns,
)


def check_vault(store: NodeFile, vault_id: str, name: str) -> list[Damage]:
    """What is wrong in one vault: objects whose content does not hash to their id or does not
    parse, and, along the history of each ref, objects missing or of the wrong type."""
    place = f"vault {name}"
    try:
        records = dict(store.items(objects_ns(vault_id)))
        refs = dict(store.items(refs_ns(vault_id)))
    except NodeDamaged as exc:
        return [Damage(place, exc.detail)]
    damage: list[Damage] = []
    parsed: dict[bytes, ShaFile] = {}
    bad: set[bytes] = set()  # reported already: not followed
    for key, value in records.items():
        if len(key) != OBJECT_KEY_BYTES:
            continue  # a part of a large blob, checked with its blob
        problem = _rehash(key, value, records)
        if problem is None and value[0] in (1, 2, 4):
            try:
                parsed[key] = parse(value, key.hex().encode())
            except NodeDamaged:
                problem = "is malformed"
        if problem:
            damage.append(Damage(f"{place}: object {key.hex()}", problem))
            bad.add(key)
    for ref, target in refs.items():
        try:
            head = bytes.fromhex(target.decode())
        except (UnicodeDecodeError, ValueError):
            damage.append(Damage(f"{place}: ref {ref.decode(errors='replace')}", "is malformed"))
            continue
        if len(head) != OBJECT_KEY_BYTES:
            damage.append(Damage(f"{place}: ref {ref.decode(errors='replace')}", "is malformed"))
            continue
        damage.extend(_history(place, ref, head, records, parsed, bad))
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
        parts = [records.get(chunk_key(key, index)) for index in range(count)]
        if None in parts:
            return f"is missing part {parts.index(None)}"
        try:
            sha = object_id(Blob.type_num, (p for p in parts if p is not None), total)
        except ValueError:
            return "has parts that do not add up to its length"
    elif value[0] in TYPE_NAMES:
        sha = object_id(value[0], memoryview(value)[1:])
    else:
        return "has an unknown type"
    return None if sha == binascii.hexlify(key) else "does not hash to its id"


def _kind(value: bytes) -> int:
    return Blob.type_num if value[0] == CHUNKED_BLOB else value[0]


def _history(
    place: str,
    ref: bytes,
    head: bytes,
    records: dict[bytes, bytes],
    parsed: dict[bytes, ShaFile],
    bad: set[bytes],
) -> list[Damage]:
    """Follow one ref's history without recursion. Every place an object is named is
    checked (an object named as a blob in one tree and as a tree in another is wrong in the
    second), each object is expanded once; each problem is reported once, with who names it."""
    damage: list[Damage] = []
    ref_name = f"ref {ref.decode(errors='replace')}"
    todo: list[tuple[bytes, int, str]] = [(head, Commit.type_num, ref_name)]
    expanded: set[bytes] = set()
    reported: set[tuple[bytes, int]] = set()
    while todo:
        key, want, named_by = todo.pop()
        value = records.get(key)
        if key in bad:
            continue  # reported with what is wrong with it
        if value is None or _kind(value) != want:
            if (key, want) not in reported:
                reported.add((key, want))
                if value is None:
                    problem = f"is missing (named by {named_by})"
                else:
                    problem = (
                        f"is a {TYPE_NAMES.get(_kind(value), 'object of an unknown type')}, "
                        f"but {named_by} names it as a {TYPE_NAMES[want]}"
                    )
                damage.append(
                    Damage(f"{place}: {TYPE_NAMES[want]} {key.hex()}", problem, "history")
                )
            continue
        if key in expanded or want == Blob.type_num:
            continue
        expanded.add(key)
        obj = parsed.get(key)
        if isinstance(obj, Commit):
            by = f"commit {key.hex()}"
            todo.extend((bytes.fromhex(p.decode()), Commit.type_num, by) for p in obj.parents)
            todo.append((bytes.fromhex(obj.tree.decode()), Tree.type_num, by))
        elif isinstance(obj, Tree):
            by = f"tree {key.hex()}"
            for item in obj.iteritems():
                kind = Tree.type_num if stat.S_ISDIR(item.mode) else Blob.type_num
                todo.append((bytes.fromhex(item.sha.decode()), kind, by))
    return damage
