"""docs/spec/sigchain-vectors.json replayed: the valid chain verifies to the stored bytes,
digests and state written there, the rotated key's first entry continues it, and every failure
vector is refused with exactly the text written there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from polykey.ids import decode_node_id
from polykey.keys.root import RootKey
from polykey.trust.rotation import compromised_after, proof
from polykey.trust.sigchain import (
    BadChain,
    Head,
    chain_state,
    check_rotation,
    prove_fork,
    verify_chain,
)

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "spec" / "sigchain-vectors.json"
DOC: dict[str, Any] = json.loads(VECTORS.read_text())


def test_keys_are_the_seeds_named() -> None:
    for key in DOC["keys"].values():
        root = RootKey.from_seed(bytes.fromhex(key["seed"]))
        assert decode_node_id(key["node_id"]) == root.node_id


def test_valid_chain_verifies_to_its_stored_bytes_digests_and_state() -> None:
    valid = DOC["valid"]
    entries = verify_chain(decode_node_id(valid["owner"]), valid["docs"])
    assert [e.raw.decode() for e in entries] == valid["stored"]
    assert [e.digest for e in entries] == valid["digests"]
    assert chain_state(entries).as_json() == valid["state"]
    assert [e.doc() for e in entries] == valid["docs"]


def test_valid_chain_verifies_in_pages() -> None:
    valid = DOC["valid"]
    owner = decode_node_id(valid["owner"])
    first = verify_chain(owner, valid["docs"][:3])
    rest = verify_chain(owner, valid["docs"][3:], earlier=first)
    assert [e.digest for e in first + rest] == valid["digests"]


def test_rotated_first_entry_continues_the_old_chain() -> None:
    old = verify_chain(decode_node_id(DOC["valid"]["owner"]), DOC["valid"]["docs"])
    rotated = DOC["rotated"]
    (first,) = verify_chain(decode_node_id(rotated["owner"]), rotated["docs"])
    check_rotation(old[-1], first)
    assert chain_state([first]).rotated_from == DOC["valid"]["owner"]
    with pytest.raises(BadChain, match="not the two halves"):
        check_rotation(old[-2], first)


@pytest.mark.parametrize("case", DOC["failures"], ids=[c["name"] for c in DOC["failures"]])
def test_failure_vector_is_refused_with_its_text(case: dict[str, Any]) -> None:
    after = Head(**case["after"]) if "after" in case else None
    docs = case["docs"] * case.get("repeat", 1)
    with pytest.raises(BadChain) as caught:
        verify_chain(decode_node_id(case["owner"]), docs, after=after)
    assert caught.value.message == case["expect"]
    assert caught.value.exit_code == 58


def test_rotated_message_moves_the_old_node_id_to_the_new() -> None:
    valid = DOC["sigchain_rotated"]["valid"]
    closing, entries = proof(valid["closing"], valid["chain"])
    assert (closing.iss, closing.sub) == (valid["old"], valid["new"])
    assert entries[0].payload["from"] == valid["old"]


@pytest.mark.parametrize(
    "case",
    DOC["sigchain_rotated"]["refused"],
    ids=[c["name"] for c in DOC["sigchain_rotated"]["refused"]],
)
def test_rotated_message_is_refused_with_its_text(case: dict[str, Any]) -> None:
    with pytest.raises(BadChain) as caught:
        proof(case["closing"], case["chain"])
    assert caught.value.message == case["expect"]


@pytest.mark.parametrize(
    "case",
    DOC["key_compromised"]["cases"],
    ids=[c["name"] for c in DOC["key_compromised"]["cases"]],
)
def test_key_compromised_claim_gives_its_time_or_is_refused(case: dict[str, Any]) -> None:
    owner = decode_node_id(DOC["key_compromised"]["owner"])
    if "expect" in case:
        with pytest.raises(BadChain) as caught:
            verify_chain(owner, case["docs"])
        assert caught.value.message == case["expect"]
        return
    entries = verify_chain(owner, case["docs"])
    assert compromised_after(entries, DOC["key_compromised"]["old"]) == case["after"]


def test_make_vectors_writes_the_file_byte_for_byte() -> None:
    """scripts/make-vectors.py --sigchain (keys from fixed seeds) makes this very file, the
    renewal's vectors (``rotation_vectors``) and the forks' included."""
    import importlib.util

    script = VECTORS.parents[2] / "scripts" / "make-vectors.py"
    spec = importlib.util.spec_from_file_location("make_vectors", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = module.sigchain_vectors() | module.rotation_vectors() | module.fork_vectors()
    assert json.dumps(made, indent=2) + "\n" == VECTORS.read_text()


@pytest.mark.parametrize("case", DOC["forks"]["proofs"], ids=lambda c: c["name"])
def test_fork_proof_names_its_place(case: dict[str, Any]) -> None:
    assert (
        prove_fork(decode_node_id(DOC["forks"]["owner"]), case["held"], case["served"])
        == (case["seq"])
    )


@pytest.mark.parametrize("case", DOC["forks"]["refused"], ids=lambda c: c["name"])
def test_what_proves_no_fork_is_refused_with_its_text(case: dict[str, Any]) -> None:
    with pytest.raises(BadChain) as caught:
        prove_fork(decode_node_id(DOC["forks"]["owner"]), case["held"], case["served"])
    assert caught.value.message == case["expect"]
