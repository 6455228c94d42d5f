"""Write docs/spec/node-file-vectors.json: the node file's test vectors (and, with
``--sigchain``, docs/spec/sigchain-vectors.json: the sigchain's, with the key renewal's
``sigchain_rotated`` and ``key_compromised`` from ``rotation_vectors``).

The vectors are fixed once written: tests check the code against this file, so a change of format
shows up as a failing test. Run again only with a new format version (and a new file name).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from polykey.crypto.aead import Sealer
from polykey.crypto.kdf import Argon2Params, argon2id
from polykey.ids import encode_node_id
from polykey.keys.recovery import parse
from polykey.keys.root import RootKey
from polykey.store import header as hdr
from polykey.store.records import Kind, Manifest, RecordKeys, Root, aad, encode_record

OUT = Path(__file__).resolve().parent.parent / "docs" / "spec" / "node-file-vectors.json"
CODE = " ".join(["abandon"] * 23 + ["art"])


def main() -> int:
    if OUT.exists() and "--force" not in sys.argv:
        print(f"{OUT} exists; vectors are fixed once written (use --force for a new format)")
        return 1
    password = b"correct horse battery staple"
    params = Argon2Params(memory_kib=64, iterations=1, lanes=1, salt=bytes(range(16)))
    kek = argon2id(password, params, allow_weak=True)
    data_key = bytes(range(32, 64))
    code = parse(CODE)
    secret = code.seed()
    root_key = RootKey.from_recovery_code(code)
    blank = hdr.Header(format=1, kdf=params, password_wrap=b"", recovery_wrap=b"")
    rwrap = bytes(
        Sealer(hdr.recovery_kek(secret)).seal(data_key, blank.recovery_aad(), b"\x02" * 12)
    )
    with_r = hdr.Header(format=1, kdf=params, password_wrap=b"", recovery_wrap=rwrap)
    pwrap = bytes(Sealer(kek).seal(data_key, with_r.password_aad(), b"\x01" * 12))
    header = hdr.Header(format=1, kdf=params, password_wrap=pwrap, recovery_wrap=rwrap)
    body, checksum = header.encode()

    keys = RecordKeys(data_key)
    ns_id = keys.ns_id("node/keys")
    rec_id = keys.rec_id(ns_id, b"root-seed")
    plain = encode_record(b"root-seed", b"value bytes")
    sealed = bytes(keys.seal(plain, aad(Kind.MUTABLE, ns_id, rec_id, 5), b"\x03" * 12))
    ins_id = keys.ns_id("vault/objects")
    irec = keys.rec_id(ins_id, bytes(20))
    isealed = keys.seal(
        encode_record(bytes(20), b"blob"), aad(Kind.IMMUTABLE, ins_id, irec, 0), b"\x04" * 12
    )
    manifest = Manifest("node/keys", {rec_id: (5, b"root-seed")}).encode()
    msealed = keys.seal(manifest, aad(Kind.MANIFEST, ns_id, version=5), b"\x05" * 12)
    root = Root(
        5, {ns_id: (Kind.MUTABLE, 5, "node/keys"), ins_id: (Kind.IMMUTABLE, 0, "vault/objects")}
    ).encode()
    rsealed = keys.seal(root, aad(Kind.ROOT, version=5), b"\x06" * 12)

    def flip_last(b: bytes) -> str:
        return (b[:-1] + bytes([b[-1] ^ 1])).hex()

    doc = {
        "format": 1,
        "about": "Test vectors of docs/spec/node-file.md; hex unless named otherwise.",
        "kdf": {
            "password_utf8": password.decode(),
            "memory_kib": 64,
            "iterations": 1,
            "lanes": 1,
            "salt": params.salt.hex(),
            "kek": kek.hex(),
        },
        "recovery": {
            "code": CODE,
            "bip39_seed": secret.hex(),
            "ed25519_public": root_key.signing.public.hex(),
            "node_id": encode_node_id(root_key.node_id),
            "recovery_kek": hdr.recovery_kek(secret).hex(),
        },
        "header": {
            "data_key": data_key.hex(),
            "body_utf8": body.decode(),
            "checksum": checksum.hex(),
            "password_aad_utf8": header.password_aad().decode("latin-1"),
            "recovery_aad_utf8": header.recovery_aad().decode("latin-1"),
        },
        "records": {
            "seal_key_info_utf8": "polykey/v1 record seal",
            "name_key_info_utf8": "polykey/v1 record name",
            "ns_name": "node/keys",
            "ns_id": ns_id.hex(),
            "key_utf8": "root-seed",
            "rec_id": rec_id.hex(),
            "value_utf8": "value bytes",
            "version": 5,
            "aad": aad(Kind.MUTABLE, ns_id, rec_id, 5).hex(),
            "sealed": sealed.hex(),
            "immutable_ns_name": "vault/objects",
            "immutable_key": bytes(20).hex(),
            "immutable_sealed": isealed.hex(),
            "manifest_plain": manifest.hex(),
            "manifest_sealed": msealed.hex(),
            "root_plain": root.hex(),
            "root_sealed": rsealed.hex(),
        },
        "failures": {
            "header_bad_checksum": {"checksum": flip_last(checksum), "expect": "damaged"},
            "header_newer_format": {
                "body_utf8": body.decode().replace('"format":1', '"format":2'),
                "expect": "unsupported version",
            },
            "header_huge_memory": {
                "body_utf8": body.decode().replace('"memory_kib":64', f'"memory_kib":{2**30}'),
                "expect": "unsafe parameters",
            },
            "header_wrong_password": {
                "password_utf8": "Correct horse battery staple",
                "expect": "wrong password",
            },
            "record_bad_tag": {"sealed": flip_last(sealed), "expect": "authentication failure"},
            "record_truncated": {"sealed": sealed[:27].hex(), "expect": "authentication failure"},
            "record_older_version": {"version": 4, "expect": "authentication failure"},
            "record_as_immutable": {
                "kind": int(Kind.IMMUTABLE),
                "expect": "authentication failure",
            },
            "record_wrong_key": {"data_key": bytes(32).hex(), "expect": "authentication failure"},
            "record_unknown_format": {"aad_format": 2, "expect": "authentication failure"},
        },
    }
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


def sigchain() -> int:
    """docs/spec/sigchain-vectors.json: a valid chain of every claim type, a rotated key's
    first entry, and pages that must be refused, each with the refusal's exact text."""
    out = OUT.with_name("sigchain-vectors.json")
    if out.exists() and "--force" not in sys.argv:
        print(f"{out} exists; vectors are fixed once written (use --force for a new format)")
        return 1
    made = sigchain_vectors() | rotation_vectors() | fork_vectors()
    out.write_text(json.dumps(made, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def sigchain_vectors() -> dict[str, Any]:
    from polykey.trust.jws import b64url, canonical
    from polykey.trust.sigchain import BadChain, Entry, Head, verify_chain
    from polykey.trust.sigchain_entry import add_signature, sign_claim

    keys = {
        name: RootKey.from_seed(bytes(range(i * 32, i * 32 + 32))) for i, name in enumerate("ABCD")
    }
    ids = {name: encode_node_id(key.node_id) for name, key in keys.items()}

    def claim(owner: str, seq: int, prev: Entry | None, typ: str, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"typ": typ, "iss": ids[owner], "seq": seq, "iat": 1700000000 + seq}
        out |= {"jti": f"v0{owner.lower()}{seq:04d}", "prevClaimId": prev.jti if prev else None}
        return out | {"prevDigest": prev.digest if prev else None} | fields

    def signed(c: dict[str, Any], *signers: str) -> dict[str, Any]:
        doc = sign_claim(keys[signers[0]], c)
        for name in signers[1:]:
            doc = add_signature(doc, keys[name])
        return doc

    plan: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
        (
            "link-identity",
            {"sub": "github:alice", "proof": {"provider": "github", "ref": "0f3c9a"}},
            ("A",),
        ),
        ("link-node", {"sub": ids["B"]}, ("A", "B")),
        ("delegate", {"sub": ids["C"], "grant": {"vaults": ["ci"], "perms": ["pull"]}}, ("A", "C")),
        ("x-note", {"note": "an unknown type: kept, not read"}, ("A",)),
        ("revoke", {"sub": "v0a0001"}, ("A",)),
        ("rotate-key", {"sub": ids["D"]}, ("A", "D")),
    ]
    docs: list[dict[str, Any]] = []
    entries: list[Entry] = []
    for typ, fields, signers in plan:
        docs.append(
            signed(
                claim("A", len(docs) + 1, entries[-1] if entries else None, typ, **fields), *signers
            )
        )
        entries = verify_chain(keys["A"].node_id, docs)
    last = entries[-1]
    rotated = signed(
        claim("D", 1, last, "rotate-key", sub=ids["D"], **{"from": ids["A"]}), "D", "A"
    )
    verify_chain(keys["D"].node_id, [rotated])

    c1 = claim("A", 1, None, "link-identity", **plan[0][1])
    bad_sig = dict(docs[0], signatures=[dict(docs[0]["signatures"][0])])
    sig = bad_sig["signatures"][0]["signature"]
    sig_text = sig[:10] + ("B" if sig[10] != "B" else "C") + sig[11:]
    bad_sig["signatures"][0]["signature"] = sig_text
    spaced = json.dumps(c1, indent=1).encode()
    spaced_payload = b64url(spaced)
    noncanonical = {
        "payload": spaced_payload,
        "signatures": [_raw_signature(keys["A"], spaced_payload, ids["A"])],
    }
    padded = dict(docs[0], payload=docs[0]["payload"] + "=")
    big = signed(claim("A", 1, None, "x-note", note="x" * 9000), "A")
    other_alg = {
        "payload": docs[0]["payload"],
        "signatures": [_raw_signature(keys["A"], docs[0]["payload"], ids["A"], alg="ES256")],
    }
    e1 = entries[0]
    failures: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
        "wrong signature": ([bad_sig], {}),
        "missing cosignature": (
            [docs[0], signed(claim("A", 2, e1, "link-node", sub=ids["B"]), "A")],
            {},
        ),
        "cosigned by another key": (
            [docs[0], signed(claim("A", 2, e1, "link-node", sub=ids["B"]), "A", "C")],
            {},
        ),
        "non-canonical payload": ([noncanonical], {}),
        "padded base64url": ([padded], {}),
        "header of another algorithm": ([other_alg], {}),
        "seq gap": ([docs[0], docs[2]], {}),
        "wrong prevDigest": (
            [
                docs[0],
                signed(
                    claim("A", 2, e1, "link-node", sub=ids["B"], prevDigest=entries[2].digest),
                    "A",
                    "B",
                ),
            ],
            {},
        ),
        "wrong iss": (docs[:2], {"owner": "B"}),
        "entry after rotate-key": ([*docs, signed(claim("A", 7, last, "x-note"), "A")], {}),
        "revoke of unknown jti": (
            [docs[0], signed(claim("A", 2, e1, "revoke", sub="v0nothing"), "A")],
            {},
        ),
        "revoke twice": (
            [*docs[:5], signed(claim("A", 6, entries[4], "revoke", sub="v0a0001"), "A")],
            {},
        ),
        "oversized entry": ([big], {}),
        "first entry with a prevDigest": ([signed(claim("A", 1, e1, "x-note"), "A")], {}),
        "identity without proof": (
            [signed(claim("A", 1, None, "link-identity", sub="github:alice"), "A")],
            {},
        ),
        "page after a head it does not continue": (
            [docs[2]],
            {"after": {"seq": 2, "jti": e1.jti, "digest": e1.digest}},
        ),
        "huge page": ([docs[0]], {"repeat": 10_001}),
    }
    cases = []
    for name, (page, how) in failures.items():
        owner = keys[how.get("owner", "A")].node_id
        page_docs = page * int(how.get("repeat", 1))
        after = how.get("after")
        try:
            verify_chain(owner, page_docs, after=Head(**after) if after else None)
        except BadChain as exc:
            expect = exc.message
        else:
            raise AssertionError(f"{name} verified")
        case: dict[str, Any] = {"name": name, "owner": ids[how.get("owner", "A")]}
        if after:
            case["after"] = after
        if "repeat" in how:
            case["repeat"] = how["repeat"]
        cases.append(case | {"docs": page, "expect": expect})
    return {
        "format": 1,
        "about": "Test vectors of docs/spec/sigchain.md. Keys: Ed25519 seeds 00..1f (A), "
        "20..3f (B), 40..5f (C), 60..7f (D). A page with `repeat` is `docs` repeated that often.",
        "keys": {
            name: {"seed": bytes(range(i * 32, i * 32 + 32)).hex(), "node_id": ids[name]}
            for i, name in enumerate("ABCD")
        },
        "valid": {
            "owner": ids["A"],
            "docs": docs,
            "stored": [e.raw.decode() for e in entries],
            "digests": [e.digest for e in entries],
            "state": _state_json(entries),
        },
        "rotated": {"owner": ids["D"], "docs": [rotated], "continues": "valid"},
        "failures": cases,
        "canonical_header": canonical({"alg": "EdDSA", "kid": ids["A"]}).decode(),
    }


def rotation_vectors() -> dict[str, Any]:
    """The renewal's vectors (docs/spec/keys.md, "Renewal"; docs/spec/sigchain.md): messages
    of ``sigchain.rotated`` (valid, and refused with their text) and ``key-compromised``
    claims (the time each gives, or the refusal's text). Built on the chains of
    ``sigchain_vectors``: A's closed by a rotate-key to D, and D's first entry."""
    from polykey.trust.rotation import compromised_after, proof
    from polykey.trust.sigchain import BadChain, Entry, verify_chain
    from polykey.trust.sigchain_entry import add_signature, sign_claim

    base = sigchain_vectors()
    keys = {
        name: RootKey.from_seed(bytes(range(i * 32, i * 32 + 32))) for i, name in enumerate("ABCD")
    }
    ids = {name: encode_node_id(key.node_id) for name, key in keys.items()}
    docs: list[dict[str, Any]] = base["valid"]["docs"]
    entries = verify_chain(keys["A"].node_id, docs)
    opening: dict[str, Any] = base["rotated"]["docs"][0]
    (first,) = verify_chain(keys["D"].node_id, [opening])

    def claim(owner: str, seq: int, prev: Entry, typ: str, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"typ": typ, "iss": ids[owner], "seq": seq, "iat": 1700000000 + seq}
        out |= {"jti": f"v0{owner.lower()}{seq:04d}", "prevClaimId": prev.jti}
        return out | {"prevDigest": prev.digest} | fields

    def signed(c: dict[str, Any], *signers: str) -> dict[str, Any]:
        doc = sign_claim(keys[signers[0]], c)
        for name in signers[1:]:
            doc = add_signature(doc, keys[name])
        return doc

    closing = docs[-1]
    proof(closing, [opening])  # the valid message
    unlinked = claim("D", 1, entries[-2], "rotate-key", sub=ids["D"], **{"from": ids["A"]})
    refusals: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
        "closing is not a rotate-key": (docs[0], [opening]),
        "no entry of the new chain": (closing, []),
        "closing without the new key's signature": (
            dict(closing, signatures=closing["signatures"][:1]),
            [opening],
        ),
        "new chain of another key": (closing, [docs[0]]),
        "opening not linked to the closing": (closing, [signed(unlinked, "D", "A")]),
    }
    refused = []
    for name, (closing_doc, chain) in refusals.items():
        try:
            proof(closing_doc, chain)
        except BadChain as exc:
            expect = exc.message
        else:
            raise AssertionError(f"{name} was not refused")
        refused.append({"name": name, "closing": closing_doc, "chain": chain, "expect": expect})

    def compromised(sub: str, after: object, *signers: str) -> list[dict[str, Any]]:
        c = claim("D", 2, first, "key-compromised", sub=ids[sub], after=after)
        return [opening, signed(c, *(signers or ("D",)))]

    plans: dict[str, list[dict[str, Any]]] = {
        "revokes the old key after a time": compromised("A", 1699999000),
        "a negative time counts for nothing": compromised("A", -1),
        "a time that is not an integer counts for nothing": compromised("A", "1699999000"),
        "another key than the old one counts for nothing": compromised("B", 1699999000),
        "signed by the old key, not the chain's": compromised("A", 1699999000, "A"),
    }
    cases: list[dict[str, Any]] = []
    for name, chain in plans.items():
        try:
            held = verify_chain(keys["D"].node_id, chain)
        except BadChain as exc:
            cases.append({"name": name, "docs": chain, "expect": exc.message})
            continue
        cases.append({"name": name, "docs": chain, "after": compromised_after(held, ids["A"])})
    return {
        "sigchain_rotated": {
            "about": "Messages of the peer method sigchain.rotated (docs/spec/peer-protocol.md): "
            "the old chain's closing rotate-key and the new chain from entry 1. `valid` moves "
            "`old` to `new`; each refusal is refused with its text.",
            "valid": {"closing": closing, "chain": [opening], "old": ids["A"], "new": ids["D"]},
            "refused": refused,
        },
        "key_compromised": {
            "about": "key-compromised claims in the new key's chain (docs/spec/keys.md): `after` "
            "is the time from which the old key `old` is refused (null: the claim counts for "
            "nothing); a case with `expect` is a chain refused with that text.",
            "owner": ids["D"],
            "old": ids["A"],
            "cases": cases,
        },
    }


def fork_vectors() -> dict[str, Any]:
    """Proofs that a node signed two histories of its chain (docs/spec/sigchain.md, "Forks"),
    each with the place it proves, and pairs that prove nothing, each with the refusal's
    text. Built on A's valid chain of ``sigchain_vectors``."""
    from polykey.trust.sigchain import BadChain, Entry, prove_fork, verify_chain, verify_entry
    from polykey.trust.sigchain_entry import sign_claim

    base = sigchain_vectors()
    keys = {
        name: RootKey.from_seed(bytes(range(i * 32, i * 32 + 32))) for i, name in enumerate("AB")
    }
    ids = {name: encode_node_id(key.node_id) for name, key in keys.items()}
    docs: list[dict[str, Any]] = base["valid"]["docs"]
    entries = verify_chain(keys["A"].node_id, docs)

    def note(owner: str, seq: int, prev: Entry | None, jti: str, text: str) -> dict[str, Any]:
        c: dict[str, Any] = {"typ": "x-note", "iss": ids[owner], "seq": seq}
        c |= {"iat": 1700000100 + seq, "jti": jti, "note": text}
        c |= {
            "prevClaimId": prev.jti if prev else None,
            "prevDigest": prev.digest if prev else None,
        }
        return sign_claim(keys[owner], c)

    other2 = note("A", 2, entries[0], "v0x0002", "another entry 2")
    after_other = note("A", 3, verify_entry(other2), "v0x0003", "after another entry 2")
    bad = dict(other2, signatures=[dict(other2["signatures"][0])])
    sig = bad["signatures"][0]["signature"]
    bad["signatures"][0]["signature"] = sig[:10] + ("B" if sig[10] != "B" else "C") + sig[11:]
    pairs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "another entry at a place held": (docs[1], other2),
        "the next entry names another entry before it": (docs[1], after_other),
        "the same entry twice": (docs[1], docs[1]),
        "the next entry of the same chain": (docs[1], docs[2]),
        "entries two places apart": (docs[0], docs[2]),
        "an entry of another node": (docs[0], note("B", 1, None, "v0y0001", "B's own")),
        "a signature that does not verify": (docs[1], bad),
    }
    proofs, refused = [], []
    for name, (held, served) in pairs.items():
        case: dict[str, Any] = {"name": name, "held": held, "served": served}
        try:
            proofs.append(case | {"seq": prove_fork(keys["A"].node_id, held, served)})
        except BadChain as exc:
            refused.append(case | {"expect": exc.message})
    return {
        "forks": {
            "about": "Proofs that the node `owner` signed two histories of its sigchain "
            '(docs/spec/sigchain.md, "Forks"): `held` and `served` prove a fork at `seq`; '
            "each refusal proves nothing and is refused with its text.",
            "owner": ids["A"],
            "proofs": proofs,
            "refused": refused,
        }
    }


def _state_json(entries: list[Any]) -> dict[str, Any]:
    from polykey.trust.sigchain import chain_state

    return chain_state(entries).as_json()


def _raw_signature(key: RootKey, payload: str, kid: str, alg: str = "EdDSA") -> dict[str, str]:
    from polykey.trust.jws import b64url, canonical

    protected = b64url(canonical({"alg": alg, "kid": kid}))
    return {
        "protected": protected,
        "signature": b64url(key.signing.sign(f"{protected}.{payload}".encode())),
    }


if __name__ == "__main__":
    raise SystemExit(sigchain() if "--sigchain" in sys.argv else main())
