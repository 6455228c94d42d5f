"""TOTP against RFC 6238's vectors, `pk otp`, the clipboard refusal, shell completion."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from polykey.crypto.otp import BadOtpSecret, TotpSpec, parse
from tests.support import PASSWORD, pk_env, run_pk

KEYS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}


@pytest.mark.parametrize(
    ("at", "algorithm", "code"),
    [
        (59, "SHA1", "94287082"),
        (59, "SHA256", "46119246"),
        (59, "SHA512", "90693936"),
        (1111111109, "SHA1", "07081804"),
        (20000000000, "SHA256", "77737706"),
    ],
)
def test_rfc_6238_vectors(at: int, algorithm: str, code: str) -> None:
    assert TotpSpec(KEYS[algorithm], digits=8, algorithm=algorithm).code(at) == code


def test_otpauth_uris_are_parsed_and_bounded() -> None:
    secret = base64.b32encode(KEYS["SHA1"]).decode().rstrip("=")
    spec = parse(f"otpauth://totp/ACME:alice?secret={secret}&issuer=ACME&digits=8&period=60")
    assert (spec.digits, spec.period, spec.issuer, spec.label) == (8, 60, "ACME", "ACME:alice")
    for bad in (
        "otpauth://hotp/x?secret=" + secret,
        "otpauth://totp/x",
        "not base32 !!",
        f"otpauth://totp/x?secret={secret}&digits=12",
        f"otpauth://totp/x?secret={secret}&algorithm=MD5",
    ):
        with pytest.raises(BadOtpSecret):
            parse(bad)


def test_pk_otp_prints_the_code_and_a_qr(tmp_path: Path) -> None:
    env = pk_env(tmp_path / "n.pk", PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    assert run_pk("bootstrap", env=env).returncode == 0
    assert run_pk("vaults", "create", "v", env=env).returncode == 0
    uri = b"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"
    assert run_pk("secrets", "write", "v:otp", env=env, input=uri).returncode == 0
    out = run_pk("otp", "v:otp", env=env).stdout.strip()
    assert out.isdigit() and len(out) == 6
    assert "\u2588".encode() in run_pk("otp", "v:otp", "--qr", env=env).stdout
    assert run_pk("secrets", "write", "v:plain", env=env, input=b"hunter2").returncode == 0
    assert run_pk("otp", "v:plain", env=env).returncode == 3


def test_clip_without_a_clipboard_is_a_clear_error(tmp_path: Path) -> None:
    env = pk_env(tmp_path / "n.pk", PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    assert run_pk("bootstrap", env=env).returncode == 0
    assert run_pk("vaults", "create", "v", env=env).returncode == 0
    assert run_pk("secrets", "write", "v:s", env=env, input=b"x").returncode == 0
    result = run_pk("secrets", "cat", "v:s", "--clip", env=env)
    assert result.returncode == 6
    assert result.stderr.startswith(b"pk: error: No clipboard tool")


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_script_is_valid_bash(tmp_path: Path) -> None:
    script = run_pk("completion", "bash").stdout
    assert b"_pk_completion" in script
    path = tmp_path / "c.sh"
    path.write_bytes(script)
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0
    for shell in ("zsh", "fish"):
        assert run_pk("completion", shell).returncode == 0
