"""The operations the CLI asks for, in one registry, whether the agent runs them or the CLI itself.

Each method is a thin adapter: it takes the unlocked Node and its params as a frozen dataclass
(checked by :mod:`polykey.rpc`), calls the domain below (node.py, vaults/, sync/, trust/) and
returns a dict of JSON values (plus bytes where a secret travels). The agent serves exactly this
registry over its socket (bytes become ``{"$b64": ...}`` on the wire); without an agent, the CLI
calls it in-process. So every command behaves the same in both modes.

By room: node.py (the node and its keys), vaults.py, secrets.py (secrets and tags), sharing.py
(nodes, grants, sync, notifications), own.py (own nodes: sync, backup, restore), transfer.py
(import and export). The methods that act on the agent itself (``agent.*``,
``keys.password``) are control.py's, served by the agent alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from polykey.rpc import InvalidParams, Registry, UnknownMethod

if TYPE_CHECKING:
    from polykey.node import Node

__all__ = ["METHODS", "InvalidParams", "UnknownMethod", "call"]

METHODS: Registry[Node, dict[str, Any]] = Registry()
"""Every node method, by name (docs/spec/agent.md)."""


def call(node: Node, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run the method ``name`` on ``node``: UnknownMethod, InvalidParams, or its result."""
    return METHODS.call(node, name, params)


def _register() -> None:
    """Import the rooms: that registers their methods."""
    from importlib import import_module

    for room in ("node", "vaults", "secrets", "sharing", "own", "transfer", "trust"):
        import_module(f"{__name__}.{room}")


_register()
