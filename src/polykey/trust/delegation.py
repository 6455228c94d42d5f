"""Delegations: what a child node may do, read from the sigchains held (docs/spec/delegation.md).

A parent hands a child a ``delegate`` claim in its own sigchain, countersigned by the child; its
``grant`` names vaults (or folders of them), actions, an expiry and whether the child may
delegate further (``reshare``). A child's rights are always a subset of its parent's: this
module walks the delegations from the serving node down to the asking node and intersects the
grants along the way, so a grandchild never holds more than its grandparent gave. An expired or
revoked delegation counts for nothing (the newest claim about a child decides, as every
subject's does in a chain: trust/sigchain_chain.py ``chain_state``).

Pure parts (``parse_grant``, ``intersect``) and ``Delegations``, the Node's view over its own
chain and the verified copies of other chains it holds. Nothing here touches the network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from polykey.errors import PolykeyError
from polykey.ids import NodeId, encode_node_id
from polykey.trust.sigchain import DELEGATE, PeerChains, Sigchain, chain_state

GRANT_VERSION = 1
ACTIONS = ("scan", "clone", "pull", "push")
MAX_VAULTS = 64
MAX_DEPTH = 8  # delegations from the serving node down to the asking one
MAX_PATH = 1024
MAX_NAME = 255


class BadGrant(PolykeyError):
    """Not a valid delegation grant"""

    exit_code = 58
    hint = "A grant is shaped as docs/spec/delegation.md says; nothing was taken."


@dataclass(frozen=True)
class VaultGrant:
    """One vault (by id) or one folder of it (``path``), and what may be done with it."""

    vault: str
    actions: frozenset[str]
    path: str | None = None
    name: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.vault, "actions": sorted(self.actions)}
        if self.name:
            out["name"] = self.name
        if self.path is not None:
            out["path"] = self.path
        return out


@dataclass(frozen=True)
class Grant:
    vaults: tuple[VaultGrant, ...]
    expires: int | None = None  # seconds since the epoch; None: never
    reshare: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "v": GRANT_VERSION,
            "vaults": [v.as_json() for v in self.vaults],
            "expires": self.expires,
            "reshare": self.reshare,
        }

    def live(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    def of(self, vault_id: str) -> list[VaultGrant]:
        return [v for v in self.vaults if v.vault == vault_id]


def expand(actions: Iterable[str]) -> frozenset[str]:
    """What an action brings with it: pull brings clone (a first pull is a clone), push pull."""
    out = set(actions)
    unknown = sorted(out - set(ACTIONS))
    if unknown:
        raise BadGrant(f"unknown action {unknown[0][:20]!r}", hint=f"Use {', '.join(ACTIONS)}.")
    if "push" in out:
        out.add("pull")
    if "pull" in out:
        out.add("clone")
    return frozenset(out)


def check_path(path: str) -> str:
    """A folder of a vault as a grant names it: relative, no empty, ``.`` or ``..`` part."""
    parts = path.strip("/").split("/")
    if not path or len(path) > MAX_PATH or any(p in ("", ".", "..") for p in parts):
        raise BadGrant("a path must be a folder of the vault, such as prod/db")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        raise BadGrant("a path must hold no control characters")
    return "/".join(parts)


def parse_grant(doc: object) -> Grant:
    """A grant from its JSON form (a delegate claim's ``grant``), or BadGrant."""
    if not isinstance(doc, dict) or doc.get("v") != GRANT_VERSION:
        raise BadGrant(f"it must be an object of version {GRANT_VERSION}")
    vaults, expires, reshare = doc.get("vaults"), doc.get("expires"), doc.get("reshare", False)
    if not isinstance(vaults, list) or not 1 <= len(vaults) <= MAX_VAULTS:
        raise BadGrant(f"its vaults must be a list of 1 to {MAX_VAULTS}")
    if expires is not None and (type(expires) is not int or expires < 0):
        raise BadGrant("its expires must be null or a time in whole seconds")
    if type(reshare) is not bool:
        raise BadGrant("its reshare must be true or false")
    out = []
    for item in vaults:
        if not isinstance(item, dict):
            raise BadGrant("each vault must be an object")
        vault, actions = item.get("id"), item.get("actions")
        name, path = item.get("name", ""), item.get("path")
        if not isinstance(vault, str) or not 0 < len(vault) <= 64:
            raise BadGrant("each vault must name its id")
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise BadGrant("each vault must list its actions")
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise BadGrant(f"a vault's name must be text of at most {MAX_NAME} characters")
        if path is not None and not isinstance(path, str):
            raise BadGrant("a vault's path must be text")
        out.append(VaultGrant(vault, expand(actions), check_path(path) if path else None, name))
    return Grant(tuple(out), expires, reshare)


def intersect(a: VaultGrant, b: VaultGrant) -> VaultGrant | None:
    """What both allow: the same vault, the narrower folder (None when the folders do not
    nest), the actions both name."""
    if a.vault != b.vault:
        return None
    actions = a.actions & b.actions
    if a.path is None or b.path is None:
        path = a.path if b.path is None else b.path
    elif _within(a.path, b.path):
        path = a.path
    elif _within(b.path, a.path):
        path = b.path
    else:
        return None
    if not actions:
        return None
    return VaultGrant(a.vault, actions, path, b.name or a.name)


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer + "/")


def full(vault_id: str) -> VaultGrant:
    return VaultGrant(vault_id, frozenset(ACTIONS))


@dataclass(frozen=True)
class Effective:
    """A right the delegations give a node: a vault, optionally one folder, and actions."""

    vault: str
    path: str | None
    actions: frozenset[str]


@dataclass
class _Index:
    """Every delegation in the chains held: who was ever delegated to, and the live grants."""

    ever: dict[str, set[str]] = field(default_factory=dict)  # child -> issuers, ever
    live: dict[tuple[str, str], tuple[str, Grant]] = field(default_factory=dict)  # (iss, sub)


Lineage = Callable[[str], str | None]
"""vault id -> the NodeId its clone came from ("" for a vault of this node's own; None: none)."""


class Delegations:
    """What the delegations in the chains this node holds allow; made by the Node."""

    def __init__(
        self,
        own: Sigchain,
        chains: PeerChains,
        lineage: Lineage,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.own = own
        self.chains = chains
        self.lineage = lineage
        self.now = now
        self._epoch = -1
        self._index = _Index()

    def __repr__(self) -> str:
        return "Delegations()"

    @property
    def me(self) -> str:
        return encode_node_id(self.own.node_id)

    def index(self) -> _Index:
        epoch = self.own.store.epoch
        if epoch != self._epoch:
            index = _Index()
            owners: list[tuple[str, Any]] = [(self.me, self.own.entries())]
            owners += [(encode_node_id(n), self.chains.entries(n)) for n in self.chains.nodes()]
            for owner, entries in owners:
                for e in entries:
                    if e.typ == DELEGATE:
                        index.ever.setdefault(e.sub, set()).add(owner)
                for child, claimed in chain_state(entries).delegations.items():
                    try:
                        index.live[(owner, child)] = (claimed.jti, parse_grant(claimed.grant))
                    except BadGrant:
                        continue
            self._index, self._epoch = index, epoch
        return self._index

    def subjects(self) -> set[str]:
        """Every node a held chain delegates to now (the peer port knows them)."""
        return {sub for (_, sub) in self.index().live}

    def issued(self) -> dict[str, tuple[str, Grant]]:
        """This node's live delegations: child NodeId -> (jti, grant), expired ones included."""
        me = self.me
        return {sub: v for (iss, sub), v in self.index().live.items() if iss == me}

    def received(self) -> dict[str, tuple[str, Grant]]:
        """The live delegations to this node: issuer NodeId -> (jti, grant)."""
        me = self.me
        return {iss: v for (iss, sub), v in self.index().live.items() if sub == me}

    def effective(self, vault_id: str, node_id: NodeId | str) -> list[Effective]:
        """What the delegations give ``node_id`` on this node's vault ``vault_id``: walked from
        this node down to it, bounded by this node's own delegation when the vault is a clone
        it was delegated. Empty when nothing (expired, revoked, never). A right with a
        ``path`` reaches that folder alone: the ACL takes it as a folder grant (trust/acl.py),
        served as the vault derived to it; a folder below a folder is the narrower one, and
        folders that do not nest give nothing (``intersect``)."""
        node = node_id if isinstance(node_id, str) else encode_node_id(node_id)
        index = self.index()
        me = self.me
        if node == me or node not in index.ever:
            return []
        down = self._down(index, node, vault_id, issuing=False, seen=frozenset())
        if not down:
            return []
        origin = self.lineage(vault_id)
        if origin and me in index.ever:  # a delegated clone: bounded by what this node holds
            bound = self._up(index, me, vault_id, origin, frozenset())
            down = [x for d in down for b in bound if (x := intersect(d, b)) is not None]
        return [Effective(v.vault, v.path, v.actions) for v in _merge(down)]

    def _issuers(self, index: _Index, node: str, issuing: bool) -> list[tuple[str, Grant]]:
        now = self.now()
        out = []
        for issuer in sorted(index.ever.get(node, ())):
            held = index.live.get((issuer, node))
            if held is not None and held[1].live(now) and (held[1].reshare or not issuing):
                out.append((issuer, held[1]))
        return out

    def _down(
        self, index: _Index, node: str, vault_id: str, *, issuing: bool, seen: frozenset[str]
    ) -> list[VaultGrant]:
        """What ``node`` holds through delegations starting at this node (``issuing``: what it
        may hand on, so every grant into it must allow resharing)."""
        if node == self.me:
            return [full(vault_id)]
        if len(seen) >= MAX_DEPTH or node in seen:
            return []
        out = []
        for issuer, grant in self._issuers(index, node, issuing):
            above = self._down(index, issuer, vault_id, issuing=True, seen=seen | {node})
            out += [x for v in grant.of(vault_id) for u in above if (x := intersect(u, v))]
        return out

    def _up(
        self, index: _Index, node: str, vault_id: str, first: str | None, seen: frozenset[str]
    ) -> list[VaultGrant]:
        """What ``node`` may hand on of ``vault_id`` by the delegations into it, up to a node
        never delegated to (the vault's owner). ``first``: the only issuer taken at this step
        (the node a clone came from)."""
        if node not in index.ever:
            return [full(vault_id)]
        if len(seen) >= MAX_DEPTH or node in seen:
            return []
        out = []
        for issuer, grant in self._issuers(index, node, issuing=True):
            if first is not None and issuer != first:
                continue
            above = self._up(index, issuer, vault_id, None, seen | {node})
            out += [x for v in grant.of(vault_id) for u in above if (x := intersect(u, v))]
        return out


def _merge(grants: list[VaultGrant]) -> list[VaultGrant]:
    """One entry per (vault, path), the actions of its paths joined."""
    by: dict[tuple[str, str | None], set[str]] = {}
    for g in grants:
        by.setdefault((g.vault, g.path), set()).update(g.actions)
    return [VaultGrant(v, frozenset(a), p) for (v, p), a in sorted(by.items(), key=str)]
