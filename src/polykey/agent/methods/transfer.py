"""The methods behind `pk import` and `pk export`: a whole import lands in one transaction (all
of it or none; vaults/importing.py), and an export reads a vault (or a folder of it) in one go
(vaults/search.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS, InvalidParams
from polykey.agent.methods.sharing import vault_writers

if TYPE_CHECKING:
    from polykey.node import Node


@dataclass(frozen=True)
class VaultsImport:
    vault: str
    # each commit: (message, [(path, value)], {path: tags})
    commits: list[tuple[str, list[tuple[str, bytes]], dict[str, list[str]]]] = field(repr=False)
    create: bool = False
    overwrite: bool = False
    replace: list[str] = field(default_factory=list)  # entry folders replaced whole
    dry_run: bool = False


@METHODS.method("vaults.import")
def vaults_import(node: Node, p: VaultsImport) -> dict[str, Any]:
    """Write imported entries (vaults/importing.py). With ``overwrite``, existing secrets at
    the same paths are replaced, and each folder named in ``replace`` loses the secrets the
    import does not bring. ``dry_run`` makes every check and writes nothing."""
    from polykey.vaults.importing import import_commits

    if not p.commits:
        raise InvalidParams("vaults.import: commits must be a non-empty list")
    done = import_commits(
        node.vaults,
        p.vault,
        p.commits,
        create=p.create,
        overwrite=p.overwrite,
        replace=p.replace,
        dry_run=p.dry_run,
    )
    if done.dry_run:
        return {"vault": done.vault, "created": done.created, "secrets": done.secrets,
                "commits": 0, "paths": done.paths, "removed": done.removed,
                "dry_run": True}  # fmt: skip
    return {
        "vault": done.vault,
        "created": done.created,
        "secrets": done.secrets,
        "removed": done.removed,
        "commits": len(done.commits),
        "commit": done.commits[-1] if done.commits else None,
    }


@dataclass(frozen=True)
class VaultsExport:
    vault: str
    path: str | None = None  # a folder; the whole vault without it
    rev: str | None = None


@METHODS.method("vaults.export")
def vaults_export(node: Node, p: VaultsExport) -> dict[str, Any]:
    """Every secret of a vault (or under PATH) with its value, and the vault's tags."""
    from polykey.vaults.search import read_folder

    folder = read_folder(node.vaults.open(p.vault), p.path or "", p.rev)
    files = [[name, value] for name, value in folder.files]
    return {"vault": folder.vault, "head": folder.head, "files": files, "tags": folder.tags}


@dataclass(frozen=True)
class VaultsObjects:
    vault: str


@METHODS.method("vaults.objects")
def vaults_objects(node: Node, p: VaultsObjects) -> dict[str, Any]:
    """Every git object of a vault's history (type byte + raw body), and its writers (the
    allowed signers of `export git`)."""
    from polykey.sync.service import collect
    from polykey.trust.rotation import rotations

    vault = node.vaults.open(p.vault)
    writers = vault_writers(node, vault.name)
    until = {o: r.until for o, r in rotations(node.store).items() if o in writers}  # renewed
    head = vault.head()
    if head is None:
        return {"vault": vault.name, "head": None, "objects": [], "writers": writers}
    return {
        "vault": vault.name,
        "head": head.decode(),
        "objects": collect(vault, head, set()),
        "writers": writers,
        "until": until,
    }
