"""The code against the fixed test vectors of docs/spec/node-file.md (success and failure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from polykey.crypto.aead import SealBroken, Sealer
from polykey.crypto.kdf import Argon2Params, argon2id
from polykey.errors import NodeDamaged, UnsafeParameters, UnsupportedVersion
from polykey.ids import encode_node_id
from polykey.keys.recovery import parse
from polykey.keys.root import RootKey
from polykey.store import header as hdr
from polykey.store.records import Kind, Manifest, RecordKeys, Root, aad, decode_record

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "docs/spec/node-file-vectors.json").read_text()
)
H = bytes.fromhex


def test_argon2id_derives_the_vector_key() -> None:
    v = VECTORS["kdf"]
    params = Argon2Params(v["memory_kib"], v["iterations"], v["lanes"], H(v["salt"]))
    assert argon2id(v["password_utf8"].encode(), params, allow_weak=True) == H(v["kek"])


def test_recovery_code_gives_the_vector_seed_node_id_and_recovery_key() -> None:
    v = VECTORS["recovery"]
    code = parse(v["code"])
    assert code.seed() == H(v["bip39_seed"])
    key = RootKey.from_recovery_code(code)
    assert key.signing.public == H(v["ed25519_public"])
    assert encode_node_id(key.node_id) == v["node_id"]
    assert hdr.recovery_kek(code.seed()) == H(v["recovery_kek"])


def test_header_vector_unwraps_to_the_data_key_by_password_and_by_recovery_code() -> None:
    v = VECTORS["header"]
    header = hdr.decode(v["body_utf8"].encode(), H(v["checksum"]), allow_weak=True)
    assert header.encode() == (v["body_utf8"].encode(), H(v["checksum"]))
    assert header.password_aad() == v["password_aad_utf8"].encode("latin-1")
    assert header.recovery_aad() == v["recovery_aad_utf8"].encode("latin-1")
    password = VECTORS["kdf"]["password_utf8"].encode()
    assert hdr.unwrap_with_password(header, password, allow_weak=True) == H(v["data_key"])
    secret = parse(VECTORS["recovery"]["code"]).seed()
    assert hdr.unwrap_with_recovery(header, secret) == H(v["data_key"])


def test_record_vector_names_and_seal_match() -> None:
    v = VECTORS["records"]
    keys = RecordKeys(H(VECTORS["header"]["data_key"]))
    ns_id = keys.ns_id(v["ns_name"])
    assert ns_id == H(v["ns_id"])
    rec_id = keys.rec_id(ns_id, v["key_utf8"].encode())
    assert rec_id == H(v["rec_id"])
    assert aad(Kind.MUTABLE, ns_id, rec_id, v["version"]) == H(v["aad"])
    plain = keys.open(H(v["sealed"]), H(v["aad"]), "vector")
    assert decode_record(plain, "vector") == (v["key_utf8"].encode(), v["value_utf8"].encode())
    ins = keys.ns_id(v["immutable_ns_name"])
    irec = keys.rec_id(ins, H(v["immutable_key"]))
    iplain = keys.open(H(v["immutable_sealed"]), aad(Kind.IMMUTABLE, ins, irec, 0), "vector")
    assert decode_record(iplain, "vector") == (H(v["immutable_key"]), b"blob")


def test_manifest_and_root_vectors_decode_and_reencode() -> None:
    v = VECTORS["records"]
    keys = RecordKeys(H(VECTORS["header"]["data_key"]))
    ns_id = H(v["ns_id"])
    mplain = keys.open(H(v["manifest_sealed"]), aad(Kind.MANIFEST, ns_id, version=5), "m")
    assert mplain == H(v["manifest_plain"])
    manifest = Manifest.decode(mplain, "m")
    assert manifest.name == v["ns_name"]
    assert manifest.entries == {H(v["rec_id"]): (5, v["key_utf8"].encode())}
    assert manifest.encode() == mplain
    rplain = keys.open(H(v["root_sealed"]), aad(Kind.ROOT, version=5), "r")
    root = Root.decode(rplain)
    assert root.epoch == 5
    assert root.namespaces[ns_id] == (Kind.MUTABLE, 5, v["ns_name"])
    assert root.encode() == rplain


# --- failure vectors ----------------------------------------------------------------------------

F = VECTORS["failures"]


def test_failure_header_bad_checksum_is_damage() -> None:
    with pytest.raises(NodeDamaged):
        hdr.decode(VECTORS["header"]["body_utf8"].encode(), H(F["header_bad_checksum"]["checksum"]))


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("header_newer_format", UnsupportedVersion),
        ("header_huge_memory", UnsafeParameters),
        ("header_above_bootstrap", UnsafeParameters),  # 4 GiB, 64 passes: inside the hard bounds
    ],
)
def test_failure_header_is_refused_before_any_key_derivation(
    name: str, error: type[Exception]
) -> None:
    import hashlib

    body = F[name]["body_utf8"].encode()
    with pytest.raises(error):
        hdr.decode(body, hashlib.sha256(body).digest(), allow_weak=True)


def test_failure_wrong_password_unwraps_nothing() -> None:
    v = VECTORS["header"]
    header = hdr.decode(v["body_utf8"].encode(), H(v["checksum"]), allow_weak=True)
    wrong = F["header_wrong_password"]["password_utf8"].encode()
    assert hdr.unwrap_with_password(header, wrong, allow_weak=True) is None


@pytest.mark.parametrize(
    "name",
    [
        "record_bad_tag",
        "record_truncated",
        "record_older_version",
        "record_as_immutable",
        "record_wrong_key",
        "record_unknown_format",
    ],
)
def test_failure_record_vectors_do_not_authenticate(name: str) -> None:
    v = VECTORS["records"]
    case = F[name]
    data_key = H(case.get("data_key", VECTORS["header"]["data_key"]))
    sealed = H(case.get("sealed", v["sealed"]))
    kind = Kind(case.get("kind", int(Kind.MUTABLE)))
    the_aad = aad(kind, H(v["ns_id"]), H(v["rec_id"]), case.get("version", v["version"]))
    if "aad_format" in case:
        the_aad = the_aad[:4] + case["aad_format"].to_bytes(2, "big") + the_aad[6:]
    keys = RecordKeys(data_key)
    with pytest.raises(NodeDamaged):
        keys.open(sealed, the_aad, "vector")
    with pytest.raises(SealBroken):
        Sealer(bytes(32)).open(sealed, the_aad)
