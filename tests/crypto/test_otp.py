"""TOTP (RFC 6238) codes and otpauth:// URIs (Google's Key Uri Format)."""

from __future__ import annotations

import base64

import pytest

from polykey.crypto.otp import BadOtpSecret, TotpSpec, parse

# RFC 6238, appendix B: the seed of each algorithm is "1234567890" repeated to its hash size
KEYS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


def b32(key: bytes) -> str:
    return base64.b32encode(key).decode().rstrip("=")


@pytest.mark.parametrize(
    ("at", "algorithm", "code"),
    [
        (at, algorithm, code)
        for at, *codes in VECTORS
        for algorithm, code in zip(("SHA1", "SHA256", "SHA512"), codes, strict=True)
    ],
)
def test_rfc_6238_test_vectors(at: int, algorithm: str, code: str) -> None:
    assert TotpSpec(KEYS[algorithm], digits=8, algorithm=algorithm).code(at) == code


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512"])
def test_an_otpauth_uri_gives_the_rfc_codes(algorithm: str) -> None:
    uri = f"otpauth://totp/RFC?secret={b32(KEYS[algorithm])}&digits=8&algorithm={algorithm}"
    spec = parse(uri)
    expected = {"SHA1": "94287082", "SHA256": "46119246", "SHA512": "90693936"}[algorithm]
    assert spec.algorithm == algorithm
    assert spec.code(59) == expected


def test_six_digits_are_the_low_digits_of_the_code() -> None:
    spec = parse(b32(KEYS["SHA1"]))
    assert (spec.digits, spec.period, spec.algorithm) == (6, 30, "SHA1")
    assert spec.code(59) == "287082"
    assert spec.code(1111111109) == "081804"  # leading zero kept


def test_the_remaining_seconds_count_down_within_the_period() -> None:
    spec = TotpSpec(KEYS["SHA1"])
    assert spec.remaining(59) == 1
    assert spec.remaining(60) == 30
    assert spec.remaining(61) == 29
    assert TotpSpec(KEYS["SHA1"], period=60).remaining(61) == 59


def test_a_longer_period_changes_the_code_less_often() -> None:
    spec = TotpSpec(KEYS["SHA1"], digits=8, period=60)
    assert spec.code(0) == spec.code(59)
    assert spec.code(59) != spec.code(60)


def test_an_otpauth_uri_is_parsed_with_digits_period_algorithm_label_and_issuer() -> None:
    spec = parse(
        f"otpauth://totp/ACME%20Co:alice%40example.com?secret={b32(KEYS['SHA256'])}"
        "&issuer=ACME%20Co&digits=7&period=45&algorithm=sha256"
    )
    assert spec.key == KEYS["SHA256"]
    assert (spec.digits, spec.period, spec.algorithm) == (7, 45, "SHA256")
    assert spec.label == "ACME Co:alice@example.com"
    assert spec.issuer == "ACME Co"
    assert len(spec.code(59)) == 7


def test_uri_scheme_host_and_parameter_names_are_case_insensitive() -> None:
    spec = parse(f"  OTPAUTH://TOTP/x?SECRET={b32(KEYS['SHA1'])}&Digits=8  \n")
    assert spec.code(59) == "94287082"


def test_a_bare_base32_key_is_accepted_in_any_case_with_spaces_and_dashes() -> None:
    text = b32(KEYS["SHA1"]).lower()
    spaced = " ".join(text[i : i + 4] for i in range(0, len(text), 4))
    assert parse(spaced).key == KEYS["SHA1"]
    assert parse(text.replace(" ", "")[:16] + "-" + text[16:]).key == KEYS["SHA1"]


SECRET = b32(KEYS["SHA1"])


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(f"otpauth://hotp/x?secret={SECRET}&counter=1", id="hotp"),
        pytest.param("otpauth://totp/x", id="no-secret"),
        pytest.param("otpauth://totp/x?secret=", id="empty-secret"),
        pytest.param("otpauth://totp/x?secret=!!notbase32!!", id="secret-not-base32"),
        pytest.param(f"otpauth://totp/x?secret={b32(b'short')}", id="key-too-short"),
        pytest.param(f"otpauth://totp/x?secret={b32(b'k' * 129)}", id="key-too-long"),
        pytest.param(f"otpauth://totp/x?secret={SECRET}&digits=5", id="digits-5"),
        pytest.param(f"otpauth://totp/x?secret={SECRET}&digits=9", id="digits-9"),
        pytest.param(f"otpauth://totp/x?secret={SECRET}&digits=six", id="digits-text"),
        pytest.param(f"otpauth://totp/x?secret={SECRET}&period=0", id="period-0"),
        pytest.param(f"otpauth://totp/x?secret={SECRET}&period=3601", id="period-3601"),
        pytest.param(f"otpauth://totp/x?secret={SECRET}&period=-30", id="period-negative"),
        pytest.param(f"otpauth://totp/x?secret={SECRET}&algorithm=MD5", id="algorithm-md5"),
        pytest.param("hunter2", id="a-password"),
        pytest.param("", id="empty"),
        pytest.param("https://example.com/?secret=" + SECRET, id="web-address"),
    ],
)
def test_a_bad_secret_or_uri_is_refused(bad: str) -> None:
    with pytest.raises(BadOtpSecret):
        parse(bad)


def test_the_spec_repr_shows_no_key() -> None:
    spec = parse(f"otpauth://totp/alice?secret={SECRET}")
    assert SECRET not in repr(spec)
    assert "12345678901234567890" not in repr(spec)
