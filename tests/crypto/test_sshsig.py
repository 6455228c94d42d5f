"""OpenSSH signatures (PROTOCOL.sshsig): round trips, refusals, malformed input, and interop
with the stock ``ssh-keygen -Y`` in both directions."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.crypto import sshsig
from polykey.crypto.signing import SigningKey, openssh_public_line, ssh_public_blob, ssh_string
from polykey.crypto.sshsig import BEGIN, END, MAX_ARMORED_BYTES, MalformedSignature

KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))
MESSAGE = b"the file that was signed\n"


# --- helpers: build SSHSIG blobs field by field -------------------------------------------------


def signed_data(namespace: bytes, hash_name: bytes, message: bytes) -> bytes:
    # Unknown names (for malformed-input cases) still need some digest: SHA-512 stands in.
    digest = (hashlib.sha256 if hash_name == b"sha256" else hashlib.sha512)(message).digest()
    return (
        b"SSHSIG"
        + ssh_string(namespace)
        + ssh_string(b"")
        + ssh_string(hash_name)
        + ssh_string(digest)
    )


def build_blob(
    *,
    key: SigningKey = KEY,
    message: bytes = MESSAGE,
    magic: bytes = b"SSHSIG",
    version: int = 1,
    public_blob: bytes | None = None,
    namespace: bytes = b"file",
    signed_namespace: bytes | None = None,
    reserved: bytes = b"",
    hash_name: bytes = b"sha512",
    signed_hash: bytes | None = None,
    sig_type: bytes = b"ssh-ed25519",
    raw_sig: bytes | None = None,
) -> bytes:
    if raw_sig is None:
        raw_sig = key.sign(
            signed_data(
                signed_namespace if signed_namespace is not None else namespace,
                signed_hash if signed_hash is not None else hash_name,
                message,
            )
        )
    return (
        magic
        + struct.pack(">I", version)
        + ssh_string(public_blob if public_blob is not None else ssh_public_blob(key.public))
        + ssh_string(namespace)
        + ssh_string(reserved)
        + ssh_string(hash_name)
        + ssh_string(ssh_string(sig_type) + ssh_string(raw_sig))
    )


def armor(blob: bytes) -> str:
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def unarmor(armored: str) -> bytes:
    lines = armored.strip().splitlines()
    assert lines[0] == BEGIN
    assert lines[-1] == END
    return base64.b64decode("".join(lines[1:-1]))


# --- sign and check -----------------------------------------------------------------------------


def test_sign_then_check_accepts() -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file")
    assert sshsig.check(armored, MESSAGE, "file", KEY.public)


def test_check_accepts_the_signature_as_bytes() -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file")
    assert sshsig.check(armored.encode("ascii"), MESSAGE, "file", KEY.public)


@settings(max_examples=50)
@given(message=st.binary(max_size=2048), namespace=st.text(min_size=1, max_size=40))
def test_round_trip_for_any_message_and_namespace(message: bytes, namespace: str) -> None:
    armored = sshsig.sign(KEY, message, namespace)
    assert sshsig.check(armored, message, namespace, KEY.public)
    assert sshsig.parse(armored) == (
        KEY.public,
        namespace,
        b"sha512",
        sshsig.parse(armored)[3],
    )


def test_the_armor_is_the_openssh_layout() -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file")
    lines = armored.splitlines()
    assert armored.endswith("\n")
    assert lines[0] == "-----BEGIN SSH SIGNATURE-----"
    assert lines[-1] == "-----END SSH SIGNATURE-----"
    assert all(len(line) <= 70 for line in lines[1:-1])
    assert all(len(line) == 70 for line in lines[1:-2])
    assert unarmor(armored).startswith(b"SSHSIG\x00\x00\x00\x01")


def test_the_blob_matches_one_built_from_the_specification() -> None:
    # Ed25519 signatures are deterministic, so the whole blob is fixed by key, message, namespace.
    assert unarmor(sshsig.sign(KEY, MESSAGE, "git")) == build_blob(namespace=b"git")


def test_parse_returns_signer_namespace_hash_and_signature() -> None:
    signer, namespace, hash_name, raw_sig = sshsig.parse(sshsig.sign(KEY, MESSAGE, "git"))
    assert signer == KEY.public
    assert namespace == "git"
    assert hash_name == b"sha512"
    assert len(raw_sig) == 64


def test_a_namespace_mismatch_is_refused() -> None:
    armored = sshsig.sign(KEY, MESSAGE, "git")
    assert not sshsig.check(armored, MESSAGE, "file", KEY.public)
    assert not sshsig.check(armored, MESSAGE, "gi", KEY.public)
    assert not sshsig.check(armored, MESSAGE, "", KEY.public)


def test_a_relabelled_namespace_is_refused_because_the_signature_binds_it() -> None:
    # A signature made for "git" with its namespace field rewritten to "file".
    relabelled = armor(build_blob(namespace=b"file", signed_namespace=b"git"))
    assert sshsig.parse(relabelled)[1] == "file"
    assert not sshsig.check(relabelled, MESSAGE, "file", KEY.public)


def test_another_key_is_refused() -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file")
    assert not sshsig.check(armored, MESSAGE, "file", OTHER.public)


def test_a_signature_claiming_another_signer_is_refused() -> None:
    # OTHER signed, but the blob names KEY as the signer.
    forged = armor(build_blob(key=OTHER, public_blob=ssh_public_blob(KEY.public)))
    assert not sshsig.check(forged, MESSAGE, "file", KEY.public)
    assert not sshsig.check(forged, MESSAGE, "file", OTHER.public)


@pytest.mark.parametrize(
    "tampered",
    [b"", MESSAGE[:-1], MESSAGE + b"\n", b"The file that was signed\n", MESSAGE.upper()],
)
def test_a_tampered_message_is_refused(tampered: bytes) -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file")
    assert not sshsig.check(armored, tampered, "file", KEY.public)


def test_a_damaged_signature_value_is_refused() -> None:
    raw_sig = bytearray(KEY.sign(signed_data(b"file", b"sha512", MESSAGE)))
    raw_sig[10] ^= 0x40
    damaged = armor(build_blob(raw_sig=bytes(raw_sig)))
    assert not sshsig.check(damaged, MESSAGE, "file", KEY.public)


def test_a_short_signature_value_is_refused_not_crashed() -> None:
    short = armor(build_blob(raw_sig=b"\x00" * 63))
    assert not sshsig.check(short, MESSAGE, "file", KEY.public)


def test_sha256_signatures_are_accepted_on_verify() -> None:
    armored = armor(build_blob(hash_name=b"sha256"))
    assert sshsig.check(armored, MESSAGE, "file", KEY.public)


def test_a_hash_name_that_differs_from_the_signed_one_is_refused() -> None:
    # Signed over a SHA-256 digest, but the blob claims SHA-512.
    swapped = armor(build_blob(hash_name=b"sha512", signed_hash=b"sha256"))
    assert not sshsig.check(swapped, MESSAGE, "file", KEY.public)


def test_check_tolerates_crlf_and_surrounding_whitespace() -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file")
    messy = "\n  " + armored.replace("\n", "\r\n") + "\n\n"
    assert sshsig.check(messy, MESSAGE, "file", KEY.public)


# --- malformed input ----------------------------------------------------------------------------

GOOD_BLOB = build_blob()


@pytest.mark.parametrize(
    ("armored", "detail"),
    [
        pytest.param("", "armor", id="empty"),
        pytest.param("hello world", "armor", id="no-armor"),
        pytest.param(base64.b64encode(GOOD_BLOB).decode(), "armor", id="bare-base64"),
        pytest.param(f"{BEGIN}\n{END}\n", "armor", id="armor-without-body"),
        pytest.param(
            armor(GOOD_BLOB).replace(END, "-----END PGP SIGNATURE-----"), "armor", id="wrong-end"
        ),
        pytest.param(
            armor(GOOD_BLOB).replace(BEGIN, "-----BEGIN PGP SIGNATURE-----"),
            "armor",
            id="wrong-begin",
        ),
        pytest.param(f"{BEGIN}\n!!!not base64!!!\n{END}\n", "base64", id="bad-base64"),
        pytest.param(f"{BEGIN}\nU1NIU0lH=AAA\n{END}\n", "base64", id="padding-inside"),
        pytest.param(f"{BEGIN}\nU1NIU0lHAAAAAQ\n{END}\n", "base64", id="missing-padding"),
        pytest.param(f"{BEGIN}\nU1NIU0lH\u00e9AAA\n{END}\n", "base64", id="non-ascii-body"),
        pytest.param(armor(GOOD_BLOB[:-1]), "truncated", id="truncated-by-one"),
        pytest.param(armor(GOOD_BLOB[:40]), "truncated", id="truncated-in-key"),
        pytest.param(armor(GOOD_BLOB[:8]), "truncated", id="truncated-in-header"),
        pytest.param(armor(b""), "armor", id="empty-blob"),
        pytest.param(armor(GOOD_BLOB + b"\x00"), "trailing", id="trailing-bytes"),
        pytest.param(armor(b"SSHSIH" + GOOD_BLOB[6:]), "SSHSIG", id="wrong-magic"),
        pytest.param(armor(build_blob(version=2)), "SSHSIG", id="version-2"),
        pytest.param(armor(build_blob(version=0)), "SSHSIG", id="version-0"),
        pytest.param(
            armor(
                build_blob(
                    public_blob=ssh_string(b"ssh-rsa")
                    + ssh_string(b"\x01\x00\x01")
                    + ssh_string(b"\x00" + b"\xc3" * 256)
                )
            ),
            "ssh-ed25519",
            id="rsa-key-type",
        ),
        pytest.param(
            armor(build_blob(sig_type=b"rsa-sha2-512")), "ssh-ed25519", id="rsa-signature-type"
        ),
        pytest.param(armor(build_blob(hash_name=b"md5")), "hash", id="unknown-hash-md5"),
        pytest.param(armor(build_blob(hash_name=b"SHA512")), "hash", id="unknown-hash-case"),
        pytest.param(armor(build_blob(hash_name=b"")), "hash", id="empty-hash-name"),
        pytest.param(
            armor(build_blob(public_blob=ssh_public_blob(KEY.public) + b"\x00")),
            "trailing",
            id="trailing-bytes-in-key",
        ),
        pytest.param(
            armor(
                GOOD_BLOB[: -(4 + 4 + 11 + 4 + 64)]
                + ssh_string(ssh_string(b"ssh-ed25519") + ssh_string(b"\x00" * 64) + b"\x00")
            ),
            "trailing",
            id="trailing-bytes-in-signature",
        ),
        pytest.param(armor(build_blob(namespace=b"\xff\xfe")), "UTF-8", id="namespace-not-utf8"),
        pytest.param(
            armor(b"SSHSIG" + struct.pack(">I", 1) + b"\xff\xff\xff\xff"),
            "truncated",
            id="huge-length-field",
        ),
    ],
)
def test_malformed_signatures_raise(armored: str, detail: str) -> None:
    with pytest.raises(MalformedSignature, match=detail):
        sshsig.check(armored, MESSAGE, "file", KEY.public)
    with pytest.raises(MalformedSignature):
        sshsig.parse(armored.encode("utf-8"))


def test_a_non_ascii_byte_string_is_malformed() -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file").encode("ascii") + b"\xff"
    with pytest.raises(MalformedSignature, match="ASCII"):
        sshsig.check(armored, MESSAGE, "file", KEY.public)


def test_an_oversized_byte_string_is_refused_before_parsing() -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file").encode("ascii")
    padded = armored + b"\n" * (MAX_ARMORED_BYTES + 1 - len(armored))
    with pytest.raises(MalformedSignature, match="too large"):
        sshsig.check(padded, MESSAGE, "file", KEY.public)


def test_malformed_signature_is_a_value_error() -> None:
    assert issubclass(MalformedSignature, ValueError)


@settings(max_examples=300)
@given(data=st.data())
def test_arbitrary_damage_to_the_blob_never_verifies_and_never_crashes(
    data: st.DataObject,
) -> None:
    blob = bytearray(GOOD_BLOB)
    position = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="byte")
    blob[position] ^= data.draw(st.integers(min_value=1, max_value=255), label="xor")
    try:
        ok = sshsig.check(armor(bytes(blob)), MESSAGE, "file", KEY.public)
    except MalformedSignature:
        return
    assert not ok


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_blobs_raise_malformed_signature_or_are_refused(blob: bytes) -> None:
    try:
        ok = sshsig.check(armor(blob), MESSAGE, "file", KEY.public)
    except MalformedSignature:
        return
    assert not ok


# --- interop with stock OpenSSH -----------------------------------------------------------------


@pytest.fixture
def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        pytest.skip("ssh-keygen (OpenSSH) is not on PATH: install openssh-client for interop tests")
    return path


def write_private_key(tmp_path: Path, key: SigningKey) -> Path:
    path = tmp_path / "id_ed25519"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.openssh_private_pem())
    return path


def write_allowed_signers(tmp_path: Path, key: SigningKey) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text(f"someone {openssh_public_line(key.public)}\n")
    return path


def ssh_verify(
    ssh_keygen: str, tmp_path: Path, key: SigningKey, armored: str, message: bytes, namespace: str
) -> subprocess.CompletedProcess[bytes]:
    allowed = write_allowed_signers(tmp_path, key)
    sig = tmp_path / "data.sig"
    sig.write_text(armored)
    return subprocess.run(
        [
            ssh_keygen,
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            "someone",
            "-n",
            namespace,
            "-s",
            str(sig),
        ],
        input=message,
        capture_output=True,
        timeout=30,
        check=False,
    )


def ssh_sign(
    ssh_keygen: str,
    tmp_path: Path,
    key: SigningKey,
    message: bytes,
    namespace: str,
    *extra: str,
) -> str:
    private = write_private_key(tmp_path, key)
    result = subprocess.run(
        [ssh_keygen, "-Y", "sign", "-f", str(private), "-n", namespace, *extra],
        input=message,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode("ascii")


def test_ssh_keygen_verifies_our_signature(ssh_keygen: str, tmp_path: Path) -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file")
    result = ssh_verify(ssh_keygen, tmp_path, KEY, armored, MESSAGE, "file")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b'Good "file" signature for someone' in result.stdout


def test_ssh_keygen_refuses_our_signature_in_another_namespace(
    ssh_keygen: str, tmp_path: Path
) -> None:
    armored = sshsig.sign(KEY, MESSAGE, "git")
    result = ssh_verify(ssh_keygen, tmp_path, KEY, armored, MESSAGE, "file")
    assert result.returncode != 0


def test_ssh_keygen_refuses_our_signature_of_other_data(ssh_keygen: str, tmp_path: Path) -> None:
    armored = sshsig.sign(KEY, MESSAGE, "file")
    result = ssh_verify(ssh_keygen, tmp_path, KEY, armored, MESSAGE + b"x", "file")
    assert result.returncode != 0


def test_we_accept_a_signature_made_by_ssh_keygen(ssh_keygen: str, tmp_path: Path) -> None:
    armored = ssh_sign(ssh_keygen, tmp_path, KEY, MESSAGE, "file")
    assert sshsig.check(armored, MESSAGE, "file", KEY.public)
    assert not sshsig.check(armored, MESSAGE, "git", KEY.public)
    assert not sshsig.check(armored, MESSAGE + b"x", "file", KEY.public)
    assert not sshsig.check(armored, MESSAGE, "file", OTHER.public)


def test_our_signature_is_byte_identical_to_ssh_keygen(ssh_keygen: str, tmp_path: Path) -> None:
    # Ed25519 is deterministic and both use SHA-512, so the two armored texts must match.
    assert ssh_sign(ssh_keygen, tmp_path, KEY, MESSAGE, "file") == sshsig.sign(KEY, MESSAGE, "file")


def test_we_accept_a_sha256_signature_made_by_ssh_keygen(ssh_keygen: str, tmp_path: Path) -> None:
    armored = ssh_sign(ssh_keygen, tmp_path, KEY, MESSAGE, "file", "-O", "hashalg=sha256")
    assert sshsig.parse(armored)[2] == b"sha256"
    assert sshsig.check(armored, MESSAGE, "file", KEY.public)
    assert not sshsig.check(armored, MESSAGE + b"x", "file", KEY.public)
