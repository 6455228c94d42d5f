"""The delegation walk (trust/delegation.py) on real node files and real signed chains, and the
grant vectors of docs/spec/delegation.md."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.ids import encode_node_id
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.trust.delegation import BadGrant, Grant, VaultGrant, expand, intersect, parse_grant
from polykey.trust.sigchain import DELEGATE, countersign

VECTORS = Path(__file__).parents[2] / "docs" / "spec" / "delegation-vectors.json"


def _node(path: Path) -> Node:
    return Node.bootstrap(path, b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)[0]


def delegate(issuer: Node, child: Node, grant: Grant) -> str:
    draft = issuer.sigchain.prepare(
        DELEGATE, {"sub": encode_node_id(child.node_id), "grant": grant.as_json()}
    )
    signed = countersign(draft.doc, child.key, typ=DELEGATE, issuer=issuer.node_id)
    return issuer.sigchain.append_draft(signed).jti


def hand(to: Node, owner: Node) -> None:
    """``to`` takes ``owner``'s chain (as sigchain.get or child.chain hands it over)."""
    head = to.chains.head(owner.node_id)
    since = head.seq + 1 if head is not None else 1
    docs = owner.sigchain.docs(since)
    if docs:
        to.chains.accept(owner.node_id, docs, from_seq=since)


@dataclass
class Family:
    p: Node
    c: Node
    g: Node
    x: Node  # a stranger
    vault: str


@pytest.fixture
def family(tmp_path: Path) -> Iterator[Family]:
    nodes = [_node(tmp_path / f"{n}.pk") for n in "pcgx"]
    p = nodes[0]
    vault = p.vaults.create("prod").id
    try:
        yield Family(nodes[0], nodes[1], nodes[2], nodes[3], vault)
    finally:
        for n in nodes:
            n.close()


def pull(vault: str, *, reshare: bool = False, expires: int | None = None) -> Grant:
    return Grant((VaultGrant(vault, expand(["pull"]), None, "prod"),), expires, reshare)


def perms(at: Node, vault: str, who: Node) -> list[str]:
    return at.acl.permissions(vault, who.node_id)


def test_a_child_holds_what_its_delegation_gives_and_nothing_else(family: Family) -> None:
    f = family
    other = f.p.vaults.create("other").id
    delegate(f.p, f.c, pull(f.vault))
    assert perms(f.p, f.vault, f.c) == ["clone", "pull"]
    assert perms(f.p, other, f.c) == []
    assert perms(f.p, f.vault, f.x) == []


def test_a_grandchild_is_bounded_by_every_delegation_above_it(family: Family) -> None:
    f = family
    delegate(f.p, f.c, Grant((VaultGrant(f.vault, expand(["scan", "pull"])),), None, True))
    delegate(f.c, f.g, Grant((VaultGrant(f.vault, expand(["push"])),), None, False))
    hand(f.p, f.c)  # the grandchild's parent's chain, presented to the vault's owner
    assert perms(f.p, f.vault, f.g) == ["clone", "pull"]  # push was never C's to give


def test_a_child_without_resharing_hands_on_nothing(family: Family) -> None:
    f = family
    delegate(f.p, f.c, pull(f.vault, reshare=False))
    delegate(f.c, f.g, pull(f.vault))
    hand(f.p, f.c)
    assert perms(f.p, f.vault, f.g) == []


def test_a_delegation_by_a_node_outside_the_chain_counts_for_nothing(family: Family) -> None:
    f = family
    delegate(f.x, f.g, pull(f.vault, reshare=True))  # X names P's vault; P never delegated X
    hand(f.p, f.x)
    assert perms(f.p, f.vault, f.g) == []


def test_expiry_and_revocation_end_a_delegation_and_what_hangs_below_it(
    family: Family,
) -> None:
    f = family
    jti = delegate(f.p, f.c, pull(f.vault, reshare=True))
    delegate(f.c, f.g, pull(f.vault))
    hand(f.p, f.c)
    assert perms(f.p, f.vault, f.g) == ["clone", "pull"]
    f.p.sigchain.revoke(jti)
    assert perms(f.p, f.vault, f.c) == [] and perms(f.p, f.vault, f.g) == []
    delegate(f.p, f.c, pull(f.vault, reshare=True, expires=int(time.time()) - 1))
    assert perms(f.p, f.vault, f.c) == [] and perms(f.p, f.vault, f.g) == []


def test_a_child_serving_its_clone_is_bounded_by_its_own_delegation(
    family: Family, tmp_path: Path
) -> None:
    """C serves G from its clone of P's vault: C's walk reaches its own delegation from P (in
    P's chain, as C holds it), and a revocation there ends G's access too."""
    f = family
    jti = delegate(f.p, f.c, pull(f.vault, reshare=True))
    with f.c.store.write() as tx:  # a clone of P's vault under the same id, as a child makes
        origin = {"node_id": encode_node_id(f.p.node_id), "vault_id": f.vault}
        f.c.vaults.register("prod", origin, tx, vault_id=f.vault)
    hand(f.c, f.p)
    delegate(f.c, f.g, pull(f.vault))
    assert perms(f.c, f.vault, f.g) == ["clone", "pull"]
    f.p.sigchain.revoke(jti)
    hand(f.c, f.p)
    assert perms(f.c, f.vault, f.g) == []


def test_a_folder_delegation_is_served_as_a_folder_grant_narrowed_down_the_chain(
    family: Family,
) -> None:
    """The ACL takes a delegated folder as a folder grant (``folder``: a derived view; never
    push); a grandchild's folder is its own when within its parent's, the parent's when wider,
    nothing when elsewhere (the newest claim about a subject decides)."""
    from polykey.trust.acl import Folder

    f = family

    def grant(path: str | None, action: str = "pull", reshare: bool = False) -> Grant:
        return Grant((VaultGrant(f.vault, expand([action]), path, "prod"),), None, reshare)

    def folder(who: Node) -> Folder | None:
        return f.p.acl.folder(f.vault, who.node_id)

    delegate(f.p, f.c, grant("prod/db", "push", reshare=True))
    assert perms(f.p, f.vault, f.c) == [] and f.p.acl.writers(f.vault) == []
    assert folder(f.c) == Folder("prod/db", ("clone", "pull"))
    for given, held in (
        (None, Folder("prod/db", ("clone", "pull"))),
        ("prod/db/user", Folder("prod/db/user", ("clone", "pull"))),
        ("prod/dbx", None),
        ("prod", Folder("prod/db", ("clone", "pull"))),
    ):
        delegate(f.c, f.g, grant(given))
        hand(f.p, f.c)
        assert folder(f.g) == held, given
        assert perms(f.p, f.vault, f.g) == []


def test_the_grant_vectors_parse_and_refuse_as_the_spec_says() -> None:
    doc = json.loads(VECTORS.read_text())
    for case in doc["valid"]:
        assert parse_grant(case["grant"]).as_json() == case["parsed"]
    assert len(doc["refused"]) >= 8
    for case in doc["refused"]:
        with pytest.raises(BadGrant) as caught:
            parse_grant(case["grant"])
        assert caught.value.message == case["error"]
    for case in doc["intersect"]:
        a, b = (parse_grant({"v": 1, "vaults": [case[k]]}).vaults[0] for k in ("a", "b"))
        both = intersect(a, b)
        assert (both.as_json() if both else None) == case["both"]
