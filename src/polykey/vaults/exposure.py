"""What a node was exposed to: the exposure report (docs/spec/audit.md, "Exposure").

When a node's access ends (`pk vaults unshare`, a child revoked, a key revoked), the report is
made at once from the audit log and kept sealed in the node file (namespace
``audit/exposure``): for every vault the node could read, its permissions, the last commit it
received (from the records of its clones and pulls: the peer holds every object that commit
reaches), the secrets of that commit, and the ids of every blob it reaches. A secret is
**still current** (it "needs rotation") while its value in the vault today is one of those
blobs, at any path: a value renamed or copied inside the vault stays exposed; a new value
clears it. Nothing in a report is a value; blob ids stay sealed and are never shown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from polykey.errors import NodeDamaged
from polykey.store.records import Namespace
from polykey.vaults.audit import LOG, AuditLog, decode
from polykey.vaults.errors import VaultError
from polykey.vaults.registry import VaultInfo, Vaults

EXPOSURE = Namespace("audit/exposure")
"""``NodeId <space> unix milliseconds`` -> one kept report (JSON)."""
FORMAT = 1
PEER_READS = ("peer:vaults.fetch", "peer:git-upload-pack")
"""The recorded actions by which a peer receives a vault's objects."""
BLOB = 3  # git's type number of a blob


@dataclass(frozen=True)
class Received:
    commit: str
    at: int  # unix milliseconds of the last fetch
    fetches: int


def received(log: AuditLog, who: str) -> dict[str, Received]:
    """vault id -> the last commit ``who`` received of it, from the audit log (one scan; a
    record is decoded only when it names ``who``)."""
    needle = f'"who":"{who}"'.encode()
    out: dict[str, Received] = {}
    for _, raw in log.store.items(LOG):
        if needle not in raw:
            continue
        r = decode(raw)
        if r.who != who or r.action not in PEER_READS or r.outcome != "ok" or not r.commit:
            continue
        seen = out.get(r.vault)
        fetches = seen.fetches + 1 if seen is not None else 1
        out[r.vault] = Received(r.commit, r.at, fetches)
    return out


def build(
    vaults: Vaults,
    log: AuditLog,
    node_id: str,
    could: Mapping[str, tuple[list[str], str | None]],
    reason: str,
    label: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The report of ``node_id``: ``could`` maps each vault id it could read to (its
    permissions, the folder it was limited to or None)."""
    at = int((time.time() if now is None else now) * 1000)
    got = received(log, node_id)
    infos = {i.id: i for i in vaults.all()}
    out = []
    for vault_id, (perms, folder) in sorted(could.items()):
        info = infos.get(vault_id)
        if info is None:
            continue
        out.append(_vault(vaults, info, perms, folder, got.get(vault_id)))
    doc: dict[str, Any] = {"v": FORMAT, "node_id": node_id, "reason": reason, "at": at}
    if label:
        doc["label"] = label
    return {**doc, "vaults": out}


def _vault(
    vaults: Vaults, info: VaultInfo, perms: list[str], folder: str | None, got: Received | None
) -> dict[str, Any]:
    from polykey.vaults.graph import planned

    vault = vaults.open(info.name)
    entry: dict[str, Any] = {"id": info.id, "name": info.name, "permissions": perms}
    if folder:
        entry["folder"] = folder
    if got is None:  # could read, never received: nothing to rotate
        head = vault.head()
        paths = [e.path for e in vault.ls("", recursive=True)] if head else []
        entry |= {"received": None, "secrets": _under(paths, folder), "blobs": []}
        return entry
    entry["received"] = {"commit": got.commit, "at": got.at, "fetches": got.fetches}
    try:
        listed = [e for e in vault.ls("", recursive=True, rev=got.commit) if e.kind == "secret"]
        plan = planned(vault.object_store(shared=True), got.commit.encode(), ())
        blobs = sorted({sha.decode() for sha, kind in plan if kind == BLOB})
    except (VaultError, NodeDamaged, KeyError):
        # a commit this vault does not hold (a vault derived to a folder was served): what
        # the vault holds under the folder now is taken as received, to be safe
        entry["received"]["held"] = False
        listed = [e for e in vault.ls("", recursive=True) if e.kind == "secret"]
        listed = [e for e in listed if e.path in set(_under([x.path for x in listed], folder))]
        blobs = sorted({e.blob.decode() for e in listed if e.blob})
    entry["secrets"] = sorted(e.path for e in listed if e.kind == "secret")
    entry["blobs"] = blobs
    return entry


def _under(paths: Iterable[str], folder: str | None) -> list[str]:
    if not folder:
        return sorted(paths)
    top = folder.strip("/")
    return sorted(p for p in paths if p == top or p.startswith(top + "/"))


def keep(tx: Any, report: dict[str, Any]) -> bytes:
    """Put ``report`` in the write transaction ``tx``; its key."""
    key = f"{report['node_id']} {report['at']}".encode()
    tx.put(EXPOSURE, key, json.dumps(report, sort_keys=True).encode())
    return key


def kept(vaults: Vaults, node_id: str | None = None) -> list[dict[str, Any]]:
    """The kept reports (of ``node_id``, or all), oldest first."""
    out = []
    for key, raw in vaults.store.items(EXPOSURE):
        if node_id is not None and not key.startswith(f"{node_id} ".encode()):
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            shown = key.decode(errors="replace")
            raise NodeDamaged(f"exposure report {shown} is malformed") from None
        if type(doc) is dict:
            out.append(doc)
    return sorted(out, key=lambda d: (int(d.get("at", 0)), str(d.get("node_id"))))


def still_current(vaults: Vaults, report: Mapping[str, Any]) -> dict[str, list[str]]:
    """vault name -> the paths whose value today is one the node received (sorted)."""
    infos = {i.id: i for i in vaults.all()}
    out: dict[str, list[str]] = {}
    for entry in report.get("vaults", []):
        blobs = set(entry.get("blobs") or [])
        info = infos.get(str(entry.get("id")))
        if not blobs or info is None:
            continue
        vault = vaults.open(info.name)
        if vault.head() is None:
            continue
        found = [
            e.path
            for e in vault.ls("", recursive=True)
            if e.kind == "secret" and e.blob is not None and e.blob.decode() in blobs
        ]
        if found:
            out[info.name] = sorted(found)
    return out


def shown(vaults: Vaults, report: Mapping[str, Any]) -> dict[str, Any]:
    """A report as `pk exposure` shows it: no blob ids; each received secret says whether it
    is still current."""
    current = still_current(vaults, report)
    out = {k: v for k, v in report.items() if k != "vaults"}
    out["vaults"] = []
    for entry in report.get("vaults", []):
        name = str(entry.get("name"))
        now = set(current.get(name, []))
        got = entry.get("received")
        secrets = [
            {"path": p, "received": got is not None, "still_current": got is not None and p in now}
            for p in entry.get("secrets", [])
        ]
        moved = sorted(now - set(entry.get("secrets", [])))  # a received value, now elsewhere
        secrets += [{"path": p, "received": True, "still_current": True} for p in moved]
        view = {k: v for k, v in entry.items() if k not in ("blobs", "secrets")}
        out["vaults"].append({**view, "secrets": secrets})
    out["needs_rotation"] = sum(len(v) for v in current.values())
    return out
