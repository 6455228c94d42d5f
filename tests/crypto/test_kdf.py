"""Key derivation: Argon2id bounds and known answers, HKDF-SHA256, HMAC-SHA256, equal()."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.crypto import kdf
from polykey.crypto.kdf import (
    DEFAULT_CEILING,
    KEY_BYTES,
    MAX_ITERATIONS,
    MAX_LANES,
    MAX_MEMORY_KIB,
    MIN_ITERATIONS,
    MIN_MEMORY_KIB,
    SALT_BYTES,
    AboveCeiling,
    Argon2Params,
    Ceiling,
    ParametersRefused,
    argon2id,
    equal,
    hkdf,
    hmac_sha256,
)

SALT = bytes(range(SALT_BYTES))
TIB_IN_KIB = 1024 * 1024 * 1024
# Cheap parameters below the production floor: usable only with allow_weak=True.
WEAK = Argon2Params(memory_kib=64, iterations=1, lanes=1, salt=SALT)
# The production floor itself: accepted without allow_weak.
FLOOR = Argon2Params(memory_kib=MIN_MEMORY_KIB, iterations=MIN_ITERATIONS, lanes=1, salt=SALT)


def params(
    memory_kib: Any = 64 * 1024, iterations: Any = 3, lanes: Any = 4, salt: bytes = SALT
) -> Argon2Params:
    return Argon2Params(memory_kib=memory_kib, iterations=iterations, lanes=lanes, salt=salt)


# --- Argon2Params.check: hard bounds -------------------------------------------------------------


def test_production_like_parameters_pass_the_check() -> None:
    params().check()
    params().check(allow_weak=True)


def test_the_floor_itself_passes_without_allow_weak() -> None:
    FLOOR.check()


HARD = Ceiling(memory_kib=MAX_MEMORY_KIB, iterations=MAX_ITERATIONS)


def test_the_hard_upper_bounds_themselves_pass_when_the_ceiling_is_raised_to_them() -> None:
    top = params(memory_kib=MAX_MEMORY_KIB, iterations=MAX_ITERATIONS, lanes=MAX_LANES)
    top.check(ceiling=HARD)


# --- the ceiling: no more work than `pk bootstrap` asks for, unless raised -----------------------


def test_the_default_ceiling_is_the_most_pk_bootstrap_makes() -> None:
    from polykey.node import DEFAULT_KDF, FAST_INSECURE_KDF

    assert Ceiling(DEFAULT_KDF.memory_kib, DEFAULT_KDF.iterations) == DEFAULT_CEILING
    assert FAST_INSECURE_KDF.memory_kib <= DEFAULT_CEILING.memory_kib
    assert FAST_INSECURE_KDF.iterations <= DEFAULT_CEILING.iterations
    params(DEFAULT_KDF.memory_kib, DEFAULT_KDF.iterations, DEFAULT_KDF.lanes).check()
    assert kdf.current_ceiling() == DEFAULT_CEILING


@pytest.mark.parametrize(
    ("memory_kib", "iterations", "named"),
    [
        (MAX_MEMORY_KIB, 3, "memory"),
        (64 * 1024 + 8, 3, "memory"),
        (64 * 1024, MAX_ITERATIONS, "iterations"),
        (64 * 1024, 4, "iterations"),
        (MAX_MEMORY_KIB, MAX_ITERATIONS, "memory"),
    ],
    ids=["4-GiB", "just-above-64-MiB", "64-passes", "4-passes", "both"],
)
@pytest.mark.parametrize("allow_weak", [False, True])
def test_work_above_the_default_ceiling_is_refused_before_any_work(
    memory_kib: int, iterations: int, named: str, allow_weak: bool, monkeypatch: Any
) -> None:
    def no_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Argon2id ran for parameters above the ceiling")

    monkeypatch.setattr(kdf, "Argon2id", no_work)
    hostile = params(memory_kib=memory_kib, iterations=iterations)
    with pytest.raises(AboveCeiling, match=named) as info:
        argon2id(b"password", hostile, allow_weak=allow_weak)
    assert info.value.parameter == named
    assert isinstance(info.value, ParametersRefused)


def test_a_raised_ceiling_lets_a_costlier_node_open() -> None:
    costly = params(memory_kib=128 * 1024, iterations=8)
    with pytest.raises(AboveCeiling):
        costly.check()
    costly.check(ceiling=Ceiling(memory_kib=128 * 1024, iterations=8))
    with pytest.raises(AboveCeiling, match="iterations"):
        costly.check(ceiling=Ceiling(memory_kib=128 * 1024, iterations=7))


def test_the_process_ceiling_is_set_and_restored() -> None:
    costly = params(iterations=5)
    before = kdf.set_ceiling(Ceiling(iterations=5))
    try:
        costly.check()
        assert kdf.current_ceiling().iterations == 5
    finally:
        kdf.set_ceiling(before)
    with pytest.raises(AboveCeiling):
        costly.check()


@pytest.mark.parametrize(
    "ceiling",
    [Ceiling(memory_kib=MAX_MEMORY_KIB + 1), Ceiling(iterations=MAX_ITERATIONS + 1), Ceiling(0, 1)],
)
def test_a_ceiling_above_the_hard_bounds_cannot_be_set(ceiling: Ceiling) -> None:
    with pytest.raises(ValueError):
        kdf.set_ceiling(ceiling)
    assert kdf.current_ceiling() == DEFAULT_CEILING


@pytest.mark.timeout(10)
def test_a_terabyte_of_memory_is_refused_before_any_work() -> None:
    absurd = params(memory_kib=TIB_IN_KIB)
    with pytest.raises(ParametersRefused, match="memory"):
        argon2id(b"password", absurd)
    with pytest.raises(ParametersRefused, match="memory"):
        argon2id(b"password", absurd, allow_weak=True)


@pytest.mark.parametrize("allow_weak", [False, True])
def test_memory_one_kib_above_the_hard_bound_is_refused_even_when_weak_is_allowed(
    allow_weak: bool,
) -> None:
    with pytest.raises(ParametersRefused, match="memory"):
        params(memory_kib=MAX_MEMORY_KIB + 1).check(allow_weak=allow_weak)


@pytest.mark.parametrize("memory_kib", [0, -1, -(2**40)])
def test_zero_or_negative_memory_is_refused(memory_kib: int) -> None:
    with pytest.raises(ParametersRefused, match="memory"):
        params(memory_kib=memory_kib, lanes=1).check(allow_weak=True)


@pytest.mark.parametrize("iterations", [0, -3, MAX_ITERATIONS + 1, 2**63])
def test_iterations_outside_the_hard_bounds_are_refused(iterations: int) -> None:
    with pytest.raises(ParametersRefused, match="iterations"):
        params(iterations=iterations).check(allow_weak=True)


@pytest.mark.parametrize("lanes", [0, -1, MAX_LANES + 1, 2**32])
def test_lanes_outside_the_hard_bounds_are_refused(lanes: int) -> None:
    with pytest.raises(ParametersRefused, match="lanes"):
        params(lanes=lanes).check(allow_weak=True)


def test_lanes_at_the_hard_bound_pass() -> None:
    params(lanes=MAX_LANES).check()
    params(lanes=1).check()


def test_memory_below_eight_kib_per_lane_is_refused() -> None:
    with pytest.raises(ParametersRefused, match="per lane"):
        params(memory_kib=31, iterations=1, lanes=4).check(allow_weak=True)
    params(memory_kib=32, iterations=1, lanes=4).check(allow_weak=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_kib", True),
        ("iterations", True),
        ("lanes", True),
        ("memory_kib", 65536.0),
        ("iterations", 3.5),
        ("lanes", "4"),
        ("iterations", None),
    ],
)
def test_non_integer_parameters_are_refused(field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ParametersRefused):
        params(**kwargs).check(allow_weak=True)


@pytest.mark.parametrize("length", [0, 1, SALT_BYTES - 1, SALT_BYTES + 1, 64])
def test_a_salt_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(ParametersRefused, match="salt"):
        params(salt=b"s" * length).check(allow_weak=True)


# --- Argon2Params.check: the production floor ---------------------------------------------------


@pytest.mark.parametrize(
    "weak",
    [
        params(memory_kib=MIN_MEMORY_KIB - 1, iterations=MIN_ITERATIONS, lanes=1),
        params(memory_kib=MIN_MEMORY_KIB, iterations=MIN_ITERATIONS - 1, lanes=1),
        WEAK,
    ],
    ids=["memory-below-floor", "iterations-below-floor", "both-below-floor"],
)
def test_parameters_below_the_floor_are_refused_unless_allowed(weak: Argon2Params) -> None:
    with pytest.raises(ParametersRefused, match="floor"):
        weak.check()
    weak.check(allow_weak=True)


def test_argon2id_refuses_weak_parameters_unless_allowed() -> None:
    with pytest.raises(ParametersRefused, match="floor"):
        argon2id(b"password", WEAK)
    assert len(argon2id(b"password", WEAK, allow_weak=True)) == KEY_BYTES


def test_parameters_refused_is_a_value_error() -> None:
    assert issubclass(ParametersRefused, ValueError)


@settings(max_examples=300, deadline=None)
@given(
    memory_kib=st.integers(min_value=-(2**70), max_value=2**70),
    iterations=st.integers(min_value=-(2**70), max_value=2**70),
    lanes=st.integers(min_value=-(2**70), max_value=2**70),
    salt=st.binary(max_size=40),
    allow_weak=st.booleans(),
)
def test_check_accepts_exactly_the_parameters_inside_the_bounds(
    memory_kib: int, iterations: int, lanes: int, salt: bytes, allow_weak: bool
) -> None:
    inside = (
        1 <= memory_kib <= MAX_MEMORY_KIB
        and 1 <= iterations <= MAX_ITERATIONS
        and 1 <= lanes <= MAX_LANES
        and memory_kib >= 8 * lanes
        and len(salt) == SALT_BYTES
        and (allow_weak or (memory_kib >= MIN_MEMORY_KIB and iterations >= MIN_ITERATIONS))
    )
    below_default = (
        memory_kib <= DEFAULT_CEILING.memory_kib and iterations <= DEFAULT_CEILING.iterations
    )
    candidate = params(memory_kib=memory_kib, iterations=iterations, lanes=lanes, salt=salt)
    if inside:
        candidate.check(allow_weak=allow_weak, ceiling=HARD)
    else:
        with pytest.raises(ParametersRefused):
            candidate.check(allow_weak=allow_weak, ceiling=HARD)
    if inside and below_default:
        candidate.check(allow_weak=allow_weak)
    else:
        with pytest.raises(ParametersRefused):
            candidate.check(allow_weak=allow_weak)


# --- argon2id: determinism and known answers ----------------------------------------------------


def test_argon2id_is_deterministic() -> None:
    assert argon2id(b"password", WEAK, allow_weak=True) == argon2id(
        b"password", WEAK, allow_weak=True
    )


def test_argon2id_depends_on_password_salt_and_every_cost_parameter() -> None:
    base = argon2id(b"password", WEAK, allow_weak=True)
    variants = [
        argon2id(b"passwore", WEAK, allow_weak=True),
        argon2id(
            b"password",
            params(memory_kib=64, iterations=1, lanes=1, salt=b"x" * 16),
            allow_weak=True,
        ),
        argon2id(b"password", params(memory_kib=72, iterations=1, lanes=1), allow_weak=True),
        argon2id(b"password", params(memory_kib=64, iterations=2, lanes=1), allow_weak=True),
        argon2id(b"password", params(memory_kib=64, iterations=1, lanes=2), allow_weak=True),
    ]
    assert len({base, *variants}) == 1 + len(variants)


def test_argon2id_known_answer_from_the_argon2_cffi_documentation() -> None:
    # argon2-cffi's README: PasswordHasher().hash("correct horse battery staple") ==
    # "$argon2id$v=19$m=65536,t=3,p=4$MIIRqgvgQbgj220jfp0MPA"
    # "$YfwJSVjtjSU0zzV/P3S9nnQ/USre2wvJMjfCIjrTQbg" (one PHC string, split here)
    salt = base64.b64decode("MIIRqgvgQbgj220jfp0MPA==")
    expected = base64.b64decode("YfwJSVjtjSU0zzV/P3S9nnQ/USre2wvJMjfCIjrTQbg=")
    rfc_profile_2 = Argon2Params(memory_kib=65536, iterations=3, lanes=4, salt=salt)
    assert argon2id(b"correct horse battery staple", rfc_profile_2) == expected


def test_the_argon2id_primitive_matches_the_rfc_9106_test_vector() -> None:
    # RFC 9106 section 5.3 (Argon2id): password 32 x 01, salt 16 x 02, secret 8 x 03,
    # associated data 12 x 04, m=32 KiB, t=3, p=4, tag length 32.
    tag = Argon2id(
        salt=b"\x02" * 16,
        length=32,
        iterations=3,
        lanes=4,
        memory_cost=32,
        ad=b"\x04" * 12,
        secret=b"\x03" * 8,
    ).derive(b"\x01" * 32)
    assert tag.hex() == "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"


def test_argon2id_maps_every_parameter_to_the_primitive() -> None:
    # Distinct values for memory, passes and lanes, so a swap of any two shows.
    chosen = Argon2Params(memory_kib=96, iterations=2, lanes=3, salt=SALT)
    direct = Argon2id(salt=SALT, length=32, iterations=2, lanes=3, memory_cost=96).derive(b"pw")
    assert argon2id(b"pw", chosen, allow_weak=True) == direct


# --- HKDF and HMAC ------------------------------------------------------------------------------


def test_hkdf_rfc_5869_test_case_1() -> None:
    okm = hkdf(
        b"\x0b" * 22,
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_rfc_5869_test_case_3_without_salt_or_info() -> None:
    okm = hkdf(b"\x0b" * 22, b"", length=42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_hkdf_defaults_to_a_32_byte_key() -> None:
    assert len(hkdf(b"ikm", b"label")) == KEY_BYTES == 32


def test_hkdf_labels_separate_keys() -> None:
    ikm = b"\x42" * 32
    assert hkdf(ikm, b"wrap") != hkdf(ikm, b"names")
    assert hkdf(ikm, b"wrap") == hkdf(ikm, b"wrap")


def test_hmac_sha256_rfc_4231_test_case_1() -> None:
    assert hmac_sha256(b"\x0b" * 20, b"Hi There").hex() == (
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )


def test_hmac_sha256_rfc_4231_test_case_2() -> None:
    assert hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


# --- equal --------------------------------------------------------------------------------------


def test_equal_is_true_for_equal_bytes() -> None:
    assert equal(b"secret", b"secret")
    assert equal(b"", b"")


@pytest.mark.parametrize(
    ("a", "b"),
    [(b"secret", b"secreT"), (b"secret", b"secret\x00"), (b"", b"x"), (b"\x00" * 32, b"")],
)
def test_equal_is_false_for_different_bytes(a: bytes, b: bytes) -> None:
    assert not equal(a, b)
    assert not equal(b, a)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_equal_agrees_with_ordinary_equality(a: bytes, b: bytes) -> None:
    assert equal(a, b) is (a == b)
