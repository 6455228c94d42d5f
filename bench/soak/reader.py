"""Reading a node back inside the soak's own process: the node file opened with the same code and
the same method table the CLI uses when no agent runs (`polykey.agent.methods`), without starting
an interpreter per read. The soak reads this way after most runs (it reads the file itself, so an
acknowledged write must be on disk, not only in an agent); every few runs, and at the end, it
reads through `pk` too (through the agent, and on the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.soak.nodes import HarnessError, Node

Export = tuple[str, dict[str, str], dict[str, Any]]  # (commit, {"vault:path": text}, tags)


class Unopenable(HarnessError):
    """The node file did not open (a finding, not a harness failure)."""


def _call(node: Node, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    from polykey.agent import methods
    from polykey.errors import PolykeyError
    from polykey.node import Node as PkNode

    password = node.env["PK_PASSWORD"].encode()
    try:
        opened = PkNode.open(Path(node.path), password, allow_weak=True)
    except PolykeyError as exc:
        raise Unopenable(f"{node.name}: {type(exc).__name__}: {exc}") from None
    try:
        return [methods.call(opened, name, params) for name, params in calls]
    except PolykeyError as exc:
        raise HarnessError(f"{node.name}: {type(exc).__name__}: {exc}") from None
    finally:
        opened.close()


def exports(node: Node, vaults: list[str]) -> dict[str, Export]:
    """What `pk export json VAULT` shows, for each vault, from one opening of the file."""
    out: dict[str, Export] = {}
    for vault, r in zip(
        vaults, _call(node, [("vaults.export", {"vault": v}) for v in vaults]), strict=True
    ):
        secrets = {f"{vault}:{path}": data.decode(errors="replace") for path, data in r["files"]}
        out[vault] = (str(r["head"]), secrets, dict(r.get("tags") or {}))
    return out


def vault_list(node: Node) -> list[dict[str, Any]]:
    vaults = _call(node, [("vaults.list", {})])[0]["vaults"]
    assert isinstance(vaults, list)
    return vaults
