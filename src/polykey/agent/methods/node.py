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


# --- key renewal (trust/rotation.py) -----------------------------------------------------------


@METHODS.method("keys.renew")
def keys_renew(node: Node, p: NoParams) -> dict[str, Any]:
    """A new key pair and NodeId; the peers this node knows are told at once (the others at
    the next contact). In a running agent, the agent then serves with the new key (its peer
    port, discovery and relay registration made again: agent/peering.py ``_renewed``)."""
    from polykey.ids import encode_node_id

    old = encode_node_id(node.node_id)
    code, done = node.renew()
    told = node.tell_renewal()
    return {
        "old": old,
        "node_id": encode_node_id(node.node_id),
        "recovery_code": str(code),
        "told": told,
        "rotation": done.as_json(),
    }


@METHODS.method("keys.pending_code")
def keys_pending_code(node: Node, p: NoParams) -> dict[str, Any]:
    """The recovery code of the last renewal, while it was never handed over (None after)."""
    return {"recovery_code": node.pending_code()}


@METHODS.method("keys.code_handed")
def keys_code_handed(node: Node, p: NoParams) -> dict[str, Any]:
    """The renewal's recovery code reached the user: the node no longer keeps it."""
    node.code_handed()
    return {}


@dataclass(frozen=True)
class RevokeOld:
    after: int
    node_id: str | None = None  # the old NodeId; the one renewed away from last by default


@METHODS.method("keys.revoke_old")
def keys_revoke_old(node: Node, p: RevokeOld) -> dict[str, Any]:
    """This node's old key was stolen: its signatures made after ``after`` are refused here
    and by the peers told (a key-compromised claim), and it is no longer kept."""
    from polykey.errors import InvalidInput
    from polykey.ids import encode_node_id
    from polykey.trust.rotation import compromise, rotations

    mine = sorted((r for r in rotations(node.store).values() if r.own), key=lambda r: r.at)
    if not mine:
        raise InvalidInput("this node never renewed its key", hint="`pk keys renew` does.")
    old = p.node_id or next(
        (r.old for r in reversed(mine) if r.new == encode_node_id(node.node_id)), mine[-1].old
    )
    done = compromise(node.store, node.sigchain, old, p.after)
    return {"rotation": done.as_json(), "told": node.tell_renewal()}


@METHODS.method("keys.renewals")
def keys_renewals(node: Node, p: NoParams) -> dict[str, Any]:
    """Every key rotation this node knows: its own and its peers'."""
    from polykey.trust.rotation import rotations

    found = sorted(rotations(node.store).values(), key=lambda r: (r.at, r.old))
    waiting = node.pending_code() is not None  # a renewal's code never shown
    return {"renewals": [r.as_json() for r in found], "code_waiting": waiting}
