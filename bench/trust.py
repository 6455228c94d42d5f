"""Trust: verifying another node's sigchain of 10,000 claims from its documents (as a peer
serves them), and a node's own chain appended to and re-read from a real node file."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Row, median_ms, timed
from polykey.ids import encode_node_id
from polykey.keys.root import RootKey
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.trust.jws import new_claim_id
from polykey.trust.sigchain import Entry, Head, PeerChains, Sigchain, verify_chain
from polykey.trust.sigchain_entry import add_signature, sign_claim

CLAIMS = 10_000


def section(quick: bool) -> list[Row]:
    owner = RootKey.from_seed(bytes([7]) * 32)
    other = RootKey.from_seed(bytes([8]) * 32)
    docs = _chain(owner, other, CLAIMS)
    runs = 3 if quick else 7
    page = timed(lambda: verify_chain(owner.node_id, docs), runs)
    paged = timed(lambda: _in_pages(owner, docs, 1000), runs)
    rows: list[Row] = [
        (f"verify a sigchain of {CLAIMS:,} claims", f"{median_ms(page):.0f} ms", "< 1000 ms"),
        ("verify it in pages of 1,000", f"{median_ms(paged):.0f} ms", "< 1000 ms"),
    ]
    return rows + _stored(owner, docs, quick) + _deciding(quick)


def _chain(owner: RootKey, other: RootKey, count: int) -> list[dict[str, Any]]:
    """A chain like a busy node's: identity claims, every tenth a node link (two signatures)."""
    docs: list[dict[str, Any]] = []
    prev: Entry | None = None
    iss, sub = encode_node_id(owner.node_id), encode_node_id(other.node_id)
    for seq in range(1, count + 1):
        claim: dict[str, Any] = {"iss": iss, "seq": seq, "iat": 1_700_000_000 + seq}
        claim |= {"jti": new_claim_id(), "prevClaimId": prev.jti if prev else None}
        claim |= {"prevDigest": prev.digest if prev else None}
        if seq % 10:
            proof = {"provider": "github", "ref": f"{seq:032x}"}
            doc = sign_claim(
                owner, claim | {"typ": "link-identity", "sub": f"github:u{seq}", "proof": proof}
            )
        else:
            doc = add_signature(sign_claim(owner, claim | {"typ": "link-node", "sub": sub}), other)
        docs.append(doc)
        after = Head.of(prev) if prev else None
        prev = verify_chain(owner.node_id, [doc], after=after)[0]
    return docs


def _in_pages(owner: RootKey, docs: list[dict[str, Any]], size: int) -> None:
    held: list[Entry] = []
    for start in range(0, len(docs), size):
        held += verify_chain(owner.node_id, docs[start : start + size], earlier=held)


def _stored(owner: RootKey, docs: list[dict[str, Any]], quick: bool) -> list[Row]:
    """A held copy: accepted into a node file in pages, then read back after re-opening."""
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-trust-"))
    node, _ = Node.bootstrap(tmp / "a.pk", b"a", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        chains = PeerChains(node.store)
        t = time.perf_counter()
        for start in range(0, len(docs), 1000):
            chains.accept(owner.node_id, docs[start : start + 1000], from_seq=start + 1)
        accept = time.perf_counter() - t
        own = Sigchain(node.store, node.key)
        appends = timed(lambda: own.append("x-note", {"n": 1}), 20 if quick else 50)
    with Node.open(tmp / "a.pk", b"a", allow_weak=True) as again:
        reread = timed(lambda: PeerChains(again.store).entries(owner.node_id), 3)
    return [
        (f"accept a peer chain of {len(docs):,} (pages of 1,000)", f"{accept * 1000:.0f} ms", ""),
        ("read that copy back from the node file", f"{median_ms(reread):.0f} ms", ""),
        ("append a claim to this node's chain", f"{median_ms(appends):.1f} ms", ""),
    ]


def _deciding(quick: bool) -> list[Row]:
    """A node Alice never met asks for a vault she shared with github:bob: it presents its
    chain (a claim of github:bob, its proof a gist), and Alice decides, verifying the proof on
    the spot against a GitHub stand-in on loopback (the real client code)."""
    from tests.trust.standins.github import GitHubStandIn

    from polykey.node import PROVIDERS, TOKENS
    from polykey.people import claim
    from polykey.trust.gestalts import PROOFS

    gh = GitHubStandIn().start()
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-decide-"))
    settings = f'{{"api_url": "{gh.url}", "login_url": "{gh.url}"}}'.encode()
    try:
        alice, _ = Node.bootstrap(tmp / "a.pk", b"a", kdf=FAST_INSECURE_KDF, allow_weak=True)
        bob, _ = Node.bootstrap(tmp / "b.pk", b"b", kdf=FAST_INSECURE_KDF, allow_weak=True)
        with alice, bob:
            token = gh.add_user("bob").encode()
            for n in (alice, bob):
                with n.store.write() as tx:
                    tx.put(PROVIDERS, b"github", settings)
                    tx.put(TOKENS, b"github", token)
            assert claim(bob, "github:bob").verified
            vault = alice.vaults.create("work")
            alice.gestalts.trust("github:bob")
            alice.acl.grant(vault.id, "github:bob", ["pull"])
            docs = bob.sigchain.docs(1)
            key = f"{encode_node_id(bob.node_id)}|github:bob".encode()

            def decide() -> None:
                alice.chains.forget(bob.node_id)
                with alice.store.write() as tx:
                    tx.delete(PROOFS, key)
                alice.chains.accept(bob.node_id, docs, from_seq=1)
                assert alice.acl.permits(vault.id, bob.node_id, "pull")

            times = timed(decide, 10 if quick else 30)
    finally:
        gh.stop()
    return [
        (
            "decide a pull by a node never met, of a trusted gestalt (proof checked on the spot)",
            f"{median_ms(times):.0f} ms",
            "< 300 ms",
        )
    ]
