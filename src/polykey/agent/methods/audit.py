"""The audit log and exposure reports: `pk audit log|verify|export|checkpoint`, `pk exposure`
(docs/spec/audit.md; the log is vaults/audit.py, the reports vaults/exposure.py).

Also what the agent records of each request it serves (``call_recorded``, its one dispatch
path): a read is recorded before its answer leaves; a change is recorded before it starts
("begun") and when it ends; a refusal by its error class. When a record cannot be written the
request fails (AuditUnavailable): nothing is answered unrecorded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS, call
from polykey.errors import InvalidInput, PolykeyError
from polykey.rpc import NoParams
from polykey.vaults.audit import AuditBroken, Event

if TYPE_CHECKING:
    from polykey.ids import NodeId
    from polykey.node import Node

LOCAL = "local"
_READS = (
    "secrets.cat secrets.env secrets.grep vaults.export vaults.objects vaults.diff vaults.show"
    " keys.decrypt keys.openssh_private node.backup"
)
READS = frozenset(_READS.split())
"""Methods that answer with values: recorded once, before the answer leaves."""
_UNRECORDED = (
    "node.info node.check keys.public vaults.list vaults.log vaults.permissions vaults.signers"
    " vaults.conflicts vaults.health secrets.ls secrets.find secrets.stat secrets.kind"
    " secrets.complete secrets.history tags.list nodes.list nodes.connections nodes.mine"
    " notifications.read gestalts.get gestalts.list identities.get identities.list"
    " sigchain.show sigchain.verify child.list child.show keys.renewals"
)
UNRECORDED = frozenset(_UNRECORDED.split())
"""Methods that show names and history, never a value, and change nothing: not recorded (the
log's own methods neither). Every other method is recorded as a change."""
SELF_RECORDED = frozenset({"vaults.share", "vaults.unshare"})
"""Recorded by the method itself (sharing.py), whichever way it is called."""
MAX_TARGETS = 1000  # (vault, path) pairs recorded of one request; more: one record of the rest


def recorded(name: str) -> bool:
    return not (
        name in UNRECORDED or name in SELF_RECORDED or name.startswith(("audit.", "exposure."))
    )


def call_recorded(node: Node, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run the method ``name`` as the agent serves it: recorded in the audit log."""
    if not recorded(name):
        return call(node, name, params)
    events = _events(node, name, params)
    return run_recorded(node, events, name in READS, lambda: call(node, name, params))


def run_recorded(node: Node, events: list[Event], read: bool, run: Any) -> dict[str, Any]:
    """Run ``run()`` with ``events`` recorded: a change first as begun; then the outcome (a
    commit the answer names is the record's). AuditUnavailable when a record fails."""
    if not read:
        node.audit.append([replace(e, outcome="begun") for e in events])
    try:
        result: dict[str, Any] = run()
    except PolykeyError as exc:
        refused = [replace(e, outcome="refused", error=type(exc).__name__) for e in events]
        node.audit.append(refused)
        raise
    except Exception as exc:
        node.audit.append([replace(e, outcome="failed", error=type(exc).__name__) for e in events])
        raise
    commit = result.get("commit") if isinstance(result, dict) else None
    if isinstance(commit, str):
        events = [replace(e, commit=commit) for e in events]
    node.audit.append(events)
    return result


def _events(node: Node, name: str, params: dict[str, Any]) -> list[Event]:
    """One event per (vault, path) the request names (each vault's head as the commit of a
    read), at most MAX_TARGETS of them."""
    targets = _targets(params)
    if not targets:
        return [Event(LOCAL, name)]
    heads: dict[str, str] = {}
    rev = params.get("rev")
    out = []
    for vault, path in targets[:MAX_TARGETS]:
        commit = ""
        if name in READS:
            commit = rev if isinstance(rev, str) else heads.get(vault) or _head(node, vault)
            heads[vault] = commit
        out.append(Event(LOCAL, name, vault[:200], path, commit))
    if len(targets) > MAX_TARGETS:
        out.append(Event(LOCAL, name, error=f"and {len(targets) - MAX_TARGETS} more"))
    return out


def _targets(params: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The (vault, path) pairs a request's params name (never a value)."""
    vault = params.get("vault") if isinstance(params.get("vault"), str) else None
    vault = vault or (params.get("name") if isinstance(params.get("name"), str) else None)
    path = params.get("path") if isinstance(params.get("path"), str) else None
    items = params.get("items")
    out: list[tuple[str, str | None]] = []
    if isinstance(items, list):
        for item in items:
            if not isinstance(item, list | tuple) or not item or not isinstance(item[0], str):
                continue
            if vault is not None:  # (path, value) pairs of one vault
                out.append((vault, item[0]))
            elif len(item) > 1 and isinstance(item[1], str):  # (vault, path) pairs
                out.append((item[0], item[1]))
        return out
    for src, dst in (("src_vault", "src_path"), ("dst_vault", "dst_path")):
        if isinstance(params.get(src), str):
            where = params.get(dst)
            out.append((params[src], where if isinstance(where, str) else None))
    if vault is not None:
        out.append((vault, path))
    names = params.get("vaults")
    if isinstance(names, list):
        out.extend((v, None) for v in names if isinstance(v, str))
    return out


def _head(node: Node, vault: str) -> str:
    try:
        head = node.vaults.open(vault).head()
    except PolykeyError:
        return ""
    return head.decode() if head else ""


def record_git(node: Node, peer: NodeId, kind: str, path: str) -> None:
    """Record a stock git client's request before it is served (the head it is offered as
    the commit); AuditUnavailable (and the request is not served) when it cannot be."""
    from polykey.ids import encode_node_id

    wanted = path.strip().strip("'\"").strip("/").removesuffix(".git")[:200]
    info = next((i for i in node.vaults.all() if wanted in (i.id, i.name)), None)
    event = Event(encode_node_id(peer), f"peer:{kind}", info.id if info else wanted)
    if info is not None and node.acl.permissions(info.id, peer):
        event = replace(event, commit=_head(node, info.name))
    node.audit.append([event])


# --- checkpoints in the sigchain --------------------------------------------------------------


def checkpoints(node: Node) -> list[tuple[int, str]]:
    """The (count, head digest) of every audit-checkpoint claim in this node's sigchain."""
    from polykey.trust.sigchain_entry import AUDIT_CHECKPOINT

    return [
        (int(e.payload["count"]), str(e.payload["head"]))
        for e in node.sigchain.entries()
        if e.typ == AUDIT_CHECKPOINT
    ]


def checkpoint(node: Node) -> dict[str, Any] | None:
    """Sign the log's head into the sigchain, unless nothing was recorded since the last
    checkpoint; the claim's seq, count and head, or None."""
    from polykey.trust.sigchain_entry import AUDIT_CHECKPOINT

    head = node.audit.head()
    done = checkpoints(node)
    if head.count == 0 or (done and done[-1][0] >= head.count):
        return None
    entry = node.sigchain.append(AUDIT_CHECKPOINT, {"count": head.count, "head": head.digest})
    return {"seq": entry.seq, "count": head.count, "head": head.digest}


# --- the methods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditLogParams:
    vault: str | None = None  # a name or id
    node_id: str | None = None  # a NodeId, or "local"
    since: int | None = None  # unix milliseconds
    path: str | None = None  # a path (matched by its HMAC)
    limit: int | None = None  # the last N records that match


@METHODS.method("audit.log")
def audit_log(node: Node, p: AuditLogParams) -> dict[str, Any]:
    if p.limit is not None and p.limit < 1:
        raise InvalidInput("--limit must be 1 or more")
    vaults: set[str] = set()
    if p.vault is not None:
        vaults = {p.vault} | {i.id for i in node.vaults.all() if p.vault in (i.name, i.id)}
    mac = node.audit.mac(p.path) if p.path is not None else None
    out = []
    for r in node.audit.records():
        if (
            (p.vault is None or r.vault in vaults)
            and (p.node_id is None or r.who == p.node_id)
            and (p.since is None or r.at >= p.since)
            and (p.path is None or (mac is not None and r.path == mac))
        ):
            out.append(r.as_json())
    if p.limit is not None:
        out = out[-p.limit :]
    return {"records": out, "count": node.audit.head().count}


@METHODS.method("audit.verify")
def audit_verify(node: Node, p: NoParams) -> dict[str, Any]:
    verdict = node.audit.verify(checkpoints(node))
    return {
        "count": verdict.count,
        "head": verdict.digest,
        "checkpoints": verdict.checkpoints,
        "problems": [{"seq": x.seq, "problem": str(x)} for x in verdict.problems],
    }


@dataclass(frozen=True)
class AuditExport:
    start: int = 1
    limit: int = 10_000  # records in one answer (the CLI asks page after page)


@METHODS.method("audit.export")
def audit_export(node: Node, p: AuditExport) -> dict[str, Any]:
    """Records in their stored form (canonical JSON: each one's SHA-256 is the next one's
    ``prev``), so the chain can be checked outside Polykey."""
    from polykey.vaults.audit import LOG, seq_key

    count = node.audit.head().count
    if p.start < 1 or p.limit < 1:
        raise InvalidInput("start and limit must be 1 or more")
    end = min(count, p.start + p.limit - 1)
    seqs = list(range(p.start, end + 1))
    raws = node.store.get_many(LOG, [seq_key(s) for s in seqs])
    lines = [r.decode("ascii") if isinstance(r, bytes) else "" for r in raws]
    missing = [s for s, line in zip(seqs, lines, strict=True) if not line]
    if missing:
        raise AuditBroken(f"record {missing[0]} is missing", hint="Run `pk audit verify`.")
    return {"records": lines, "count": count, "next": end + 1 if end < count else None}


@METHODS.method("audit.checkpoint")
def audit_checkpoint(node: Node, p: NoParams) -> dict[str, Any]:
    done = checkpoint(node)
    return {"signed": done is not None, **(done or {"count": node.audit.head().count})}


@dataclass(frozen=True)
class ExposureShow:
    node: str  # a NodeId, or the label a report was kept under (a child's name)


@METHODS.method("exposure.show")
def exposure_show(node: Node, p: ExposureShow) -> dict[str, Any]:
    """The kept reports of a node (by NodeId or label), each with what is still current; a
    node with none kept and access now: a live report, not kept."""
    from polykey.ids import decode_node_id
    from polykey.vaults import exposure

    reports = [
        r for r in exposure.kept(node.vaults) if p.node in (r.get("node_id"), r.get("label"))
    ]
    if reports:
        return {"reports": [exposure.shown(node.vaults, r) for r in reports], "live": False}
    peer = decode_node_id(p.node)  # InvalidNodeId: neither a NodeId nor a label kept
    could: dict[str, tuple[list[str], str | None]] = {}
    for info in node.vaults.all():
        perms = node.acl.permissions(info.id, peer)
        folder = node.acl.folder(info.id, peer)
        if perms or folder is not None:
            could[info.id] = (perms, folder.path if folder is not None else None)
    live = exposure.build(node.vaults, node.audit, p.node, could, "access held now")
    return {"reports": [exposure.shown(node.vaults, live)], "live": True}
