"""The root key: derived from the recovery code, signing files, encrypting to nodes."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from polykey.errors import BadSignature, DecryptionFailed, InvalidSignatureFormat, KeysError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.keys import recovery
from polykey.keys.root import FILE_NAMESPACE, RootKey, encrypt_to, verify_file

ZERO_CODE = " ".join(["abandon"] * 23 + ["art"])
LEGAL_CODE = (
    "legal winner thank year wave sausage worth useful legal winner thank year wave sausage "
    "worth useful legal winner thank year wave sausage worth title"
)
# RFC 8032 section 7.1, TEST 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
DATA = b"release-1.2.3.tar.gz contents\x00\xff"


@pytest.fixture(scope="module")
def alice() -> RootKey:
    return RootKey.from_recovery_code(recovery.parse(ZERO_CODE))


@pytest.fixture(scope="module")
def bob() -> RootKey:
    return RootKey.from_recovery_code(recovery.parse(LEGAL_CODE))


# --- identity -----------------------------------------------------------------------------------


def test_the_same_recovery_code_gives_the_same_node_id() -> None:
    first = RootKey.from_recovery_code(recovery.parse(LEGAL_CODE))
    second = RootKey.from_recovery_code(recovery.parse(LEGAL_CODE.upper()))
    assert first.node_id == second.node_id
    assert first.signing.seed() == second.signing.seed()


def test_a_generated_code_restores_its_identity() -> None:
    code = recovery.generate()
    original = RootKey.from_recovery_code(code)
    restored = RootKey.from_recovery_code(recovery.parse(str(code)))
    assert restored.node_id == original.node_id


def test_different_codes_give_different_node_ids(alice: RootKey, bob: RootKey) -> None:
    assert alice.node_id != bob.node_id


def test_the_ed25519_seed_is_the_first_32_bytes_of_the_bip39_seed() -> None:
    code = recovery.parse(LEGAL_CODE)
    key = RootKey.from_recovery_code(code)
    assert key.signing.seed() == code.seed()[:32]
    assert key.node_id == RootKey.from_seed(code.seed()[:32]).node_id


def test_the_node_id_is_the_raw_ed25519_public_key_rfc_8032() -> None:
    key = RootKey.from_seed(RFC8032_SEED)
    assert key.node_id == RFC8032_PUBLIC
    assert key.signing.sign(b"") == RFC8032_SIG_EMPTY


def test_the_zero_code_gives_a_known_node_id(alice: RootKey) -> None:
    assert encode_node_id(alice.node_id) == "v3nhl5p2cqcpme9cju8pkksoe305aua8dt2da2ra81nip9oqe55gg"


def test_repr_never_shows_the_private_key(alice: RootKey) -> None:
    shown = repr(alice)
    seed = alice.signing.seed()
    assert seed.hex() not in shown
    assert repr(seed) not in shown
    assert "SigningKey" not in shown or "hidden" in shown


# --- openssh_public -----------------------------------------------------------------------------


def test_openssh_public_is_an_authorized_keys_line_commented_with_the_node_id(
    alice: RootKey,
) -> None:
    line = alice.openssh_public()
    kind, blob_b64, comment = line.split(" ")
    assert kind == "ssh-ed25519"
    assert comment == encode_node_id(alice.node_id)
    assert decode_node_id(comment) == alice.node_id
    blob = base64.b64decode(blob_b64, validate=True)
    assert blob == b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + alice.node_id
    assert blob_b64.startswith("AAAAC3NzaC1lZDI1NTE5AAAAI")
    assert "\n" not in line


def test_ssh_keygen_reads_openssh_public_with_the_same_fingerprint(
    alice: RootKey, tmp_path: Path
) -> None:
    ssh_keygen = shutil.which("ssh-keygen")
    if ssh_keygen is None:
        pytest.skip("ssh-keygen (OpenSSH) is not on PATH: install openssh-client for interop tests")
    pub = tmp_path / "node.pub"
    pub.write_text(alice.openssh_public() + "\n")
    result = subprocess.run(
        [ssh_keygen, "-l", "-E", "sha256", "-f", str(pub)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    blob = base64.b64decode(alice.openssh_public().split(" ")[1])
    fingerprint = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    bits, shown_fp, comment, kind = result.stdout.decode().split()
    assert (bits, shown_fp, comment, kind) == (
        "256",
        f"SHA256:{fingerprint}",
        encode_node_id(alice.node_id),
        "(ED25519)",
    )


# --- sign_file / verify_file --------------------------------------------------------------------


def test_sign_file_then_verify_file_accepts(alice: RootKey) -> None:
    signature = alice.sign_file(DATA)
    verify_file(DATA, signature.encode("ascii"), alice.node_id)


def test_sign_file_writes_an_ssh_signature_in_the_file_namespace(alice: RootKey) -> None:
    signature = alice.sign_file(DATA)
    assert FILE_NAMESPACE == "file"
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----\n")
    assert signature.endswith("-----END SSH SIGNATURE-----\n")
    assert alice.sign_file(DATA) == signature  # Ed25519 is deterministic


def test_sign_file_of_empty_data_verifies(alice: RootKey) -> None:
    verify_file(b"", alice.sign_file(b"").encode(), alice.node_id)


def test_verify_file_refuses_another_signer(alice: RootKey, bob: RootKey) -> None:
    signature = alice.sign_file(DATA).encode()
    with pytest.raises(BadSignature) as caught:
        verify_file(DATA, signature, bob.node_id)
    assert encode_node_id(bob.node_id) in caught.value.detail


@pytest.mark.parametrize("tampered", [b"", DATA[:-1], DATA + b"\n", b"X" + DATA[1:]])
def test_verify_file_refuses_tampered_data(alice: RootKey, tampered: bytes) -> None:
    signature = alice.sign_file(DATA).encode()
    with pytest.raises(BadSignature):
        verify_file(tampered, signature, alice.node_id)


def test_verify_file_refuses_a_signature_for_another_namespace(alice: RootKey) -> None:
    from polykey.crypto import sshsig

    git_signature = sshsig.sign(alice.signing, DATA, "git").encode()
    with pytest.raises(BadSignature):
        verify_file(DATA, git_signature, alice.node_id)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not a signature",
        b"-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----\n",
        b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
        b"\xff\xfe\x00binary",
        b"A" * 100_000,
    ],
    ids=["empty", "text", "bad-base64", "truncated-blob", "binary", "oversized"],
)
def test_verify_file_raises_invalid_signature_format_for_garbage(
    alice: RootKey, garbage: bytes
) -> None:
    with pytest.raises(InvalidSignatureFormat) as caught:
        verify_file(DATA, garbage, alice.node_id)
    assert caught.value.__cause__ is None
    assert caught.value.exit_code == 22


def test_verify_file_errors_are_keys_errors_with_distinct_exit_codes(alice: RootKey) -> None:
    with pytest.raises(KeysError) as bad:
        verify_file(b"other", alice.sign_file(DATA).encode(), alice.node_id)
    with pytest.raises(KeysError) as garbage:
        verify_file(DATA, b"garbage", alice.node_id)
    assert type(bad.value) is BadSignature
    assert type(garbage.value) is InvalidSignatureFormat
    assert bad.value.exit_code != garbage.value.exit_code


# --- encrypt_to / decrypt -----------------------------------------------------------------------


@pytest.mark.parametrize("armor", [False, True])
def test_encrypt_to_a_node_then_decrypt_with_its_root_key(alice: RootKey, armor: bool) -> None:
    ciphertext = encrypt_to(DATA, [alice.node_id], armor=armor)
    assert DATA not in ciphertext
    assert alice.decrypt(ciphertext) == DATA


def test_encrypt_to_several_nodes(alice: RootKey, bob: RootKey) -> None:
    ciphertext = encrypt_to(DATA, [alice.node_id, bob.node_id])
    assert alice.decrypt(ciphertext) == DATA
    assert bob.decrypt(ciphertext) == DATA


def test_encrypt_to_a_node_id_parsed_from_text(alice: RootKey) -> None:
    recipient = decode_node_id(encode_node_id(alice.node_id))
    assert alice.decrypt(encrypt_to(DATA, [recipient])) == DATA


def test_decrypt_refuses_a_file_encrypted_to_another_node(alice: RootKey, bob: RootKey) -> None:
    ciphertext = encrypt_to(DATA, [alice.node_id])
    with pytest.raises(DecryptionFailed) as caught:
        bob.decrypt(ciphertext)
    assert caught.value.exit_code == 23
    assert caught.value.__cause__ is None


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"age-encryption.org/v1\n"])
def test_decrypt_refuses_garbage_with_decryption_failed(alice: RootKey, garbage: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        alice.decrypt(garbage)


def test_decrypt_refuses_a_truncated_file(alice: RootKey) -> None:
    ciphertext = encrypt_to(DATA, [alice.node_id])
    with pytest.raises(DecryptionFailed):
        alice.decrypt(ciphertext[:-1])


def test_encrypt_to_nobody_is_refused() -> None:
    recipients: list[NodeId] = []
    with pytest.raises(ValueError, match="recipient"):
        encrypt_to(DATA, recipients)
