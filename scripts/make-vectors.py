"""Write docs/spec/node-file-vectors.json: the node file's test vectors.

The vectors are fixed once written: tests check the code against this file, so a change of format
shows up as a failing test. Run again only with a new format version (and a new file name).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
    rwrap = Sealer(hdr.recovery_kek(secret)).seal(data_key, blank.recovery_aad(), b"\x02" * 12)
    with_r = hdr.Header(format=1, kdf=params, password_wrap=b"", recovery_wrap=rwrap)
    pwrap = Sealer(kek).seal(data_key, with_r.password_aad(), b"\x01" * 12)
    header = hdr.Header(format=1, kdf=params, password_wrap=pwrap, recovery_wrap=rwrap)
    body, checksum = header.encode()

    keys = RecordKeys(data_key)
    ns_id = keys.ns_id("node/keys")
    rec_id = keys.rec_id(ns_id, b"root-seed")
    plain = encode_record(b"root-seed", b"value bytes")
    sealed = keys.seal(plain, aad(Kind.MUTABLE, ns_id, rec_id, 5), b"\x03" * 12)
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


if __name__ == "__main__":
    raise SystemExit(main())
