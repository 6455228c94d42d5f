"""The Node facade: one unlocked node, its store, its keys, and what it knows of other nodes.

The CLI (when no agent runs) and the agent both work through this class; it joins the layers
below it and holds no terminal, environment or argv logic. It owns the vaults, the links with
its own other nodes, the ACL, the node graph and the peers (the pool of connections): nobody
else constructs them, so two nodes can live in one process without sharing state.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polykey.crypto.kdf import Argon2Params, equal
from polykey.errors import InvalidInput, NodeDamaged, PolykeyError, WrongRecoveryCode
from polykey.ids import NodeId, encode_node_id
from polykey.keys import recovery
from polykey.keys.root import RootKey, encrypt_to, verify_file
from polykey.network.graph import Graph
from polykey.network.peers import Peers
from polykey.notifications import Notifications
from polykey.store.header import new_salt
from polykey.store.nodefile import Damage, NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.trust.acl import Acl
from polykey.trust.delegation import Delegations
from polykey.trust.gestalts import Gestalts
from polykey.trust.links import LINKED, BadAnswer, BadStatement, Links
from polykey.trust.sigchain import PeerChains, Sigchain
from polykey.vaults.audit import AuditLog
from polykey.vaults.registry import Vaults

__all__ = [
    "DEFAULT_KDF",
    "FAST_INSECURE_KDF",
    "KdfCost",
    "Node",
    "NodeInfo",
    "encrypt_to",
    "verify_file",
]

NODE_KEYS = Namespace("node/keys")
PROVIDERS = Namespace("trust/providers")
"""provider name -> JSON settings (base URLs, a DNS server): `pk identities provider`."""
TOKENS = Namespace("trust/tokens")
"""provider name -> the access token `pk identities authenticate` got (sealed, as every record)."""
NODE_META = Namespace("node/meta")
ROOT_SEED = b"root-seed"
PENDING_CODE = b"pending-recovery-code"
"""A renewal's new recovery code, kept (sealed) from the renewal's transaction until the
command hands it over: a renewing command killed in between loses no code."""


@dataclass(frozen=True)
class KdfCost:
    """Argon2id cost, without a salt; each use draws a fresh salt."""

    memory_kib: int
    iterations: int
    lanes: int

    def params(self) -> Argon2Params:
        return Argon2Params(self.memory_kib, self.iterations, self.lanes, new_salt())


DEFAULT_KDF = KdfCost(memory_kib=64 * 1024, iterations=3, lanes=4)
"""Close to RFC 9106's second recommended profile (64 MiB, t=3, p=4)."""

FAST_INSECURE_KDF = KdfCost(memory_kib=64, iterations=1, lanes=1)
"""For tests only: every open refuses it unless weak parameters are explicitly allowed."""


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    path: str
    format: int
    kdf: dict[str, Any]
    created: str
    vault_count: int
    epoch: int


class Node:
    """An unlocked node."""

    def __init__(self, store: NodeFile, key: RootKey) -> None:
        self.store = store
        self.key = key
        self.vaults = Vaults(store, key)
        self.links = Links(store, key)
        self.acl = Acl(store, self.links)
        self.graph = Graph(store)
        self.peers = Peers(self.graph, key.signing.openssh_private_pem)
        self.notifications = Notifications(store, self.acl, self.graph, self.peers)
        self.sigchain = Sigchain(store, key)
        self.chains = PeerChains(store)
        self.gestalts = Gestalts(store, self.sigchain, self.chains, self.provider_for)
        self.acl.gestalts = self.gestalts
        self.acl.delegations = Delegations(self.sigchain, self.chains, self._lineage)
        self._device_flows: dict[str, Any] = {}  # provider -> a device flow under way
        self.presented: dict[bytes, int] = {}  # peer -> the head of this chain it was handed
        self.untold_tried: dict[str, float] = {}  # peer -> when it was last told of a renewal
        self.audit = AuditLog(store)  # docs/spec/audit.md

    def __repr__(self) -> str:
        return f"Node({encode_node_id(self.node_id)}, {str(self.store.path)!r})"

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def bootstrap(
        cls,
        path: Path,
        password: bytes,
        *,
        kdf: KdfCost = DEFAULT_KDF,
        code: recovery.RecoveryCode | None = None,
        allow_weak: bool = False,
    ) -> tuple[Node, recovery.RecoveryCode]:
        """Create a node file; a new recovery code unless one is given (same NodeId again)."""
        code = code if code is not None else recovery.generate()
        secret = code.seed()
        key = RootKey.from_seed(secret[:32])
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

        def initial(tx: Transaction) -> None:
            tx.put(NODE_KEYS, ROOT_SEED, key.signing.seed())
            tx.put(NODE_META, b"created", created.encode())

        store = NodeFile.create(
            path, password, secret, kdf.params(), allow_weak=allow_weak, initial=initial
        )
        return cls(store, key), code

    @classmethod
    def open(cls, path: Path, password: bytes, *, allow_weak: bool = False) -> Node:
        store = NodeFile.open(path, password, allow_weak=allow_weak)
        return cls._with_key(store)

    @classmethod
    def recover(
        cls,
        path: Path,
        code: recovery.RecoveryCode,
        new_password: bytes,
        *,
        kdf: KdfCost = DEFAULT_KDF,
        allow_weak: bool = False,
    ) -> Node:
        """Unlock with the recovery code and set a new password."""
        secret = code.seed()
        store = NodeFile.open_with_recovery(path, secret, allow_weak=allow_weak)
        try:
            node = cls._with_key(store)
            if not equal(node.key.signing.public, RootKey.from_seed(secret[:32]).signing.public):
                raise WrongRecoveryCode("it unlocks the file but belongs to another identity")
            store.change_password(new_password, kdf.params())
        except BaseException:
            store.close()
            raise
        return node

    @classmethod
    def _with_key(cls, store: NodeFile) -> Node:
        try:
            seed = store.get(NODE_KEYS, ROOT_SEED)
            if seed is None or len(seed) != 32:
                raise NodeDamaged("the root key record is missing")
        except BaseException:
            store.close()
            raise
        return cls(store, RootKey.from_seed(seed))

    def close(self) -> None:
        self.peers.close()
        self.store.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lineage(self, vault_id: str) -> str | None:
        """The node a vault was cloned from ("" for one of this node's own; None: no such)."""
        info = next((i for i in self.vaults.all() if i.id == vault_id), None)
        return None if info is None else str(info.origin.get("node_id", ""))

    # --- facts ------------------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self.key.node_id

    def info(self) -> NodeInfo:
        header = self.store.header
        created = self.store.get(NODE_META, b"created") or b""
        return NodeInfo(
            node_id=encode_node_id(self.node_id),
            path=str(self.store.path),
            format=header.format,
            kdf={
                "algorithm": "argon2id",
                "memory_kib": header.kdf.memory_kib,
                "iterations": header.kdf.iterations,
                "lanes": header.kdf.lanes,
            },
            created=created.decode(errors="replace"),
            vault_count=self.vaults.count(),
            epoch=self.store.epoch,
        )

    def check(self) -> list[Damage]:
        """Every damaged place in the node file; empty when it is whole."""
        damage = _check_store(self.store)
        try:
            seed = self.store.get(NODE_KEYS, ROOT_SEED)
        except NodeDamaged:
            return damage
        if seed is not None and not equal(
            RootKey.from_seed(seed).signing.public, self.key.signing.public
        ):
            damage.append(Damage("node/keys/root-seed", "root key changed while open"))
        return damage

    @staticmethod
    def check_file(path: Path, password: bytes, *, allow_weak: bool = False) -> list[Damage]:
        """Unlock and check a node file whose records may be too damaged to open it as a Node."""
        with NodeFile.open(path, password, allow_weak=allow_weak, load_root=False) as store:
            return _check_store(store)

    # --- keys -------------------------------------------------------------------------------------

    def change_password(self, new_password: bytes, *, kdf: KdfCost = DEFAULT_KDF) -> None:
        self.store.change_password(new_password, kdf.params())

    def sign_file(self, data: bytes) -> str:
        return self.key.sign_file(data)

    def decrypt(self, ciphertext: bytes) -> bytes:
        return self.key.decrypt(ciphertext)

    # --- key renewal (trust/rotation.py, docs/spec/keys.md) --------------------------------------

    def renew(self) -> tuple[recovery.RecoveryCode, Any]:
        """A new key pair and NodeId: the new recovery code (the old one derives the old key)
        and the rotation. Every part of the node is made again with the new key."""
        from polykey.trust import rotation

        if self.pending_code() is not None:
            raise InvalidInput(
                "the last renewal's recovery code was never shown",
                hint="`pk keys pending-code` shows it; renew after that.",
            )
        code = recovery.generate()
        new_key = RootKey.from_recovery_code(code)
        parts = (self.sigchain, self.chains, self.acl, self.vaults)
        root = (NODE_KEYS, ROOT_SEED)  # the new code's wrap lands with the rest (one transaction)
        pending = [(NODE_KEYS, PENDING_CODE, str(code).encode())]  # until it is handed over
        done = rotation.renew(
            self.store, self.key, new_key, *parts, root, code.seed(),
            untold=sorted(self._known_peers()), also=pending,
        )  # fmt: skip
        self.peers.close()
        Node.__init__(self, self.store, new_key)
        return code, done

    def pending_code(self) -> str | None:
        """The recovery code of the last renewal while it was never handed over (the command
        that renewed died before it could show it): `pk keys pending-code`."""
        raw = self.store.get(NODE_KEYS, PENDING_CODE)
        return None if raw is None else raw.decode()

    def code_handed(self) -> None:
        """The pending recovery code reached the user: it is no longer kept."""
        if self.store.get(NODE_KEYS, PENDING_CODE) is not None:
            with self.store.write() as tx:
                tx.delete(NODE_KEYS, PENDING_CODE)

    def _known_peers(self) -> set[str]:
        """The NodeIds of every node this one knows (addresses, grants, clones' origins)."""
        from polykey.trust import rotation

        known = {*self.graph.entries(), *self.acl.nodes()}
        known |= {str(i.origin.get("node_id", "")) for i in self.vaults.all()}
        return known - {"", encode_node_id(self.node_id), *rotation.rotations(self.store)}

    def tell_untold(self, now: float, every: float = 300.0) -> dict[str, str]:
        """Tell each peer not yet told of this node's newest renewal (a renewal whose command
        died before it told them, or a peer that was unreachable), each at most once per
        ``every`` seconds: the agent's outbox does, so that no peer stays cut off."""
        from polykey.ids import decode_node_id
        from polykey.trust import rotation

        out: dict[str, str] = {}
        for text in sorted(rotation.untold(self.store)):
            if now - self.untold_tried.get(text, float("-inf")) < every:
                continue
            self.untold_tried[text] = now
            try:
                out |= self.tell_renewal(decode_node_id(text))
            except PolykeyError as exc:
                out[text] = exc.message
        return out

    def tell_renewal(self, only: NodeId | None = None) -> dict[str, str]:
        """Tell ``only``, or every node this one knows, of its renewals (they follow)."""
        from polykey.ids import decode_node_id
        from polykey.trust import rotation

        known = self._known_peers() if only is None else set()
        targets = [only] if only is not None else []
        for text in sorted(known):
            try:
                targets.append(decode_node_id(text))
            except PolykeyError:
                continue  # a grant to an identity
        parts = (self.store, self.sigchain, self.chains, self.peers.call, targets, self.links)
        return rotation.tell(*parts)

    # --- audit and exposure (docs/spec/audit.md) --------------------------------------------------

    def expose(
        self,
        node_id: NodeId,
        reason: str,
        vault_ids: list[str] | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Make and keep the exposure report of ``node_id`` (of ``vault_ids``, else of every
        vault it may read), *before* its access ends: what it could read, what it pulled.
        `vaults unshare` calls it; so do a child's revocation and a key's (``reason`` says
        which, ``label`` names a child)."""
        from polykey.vaults import exposure

        could: dict[str, tuple[list[str], str | None]] = {}
        for info in self.vaults.all():
            if vault_ids is None or info.id in vault_ids:
                perms = self.acl.permissions(info.id, node_id)
                folder = self.acl.folder(info.id, node_id)
                if perms or folder is not None:
                    could[info.id] = (perms, folder.path if folder is not None else None)
        who = encode_node_id(node_id)
        report = exposure.build(self.vaults, self.audit, who, could, reason, label)
        with self.store.write() as tx:
            exposure.keep(tx, report)
        return report

    # --- identity providers (docs/spec/identities.md) ---------------------------------------------

    def provider_settings(self, name: str) -> dict[str, str]:
        raw = self.store.get(PROVIDERS, name.encode())
        if raw is None:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError:
            raise NodeDamaged(f"the settings of provider {name} are malformed") from None
        return {str(k): str(v) for k, v in doc.items()}

    def set_provider(self, name: str, settings: dict[str, str]) -> None:
        merged = {**self.provider_settings(name), **settings}
        _provider_config(name, merged)  # refuses a provider or a setting it does not know
        with self.store.write() as tx:
            tx.put(PROVIDERS, name.encode(), json.dumps(merged, sort_keys=True).encode())

    def provider_for(self, name: str) -> Any:
        """The provider ``name`` with this node's settings and token."""
        from polykey.trust.providers import AccessToken, get

        config = _provider_config(name, self.provider_settings(name))
        raw = self.store.get(TOKENS, name.encode()) if name == "github" else None
        token = AccessToken(raw.decode()) if raw is not None else None
        return get(name, config, token=token)

    def start_authentication(self, name: str) -> dict[str, Any]:
        """Start the provider's device flow: the code for the user to enter, and where."""
        provider = self.provider_for(name)
        code = provider.start_device_flow()
        self._device_flows[name] = code
        return {
            "provider": name,
            "user_code": code.user_code,
            "verification_uri": code.verification_uri,
            "expires_in": code.expires_in,
        }

    def finish_authentication(self, name: str) -> dict[str, Any]:
        """Wait for the user to enter the code, keep the token sealed in the node file, and
        say who it is."""
        from polykey.errors import InvalidInput

        code = self._device_flows.pop(name, None)
        if code is None:
            raise InvalidInput(
                f"no authentication with {name} is under way",
                hint=f"Run `pk identities authenticate {name}`.",
            )
        provider = self.provider_for(name)
        token = provider.poll_device_flow(code)
        with self.store.write() as tx:
            tx.put(TOKENS, name.encode(), token.reveal().encode())
        return {"provider": name, "login": self.provider_for(name).whoami()}

    def forget_authentication(self, name: str) -> bool:
        """Drop the provider's token; whether there was one."""
        with self.store.write() as tx:
            had = tx.get(TOKENS, name.encode()) is not None
            tx.delete(TOKENS, name.encode())
        return had

    # --- own nodes (docs/spec/links.md) -----------------------------------------------------------

    def link(self, node_id: NodeId) -> dict[str, Any]:
        """Make ``node_id`` one of this node's own: sign the link (kept as a request until the
        other node signs too) and send it. The other node answers with its own statement when
        it had asked already, which completes the link on both sides; otherwise it keeps this
        one as an offer until its owner runs `pk nodes link` there. Run again, it sends the same
        statement: a side that missed the answer catches up.

        ``{"node_id", "this_node", "state": "linked" | "pending", "told": bool, "reason"?}``
        (another state when a command here changed it meanwhile); a refusal by
        the other node while the link is still a request is a PeerError."""
        from polykey.network.graph import UnknownNode
        from polykey.network.ssh import PeerError, PeerUnreachable

        mine, state = self.links.link(node_id)
        out: dict[str, Any] = {
            "node_id": encode_node_id(node_id),
            "this_node": encode_node_id(self.node_id),
            "state": state,
            "told": False,
        }
        try:
            reply = self.peers.call(node_id, "nodes.link", {"statement": mine.to_json()})
        except (UnknownNode, PeerUnreachable) as exc:
            return {**out, "reason": exc.message}
        except PeerError as exc:
            if state == LINKED:  # this side holds both statements: linked, the other not told
                return {**out, "reason": exc.message}
            raise PeerError(
                f"the other node refused the link: {exc.detail}",
                hint=f"This node's request stays pending; withdraw it with "
                f"`pk nodes unlink {encode_node_id(node_id)}`.",
            ) from None
        try:
            state = self.links.answered(node_id, mine, reply)
        except BadStatement as exc:
            raise BadAnswer(exc.detail) from None
        out = {**out, "state": state, "told": True}
        if state == LINKED:
            out["sigchain"] = self._chain_link(node_id)
        return out

    def _chain_link(self, node_id: NodeId) -> str:
        """Put the link in both sigchains (docs/spec/sigchain.md): a link-node claim of this
        node's countersigned by the other, and the other's countersigned here. Each side that
        holds a live claim already is left as it is; run again (`pk nodes link`), it completes
        what a broken connection left undone. "recorded", or why not."""
        from polykey.network.graph import UnknownNode
        from polykey.network.ssh import PeerError, PeerUnreachable
        from polykey.trust.sigchain import BadChain, countersign

        other = encode_node_id(node_id)
        try:
            theirs = None
            if other not in self.sigchain.state().nodes:
                draft = self.sigchain.prepare_link(node_id)
                reply = self.peers.call(node_id, "sigchain.countersign", {"draft": draft.doc})
                self.sigchain.append_draft(reply.get("entry"))
                theirs = reply.get("draft")
            else:
                reply = self.peers.call(node_id, "sigchain.countersign", {})
                theirs = reply.get("draft")
            if theirs is not None:
                signed = countersign(theirs, self.key, issuer=node_id)
                self.peers.call(node_id, "sigchain.countersigned", {"entry": signed})
        except (UnknownNode, PeerUnreachable, PeerError, BadChain) as exc:
            return exc.message
        return "recorded"

    def _chain_unlink(self, node_id: NodeId) -> None:
        """Revoke this node's live link-node claim about ``node_id``, if it holds one."""
        claimed = self.sigchain.state().nodes.get(encode_node_id(node_id))
        if claimed is not None:
            self.sigchain.revoke(claimed.jti)

    def unlink(self, node_id: NodeId) -> dict[str, Any]:
        """End the link with ``node_id`` here at once, withdraw this node's request to it, or
        decline its offer; then tell it (an unlink statement), if it can be reached.

        ``{"node_id", "was": the state before, "told": bool, "reason"?}``."""
        from polykey.network.graph import UnknownNode
        from polykey.network.ssh import PeerError, PeerUnreachable

        was, statement = self.links.unlink(node_id)
        self._chain_unlink(node_id)
        out: dict[str, Any] = {"node_id": encode_node_id(node_id), "was": was, "told": False}
        if statement is None:  # the other node ended it: nothing to tell
            return out
        try:
            self.peers.call(node_id, "nodes.unlink", {"statement": statement.to_json()})
        except (UnknownNode, PeerUnreachable, PeerError) as exc:
            return {**out, "reason": exc.message}
        return {**out, "told": True}

    def mine(self) -> dict[str, Any]:
        """The linked nodes, and every node with a link record and its state."""
        return {
            "mine": [encode_node_id(n) for n in self.links.mine()],
            "nodes": self.links.states(),
        }


def _provider_config(name: str, settings: dict[str, str]) -> Any:
    """The provider's settings object from what `pk identities provider` stored."""
    from dataclasses import fields

    from polykey.errors import InvalidInput
    from polykey.trust.providers import (
        DnsConfig,
        GitHubConfig,
        KeybaseConfig,
        OpenPgpConfig,
        UnknownProvider,
    )

    if name == "dns":
        given = dict(settings)
        server = given.pop("nameserver", None)
        if given:
            raise InvalidInput(f"dns takes no setting {sorted(given)[0]!r}")
        if server is None:
            return DnsConfig()
        host, sep, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
        if sep and not port.isdigit():
            raise InvalidInput(f"{server!r} is not HOST[:PORT]")
        return DnsConfig(nameserver=host or server, port=int(port) if sep else 53)
    kinds: dict[str, Any] = {"github": GitHubConfig, "keybase": KeybaseConfig}
    kinds["openpgp"] = OpenPgpConfig
    if name not in kinds:
        raise UnknownProvider(repr(name[:40]))
    known = {f.name for f in fields(kinds[name]) if f.type in ("str", str)}
    if name == "keybase" and "api_url" in settings:
        settings = {"base_url": settings["api_url"]} | {
            k: v for k, v in settings.items() if k != "api_url"
        }
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InvalidInput(f"{name} takes no setting {unknown[0]!r}")
    return kinds[name](**settings)


def _check_store(store: NodeFile) -> list[Damage]:
    damage = store.check()
    if not damage:
        try:
            seed = store.get(NODE_KEYS, ROOT_SEED)
        except NodeDamaged as exc:
            return [Damage("node/keys/root-seed", exc.detail)]
        if seed is None or len(seed) != 32:
            damage.append(Damage("node/keys/root-seed", "root key is missing"))
            return damage
        key = RootKey.from_seed(seed)
        damage.extend(Vaults(store, key).check())
        damage.extend(Links(store, key).check())
        damage.extend(Sigchain(store, key).check())
    return damage
