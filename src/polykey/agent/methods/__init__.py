"""The operations the CLI asks for, in one registry, whether the agent runs them or the CLI itself.

Each method is a thin adapter: it takes the unlocked Node and its params as a frozen dataclass
(checked by :mod:`polykey.rpc`), calls the domain below (node.py, vaults/, sync/, trust/) and
returns a dict of JSON values (plus bytes where a secret travels). The agent serves exactly this
registry over its socket (bytes become ``{"$b64": ...}`` on the wire); without an agent, the CLI
calls it in-process. So every command behaves the same in both modes.

By room: node.py (the node and its keys), vaults.py, secrets.py (secrets and tags), sharing.py
(nodes, grants, sync, notifications), own.py (own nodes: sync, backup, restore), transfer.py
(import and export), trust.py (sigchain, gestalts, identities), health.py (`pk health`). The
methods that act on the agent itself (``agent.*``, ``keys.password``) are control.py's, served
by the agent alone.

A room registers its methods when it is imported, and a room is imported when one of its
methods is first asked for (``ROOMS`` names the room of each method; a test checks it against
what the rooms register): a `pk` command run without an agent imports one room, not seven.
Listing the registry (``iter``, ``len``) imports them all; so does a name the table lacks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import TYPE_CHECKING, Any

from polykey.rpc import InvalidParams, Method, Registry, UnknownMethod

if TYPE_CHECKING:
    from polykey.node import Node

__all__ = ["METHODS", "ROOMS", "InvalidParams", "UnknownMethod", "call"]

_BY_ROOM = {
    "node": "keys.code_handed keys.decrypt keys.openssh_private keys.pending_code keys.public"
    " keys.renew keys.renewals"
    " keys.revoke_old keys.sign node.check node.info",
    "vaults": "vaults.conflicts vaults.create vaults.diff vaults.list vaults.log vaults.rename"
    " vaults.resolve vaults.retag vaults.revert vaults.rm vaults.show vaults.undo",
    "secrets": "secrets.cat secrets.complete secrets.env secrets.find secrets.grep"
    " secrets.history secrets.kind secrets.ls secrets.mkdir secrets.move secrets.rm"
    " secrets.stat secrets.write secrets.write_many tags.list tags.set",
    "sharing": "nodes.add nodes.connections nodes.link nodes.list nodes.mine nodes.ping"
    " nodes.rm nodes.unlink notifications.clear notifications.read notifications.send"
    " vaults.clone vaults.permissions vaults.pull vaults.push vaults.scan vaults.share"
    " vaults.signers vaults.unshare",
    "own": "node.backup node.restore vaults.sync",
    "transfer": "vaults.export vaults.import vaults.objects",
    "trust": "gestalts.get gestalts.list identities.authenticate identities.authenticated"
    " identities.claim identities.discover identities.get identities.list identities.provider"
    " identities.statement identities.trust identities.untrust sigchain.show sigchain.verify"
    " sigchain.forget",
    "health": "vaults.health",
    "audit": "audit.checkpoint audit.export audit.log audit.verify exposure.show",
    "reach": "nodes.home_relay nodes.seeds",
    "child": "child.create child.join child.list child.pull child.renew child.revoke child.show",
}
ROOMS: Mapping[str, str] = {m: room for room, names in _BY_ROOM.items() for m in names.split()}
"""The room (module of this package) that registers each method."""


class _Lazy(Registry["Node", dict[str, Any]]):
    """The registry, filled a room at a time as its methods are asked for."""

    def _load(self, name: object) -> None:
        room = ROOMS.get(name) if isinstance(name, str) else None
        if room is not None:
            import_module(f"{__name__}.{room}")
        if name not in self._methods:  # a name the table lacks (or misplaces): every room
            self.load_all()

    def load_all(self) -> None:
        """Import every room (the agent's start; a listing of the registry)."""
        for room in _BY_ROOM:
            import_module(f"{__name__}.{room}")

    def __contains__(self, name: object) -> bool:
        if name not in self._methods:
            self._load(name)
        return name in self._methods

    def __iter__(self) -> Iterator[str]:
        self.load_all()
        return super().__iter__()

    def __len__(self) -> int:
        self.load_all()
        return super().__len__()

    def get(self, name: str) -> Method[Node, dict[str, Any]]:
        if name not in self._methods:
            self._load(name)
        return super().get(name)


METHODS: Registry[Node, dict[str, Any]] = _Lazy()
"""Every node method, by name (docs/spec/agent.md)."""


def call(node: Node, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run the method ``name`` on ``node``: UnknownMethod, InvalidParams, or its result."""
    return METHODS.call(node, name, params)
