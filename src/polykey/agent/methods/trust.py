"""Who is who: `pk sigchain`, `pk identities`, `pk gestalts` (the domain is trust/ and
people.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS
from polykey.ids import decode_node_id, encode_node_id
from polykey.rpc import NoParams

if TYPE_CHECKING:
    from polykey.node import Node
    from polykey.people import Claimed
    from polykey.trust.sigchain import Entry, Fork


PAGE = 1000


@dataclass(frozen=True)
class ChainOf:
    node_id: str | None = None  # None: this node's own


def _entry(e: Entry, revoked: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": e.seq, "typ": e.typ, "sub": e.sub, "iat": e.iat, "jti": e.jti}
    out["signers"] = list(e.signers)
    out["revoked"] = e.jti in revoked
    proof = e.payload.get("proof")
    if isinstance(proof, dict):
        out["proof"] = {k: str(v) for k, v in proof.items()}
    return out


@METHODS.method("sigchain.show")
def sigchain_show(node: Node, p: ChainOf) -> dict[str, Any]:
    """A chain as held: this node's own, or the verified copy of another node's (fetched
    first when that node answers); with ``fork``, the proof, when the node was caught
    signing two histories (its chain is then not fetched)."""
    who = node.node_id if p.node_id is None else decode_node_id(p.node_id)
    fetched, reason = _refresh(node, who)
    fork = node.chains.fork(who) if who != node.node_id else None
    entries = node.gestalts.entries(who)
    revoked = {e.sub for e in entries if e.typ == "revoke"}
    out = {"node_id": encode_node_id(who), "length": len(entries), "fetched": fetched}
    out["entries"] = [_entry(e, revoked) for e in entries]
    if reason:
        out["reason"] = reason
    if fork is not None:
        out["fork"] = _fork(fork)
    return out


def _fork(fork: Fork) -> dict[str, Any]:
    """The proof of a fork, with what each of its two entries says."""
    from polykey.trust.sigchain import verify_entry

    out = fork.as_json()
    for side in ("held", "served"):
        e = verify_entry(out[side])
        out[f"{side}_entry"] = _entry(e, set()) | {"digest": e.digest}
    return out


@dataclass(frozen=True)
class Forget:
    node_id: str


@METHODS.method("sigchain.forget")
def sigchain_forget(node: Node, p: Forget) -> dict[str, Any]:
    """Drop the copy held of another node's chain and its mark (a fork's proof with it): its
    next chain is taken afresh, as from a node never met."""
    from polykey.errors import InvalidInput

    who = decode_node_id(p.node_id)
    if who == node.node_id:
        raise InvalidInput("this node's own sigchain cannot be forgotten")
    head, fork = node.chains.head(who), node.chains.fork(who)
    node.chains.forget(who)
    out: dict[str, Any] = {"node_id": encode_node_id(who), "held": head.seq if head else 0}
    out["forked"] = fork is not None
    return out


@METHODS.method("sigchain.verify")
def sigchain_verify(node: Node, p: ChainOf) -> dict[str, Any]:
    """Verify a whole chain again, every signature and link, from its first entry."""
    from polykey.trust.sigchain import Head, verify_chain

    who = node.node_id if p.node_id is None else decode_node_id(p.node_id)
    fork = node.chains.fork(who) if who != node.node_id else None
    if fork is not None:
        from polykey.trust.sigchain import Forked

        raise Forked(
            f"{encode_node_id(who)} signed two different entries {fork.seq} "
            f"(seen {time.strftime('%Y-%m-%d %H:%M', time.gmtime(fork.at))} UTC)"
        )
    fetched, reason = _refresh(node, who)
    entries: list[Entry] = []
    while True:  # a page at a time, each checked against all before it
        since = len(entries) + 1
        if who == node.node_id:
            page = node.sigchain.docs(since, PAGE)
        else:
            page = node.chains.docs(who, since, PAGE)
        if not page:
            break
        after = Head.of(entries[-1]) if entries else None
        entries += verify_chain(who, page, after=after, earlier=entries)
    head = entries[-1] if entries else None
    out: dict[str, Any] = {"node_id": encode_node_id(who), "ok": True, "length": len(entries)}
    out["head"] = head.digest if head is not None else None
    out["fetched"] = fetched
    if reason:
        out["reason"] = reason
    return out


def _refresh(node: Node, who: Any) -> tuple[bool, str]:
    """Fetch ``who``'s new entries when it is another node and answers: (fetched, why not).
    A shorter or forked chain is never hidden behind the copy; a fork the node's signatures
    prove is kept, and shown by the caller instead."""
    if who == node.node_id:
        return False, ""
    from polykey.errors import PolykeyError
    from polykey.people import fetch_chain
    from polykey.trust.sigchain import ForkedChain

    if node.chains.fork(who) is not None:
        return False, "it signed two histories: its chain is not taken"
    try:
        fetch_chain(node, who)
    except ForkedChain as exc:
        if node.chains.fork(who) is None:
            raise
        return False, exc.message
    except PolykeyError as exc:
        return False, exc.message
    return True, ""


@dataclass(frozen=True)
class Identity:
    identity: str


@dataclass(frozen=True)
class ProviderSettings:
    provider: str
    settings: dict[str, str] = field(default_factory=dict)


@METHODS.method("identities.provider")
def identities_provider(node: Node, p: ProviderSettings) -> dict[str, Any]:
    """Set where a provider is reached (GitHub Enterprise, a DNS server, your own keyserver);
    with no settings, show them."""
    if p.settings:
        node.set_provider(p.provider, p.settings)
    return {"provider": p.provider, "settings": node.provider_settings(p.provider)}


@dataclass(frozen=True)
class Provider:
    provider: str


@METHODS.method("identities.authenticate")
def identities_authenticate(node: Node, p: Provider) -> dict[str, Any]:
    """Start the provider's device flow: the code to enter and where."""
    return node.start_authentication(p.provider)


@METHODS.method("identities.authenticated")
def identities_authenticated(node: Node, p: Provider) -> dict[str, Any]:
    """Wait for the user to enter the code; keep the token sealed in the node."""
    return node.finish_authentication(p.provider)


@dataclass(frozen=True)
class Claim:
    identity: str
    signature: str = field(default="", repr=False)  # openpgp, keybase: of the statement
    email: str = ""  # openpgp: where WKD finds the key


@METHODS.method("identities.claim")
def identities_claim(node: Node, p: Claim) -> dict[str, Any]:
    """Claim an identity: a gist or a DNS record (people.claim), or for openpgp and keybase
    a claim carrying the signature of the statement (checked before it is recorded)."""
    from polykey.people import claim
    from polykey.trust.gestalts import parse_identity
    from polykey.trust.providers import SIGNED

    if parse_identity(p.identity)[0] in SIGNED:
        return _claim_signed(node, p).as_json()
    return claim(node, p.identity).as_json()


@dataclass(frozen=True)
class Statement:
    identity: str
    email: str = ""


@METHODS.method("identities.statement")
def identities_statement(node: Node, p: Statement) -> dict[str, Any]:
    """The statement an OpenPGP key signs to claim an openpgp: or keybase: identity for this
    node, and that key's fingerprint; ``claimed`` when a live claim of it verifies now."""
    from polykey.trust.proofs import render_statement

    fingerprint = _signing_key(node, p.identity)
    me = encode_node_id(node.node_id)
    out: dict[str, Any] = {"identity": p.identity, "fingerprint": fingerprint}
    out["text"] = render_statement(p.identity, me, fingerprint)
    out["instructions"] = (
        f"Sign this text, exactly as it is, with the OpenPGP key {fingerprint} "
        f"(`gpg --detach-sign --armor --local-user {fingerprint} FILE`, or "
        f"`keybase pgp sign --detached`), then run `pk identities claim {p.identity} "
        "--signature FILE.asc`."
    )
    existing = node.gestalts.claims_of(node.node_id, p.identity)
    if existing is not None and p.email in ("", existing.payload["proof"].get("email")):
        from polykey.trust.gestalts import NotVerified

        try:
            node.gestalts.verify(node.node_id, p.identity)
            out["claimed"] = {"jti": existing.jti, "ref": existing.payload["proof"]["ref"]}
        except NotVerified as exc:
            out["reason"] = exc.detail
    return out


def _signing_key(node: Node, identity: str) -> str:
    """The fingerprint of the key that proves ``identity``: the one it names (openpgp), or
    the primary key Keybase gives for the user now."""
    from polykey.trust.gestalts import parse_identity
    from polykey.trust.providers import InvalidIdentity
    from polykey.trust.providers.openpgp import fingerprint_of

    provider, name = parse_identity(identity)
    if provider == "openpgp":
        return fingerprint_of(identity)
    if provider == "keybase":
        return str(node.provider_for("keybase").lookup(name).fingerprint).upper()
    raise InvalidIdentity(
        f"{identity[:80]!r}: {provider} identities are not proven by an OpenPGP signature",
        hint="Claim it with `pk identities claim`; only openpgp and keybase sign a statement.",
    )


def _claim_signed(node: Node, p: Claim) -> Claimed:
    """Check the signature of the statement first; only then add (or keep) the claim."""
    from polykey.errors import InvalidInput
    from polykey.people import Claimed
    from polykey.trust import proofs
    from polykey.trust.gestalts import NotVerified, parse_identity
    from polykey.trust.providers import gpg
    from polykey.trust.providers.openpgp import check_email, encode_signature

    provider_name, name = parse_identity(p.identity)
    fingerprint = _signing_key(node, p.identity)
    me = encode_node_id(node.node_id)
    if not p.signature:
        raise InvalidInput(
            f"claiming {p.identity[:80]} needs a signature of the statement",
            hint=f"`pk identities claim {p.identity[:80]} --statement` prints the text to sign.",
        )
    signature, signed_text = gpg.read_signature(p.signature)
    if signed_text is not None:
        proofs.check_statement(signed_text, p.identity, me, fingerprint)
    ref = fingerprint if provider_name == "openpgp" else name
    proof: dict[str, Any] = {"provider": provider_name, "ref": ref}
    if provider_name == "keybase":
        proof["fingerprint"] = fingerprint
    if p.email:
        check_email(p.email)
        proof["email"] = p.email
    proof["signature"] = encode_signature(signature)
    node.provider_for(provider_name).verify_signed(p.identity, me, proof)
    existing = node.gestalts.claims_of(node.node_id, p.identity)
    if existing is not None and existing.payload.get("proof") == proof:
        entry = existing
    else:
        entry = node.sigchain.append("link-identity", {"sub": p.identity, "proof": proof})
    named = None
    if provider_name == "openpgp":  # so that the key finds this node (docs/spec/identities.md)
        from polykey.trust.providers.openpgp import notation_command

        named = (
            "For others to find this node from the key, add a notation naming it to the "
            f"key's self-signature, then publish the key again: `{notation_command(ref, me)}`"
        )
    try:
        node.gestalts.verify(node.node_id, p.identity)
    except NotVerified as exc:
        return Claimed(p.identity, entry.jti, ref, False, named, exc.detail)
    return Claimed(p.identity, entry.jti, ref, True, named)


@METHODS.method("identities.discover")
def identities_discover(node: Node, p: Identity) -> dict[str, Any]:
    from polykey.people import discover

    return discover(node, p.identity)


@METHODS.method("identities.list")
def identities_list(node: Node, p: NoParams) -> dict[str, Any]:
    own = [
        {"id": e.sub, "jti": e.jti, "verified": node.gestalts.verified(node.node_id, e.sub)}
        for e in node.gestalts.own_identities()
    ]
    return {"mine": own, "known": node.gestalts.identities()}


@METHODS.method("identities.get")
def identities_get(node: Node, p: Identity) -> dict[str, Any]:
    from polykey.trust.gestalts import UnknownIdentity, parse_identity

    parse_identity(p.identity)
    known = {i["id"]: i for i in node.gestalts.identities()}
    if p.identity not in known and not node.gestalts.claims_of(node.node_id, p.identity):
        raise UnknownIdentity(p.identity[:80])
    record = known.get(p.identity, {"id": p.identity, "trusted": False, "nodes": []})
    return {**record, "gestalt": node.gestalts.gestalt(p.identity).as_json()}


@METHODS.method("identities.trust")
def identities_trust(node: Node, p: Identity) -> dict[str, Any]:
    node.gestalts.trust(p.identity, True)
    return {"identity": p.identity, "trusted": True}


@METHODS.method("identities.untrust")
def identities_untrust(node: Node, p: Identity) -> dict[str, Any]:
    node.gestalts.trust(p.identity, False)
    return {"identity": p.identity, "trusted": False}


@METHODS.method("gestalts.list")
def gestalts_list(node: Node, p: NoParams) -> dict[str, Any]:
    """This node's own gestalt, then each known identity's (one person seen once)."""
    seen: set[frozenset[str]] = set()
    out = []
    starts = [encode_node_id(node.node_id), *(i["id"] for i in node.gestalts.identities())]
    for start in starts:
        g = node.gestalts.gestalt(start)
        key = g.nodes | g.identities
        if key in seen:
            continue
        seen.add(key)
        out.append(g.as_json())
    return {"gestalts": out}


@dataclass(frozen=True)
class Vertex:
    vertex: str  # a NodeId or an identity


@METHODS.method("gestalts.get")
def gestalts_get(node: Node, p: Vertex) -> dict[str, Any]:
    from polykey.trust.gestalts import parse_identity

    if ":" in p.vertex:
        parse_identity(p.vertex)
        return node.gestalts.gestalt(p.vertex).as_json()
    return node.gestalts.gestalt(encode_node_id(decode_node_id(p.vertex))).as_json()
