"""The node and its keys: `pk node info/check`, `pk keys public/sign/decrypt`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS
from polykey.rpc import NoParams

if TYPE_CHECKING:
    from polykey.node import Node


@METHODS.method("node.info")
def node_info(node: Node, p: NoParams) -> dict[str, Any]:
    return asdict(node.info())


@METHODS.method("node.check")
def node_check(node: Node, p: NoParams) -> dict[str, Any]:
    damage = node.check()
    found = [{"place": d.place, "problem": d.problem, "kind": d.kind} for d in damage]
    return {"ok": not damage, "damage": found}


@METHODS.method("keys.public")
def keys_public(node: Node, p: NoParams) -> dict[str, Any]:
    from polykey.ids import encode_node_id

    return {"node_id": encode_node_id(node.node_id), "openssh": node.key.openssh_public()}


@METHODS.method("keys.openssh_private")
def keys_openssh_private(node: Node, p: NoParams) -> dict[str, Any]:
    return {"pem": node.key.signing.openssh_private_pem()}


@dataclass(frozen=True)
class Data:
    data: bytes = field(repr=False)


@METHODS.method("keys.sign")
def keys_sign(node: Node, p: Data) -> dict[str, Any]:
    return {"signature": node.sign_file(p.data)}


@METHODS.method("keys.decrypt")
def keys_decrypt(node: Node, p: Data) -> dict[str, Any]:
    return {"data": node.decrypt(p.data)}
