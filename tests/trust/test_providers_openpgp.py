"""OpenPGP identities: keys from a WKD, a VKS/HKP keyserver (stand-ins on loopback) or a local
keyring, statements signed by real gpg with throwaway keys and checked by real gpg; then the
whole claim through `pk` and its agent, openpgp: and keybase:."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.trust.proofs import render_statement
from polykey.trust.providers import (
    BadProviderConfig,
    Keybase,
    KeybaseConfig,
    Limits,
    OpenPgp,
    OpenPgpConfig,
    ProofInvalid,
    ProofNotFound,
    ProviderUnreachable,
    ReplyTooBig,
)
from polykey.trust.providers.gpg import (
    KeyInvalid,
    OtherKey,
    SignatureInvalid,
    read_signature,
    verify,
)
from polykey.trust.providers.openpgp import encode_signature, wkd_hash, wkd_urls
from tests.support import pk_env
from tests.sync.test_share import free_port
from tests.sync.test_three_agents import Peer
from tests.trust.standins.gnupg import GnuPG
from tests.trust.standins.keybase import KeybaseStandIn, KeybaseUser
from tests.trust.standins.keyserver import Canned, KeyserverStandIn
from tests.trust.standins.wkd import WkdStandIn

NODE = "v" + "0" * 52


@dataclass
class Keys:
    g: GnuPG
    revoked: tuple[bytes, str]  # a key revoked after it signed the statement for NODE
    expired: str  # a signature by a key long expired, of the statement for NODE

    def fpr(self, name: str) -> str:
        return self.g.keys[name]

    def proof(self, name: str, node: str = NODE, **extra: str) -> dict[str, str]:
        """The claim's proof object: ``name``'s signature of the statement for ``node``."""
        fpr = self.fpr(name)
        signature, _ = read_signature(
            self.g.sign(name, render_statement(f"openpgp:{fpr}", node, fpr))
        )
        return {
            "provider": "openpgp",
            "ref": fpr,
            "signature": encode_signature(signature),
            **extra,
        }


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    g = GnuPG(home)
    for name in ("alice", "mallory", "rev"):
        g.make(name)
    g.make("dan", usage="cert")
    g.add_signing_subkey("dan")
    g.make("old", expires="1d", at="20200101T000000")
    rev = g.keys["rev"]
    revoked_sig = g.sign("rev", render_statement(f"openpgp:{rev}", NODE, rev))
    g.revoke("rev")
    old = g.keys["old"]
    statement = render_statement(f"openpgp:{old}", NODE, old)
    expired = g.sign("old", statement, "--faked-system-time", "20200101T010000")
    try:
        yield Keys(g, (g.public("rev"), revoked_sig), expired)
    finally:
        g.stop()


@pytest.fixture
def ks() -> Iterator[KeyserverStandIn]:
    standin: KeyserverStandIn = KeyserverStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def wkd() -> Iterator[WkdStandIn]:
    standin: WkdStandIn = WkdStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


def provider(ks: KeyserverStandIn, wkd: WkdStandIn | None = None, **settings: object) -> OpenPgp:
    config = {"keyserver": ks.url, "wkd_url": wkd.url if wkd else ""} | settings
    return OpenPgp(OpenPgpConfig(**config))  # type: ignore[arg-type]


VECTORS = json.loads((Path(__file__).parents[2] / "docs/spec/proof-vectors.json").read_text())


def test_the_statement_vectors_render_as_written() -> None:
    for case in VECTORS["statements"]:
        text = render_statement(case["identity"], case["node"], case["fingerprint"])
        assert text == case["text"]


@pytest.mark.parametrize("case", VECTORS["bad_statements"], ids=lambda c: c["why"])
def test_the_failure_vectors_of_statements_are_refused(case: dict[str, str]) -> None:
    with pytest.raises(ProofInvalid, match=case["error"]):
        render_statement(case["identity"], case["node"], case["fingerprint"])


@pytest.mark.parametrize("case", VECTORS["signed"], ids=lambda c: c["why"])
def test_the_signed_vectors_verify_with_gpg(case: dict[str, str]) -> None:
    key = VECTORS["keys"][case["key"]]["key"].encode()
    signature, signed_text = read_signature(case["signature"])
    if signed_text is not None:
        assert signed_text == case["text"].rstrip("\n")
    assert (
        verify(key, case["fingerprint"], case["text"].encode(), signature).primary
        == case["fingerprint"]
    )


@pytest.mark.parametrize("case", VECTORS["bad_signed"], ids=lambda c: c["why"])
def test_the_failure_vectors_of_signatures_are_refused(case: dict[str, str]) -> None:
    key = VECTORS["keys"][case["key"]]["key"].encode()
    signature, _ = read_signature(case["signature"])
    with pytest.raises(ProofInvalid, match=case["error"]):
        verify(key, case["fingerprint"], case["text"].encode(), signature)


@pytest.mark.parametrize(
    "settings",
    [{"keyserver": "http://keys.example"}, {"wkd_url": "ftp://127.0.0.1"}, {"keyserver_api": "x"}],
)
def test_settings_that_could_leak_or_mislead_are_refused(settings: dict[str, str]) -> None:
    with pytest.raises(BadProviderConfig):
        OpenPgpConfig(**settings)  # type: ignore[arg-type]


def test_wkd_hashes_the_local_part_as_the_draft_says() -> None:
    assert wkd_hash("Joe.Doe") == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
    assert wkd_urls("Joe.Doe@Example.ORG") == [
        "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/"
        "iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe",
        "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe",
    ]


def test_a_signed_statement_verifies_with_the_key_from_a_vks_keyserver(
    keys: Keys, ks: KeyserverStandIn
) -> None:
    ks.keys[keys.fpr("alice")] = keys.g.public("alice")
    signer = provider(ks).verify_signed(f"openpgp:{keys.fpr('alice')}", NODE, keys.proof("alice"))
    assert signer.key == signer.primary == keys.fpr("alice")
    assert ks.log == [f"/vks/v1/by-fingerprint/{keys.fpr('alice')}"]


def test_a_signing_subkey_signs_for_its_primary_key_found_by_hkp(
    keys: Keys, ks: KeyserverStandIn
) -> None:
    ks.keys[keys.fpr("dan")] = keys.g.public("dan")
    pgp = provider(ks, keyserver_api="hkp")
    signer = pgp.verify_signed(f"openpgp:{keys.fpr('dan')}", NODE, keys.proof("dan"))
    assert signer.primary == keys.fpr("dan") and signer.key != signer.primary
    assert ks.log[0].startswith("/pks/lookup?op=get&options=mr&search=0x")


def test_wkd_advanced_then_direct_then_the_keyserver(
    keys: Keys, ks: KeyserverStandIn, wkd: WkdStandIn
) -> None:
    identity, fpr = f"openpgp:{keys.fpr('alice')}", keys.fpr("alice")
    wkd.keys["alice@example.org"] = keys.g.public("alice", armor=False)
    proof = keys.proof("alice", email="alice@example.org")
    provider(ks, wkd).verify_signed(identity, NODE, proof)
    assert [p.split("/")[3] for p in wkd.log] == ["example.org"] and ks.log == []
    wkd.advanced = False
    provider(ks, wkd).verify_signed(identity, NODE, proof)
    assert wkd.log[-1].startswith(f"/.well-known/openpgpkey/hu/{wkd_hash('alice')}?l=alice")
    del wkd.keys["alice@example.org"]  # no key by WKD: the keyserver has it
    ks.keys[fpr] = keys.g.public("alice")
    provider(ks, wkd).verify_signed(identity, NODE, proof)
    assert ks.log == [f"/vks/v1/by-fingerprint/{fpr}"]


def test_a_local_keyring_is_read_without_being_changed(keys: Keys, ks: KeyserverStandIn) -> None:
    before = sorted((p.name, p.stat().st_mtime_ns) for p in keys.g.home.iterdir())
    pgp = provider(ks, keyserver="", keyring=str(keys.g.home))
    pgp.verify_signed(f"openpgp:{keys.fpr('alice')}", NODE, keys.proof("alice"))
    assert sorted((p.name, p.stat().st_mtime_ns) for p in keys.g.home.iterdir()) == before


def test_a_statement_for_another_node_or_by_another_key_is_refused(
    keys: Keys, ks: KeyserverStandIn
) -> None:
    identity = f"openpgp:{keys.fpr('alice')}"
    ks.keys[keys.fpr("alice")] = keys.g.public("alice")
    with pytest.raises(SignatureInvalid, match="does not match"):
        provider(ks).verify_signed(identity, NODE, keys.proof("alice", "v" + "1" * 52))
    forged = keys.proof("mallory") | {"ref": keys.fpr("alice")}
    with pytest.raises(SignatureInvalid, match="not by the key"):
        provider(ks).verify_signed(identity, NODE, forged)
    weak = read_signature(
        keys.g.sign(
            "alice", render_statement(identity, NODE, keys.fpr("alice")), "--digest-algo", "SHA1"
        )
    )[0]
    with pytest.raises(SignatureInvalid, match="weaker"):
        provider(ks).verify_signed(
            identity, NODE, keys.proof("alice") | {"signature": encode_signature(weak)}
        )


def test_a_key_served_for_another_fingerprint_is_refused(keys: Keys, ks: KeyserverStandIn) -> None:
    ks.keys[keys.fpr("alice")] = keys.g.public("mallory")
    with pytest.raises(OtherKey):
        provider(ks).verify_signed(f"openpgp:{keys.fpr('alice')}", NODE, keys.proof("alice"))


def test_revoked_and_expired_keys_are_refused(keys: Keys, ks: KeyserverStandIn) -> None:
    key, signature = keys.revoked
    ks.keys[keys.fpr("rev")] = key
    proof = {"provider": "openpgp", "ref": keys.fpr("rev")}
    proof["signature"] = encode_signature(read_signature(signature)[0])
    with pytest.raises(KeyInvalid, match="revoked"):
        provider(ks).verify_signed(f"openpgp:{keys.fpr('rev')}", NODE, proof)
    ks.keys[keys.fpr("old")] = keys.g.public("old")
    proof = {"provider": "openpgp", "ref": keys.fpr("old")}
    proof["signature"] = encode_signature(read_signature(keys.expired)[0])
    with pytest.raises(KeyInvalid, match="expired"):
        provider(ks).verify_signed(f"openpgp:{keys.fpr('old')}", NODE, proof)


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "-----BEGIN PGP SIGNATURE-----\n\n!!!!\n-----END PGP SIGNATURE-----\n",
        "-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
        "-----BEGIN PGP SIGNATURE-----\n\nwgA=\n",
    ],
)
def test_malformed_signatures_are_refused(text: str) -> None:
    with pytest.raises(SignatureInvalid):
        read_signature(text)


def test_two_signatures_in_one_block_are_refused(keys: Keys) -> None:
    one = read_signature(keys.g.sign("alice", "x"))[0]
    two = base64.b64encode(one + one).decode()
    with pytest.raises(SignatureInvalid, match="not one"):
        read_signature(f"-----BEGIN PGP SIGNATURE-----\n\n{two}\n-----END PGP SIGNATURE-----\n")


def test_malformed_huge_or_slow_key_replies_are_refused(keys: Keys, ks: KeyserverStandIn) -> None:
    identity, fpr = f"openpgp:{keys.fpr('alice')}", keys.fpr("alice")
    ks.canned[fpr] = Canned(200, b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n")
    with pytest.raises(KeyInvalid, match="not a valid OpenPGP key"):
        provider(ks).verify_signed(identity, NODE, keys.proof("alice"))
    ks.canned[fpr] = Canned(200, b"x" * (300 * 1024))
    with pytest.raises(ReplyTooBig):
        provider(ks).verify_signed(identity, NODE, keys.proof("alice"))
    ks.canned[fpr] = Canned(200, keys.g.public("alice"), delay=1.0)
    quick = Limits(max_reply=256 * 1024, timeout=0.2, retries=0)
    with pytest.raises(ProviderUnreachable):
        provider(ks, limits=quick).verify_signed(identity, NODE, keys.proof("alice"))
    del ks.canned[fpr]
    with pytest.raises(ProofNotFound):
        provider(ks).verify_signed(identity, NODE, keys.proof("alice"))


def test_keybase_claims_are_signed_by_the_key_keybase_gives(keys: Keys) -> None:
    kb = KeybaseStandIn().start()
    try:
        fpr = keys.fpr("alice")
        kb.users["alice"] = KeybaseUser(
            "alice", fpr.lower(), bundle=keys.g.public("alice").decode()
        )
        signature = read_signature(
            keys.g.sign("alice", render_statement("keybase:alice", NODE, fpr))
        )[0]
        proof = {"provider": "keybase", "ref": "alice", "fingerprint": fpr}
        proof["signature"] = encode_signature(signature)
        keybase = Keybase(KeybaseConfig(base_url=kb.url))
        assert keybase.verify_signed("keybase:alice", NODE, proof).primary == fpr
        kb.users["alice"] = KeybaseUser(
            "alice", keys.fpr("mallory").lower(), bundle=keys.g.public("mallory").decode()
        )
        with pytest.raises(KeyInvalid, match="another key"):
            keybase.verify_signed("keybase:alice", NODE, proof)
    finally:
        kb.stop()


# --- through `pk` and its agent -------------------------------------------------------------


def test_claims_end_to_end_through_the_cli_and_agent(
    keys: Keys, ks: KeyserverStandIn, tmp_path: Path
) -> None:
    kb = KeybaseStandIn().start()
    env = pk_env(tmp_path / "a.pk", PK_PASSWORD="a pw", GNUPGHOME=str(keys.g.home))
    env["PK_RUNTIME_DIR"] = str(tmp_path / "run")
    p = Peer("a", env, free_port())
    try:
        p("bootstrap")
        p.start()
        fpr = keys.fpr("alice")
        p("identities", "provider", "openpgp", "--keyserver", ks.url)
        p("identities", "provider", "keybase", "--api-url", kb.url)
        ks.keys[fpr] = keys.g.public("alice")

        # the user's gpg signs (through its agent); spaces and case as gpg prints them
        spaced = " ".join(fpr[i : i + 4] for i in range(0, 40, 4)).lower()
        claimed = json.loads(p("identities", "claim", f"openpgp:{spaced}", "--format", "json"))
        assert claimed["verified"] and claimed["ref"] == fpr
        again = json.loads(p("identities", "claim", f"openpgp:{fpr}", "--format", "json"))
        assert again["jti"] == claimed["jti"]
        mine = json.loads(p("identities", "list", "--format", "json"))["mine"]
        assert mine == [{"id": f"openpgp:{fpr}", "jti": claimed["jti"], "verified": True}]

        # signed elsewhere: the statement printed, a clearsigned message given back
        kb.users["alice"] = KeybaseUser(
            "alice", fpr.lower(), bundle=keys.g.public("alice").decode()
        )
        statement = p("identities", "claim", "keybase:alice", "--statement")
        assert statement.startswith("### Polykey proof\n\nI hereby claim:")
        (tmp_path / "s.asc").write_text(keys.g.clearsign("alice", statement))
        out = p("identities", "claim", "keybase:alice", "--signature", str(tmp_path / "s.asc"))
        assert "the proof verifies" in out

        # refused before anything is recorded: mallory's signature, an edited statement
        length = len(json.loads(p("sigchain", "show", "--format", "json"))["entries"])
        (tmp_path / "m.asc").write_text(keys.g.sign("mallory", statement))
        r = p.fails("identities", "claim", "keybase:alice", "--signature", str(tmp_path / "m.asc"))
        assert r.returncode == 87 and b"not by the key" in r.stderr
        edited = statement.replace("I control", "I do not control")
        (tmp_path / "e.asc").write_text(keys.g.clearsign("alice", edited))
        r = p.fails("identities", "claim", "keybase:alice", "--signature", str(tmp_path / "e.asc"))
        assert r.returncode == 87 and b"not the statement" in r.stderr
        assert len(json.loads(p("sigchain", "show", "--format", "json"))["entries"]) == length

        # the key gone from the keyserver: claimed again, gpg signs, but nothing verifies
        del ks.keys[fpr]
        r = p.fails("identities", "claim", f"openpgp:{fpr}")
        assert r.returncode == 86 and b"No proof there" in r.stderr, r.stderr
        r = p.fails("identities", "claim", "github:alice", "--statement")
        assert r.returncode == 2 and b"are for openpgp: and keybase:" in r.stderr
    finally:
        p.stop()
        kb.stop()
