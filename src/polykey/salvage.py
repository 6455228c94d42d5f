"""`pk node salvage NEW_PATH`: a new node of everything a damaged node file still authenticates.

A flipped byte in the root record (or in a manifest) makes every read of a node fail, although
each record is sealed on its own. This module names the namespaces a node uses, reads each of
them from the damaged file through :class:`polykey.store.salvage.DamagedNode` (which trusts
neither the root nor the manifests), checks every git object against its id, keeps the vault
registry consistent, writes a new node file with the same key, password and recovery code
(the same NodeId), checks it with :meth:`Node.check`, and says what was salvaged, what was
lost, which vaults' histories are incomplete, and what to do next. docs/spec/node-file.md
("Salvage") describes it.
"""

from __future__ import annotations

import datetime
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from polykey.errors import InvalidInput, NodeDamaged, NodeExists
from polykey.ids import encode_node_id
from polykey.keys.root import RootKey
from polykey.network.graph import GRAPH
from polykey.node import NODE_KEYS, NODE_META, PROVIDERS, ROOT_SEED, TOKENS, Node
from polykey.notifications import INBOX, OUTBOX
from polykey.store.container import JOURNALS, show_key
from polykey.store.nodefile import NodeFile
from polykey.store.records import Namespace
from polykey.store.salvage import DamagedNode, Lost, Salvaged
from polykey.sync.child import CHILDREN, PARENT, PENDING
from polykey.sync.child import TOKENS as CHILD_TOKENS
from polykey.sync.own import SYNCED
from polykey.trust.acl import ACL, FORMER
from polykey.trust.gestalts import IDENTITIES, PROOFS
from polykey.trust.links import LINKS
from polykey.trust.rotation import FORMER_KEYS, ROTATIONS
from polykey.trust.sigchain import SIGCHAIN
from polykey.trust.sigchain_peers import MARKS, PEER_CHAINS
from polykey.vaults.audit import HEAD as AUDIT_HEAD
from polykey.vaults.audit import LOG as AUDIT_LOG
from polykey.vaults.derive import DERIVED, view_ids
from polykey.vaults.exposure import EXPOSURE
from polykey.vaults.objects import (
    CHUNK_BYTES,
    CHUNKED_BLOB,
    OBJECT_KEY_BYTES,
    TYPE_NAMES,
    chunk_key,
    object_id,
)
from polykey.vaults.paths import objects_ns, refs_ns
from polykey.vaults.registry import NAMES, REGISTRY, VaultInfo

__all__ = ["FIXED", "SalvageReport", "SalvageTargetExists", "salvage"]

FIXED: tuple[Namespace, ...] = (
    NODE_KEYS,
    NODE_META,
    REGISTRY,
    NAMES,
    ACL,
    FORMER,
    LINKS,
    SIGCHAIN,
    PEER_CHAINS,
    MARKS,
    IDENTITIES,
    PROOFS,
    PROVIDERS,
    TOKENS,
    GRAPH,
    INBOX,
    OUTBOX,
    SYNCED,
    DERIVED,
    FORMER_KEYS,
    ROTATIONS,
    AUDIT_LOG,
    AUDIT_HEAD,
    EXPOSURE,
    CHILD_TOKENS,
    PENDING,
    CHILDREN,
    PARENT,
)
"""Every namespace of a node whose name is fixed; a vault's two (``vault/<id>/objects`` and
``vault/<id>/refs``) are named by the ids in the salvaged registry. A namespace added to the
code must be added here, or salvage counts its records as lost (tests/store/test_salvage.py
checks that every ``Namespace("…")`` of the code is listed)."""

BATCH_RECORDS = 4096  # records written in one transaction of the new node
BATCH_BYTES = 32 * 1024 * 1024  # and at most this much of them
_VAULT_ID = re.compile(r"v[0-9a-v]{26}")
_OBJECT = re.compile(r"(?:commit|tree|blob|tag) ([0-9a-f]{40})$")  # a place vaults/check.py names
KINDS = ("vault_objects", "refs", "registry", "other")
BLOB = CHUNKED_BLOB & 0x7F  # git's type number of a blob


class SalvageTargetExists(NodeExists):
    """A file already exists where the new node would go."""

    hint = "`pk node salvage` never overwrites a file: choose a new path."


class RootKeyLost(NodeDamaged):
    """The root key record does not authenticate, so a new node would have another NodeId."""

    hint = (
        "Nothing was written. The recovery code gives the same NodeId: make the node again with "
        "`pk bootstrap --recovery-code-file FILE` and bring its vaults back from a backup node "
        "(`pk backup restore PATH`), or restore the node file from a copy."
    )


@dataclass
class SalvageReport:
    """What `pk node salvage` did."""

    source: Path
    path: Path
    node_id: str
    salvaged: Counter[str] = field(default_factory=Counter)  # KINDS -> records written
    lost: list[Lost] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)  # damage to the root and the manifests
    unreadable: list[str] = field(default_factory=list)  # parts of the file SQLite cannot read
    unchecked: Counter[str] = field(default_factory=Counter)  # namespace -> records
    repaired: list[str] = field(default_factory=list)  # registry entries made again
    incomplete: dict[str, list[str]] = field(default_factory=dict)  # vault -> what is missing
    damage: list[str] = field(default_factory=list)  # any other damage the new node's check found
    vault_names: dict[str, str] = field(default_factory=dict)  # vault id -> name

    @property
    def lost_count(self) -> int:
        return sum(item.count for item in self.lost)

    @property
    def ok(self) -> bool:
        """Everything authenticated and the new node is whole."""
        return not (self.lost or self.unreadable or self.incomplete or self.damage)

    def where(self, namespace: str | None) -> str:
        """A namespace's name, with the name of the vault it belongs to."""
        if namespace is None:
            return "an unnamed namespace"
        parts = namespace.split("/")
        if len(parts) == 3 and parts[0] == "vault" and parts[1] in self.vault_names:
            return f"{namespace} (vault {self.vault_names[parts[1]]})"
        return namespace

    def next_steps(self) -> list[str]:
        new = str(self.path)
        steps = []
        if self.lost or self.unreadable or self.incomplete:
            steps.append(
                f"Fill the gaps from a backup node: `pk backup restore BACKUP_PATH --node {new}` "
                "(it writes again what the backup holds and syncs every vault)."
            )
        if self.incomplete:
            steps.append(
                "Or bring an incomplete vault back from another node that holds it: "
                f"`pk vaults sync VAULT --node {new}` (one of your linked nodes), "
                f"`pk vaults pull VAULT --node {new}` (a clone); "
                f"`pk vaults log VAULT --node {new}` shows what is left."
            )
        if self.unchecked:
            steps.append(
                "Rollback protection could not be checked for the salvaged mutable records "
                "counted above (their manifest or the root was damaged): each holds the value "
                "its row authenticates, which an attacker could have replaced with an older "
                "one; compare with a backup node if that matters."
            )
        steps.append(
            f"Keep {self.source} until you trust the new node; then stop any agent of the old "
            f"one (`pk agent stop`), move the old file aside and {new} into its place, or use "
            f"`--node {new}` / PK_NODE."
        )
        return steps

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "path": str(self.path),
            "node_id": self.node_id,
            "ok": self.ok,
            "salvaged": {**{kind: self.salvaged[kind] for kind in KINDS}, "total": self.total},
            "lost": [
                {
                    "namespace": item.namespace,
                    "key": _key(item),
                    "problem": item.problem,
                    "count": item.count,
                }
                for item in self.lost
            ],
            "lost_count": self.lost_count,
            "rebuilt": self.rebuilt,
            "unreadable": self.unreadable,
            "rollback_unchecked": dict(sorted(self.unchecked.items())),
            "repaired": self.repaired,
            "incomplete_vaults": [
                {"vault": name, "problems": problems}
                for name, problems in sorted(self.incomplete.items())
            ],
            "damage": self.damage,
            "next_steps": self.next_steps(),
        }

    @property
    def total(self) -> int:
        return sum(self.salvaged[kind] for kind in KINDS)

    def text(self) -> str:
        counts = ", ".join(f"{kind.replace('_', ' ')} {self.salvaged[kind]}" for kind in KINDS)
        lines = [
            f"Salvaged node {self.node_id} from {self.source} into {self.path}.",
            f"Records salvaged: {self.total} ({counts}); lost: {self.lost_count}.",
        ]
        if self.rebuilt:
            lines.append("Rebuilt in the new node (damaged in the old file):")
            lines += [f"  {problem}" for problem in self.rebuilt]
        if self.unreadable:
            lines.append("Unreadable (SQLite could not read on; what lies there is lost):")
            lines += [f"  {problem}" for problem in self.unreadable]
        if self.lost:
            lines.append("Lost:")
            for item in self.lost:
                key = "" if item.key is None else f"/{_key(item)}"
                counted = f"{item.count} records " if item.count != 1 else ""
                lines.append(f"  {self.where(item.namespace)}{key}: {counted}{item.problem}")
        if self.repaired:
            lines.append("Registry made consistent:")
            lines += [f"  {note}" for note in self.repaired]
        if self.unchecked:
            lines.append(
                f"Rollback protection could not be checked for {sum(self.unchecked.values())} "
                "salvaged mutable record(s): "
                + ", ".join(f"{self.where(ns)}: {n}" for ns, n in sorted(self.unchecked.items()))
                + "."
            )
        if self.incomplete:
            lines.append("Vaults whose history is incomplete:")
            for name, problems in sorted(self.incomplete.items()):
                lines.append(f"  {name}: {len(problems)} problem(s), first: {problems[0]}")
        if self.damage:
            lines.append("The new node's check found:")
            lines += [f"  {problem}" for problem in self.damage]
        if self.ok:
            lines.append("Every record authenticated; the new node is whole.")
        lines.append("Next steps:")
        lines += [f"  - {step}" for step in self.next_steps()]
        return "\n".join(lines)


def _key(item: Lost) -> str | None:
    """A lost record's key as text: a git object (or a part of one) by its hex id."""
    if item.key is None:
        return None
    if item.namespace is not None and item.namespace.endswith("/objects"):
        object_key = item.key[:OBJECT_KEY_BYTES].hex()
        if len(item.key) == OBJECT_KEY_BYTES + 5:
            return f"{object_key} part {struct.unpack('>I', item.key[-4:])[0]}"
        return object_key if len(item.key) == OBJECT_KEY_BYTES else item.key.hex()
    return show_key(item.key)


def check_target(source: Path, target: Path) -> None:
    """Refuse a target that exists (or the damaged file itself, or an old journal beside it)."""
    if target.exists() or target.is_symlink():
        if os.path.abspath(target) == os.path.abspath(source) or (
            source.exists() and target.samefile(source)
        ):
            raise InvalidInput(
                f"{target} is the damaged node file itself",
                hint="Salvage never changes the damaged file: choose a new path for the new node.",
            )
        raise SalvageTargetExists(str(target))
    for suffix in JOURNALS:
        journal = target.with_name(target.name + suffix)
        if journal.exists() or journal.is_symlink():
            raise SalvageTargetExists(
                str(journal),
                hint="SQLite would take this old journal for the new node's own: remove it, "
                "or choose another path.",
            )
    if target.parent.exists() and not target.parent.is_dir():
        raise InvalidInput(f"{target.parent} is not a folder")


def salvage(
    source: Path, target: Path, password: bytes, *, allow_weak: bool = False
) -> SalvageReport:
    """Write a new node at ``target`` of every record of ``source`` that authenticates."""
    check_target(source, target)
    with DamagedNode.open(source, password, allow_weak=allow_weak) as damaged:
        fixed = {ns.name: damaged.read(ns) for ns in FIXED}
        seed = fixed[NODE_KEYS.name].records.get(ROOT_SEED)
        if seed is None or len(seed) != 32:
            raise RootKeyLost(f"node/keys/root-seed in {source}")
        key = RootKey.from_seed(seed)
        report = SalvageReport(source, target, encode_node_id(key.node_id))
        job = _Job(damaged, report, fixed)
        damaged.create(target, job.fill)
        report.lost += damaged.unread()
        report.rebuilt = damaged.describe_problems()
        report.unreadable = list(damaged.unreadable)
        with Node.open(target, password, allow_weak=allow_weak) as node:
            missing = _check(node, report)
        report.lost = [_named(damaged, item, missing) for item in report.lost]
    return report


def _named(damaged: DamagedNode, item: Lost, missing: dict[str, set[bytes]]) -> Lost:
    """A lost git object, named by its id where the new node's history misses that object."""
    if item.key is not None or item.rec_id is None or item.namespace is None:
        return item
    parts = item.namespace.split("/")
    if len(parts) != 3 or parts[0] != "vault" or parts[2] != "objects":
        return item
    ns = objects_ns(parts[1])
    for key in missing.get(parts[1], ()):
        if damaged.rec_id(ns, key) == item.rec_id:
            return replace(item, key=key)
    return item


class _Job:
    """Filling the new node file, one namespace at a time (a vault's objects are held in
    memory one vault at a time, as its check holds them)."""

    def __init__(self, damaged: DamagedNode, report: SalvageReport, fixed: dict[str, Salvaged]):
        self.damaged = damaged
        self.report = report
        self.fixed = fixed

    def fill(self, store: NodeFile) -> None:
        registry = self.fixed[REGISTRY.name]
        names = self.fixed[NAMES.name]
        for got in self.fixed.values():
            self._note(got)
            if got is not registry and got is not names:
                self._write(store, got.namespace, got.records)
        ids = {k.decode() for k in registry.records if _text(k)}
        ids |= {v.decode() for v in names.records.values() if _text(v)}
        with_history: set[str] = set()
        for vault_id in sorted(ids):
            objects = self.damaged.read(objects_ns(vault_id))
            kept = _verified(objects)  # before noting: it adds to what is lost
            self._note(objects)
            refs = self.damaged.read(refs_ns(vault_id))
            self._note(refs)
            if kept or refs.records:
                with_history.add(vault_id)
            self._write(store, objects.namespace, kept)
            self._write(store, refs.namespace, refs.records)
        for view in sorted(view_ids(list(self.fixed[DERIVED.name].records))):
            objects = self.damaged.read(objects_ns(view))  # a folder's derived view: as a vault's
            kept = _verified(objects)
            self._note(objects)
            refs = self.damaged.read(refs_ns(view))
            self._note(refs)
            self._write(store, objects.namespace, kept)
            self._write(store, refs.namespace, refs.records)
        entries, named = self._registry(registry.records, names.records, with_history)
        self._write(store, REGISTRY, entries)
        self._write(store, NAMES, named)

    def _note(self, got: Salvaged) -> None:
        self.report.lost += got.lost
        if got.unchecked:
            self.report.unchecked[got.namespace.name] += got.unchecked

    def _write(self, store: NodeFile, ns: Namespace, records: dict[bytes, bytes]) -> None:
        kind = _kind(ns)
        batch: list[tuple[bytes, bytes]] = []
        size = 0
        for key in sorted(records):
            value = records[key]
            batch.append((key, value))
            size += len(value)
            if len(batch) >= BATCH_RECORDS or size >= BATCH_BYTES:
                _put(store, ns, batch)
                batch, size = [], 0
        _put(store, ns, batch)
        self.report.salvaged[kind] += len(records)

    def _registry(
        self, registry: dict[bytes, bytes], names: dict[bytes, bytes], with_history: set[str]
    ) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        """The registry and names to write, consistent: every vault kept is registered and
        reachable by its name; a name of a vault with nothing left is dropped."""
        report = self.report
        infos: dict[str, VaultInfo] = {}
        for raw_id, raw in registry.items():
            try:
                infos[raw_id.decode()] = VaultInfo.decode(raw_id.decode(), raw)
            except (NodeDamaged, UnicodeDecodeError):
                report.lost.append(Lost(REGISTRY.name, raw_id, "authenticates but is malformed"))
        by_name: dict[str, str] = {}
        for raw_name, raw_id in names.items():
            if _text(raw_name) and _text(raw_id):
                by_name[raw_name.decode()] = raw_id.decode()
            else:
                report.lost.append(Lost(NAMES.name, raw_name, "authenticates but is malformed"))
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        for name, vault_id in sorted(by_name.items()):
            if vault_id in infos:
                continue
            if vault_id in with_history and _VAULT_ID.fullmatch(vault_id):
                infos[vault_id] = VaultInfo(vault_id, name, now)
                report.repaired.append(
                    f"vault {name}: its registry entry was lost; made again from its name "
                    "(its vault tags, creation time and origin are lost)"
                )
            else:
                del by_name[name]
                report.lost.append(
                    Lost(NAMES.name, name.encode(), "names a vault of which nothing is left")
                )
        for vault_id, info in sorted(infos.items()):
            if by_name.get(info.name) == vault_id:
                continue
            if info.name in by_name:
                taken = info.name
                info.name = f"salvaged-{vault_id}"
                report.repaired.append(
                    f"vault {info.name}: its name {taken} belongs to another vault now; renamed"
                )
            else:
                report.repaired.append(
                    f"vault {info.name}: its name entry was lost; made again from its registry"
                )
            by_name[info.name] = vault_id
        report.vault_names = {vault_id: info.name for vault_id, info in infos.items()}
        return (
            {vault_id.encode(): info.encode() for vault_id, info in infos.items()},
            {name.encode(): vault_id.encode() for name, vault_id in by_name.items()},
        )


def _put(store: NodeFile, ns: Namespace, batch: list[tuple[bytes, bytes]]) -> None:
    if batch:
        with store.write() as tx:
            for key, value in batch:
                tx.put(ns, key, value)


def _text(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _kind(ns: Namespace) -> str:
    if ns.name.startswith("vault/") and ns.name.endswith("/objects"):
        return "vault_objects"
    if ns.name.startswith("vault/") and ns.name.endswith("/refs"):
        return "refs"
    if ns in (REGISTRY, NAMES):
        return "registry"
    return "other"


def _verified(got: Salvaged) -> dict[bytes, bytes]:
    """The git objects whose content hashes to their id (a large blob with all its parts);
    the others go to ``got.lost``. Write-once records carry no version: their id is their
    only check, so an object that authenticates is still hashed again."""
    records = got.records
    kept: dict[bytes, bytes] = {}
    for key, value in records.items():
        if len(key) != OBJECT_KEY_BYTES:
            continue  # a part of a large blob: kept with its blob
        problem = _object_problem(key, value, records)
        if problem is not None:
            got.lost.append(Lost(got.namespace.name, key, problem))
            continue
        kept[key] = value
        if value[0] == CHUNKED_BLOB:
            count, _ = struct.unpack(">IQ", value[1:])
            for index in range(count):
                part = chunk_key(key, index)
                kept[part] = records[part]
    for key in records:
        if key not in kept and len(key) != OBJECT_KEY_BYTES:
            got.lost.append(Lost(got.namespace.name, key, "is a part of no salvaged blob"))
    return kept


def _object_problem(key: bytes, value: bytes, records: dict[bytes, bytes]) -> str | None:
    if not value:
        return "is empty"
    try:
        if value[0] == CHUNKED_BLOB:
            if len(value) != 13:
                return "has a malformed part list"
            count, total = struct.unpack(">IQ", value[1:])
            if count != (total + CHUNK_BYTES - 1) // CHUNK_BYTES:
                return "has an inconsistent part list"
            parts = [records.get(chunk_key(key, index)) for index in range(count)]
            if None in parts:
                return f"is missing part {parts.index(None)}"
            sha = object_id(BLOB, (p for p in parts if p is not None), total)
        elif value[0] in TYPE_NAMES:
            sha = object_id(value[0], memoryview(value)[1:])
        else:
            return "has an unknown type"
    except ValueError:
        return "has parts that do not add up to its length"
    return None if sha == key.hex().encode() else "does not hash to its id"


def _check(node: Node, report: SalvageReport) -> dict[str, set[bytes]]:
    """The new node's full check: a vault's history problems make it incomplete. Returns the
    ids of the objects each vault's history names but does not hold, by vault id."""
    names = {info.id: info.name for info in node.vaults.all()}
    ids = {name: vault_id for vault_id, name in names.items()}
    report.vault_names = names
    missing: dict[str, set[bytes]] = {}
    for damage in node.check():
        if damage.kind == "history" and damage.place.startswith("vault "):
            vault, _, rest = damage.place.removeprefix("vault ").partition(": ")
            report.incomplete.setdefault(vault, []).append(f"{rest}: {damage.problem}")
            named = _OBJECT.search(rest)
            if named is not None and vault in ids:
                missing.setdefault(ids[vault], set()).add(bytes.fromhex(named.group(1)))
        else:
            report.damage.append(str(damage))
    for vault_id, name in sorted(names.items()):
        if node.store.count(refs_ns(vault_id)) == 0:
            report.incomplete.setdefault(name, []).append("its head is lost (no ref is left)")
    return missing
