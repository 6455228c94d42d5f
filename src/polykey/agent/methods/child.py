"""Child nodes: `pk child create|join|pull|list|show|renew|revoke` (the domain is child.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS
from polykey.rpc import NoParams

if TYPE_CHECKING:
    from polykey.node import Node


@dataclass(frozen=True)
class ChildCreate:
    name: str
    vaults: list[str] = field(default_factory=list, repr=False)  # V or V:PATH each
    address: str = ""  # where the child reaches this node, HOST:PORT
    perms: list[str] = field(default_factory=list, repr=False)
    expires_in: int = 0  # seconds; 0: never
    reshare: bool = False
    to: str | None = None  # the child's node file; None: a join token
    password: bytes | None = field(default=None, repr=False)  # the child's, with ``to``
    fast_kdf: bool = False  # tests: the child's node file with a fast, weak KDF
    child_address: str = ""  # where the child will serve peers, HOST:PORT; "": it tells


@METHODS.method("child.create")
def child_create(node: Node, p: ChildCreate) -> dict[str, Any]:
    from polykey import child
    from polykey.errors import InvalidInput
    from polykey.node import FAST_INSECURE_KDF

    if not p.address:
        raise InvalidInput(
            "the child must know where to reach this node",
            hint="Pass --address HOST:PORT (the port this node's agent serves peers on).",
        )
    expires = int(time.time()) + p.expires_in if p.expires_in else None
    wanted = [child.Wanted.parse(v) for v in p.vaults]
    grant = child.make_grant(node, wanted, p.perms, expires, p.reshare)
    if p.to is None:
        return child.create(node, p.name, grant, p.address, child_at=p.child_address)
    return child.create(
        node,
        p.name,
        grant,
        p.address,
        child_at=p.child_address,
        to=Path(p.to),
        password=p.password,
        kdf=FAST_INSECURE_KDF if p.fast_kdf else None,
        allow_weak=p.fast_kdf,
    )


@dataclass(frozen=True)
class ChildJoin:
    token: str = field(repr=False)
    address: str = ""  # where this node serves peers, HOST:PORT, told to the parent


@METHODS.method("child.join")
def child_join(node: Node, p: ChildJoin) -> dict[str, Any]:
    from polykey import child

    return child.join(node, p.token, p.address)


@dataclass(frozen=True)
class ChildPull:
    address: str = ""  # where this node serves peers now, HOST:PORT, told to the parent


@METHODS.method("child.pull")
def child_pull(node: Node, p: ChildPull) -> dict[str, Any]:
    from polykey import child

    return child.pull(node, p.address)


@METHODS.method("child.list")
def child_list(node: Node, p: NoParams) -> dict[str, Any]:
    from polykey import child

    return {"children": child.children(node)}


@dataclass(frozen=True)
class ChildName:
    name: str


@METHODS.method("child.show")
def child_show(node: Node, p: ChildName) -> dict[str, Any]:
    from polykey import child

    return child.show(node, p.name)


@dataclass(frozen=True)
class ChildRenew:
    name: str
    expires_in: int = 0  # seconds from now; 0: never


@METHODS.method("child.renew")
def child_renew(node: Node, p: ChildRenew) -> dict[str, Any]:
    from polykey import child

    expires = int(time.time()) + p.expires_in if p.expires_in else None
    return child.renew(node, p.name, expires)


@METHODS.method("child.revoke")
def child_revoke(node: Node, p: ChildName) -> dict[str, Any]:
    from polykey import child

    return child.revoke(node, p.name)
