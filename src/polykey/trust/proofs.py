"""Proof texts: what a person reads at the place a proof lives, with the signed claim in it
(docs/spec/identities.md, "Proof texts").

Two forms, version 1 both:

- the **document** (a gist, any page): "I hereby claim" in Markdown, naming the identity and the
  NodeId, with the claim (the sigchain entry's stored form, a JSON text) in one fenced block
  whose info string is ``polykey-claim-v1``;
- the **line** (a DNS TXT record): ``polykey-proof=v1:`` followed by the claim in base64url;
- the **statement** (OpenPGP, Keybase): "I hereby claim" naming the identity, the NodeId and
  the key's fingerprint, signed by that OpenPGP key; it holds no claim (the node's claim holds
  its signature instead, see :func:`render_statement`).

The claim is opaque here: a JSON object of at most 8,192 characters; the sigchain verifies it.
A verifier takes a document only when it is exactly what :func:`render` makes for the identity
and NodeId the claim names (:func:`check`), so the prose cannot say something the claim does not.
"""

from __future__ import annotations

import json
import re

from polykey.trust import jws
from polykey.trust.providers.base import ProofInvalid, ReplyTooBig

VERSION = 1
FENCE = "```"
INFO = f"polykey-claim-v{VERSION}"
LINE_PREFIX = f"polykey-proof=v{VERSION}:"
MAX_CLAIM = 8192  # characters: the sigchain's cap on an entry's stored form
MAX_TEXT = 64 * 1024  # characters of a document
MAX_CLAIMS = 4  # fenced claim blocks in one document
MAX_LINE = len(LINE_PREFIX) + (MAX_CLAIM * 4 + 2) // 3
_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")


def render(identity: str, node_id: str, claim_json: str) -> str:
    """The document: a Markdown text for people with the claim in a fenced block."""
    _check_claim(claim_json)
    provider, _, name = identity.partition(":")
    return (
        "### Polykey proof\n"
        "\n"
        "I hereby claim:\n"
        "\n"
        f"  * I am {name} on {provider} ({identity}).\n"
        f"  * I control the Polykey node {node_id}.\n"
        "  * The claim below, signed by that node's key, links the two.\n"
        "\n"
        f"{FENCE}{INFO}\n"
        f"{claim_json}\n"
        f"{FENCE}\n"
        "\n"
        f"Check it with `pk identities discover {identity}`.\n"
    )


def extract(text: str) -> list[str]:
    """The claims in a document's ``polykey-claim-v1`` blocks, in order; [] when it has none.

    Refused (:class:`ProofInvalid`; :class:`ReplyTooBig` past 64 KiB): a block left open, a block
    that is not one line, a claim over 8,192 characters or not a JSON object, over 4 blocks.
    """
    if len(text) > MAX_TEXT:
        raise ReplyTooBig(f"a proof text of {len(text)} characters, over {MAX_TEXT}")
    lines = text.replace("\r\n", "\n").split("\n")
    claims: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].rstrip() != FENCE + INFO:
            i += 1
            continue
        try:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == FENCE)
        except StopIteration:
            raise ProofInvalid(f"the {INFO} block is not closed") from None
        body = [line for line in lines[i + 1 : end] if line.strip()]
        if len(body) != 1:
            raise ProofInvalid(f"a {INFO} block holds {len(body)} lines, not one")
        claim = body[0].strip()
        _check_claim(claim)
        claims.append(claim)
        if len(claims) > MAX_CLAIMS:
            raise ProofInvalid(f"more than {MAX_CLAIMS} {INFO} blocks")
        i = end + 1
    return claims


def check(text: str, identity: str, node_id: str, claim_json: str) -> None:
    """Refuse a document that is not exactly :func:`render`'s (line endings and trailing
    spaces aside), so its prose says what its claim says."""
    if _normal(text) != _normal(render(identity, node_id, claim_json)):
        raise ProofInvalid(f"the text is not the proof Polykey writes for {identity[:80]}")


def render_line(claim_json: str) -> str:
    """The line form for a DNS TXT record: ``polykey-proof=v1:`` + base64url of the claim."""
    _check_claim(claim_json)
    return LINE_PREFIX + jws.b64url(claim_json.encode("utf-8"))


def extract_line(line: str) -> str | None:
    """The claim in one line; None when the line is not a Polykey proof (another TXT record)."""
    if not line.startswith("polykey-proof="):
        return None
    if not line.startswith(LINE_PREFIX):
        raise ProofInvalid("a polykey-proof record of a version this Polykey does not know")
    if len(line) > MAX_LINE:
        raise ReplyTooBig(f"a polykey-proof record of {len(line)} characters, over {MAX_LINE}")
    try:
        raw = jws.b64url_decode(line[len(LINE_PREFIX) :], "claim")
        claim = raw.decode("utf-8")
    except (jws.JwsError, UnicodeDecodeError):
        raise ProofInvalid("a polykey-proof record is not base64url of UTF-8 text") from None
    _check_claim(claim)
    return claim


def extract_lines(text: str) -> list[str]:
    """The claims of a DNS proof text (one record a line, as the DNS provider gives them)."""
    claims = [c for c in map(extract_line, text.split("\n")) if c is not None]
    if len(claims) > 64:
        raise ReplyTooBig(f"{len(claims)} polykey-proof records, over 64")
    return claims


def render_for(provider: str, identity: str, node_id: str, claim_json: str) -> str:
    """The text a provider's ``publish`` wants from ``make_text``: the line for DNS, the
    document everywhere else."""
    if provider == "dns":
        return render_line(claim_json)
    return render(identity, node_id, claim_json)


def render_statement(identity: str, node_id: str, fingerprint: str) -> str:
    """The text an OpenPGP key signs to claim ``identity`` (``openpgp:FPR`` or
    ``keybase:NAME``) for a node. It cannot embed the claim, which carries its signature, so it
    names what the claim links: the identity, the NodeId and the key (40 or 64 uppercase hex
    digits)."""
    provider, _, name = identity.partition(":")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ProofInvalid("an OpenPGP fingerprint is 40 or 64 uppercase hex digits")
    if provider == "openpgp":
        if name != fingerprint:
            raise ProofInvalid(f"{identity[:80]} is not the identity of the key {fingerprint}")
        who = f"  * I hold the OpenPGP key {fingerprint} ({identity}).\n"
    elif provider == "keybase":
        who = f"  * I am {name} on keybase ({identity}), with the OpenPGP key {fingerprint}.\n"
    else:
        raise ProofInvalid(f"{provider[:32]} identities are not proven by an OpenPGP signature")
    return (
        "### Polykey proof\n"
        "\n"
        "I hereby claim:\n"
        "\n"
        f"{who}"
        f"  * I control the Polykey node {node_id}.\n"
        "  * This text, signed by that OpenPGP key, links the two; the node's sigchain claim\n"
        f"    of {identity} carries the signature.\n"
    )


def check_statement(text: str, identity: str, node_id: str, fingerprint: str) -> None:
    """Refuse a signed text (a clearsigned message's) that is not the statement."""
    if _normal(text) != _normal(render_statement(identity, node_id, fingerprint)):
        raise ProofInvalid(f"the signed text is not the statement Polykey writes for {identity}")


def _check_claim(claim: str) -> None:
    if len(claim) > MAX_CLAIM:
        raise ProofInvalid(f"a claim of {len(claim)} characters, over {MAX_CLAIM}")
    if "\n" in claim or "\r" in claim:
        raise ProofInvalid("a claim is one line of JSON")
    try:
        value = json.loads(claim)
    except (ValueError, RecursionError):
        raise ProofInvalid("a claim is not JSON") from None
    if not isinstance(value, dict):
        raise ProofInvalid("a claim is not a JSON object")


def _normal(text: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")
