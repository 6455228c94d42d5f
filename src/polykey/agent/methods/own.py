"""A person's own nodes: `pk vaults sync` with every linked node, `pk backup`, `pk backup
restore` (the domain is sync/own.py and backup.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS
from polykey.ids import decode_node_id, encode_node_id

if TYPE_CHECKING:
    from polykey.node import Node

PASSES = 3  # a change one linked node brought reaches the others within these passes


@dataclass(frozen=True)
class VaultsSync:
    name: str | None = None  # one vault; None: every vault
    node_id: str | None = None  # one linked node; None: every one


@METHODS.method("vaults.sync")
def vaults_sync(node: Node, p: VaultsSync) -> dict[str, Any]:
    from polykey.errors import InvalidInput, PolykeyError
    from polykey.sync.own import sync_all

    mine = node.links.mine()
    if p.node_id is not None:
        wanted = decode_node_id(p.node_id)
        if wanted not in mine:
            raise InvalidInput(
                f"{p.node_id} is not one of this node's own",
                hint="Link it first: `pk nodes link NODEID` on both nodes.",
            )
        mine = [wanted]
    if not mine:
        raise InvalidInput(
            "this node has no linked nodes to sync with",
            hint="Link your other nodes with `pk nodes link NODEID` (on both of them).",
        )
    names = [node.vaults.info(p.name).name] if p.name else None
    report: dict[str, dict[str, Any]] = {}
    for _ in range(PASSES):
        moved = False
        for peer in mine:
            key = encode_node_id(peer)
            try:
                results = sync_all(node.vaults, node.acl, node.peers, peer, names)
            except PolykeyError as exc:
                report[key] = {"node_id": key, "error": exc.message, "vaults": []}
                continue
            seen = report.setdefault(key, {"node_id": key, "vaults": []})
            seen.pop("error", None)
            seen["vaults"] = _merged(seen["vaults"], results)
            moved |= any(r.get("how") in ("pulled", "merged", "adopted") for r in results)
        if not moved or len(mine) == 1:
            break
    return {"nodes": list(report.values())}


def _merged(before: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per vault over several passes: the last, but a pass that changed something
    is not hidden by a later one that found it up to date."""
    out = {r["vault"]: r for r in before}
    for r in now:
        old = out.get(r["vault"])
        if old is not None and old.get("updated") and not r.get("updated") and "error" not in r:
            continue
        out[r["vault"]] = r
    return list(out.values())


@dataclass(frozen=True)
class Backup:
    path: str
    password: str = field(repr=False)
    weak_kdf: bool = False  # tests only (PK_UNSAFE_FAST_KDF): make and open it with a weak KDF


@METHODS.method("node.backup")
def node_backup(node: Node, p: Backup) -> dict[str, Any]:
    from polykey.backup import backup
    from polykey.node import DEFAULT_KDF, FAST_INSECURE_KDF

    kdf = FAST_INSECURE_KDF if p.weak_kdf else DEFAULT_KDF
    return backup(node, Path(p.path), p.password.encode(), kdf=kdf, allow_weak=p.weak_kdf)


@METHODS.method("node.restore")
def node_restore(node: Node, p: Backup) -> dict[str, Any]:
    from polykey.backup import restore

    return restore(node, Path(p.path), p.password.encode(), allow_weak=p.weak_kdf)
