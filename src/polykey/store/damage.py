"""Checking a whole node file: every record authenticated, each damaged place named.

:class:`Damage` is one finding; :func:`find_damage` is what ``NodeFile.check`` (and through it
``pk node check``) runs. It reads inside one snapshot, goes on past damage, and names a record
by its key wherever the root and its manifest still authenticate, else by its hidden name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polykey.errors import NodeDamaged
from polykey.store.container import is_id, sealed_row, show_key, sqlite_errors
from polykey.store.reader import NodeReader
from polykey.store.records import Kind, Manifest, Root, aad, decode_record


@dataclass(frozen=True)
class Damage:
    """One damaged place in a node file, named as precisely as the damage allows."""

    place: str
    problem: str
    # "record": a record fails authentication or is unreadable (restore it from a backup);
    # "history": every record authenticates, but a vault's history does not hold together.
    kind: str = "record"

    def __str__(self) -> str:
        return f"{self.place}: {self.problem}"


def find_damage(node: NodeReader) -> list[Damage]:
    """Authenticate every record; report what is damaged, by name where it can be known."""
    with node._lock:
        damage: list[Damage] = []
        try:
            with node._read():
                _check_into(node, damage)
        except NodeDamaged as exc:
            damage.append(Damage("node file", exc.detail or exc.summary))
        return damage


def _check_into(node: NodeReader, damage: list[Damage]) -> None:
    with sqlite_errors():
        problems = [row[0] for row in node._conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        damage.extend(Damage("SQLite structure", p) for p in problems[:20])
    try:
        node._load_root()
    except NodeDamaged as exc:
        damage.append(Damage("root", exc.detail))
        return
    root = node._root_now()
    manifests: dict[bytes, Manifest] = {}
    for ns_id, (kind, _, name) in root.namespaces.items():
        if kind == Kind.MUTABLE:
            try:
                manifests[ns_id] = node._manifest(ns_id)
            except NodeDamaged as exc:
                damage.append(Damage(name, exc.detail))
    with sqlite_errors():
        for ns_id, ver, sealed in node._conn.execute(
            "SELECT ns, ver, sealed FROM manifest"
        ).fetchall():
            entry = root.namespaces.get(ns_id) if is_id(ns_id) else None
            if entry is None or entry[0] != Kind.MUTABLE:
                place = _orphan_manifest_name(node, ns_id, ver, sealed)
                damage.append(Damage(place, "is not listed in the root (rolled back?)"))
        rows = node._conn.execute("SELECT ns, name, ver, sealed FROM record")
        seen: set[tuple[bytes, bytes]] = set()
        for ns_id, rec_id, ver, sealed in rows:
            seen.add((ns_id, rec_id))
            problem = _check_record(node, root, manifests, ns_id, rec_id, ver, sealed)
            if problem is not None:
                damage.append(problem)
    for ns_id, manifest in manifests.items():
        for rec_id, (_, key) in manifest.entries.items():
            if (ns_id, rec_id) not in seen:
                damage.append(Damage(f"{manifest.name}/{show_key(key)}", "record is missing"))


def _orphan_manifest_name(node: NodeReader, ns_id: Any, ver: Any, sealed: Any) -> str:
    """Name an unlisted manifest by opening it, if its own row still authenticates."""
    if not is_id(ns_id):
        return "a manifest with a damaged name column"
    try:
        ver, sealed = sealed_row((ver, sealed), "manifest")
        plain = node._keys.open(sealed, aad(Kind.MANIFEST, ns_id, version=ver), "manifest")
        return f"the manifest of {Manifest.decode(plain, 'manifest').name}"
    except NodeDamaged:
        return f"manifest {ns_id.hex()}"


def _check_record(
    node: NodeReader,
    root: Root,
    manifests: dict[bytes, Manifest],
    ns_id: bytes,
    rec_id: bytes,
    ver: Any,
    sealed: Any,
) -> Damage | None:
    entry = root.namespaces.get(ns_id) if is_id(ns_id) else None
    shown = rec_id.hex() if is_id(rec_id) else "?"
    if entry is None:
        return Damage(f"record {shown}", "belongs to no namespace in the root")
    kind, _, name = entry
    place = f"{name}/{shown}"
    if not is_id(rec_id):
        return Damage(place, "record has a damaged name column")
    try:
        ver, sealed = sealed_row((ver, sealed), place)
    except NodeDamaged:
        return Damage(place, "record has a damaged version or value column")
    if kind == Kind.MUTABLE:
        manifest = manifests.get(ns_id)
        if manifest is None:
            return None  # already reported with its manifest
        listed = manifest.entries.get(rec_id)
        if listed is None:
            return Damage(place, "record is not listed in its namespace")
        place = f"{name}/{show_key(listed[1])}"
        if listed[0] != ver:
            return Damage(place, "record was rolled back or replaced")
    elif ver != 0:
        return Damage(place, "record has a version in a write-once namespace")
    try:
        plain = node._keys.open(sealed, aad(kind, ns_id, rec_id, ver), place)
        key, _ = decode_record(plain, place)
    except NodeDamaged as exc:
        return Damage(place, exc.detail.removeprefix(place + " ") or "failed authentication")
    if node._keys.rec_id(ns_id, key) != rec_id:
        return Damage(place, "record holds another record's name")
    return None
