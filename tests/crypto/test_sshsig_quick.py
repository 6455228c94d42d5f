"""The fixed-place reading of a signature blob (crypto/sshsig.py ``_quick``, taken for every
commit of a clone) answers exactly as the field-by-field reader does, or steps aside: a hostile
blob is refused by the reader as before, never accepted by the quick path alone."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.crypto import sshsig
from polykey.crypto.signing import ssh_public_blob, ssh_string
from tests.crypto.test_sshsig import KEY, MESSAGE, armor, build_blob

GOOD = base64.b64decode("".join(sshsig.sign(KEY, MESSAGE, "git").splitlines()[1:-1]))


def _reader(blob: bytes) -> tuple[bytes, str, bytes, bytes] | str:
    """The field-by-field reader's answer, or the reason it refuses."""
    try:
        return sshsig._read_blob(blob)
    except sshsig.MalformedSignature as exc:
        return str(exc)


@pytest.mark.parametrize("namespace", ["git", "file", "é"])
@pytest.mark.parametrize("hash_name", [b"sha512", b"sha256"])
def test_a_signature_as_sign_lays_it_out_is_read_at_fixed_places(
    namespace: str, hash_name: bytes
) -> None:
    blob = build_blob(namespace=namespace.encode(), hash_name=hash_name)
    quick = sshsig._quick(blob)
    assert quick is not None
    assert quick == _reader(blob) == (KEY.public, namespace, hash_name, quick[3])


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(build_blob(reserved=b"x"), id="reserved-field-used"),
        pytest.param(build_blob(hash_name=b"md5"), id="unknown-hash"),
        pytest.param(build_blob(namespace=b""), id="empty-namespace"),
        pytest.param(build_blob(namespace=b"\xff"), id="namespace-not-utf8"),
        pytest.param(build_blob(sig_type=b"rsa-sha2-512"), id="rsa-signature"),
        pytest.param(build_blob(raw_sig=b"\x00" * 63), id="short-signature"),
        pytest.param(build_blob(raw_sig=b"\x00" * 65), id="long-signature"),
        pytest.param(build_blob(version=2), id="version-2"),
        pytest.param(
            build_blob(public_blob=ssh_public_blob(KEY.public) + b"\x00"), id="key-trailing"
        ),
        pytest.param(GOOD + b"\x00", id="trailing"),
        pytest.param(GOOD[:-1], id="truncated"),
        pytest.param(GOOD[:-65] + ssh_string(b"\x00" * 61), id="signature-field-reshaped"),
    ],
)
def test_any_other_layout_goes_to_the_reader(blob: bytes) -> None:
    assert sshsig._quick(blob) is None
    try:
        parsed: tuple[bytes, str, bytes, bytes] | str = sshsig.parse(armor(blob))
    except sshsig.MalformedSignature as exc:
        parsed = str(exc)
    assert parsed == _reader(blob)


def test_a_hostile_blob_is_refused_through_parse_as_before() -> None:
    for blob in (GOOD[:-1], GOOD + b"\x00", build_blob(hash_name=b"md5")):
        with pytest.raises(sshsig.MalformedSignature):
            sshsig.parse(armor(blob))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(GOOD) - 1),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=-3, max_value=3),
)
def test_a_damaged_blob_is_read_quickly_only_as_the_reader_reads_it(
    at: int, byte: int, resize: int
) -> None:
    blob = GOOD[:at] + bytes([byte]) + GOOD[at + 1 :]
    if resize < 0:
        blob = blob[:resize]
    elif resize:
        blob = blob + b"\x00" * resize
    quick = sshsig._quick(blob)
    if quick is not None:
        assert quick == _reader(blob)


def test_a_signature_with_a_damaged_value_still_fails_to_verify() -> None:
    blob = GOOD[:-1] + bytes([GOOD[-1] ^ 1])
    assert sshsig._quick(blob) is not None
    assert sshsig.signer_of(armor(blob), MESSAGE, "git") is None
    assert sshsig.signer_of(armor(GOOD), MESSAGE, "git") == KEY.public
