"""Proof texts: the document (gists) and the line (DNS TXT), their vectors
(docs/spec/proof-vectors.json) and their refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from polykey.trust import proofs
from polykey.trust.providers import ProofInvalid, ReplyTooBig

VECTORS = Path(__file__).parents[2] / "docs" / "spec" / "proof-vectors.json"
NODE = "v" + "0" * 52
CLAIM = '{"payload":"eyJ0eXAiOiJsaW5rLWlkZW50aXR5In0","signatures":[]}'


def vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(VECTORS.read_text())
    return loaded


def test_the_vectors_render_as_written() -> None:
    v = vectors()
    for case in v["documents"]:
        assert proofs.render(case["identity"], case["node"], case["claim"]) == case["text"]
        assert proofs.extract(case["text"]) == [case["claim"]]
    for case in v["lines"]:
        assert proofs.render_line(case["claim"]) == case["line"]
        assert proofs.extract_line(case["line"]) == case["claim"]


@pytest.mark.parametrize("case", vectors()["bad_documents"], ids=lambda c: c["why"])
def test_the_failure_vectors_of_documents_are_refused(case: dict[str, Any]) -> None:
    with pytest.raises((ProofInvalid, ReplyTooBig), match=case["error"]):
        proofs.extract(case["text"])


@pytest.mark.parametrize("case", vectors()["bad_lines"], ids=lambda c: c["why"])
def test_the_failure_vectors_of_lines_are_refused(case: dict[str, Any]) -> None:
    with pytest.raises((ProofInvalid, ReplyTooBig), match=case["error"]):
        proofs.extract_line(case["line"])


def test_a_text_without_a_claim_block_holds_no_claims() -> None:
    assert proofs.extract("# my dotfiles\n```json\n{}\n```\n") == []
    assert proofs.extract(proofs.render("github:a", NODE, CLAIM).replace("-v1", "-v2")) == []


def test_crlf_and_trailing_spaces_are_read_alike() -> None:
    text = proofs.render("github:alice", NODE, CLAIM)
    messy = "\r\n".join(line + "  " for line in text.split("\n"))
    assert proofs.extract(messy) == [CLAIM]
    proofs.check(messy, "github:alice", NODE, CLAIM)


def test_a_text_whose_prose_differs_from_its_claim_is_refused() -> None:
    text = proofs.render("github:alice", NODE, CLAIM)
    proofs.check(text, "github:alice", NODE, CLAIM)
    with pytest.raises(ProofInvalid):
        proofs.check(text.replace("I am alice", "I am bob"), "github:alice", NODE, CLAIM)
    with pytest.raises(ProofInvalid):
        proofs.check(text, "github:alice", "v" + "1" * 52, CLAIM)
    with pytest.raises(ProofInvalid):
        proofs.check(text + "\nAnd I also own example.org.\n", "github:alice", NODE, CLAIM)


def test_several_blocks_are_all_given_up_to_four() -> None:
    block = f"```polykey-claim-v1\n{CLAIM}\n```\n"
    assert proofs.extract(block * 2) == [CLAIM, CLAIM]
    with pytest.raises(ProofInvalid, match="more than 4"):
        proofs.extract(block * 5)


def test_a_huge_text_is_refused_before_it_is_read() -> None:
    with pytest.raises(ReplyTooBig):
        proofs.extract(" " * (proofs.MAX_TEXT + 1))


def test_render_refuses_a_claim_that_could_not_be_read_back() -> None:
    for bad in ["[1]", "{", '{"a":\n1}', "{}" + " " * proofs.MAX_CLAIM]:
        with pytest.raises(ProofInvalid):
            proofs.render("github:alice", NODE, bad)
        with pytest.raises(ProofInvalid):
            proofs.render_line(bad)


def test_dns_text_lines_each_give_a_claim_and_other_records_none() -> None:
    text = "\n".join([proofs.render_line('{"a":1}'), proofs.render_line('{"b":2}')])
    assert proofs.extract_lines(text) == ['{"a":1}', '{"b":2}']
    assert proofs.extract_line("v=spf1 -all") is None


def test_render_for_picks_the_form_by_provider() -> None:
    assert proofs.render_for("dns", "dns:example.org", NODE, CLAIM).startswith("polykey-proof=")
    assert proofs.render_for("github", "github:a", NODE, CLAIM).startswith("### Polykey proof")
